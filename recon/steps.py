"""The update steps of the iterative solvers, one function each: the solvers in
:mod:`recon.iterative` loop over them and the unrolled networks in :mod:`recon.learned` call the
same functions, so no update is written twice.

All work on batches ``(..., *A.domain_shape)`` / ``(..., *A.range_shape)`` with any
:class:`known_ops.LinearOperator` ``A``, out of place (autograd can differentiate through them).
Formulas and references: ``docs/reconstruction.md``.
"""
from __future__ import annotations

import torch

__all__ = [
    "residual",
    "data_gradient",
    "smoothness_gradient",
    "landweber_update",
    "sirt_preconditioners",
    "sirt_update",
    "pdhg_dual_data_step",
    "pdhg_dual_tv_step",
    "pdhg_primal_step",
]


def residual(A, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``A x - y``: the data residual (the "dual" of learned primal, Adler and Oektem 2018)."""
    return A(x) - y


def data_gradient(A, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``A.T (A x - y)``: the gradient of the data term ``1/2 ||A x - y||^2``."""
    return A.T(A(x) - y)


def smoothness_gradient(G, x: torch.Tensor) -> torch.Tensor:
    """``G.T G x``: the gradient of ``1/2 ||G x||^2`` for a gradient operator ``G``
    (:class:`known_ops.FiniteDifferenceGradient`): minus the discrete Laplacian; the regulariser
    gradient of Adler and Oektem's partially learned gradient scheme (Inverse Problems 2017)."""
    return G.T(G(x))


def landweber_update(A, x: torch.Tensor, r: torch.Tensor, step: float, nonneg: bool = False) -> torch.Tensor:
    """One Landweber step from the residual ``r = y - A x``: ``x + step A.T r`` (then ``max(., 0)``
    with ``nonneg``)."""
    x = x + step * A.T(r)
    return torch.clamp(x, min=0) if nonneg else x


def _inverse_sums(sums: torch.Tensor, rel_eps: float = 1e-6) -> torch.Tensor:
    """1 / sums, and 0 where a sum is (numerically) zero: below rel_eps times the largest one."""
    threshold = rel_eps * float(sums.abs().max()) if sums.numel() else 0.0
    keep = sums.abs() > threshold
    return torch.where(keep, 1.0 / torch.where(keep, sums, torch.ones_like(sums)), torch.zeros_like(sums))


def sirt_preconditioners(A, dtype: torch.dtype, device, relaxation: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """SIRT's ``R = 1 / (A 1)`` (per ray) and ``relaxation * C`` with ``C = 1 / (A.T 1)`` (per pixel),
    0 where a sum is (numerically) zero."""
    with torch.no_grad():
        R = _inverse_sums(A(torch.ones(tuple(A.domain_shape), dtype=dtype, device=device)))
        C = _inverse_sums(A.T(torch.ones(tuple(A.range_shape), dtype=dtype, device=device))) * relaxation
    return R, C


def sirt_update(A, x: torch.Tensor, r: torch.Tensor, R: torch.Tensor, C: torch.Tensor, nonneg: bool = False) -> torch.Tensor:
    """One SIRT step from the residual ``r = y - A x``: ``x + C A.T (R r)``."""
    x = x + C * A.T(R * r)
    return torch.clamp(x, min=0) if nonneg else x


def pdhg_dual_data_step(p: torch.Tensor, Ax_bar: torch.Tensor, y: torch.Tensor, sigma) -> torch.Tensor:
    """PDHG's dual step for the data term ``1/2 ||. - y||^2``: ``(p + sigma (A xbar - y)) / (1 + sigma)``."""
    return (p + sigma * (Ax_bar - y)) / (1.0 + sigma)


def pdhg_dual_tv_step(q: torch.Tensor, Gx_bar: torch.Tensor, sigma, lam: float, component_dim: int) -> torch.Tensor:
    """PDHG's dual step for ``lam TV``: ``q + sigma G xbar``, projected onto ``|q_i|_2 <= lam`` per
    pixel (the gradient components lie along ``component_dim``)."""
    if lam <= 0:
        return torch.zeros_like(q)
    q = q + sigma * Gx_bar
    magnitude = torch.sqrt(torch.sum(q * q, dim=component_dim, keepdim=True))
    return q / torch.clamp(magnitude / lam, min=1.0)


def pdhg_primal_step(x: torch.Tensor, KT_dual: torch.Tensor, tau, nonneg: bool = False) -> torch.Tensor:
    """PDHG's primal step ``x - tau K.T (p, q)`` (then ``max(., 0)`` with ``nonneg``)."""
    x = x - tau * KT_dual
    return torch.clamp(x, min=0) if nonneg else x
