"""Linear-algebra helpers for operators: the operator norm by power iteration."""
from __future__ import annotations

import math
import numbers

import torch

from .linear import check_linear_operator

__all__ = ["operator_norm"]


def operator_norm(
    A,
    n_iter: int = 100,
    tol: float = 1e-7,
    seed: int = 0,
    device=None,
    dtype: torch.dtype = torch.float64,
) -> float:
    """The operator norm ``||A||_2`` (largest singular value) of a linear operator, by power iteration.

    Runs the power method on ``A.T A`` from a random start (``torch.Generator`` seeded with
    ``seed``, drawn on the CPU, so the result is deterministic on the CPU for a given seed),
    for at most ``n_iter`` iterations (one ``A`` and one ``A.T`` each), stopping early when the
    estimate changes by less than ``tol`` relative to its value.

    ``A`` is any :class:`known_ops.LinearOperator` (a RayTransform, a composition, ...).
    The iteration runs on ``device`` (default: the device of ``A``'s buffers) in ``dtype``
    (default float64, for accuracy whatever the data's type).

    Accuracy: the estimate ``||A x_k||`` with ``||x_k|| = 1`` is a **lower bound** of ``||A||``
    that converges from below; its relative error after ``k`` iterations decays like
    ``(s2/s1)^(4k)`` (``s1 > s2`` the two largest singular values; Rayleigh quotient of the
    symmetric ``A.T A``). Ray transforms have a well separated top singular value (the smooth,
    non-negative "DC" image), so ``n_iter=100`` gives about 1e-7 relative error in practice (the
    tests compare with the exact 2-norm of the explicit matrix of small operators); multiply by a
    safety factor such as 1.01 when the norm bounds a step size.

    Returns 0.0 when ``A`` is zero (``A x = 0`` for the random start, which happens only then).
    Raises a ValueError, instead of returning NaN, when ``A`` or ``A.T`` returns NaN or inf, or when
    ``A.T`` maps ``A x != 0`` to 0 (it is then not the adjoint).
    """
    if isinstance(n_iter, bool) or not isinstance(n_iter, numbers.Integral):
        raise TypeError(f"n_iter must be a positive integer, got {n_iter!r}")
    if n_iter < 1:
        raise ValueError(f"n_iter must be a positive integer, got {n_iter}")
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
        raise TypeError(f"tol must be a non-negative real number, got {tol!r}")
    if not (math.isfinite(float(tol)) and tol >= 0):
        raise ValueError(f"tol must be a non-negative finite number, got {tol}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    check_linear_operator(A)
    device = A._device() if device is None else torch.device(device)

    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    x = torch.randn(tuple(A.domain_shape), generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    with torch.no_grad():
        x = x / torch.linalg.vector_norm(x)
        estimate = 0.0
        for _ in range(int(n_iter)):
            Ax = A(x)
            new = float(torch.linalg.vector_norm(Ax))  # ||A x|| with ||x|| = 1
            if not math.isfinite(new):
                raise ValueError(
                    f"operator_norm: A returned NaN or inf on a unit vector (||A x|| = {new}); the operator's "
                    "values (e.g. a matrix or weights) are not finite"
                )
            if new == 0.0:  # x in the null space (or A = 0): A is zero on a random vector only if A = 0
                return 0.0
            z = A.T(Ax)
            z_norm_t = torch.linalg.vector_norm(z)
            z_norm = float(z_norm_t)
            if not math.isfinite(z_norm):
                raise ValueError(
                    f"operator_norm: A.T returned NaN or inf (||A.T(A x)|| = {z_norm} with ||A x|| = {new}); the "
                    "operator's values are not finite, or too large for the dtype"
                )
            if z_norm == 0.0:  # <x, A.T A x> = ||A x||^2 > 0, so A.T A x != 0 for a true adjoint
                raise ValueError(
                    f"operator_norm: A.T(A x) = 0 while ||A x|| = {new}: A.T is not the adjoint of A "
                    "(check it with known_ops.linear.adjointness_test)"
                )
            x = z / z_norm_t
            converged = abs(new - estimate) <= tol * new
            estimate = new
            if converged:
                break
    return estimate
