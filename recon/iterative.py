"""Iterative reconstruction: Landweber, SIRT, CGLS and TV-regularised least squares by PDHG.

Every solver works on a batch ``y`` of shape ``(..., *A.range_shape)`` at once (leading dims are
batch/channel dims; no Python loop over them), on ``y``'s device and in ``y``'s dtype
(float32 or float64), and returns the reconstruction ``x`` of shape ``(..., *A.domain_shape)``;
with ``return_history=True`` also a dict of per-iteration values (tensors of shape
``(n + 1, ...)``: entry 0 belongs to the starting point, entry ``k`` to iterate ``k``).

Per-iteration hooks: ``callback(iteration, x, info)`` is called after each iteration
(``iteration`` counts from 1, ``info`` is a dict of per-batch-item tensors such as
``info["residual"] = ||y - A x||``); when it returns ``True`` the solver stops early.
``progress=True`` shows a tqdm progress bar (tqdm is imported only then).

The solvers are written with out-of-place tensor operations, so autograd can differentiate
through them (unrolled) when the inputs require gradients; wrap the call in
``torch.no_grad()`` otherwise, to save memory. See ``docs/reconstruction.md`` for the update
formulas, step sizes and references.

No silent NaN: NaN or inf in ``y`` or ``x0``, non-finite parameters, a Landweber step at or above
``2 / ||A||^2`` and a zero operator (no ray of the geometry crosses the volume) raise a ValueError.
"""
from __future__ import annotations

import math
import numbers
import weakref
from typing import Callable

import torch

from known_ops.linalg import operator_norm
from known_ops.linear import FiniteDifferenceGradient, check_linear_operator

from . import steps

__all__ = ["landweber", "sirt", "cgls", "tv_pdhg", "total_variation"]

# Safety factor on the power-iteration estimate of ||A|| (a lower bound) when it sets a step size.
_NORM_SAFETY = 1.01
_NORM_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


# --- input checks --------------------------------------------------------------------------------


def _check_operator(A) -> tuple[tuple[int, ...], tuple[int, ...]]:
    check_linear_operator(A)
    return tuple(A.domain_shape), tuple(A.range_shape)


def _check_data(y, range_shape: tuple[int, ...], A) -> None:
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}")
    if y.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"y must be float32 or float64, got {y.dtype}")
    n = len(range_shape)
    if y.dim() < n or tuple(y.shape[-n:]) != range_shape:
        raise ValueError(
            f"y must have shape (..., {', '.join(map(str, range_shape))}) (the operator's range, i.e. the "
            f"geometry's projection shape), got {tuple(y.shape)}"
        )
    if any(True for _ in A.buffers()):
        device = A._device()
        if device != y.device:
            raise ValueError(f"y is on {y.device} but the operator A is on {device}; move it with A.to({str(y.device)!r})")
    _check_finite(y, "y")


def _check_finite(t: torch.Tensor, name: str) -> None:
    """ValueError when ``t`` holds NaN or inf: every solver would iterate on them and return NaN."""
    if t.device.type == "meta" or torch.compiler.is_compiling():
        return
    bad = ~torch.isfinite(t.detach())
    if bool(torch.any(bad)):
        raise ValueError(
            f"{name} contains NaN or inf ({int(bad.sum())} of {t.numel()} values); the iteration would return NaN. "
            f"Replace them first (e.g. with torch.nan_to_num, or by interpolating the bad detector pixels)"
        )


def _check_n_iter(n_iter) -> int:
    if isinstance(n_iter, bool) or not isinstance(n_iter, numbers.Integral):
        raise TypeError(f"n_iter must be a positive integer, got {n_iter!r}")
    if n_iter < 1:
        raise ValueError(f"n_iter must be a positive integer, got {n_iter}")
    return int(n_iter)


def _check_real(value, name: str, low: float = 0.0, strict: bool = True, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    bad = not math.isfinite(value) or (value <= low if strict else value < low) or (high is not None and value >= high)
    if bad:
        where = f"{'>' if strict else '>='} {low:g}" + (f" and < {high:g}" if high is not None else "")
        raise ValueError(f"{name} must be a finite number {where}, got {value}")
    return value


def _check_flag(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def _check_callback(callback) -> None:
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable as callback(iteration, x, info) or None, got {type(callback).__name__}")


def _start(x0, y: torch.Tensor, domain_shape: tuple[int, ...], range_ndim: int) -> torch.Tensor:
    lead = tuple(y.shape[: y.dim() - range_ndim])
    if x0 is None:
        return torch.zeros(lead + domain_shape, dtype=y.dtype, device=y.device)
    if not isinstance(x0, torch.Tensor):
        raise TypeError(f"x0 must be a torch.Tensor or None, got {type(x0).__name__}")
    if x0.dtype != y.dtype:
        raise TypeError(f"x0 must have y's dtype {y.dtype}, got {x0.dtype}")
    if x0.device != y.device:
        raise ValueError(f"x0 is on {x0.device} but y is on {y.device}")
    n = len(domain_shape)
    if x0.dim() < n or tuple(x0.shape[-n:]) != domain_shape:
        raise ValueError(
            f"x0 must have shape (..., {', '.join(map(str, domain_shape))}) (the operator's domain), got {tuple(x0.shape)}"
        )
    try:
        batch = torch.broadcast_shapes(tuple(x0.shape[: x0.dim() - n]), lead)
    except RuntimeError:
        raise ValueError(
            f"x0's leading dims {tuple(x0.shape[: x0.dim() - n])} do not broadcast with y's leading dims {lead}"
        ) from None
    if batch != lead:
        raise ValueError(f"x0's leading dims {tuple(x0.shape[: x0.dim() - n])} must broadcast to y's leading dims {lead}")
    _check_finite(x0, "x0")
    return x0.expand(lead + domain_shape).clone()


def _norms(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """Euclidean norm over the last ndim dims, one per batch item."""
    return torch.linalg.vector_norm(t, dim=tuple(range(-ndim, 0)))


def _dot(a: torch.Tensor, b: torch.Tensor, ndim: int) -> torch.Tensor:
    """Inner product over the last ndim dims, one per batch item, shaped to broadcast back: (..., 1, ..., 1)."""
    return torch.sum(a * b, dim=tuple(range(-ndim, 0)), keepdim=True)


def _norm_estimate(A) -> float:
    """||A|| by power iteration (a lower bound, relative error about 1e-8 for ray transforms), cached for
    RayTransforms (fixed operators); a ValueError when A is zero (no step size follows from it)."""
    from known_ops import RayTransform

    if isinstance(A, RayTransform):
        norm = _NORM_CACHE.get(A)
        if norm is None:
            norm = operator_norm(A)
            _NORM_CACHE[A] = norm
    else:
        norm = operator_norm(A)
    if norm == 0.0:
        raise _zero_operator_error(A)
    return norm


def _norm_of(A) -> float:
    """||A|| by power iteration times the safety factor 1.01: the norm that sets default step sizes."""
    return _NORM_SAFETY * _norm_estimate(A)


def _zero_operator_error(A) -> ValueError:
    if hasattr(A, "geometry") and hasattr(A, "volume"):
        why = (
            "no ray of the geometry crosses the volume. Check the geometry against the volume: detector size, "
            "spacing and offset, source and detector distances, and the volume's shape, spacing and offset "
            "(all in mm)"
        )
    else:
        why = "it maps every input to 0"
    return ValueError(f"the operator is zero: {why}; there is nothing to reconstruct from (A x = 0 for every x)")


def _raise_if_zero(A) -> None:
    """Raise the zero-operator error when A is zero. Called only where a cheap quantity (row sums, the
    first normal residual) is zero, which a zero operator implies; the test applies A to one random
    vector (A x = 0 for a random x happens only for A = 0), or uses the cached norm of a RayTransform."""
    from known_ops import RayTransform

    cached = _NORM_CACHE.get(A) if isinstance(A, RayTransform) else None
    norm = cached if cached is not None else operator_norm(A, n_iter=1)
    if norm == 0.0:
        raise _zero_operator_error(A)


class _Monitor:
    """Progress bar, callback and history bookkeeping shared by the solvers."""

    def __init__(self, name: str, n_iter: int, callback, progress: bool, record: bool):
        self.callback = callback
        self.record = record or callback is not None
        self.history: dict[str, list[torch.Tensor]] = {}
        self.bar = None
        if progress:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                raise ImportError("progress=True needs the tqdm package (pip install tqdm)") from None
            self.bar = tqdm(total=n_iter, desc=name)

    def start(self, info: dict[str, torch.Tensor]) -> None:
        if self.record:
            for key, value in info.items():
                self.history[key] = [value.detach()]

    def step(self, iteration: int, x: torch.Tensor, info_fn: Callable[[], dict]) -> bool:
        """Record iteration `iteration`; True when the callback asks to stop."""
        stop = False
        if self.record:
            info = info_fn()
            for key, value in info.items():
                self.history.setdefault(key, []).append(value.detach())
            if self.callback is not None:
                stop = self.callback(iteration, x, info) is True
        if self.bar is not None:
            self.bar.update(1)
            if self.record and "residual" in self.history:
                r = self.history["residual"][-1]
                self.bar.set_postfix(residual=f"{float(r.max()):.4g}")
        return stop

    def finish(self) -> dict[str, torch.Tensor]:
        if self.bar is not None:
            self.bar.close()
        return {key: torch.stack(values) for key, values in self.history.items()}


def _result(x: torch.Tensor, monitor: _Monitor, return_history: bool):
    history = monitor.finish()
    return (x, history) if return_history else x


# --- Landweber -----------------------------------------------------------------------------------


def landweber(
    A,
    y: torch.Tensor,
    n_iter: int = 100,
    x0: torch.Tensor | None = None,
    step: float | None = None,
    nonneg: bool = False,
    callback=None,
    progress: bool = False,
    return_history: bool = False,
):
    """Landweber iteration (projected gradient descent on ``1/2 ||A x - y||^2``).

    ``x <- x + step * A.T (y - A x)``, then ``x <- max(x, 0)`` when ``nonneg``.

    ``step`` defaults to ``1 / ||A||^2`` with ``||A||`` from :func:`known_ops.linalg.operator_norm`
    times a safety factor 1.01 (cached per RayTransform); it must lie in ``(0, 2 / ||A||^2)``
    for convergence, and then the residual ``||y - A x||`` (and with ``nonneg`` the objective)
    does not increase. A given ``step`` is checked: ``step >= 2 / n^2`` raises a ValueError, with
    ``n`` the power-iteration estimate of ``||A||`` (a lower bound, so that every rejected step is
    outside the interval; steps between ``2 / ||A||^2`` and ``2 / n^2``, a relative window about
    twice the estimate's relative error, 1e-8 for ray transforms, pass). A zero operator (no ray
    through the volume) raises a ValueError. History / info: ``residual`` = ``||y - A x||`` per
    batch item.
    """
    domain_shape, range_shape = _check_operator(A)
    _check_data(y, range_shape, A)
    n_iter = _check_n_iter(n_iter)
    nonneg = _check_flag(nonneg, "nonneg")
    _check_flag(progress, "progress")
    _check_flag(return_history, "return_history")
    _check_callback(callback)
    norm = _norm_estimate(A)  # raises for a zero operator
    if step is None:
        step = 1.0 / (_NORM_SAFETY * norm) ** 2
    else:
        step = _check_real(step, "step")
        # norm is a lower bound of ||A||, so 2 / norm^2 >= 2 / ||A||^2: a step rejected here certainly
        # lies outside the convergence interval (0, 2 / ||A||^2); no valid step is rejected.
        bound = 2.0 / norm**2
        if step >= bound:
            raise ValueError(
                f"step must be below 2 / ||A||^2 = {bound:.6g} for the Landweber iteration to converge "
                f"(||A|| = {norm:.6g} by power iteration; the default step is 1 / (1.01 ||A||)^2 = "
                f"{1.0 / (_NORM_SAFETY * norm) ** 2:.6g}), got {step:g}"
            )
    rdim = len(range_shape)
    x = _start(x0, y, domain_shape, rdim)
    if nonneg:
        x = torch.clamp(x, min=0)

    monitor = _Monitor("landweber", n_iter, callback, progress, return_history)
    r = y - A(x)
    monitor.start({"residual": _norms(r, rdim)})
    for k in range(1, n_iter + 1):
        x = steps.landweber_update(A, x, r, step, nonneg)
        r = y - A(x)
        if monitor.step(k, x, lambda: {"residual": _norms(r, rdim)}):
            break
    return _result(x, monitor, return_history)


# --- SIRT ----------------------------------------------------------------------------------------


def sirt(
    A,
    y: torch.Tensor,
    n_iter: int = 100,
    x0: torch.Tensor | None = None,
    nonneg: bool = False,
    relaxation: float = 1.0,
    callback=None,
    progress: bool = False,
    return_history: bool = False,
):
    """SIRT as in ASTRA: ``x <- x + relaxation * C A.T R (y - A x)``, then ``max(x, 0)`` when ``nonneg``.

    ``R = 1 / (A 1)`` (inverse row sums, per ray) and ``C = 1 / (A.T 1)`` (inverse column sums,
    per pixel), computed once; both are set to 0 where the sum is zero (rays that miss the volume,
    pixels that no ray sees; in practice below 1e-6 of the largest sum). ``relaxation`` in
    ``(0, 2)``. The R-weighted residual ``||y - A x||_R = sqrt(sum R (y - A x)^2)`` does not
    increase (SIRT is Landweber on ``R^1/2 A C^1/2``, whose norm is at most 1 for a non-negative
    ``A``). History / info: ``residual`` = ``||y - A x||`` and ``weighted_residual`` per batch item.
    All row sums zero (for a ray transform: no ray crosses the volume, ``A = 0``) raises a ValueError.
    """
    domain_shape, range_shape = _check_operator(A)
    _check_data(y, range_shape, A)
    n_iter = _check_n_iter(n_iter)
    nonneg = _check_flag(nonneg, "nonneg")
    relaxation = _check_real(relaxation, "relaxation", high=2.0)
    _check_flag(progress, "progress")
    _check_flag(return_history, "return_history")
    _check_callback(callback)
    rdim = len(range_shape)
    x = _start(x0, y, domain_shape, rdim)
    if nonneg:
        x = torch.clamp(x, min=0)
    R, C = steps.sirt_preconditioners(A, y.dtype, y.device, relaxation)
    if not torch.compiler.is_compiling() and not bool(torch.any(R != 0)):
        _raise_if_zero(A)  # all row sums zero: for a ray transform, no ray crosses the volume

    def info(r):
        return {"residual": _norms(r, rdim), "weighted_residual": torch.sqrt(torch.sum(R * r * r, dim=tuple(range(-rdim, 0))))}

    monitor = _Monitor("sirt", n_iter, callback, progress, return_history)
    r = y - A(x)
    monitor.start(info(r))
    for k in range(1, n_iter + 1):
        x = steps.sirt_update(A, x, r, R, C, nonneg)
        r = y - A(x)
        if monitor.step(k, x, lambda: info(r)):
            break
    return _result(x, monitor, return_history)


# --- CGLS ----------------------------------------------------------------------------------------


def _safe_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a / b, and 0 where b == 0 (a converged or zero batch item)."""
    nz = b != 0
    return torch.where(nz, a / torch.where(nz, b, torch.ones_like(b)), torch.zeros_like(a))


def cgls(
    A,
    y: torch.Tensor,
    n_iter: int = 20,
    x0: torch.Tensor | None = None,
    callback=None,
    progress: bool = False,
    return_history: bool = False,
):
    """CGLS: conjugate gradients on the normal equations ``A.T A x = A.T y`` (Hestenes and Stiefel 1952).

    With ``r = y - A x``, ``s = A.T r``, ``p = s``, ``gamma = ||s||^2``, each iteration does
    ``q = A p``, ``alpha = gamma / ||q||^2``, ``x += alpha p``, ``r -= alpha q``, ``s = A.T r``,
    ``beta = ||s||^2 / gamma``, ``p = s + beta p``. The scalars are per batch item, so the items
    of a batch do not couple; an item whose ``gamma`` or ``||q||`` is exactly zero stops moving
    (zero data from the zero start gives zeros; a zero operator, no ray through the volume, raises
    a ValueError).
    ``||y - A x||`` does not increase (CGLS minimises it over growing Krylov subspaces) while
    ``||A.T (y - A x)||`` need not decrease monotonically. CGLS is semi-convergent on noisy data:
    the number of iterations is the regulariser. History / info: ``residual`` = ``||y - A x||``
    (updated recursively) and ``normal_residual`` = ``||A.T (y - A x)||`` per batch item.
    """
    domain_shape, range_shape = _check_operator(A)
    _check_data(y, range_shape, A)
    n_iter = _check_n_iter(n_iter)
    _check_flag(progress, "progress")
    _check_flag(return_history, "return_history")
    _check_callback(callback)
    rdim, ddim = len(range_shape), len(domain_shape)
    x = _start(x0, y, domain_shape, rdim)

    monitor = _Monitor("cgls", n_iter, callback, progress, return_history)
    r = y - A(x)
    s = A.T(r)
    p = s
    gamma = _dot(s, s, ddim)
    if not torch.compiler.is_compiling() and not bool(torch.any(gamma != 0)):
        _raise_if_zero(A)  # A.T (y - A x0) = 0 for every item: zero data, or a zero operator

    def info():
        return {"residual": _norms(r, rdim), "normal_residual": torch.sqrt(gamma).reshape(gamma.shape[: gamma.dim() - ddim])}

    monitor.start(info())
    for k in range(1, n_iter + 1):
        q = A(p)
        alpha = _safe_div(gamma, _dot(q, q, rdim).reshape(gamma.shape))
        x = x + alpha * p
        r = r - alpha.reshape(alpha.shape[: alpha.dim() - ddim] + (1,) * rdim) * q
        s = A.T(r)
        gamma_new = _dot(s, s, ddim)
        beta = _safe_div(gamma_new, gamma)
        p = s + beta * p
        gamma = gamma_new
        if monitor.step(k, x, info):
            break
    return _result(x, monitor, return_history)


# --- TV by PDHG ----------------------------------------------------------------------------------


def total_variation(x: torch.Tensor, ndim: int = 2, spacing=1.0) -> torch.Tensor:
    """Isotropic total variation ``sum_pixels |grad x|_2`` over the last ``ndim`` dims, per batch item.

    ``grad`` is the forward difference divided by the spacing (value per mm), zero across the
    far edge of each axis; ``spacing`` is a scalar or one value per axis (array order).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if ndim not in (1, 2, 3) or isinstance(ndim, bool):
        raise ValueError(f"ndim must be 1, 2 or 3, got {ndim!r}")
    if x.dim() < ndim:
        raise ValueError(f"x must have at least ndim={ndim} dims, got shape {tuple(x.shape)}")
    spacing = _spacing_tuple(spacing, ndim)
    g = FiniteDifferenceGradient(tuple(x.shape[x.dim() - ndim:]), spacing)(x)
    mag = _magnitude(g, x.dim() - ndim)
    return torch.sum(mag, dim=tuple(range(-ndim, 0)))


def _magnitude(g: torch.Tensor, dim: int, keepdim: bool = False) -> torch.Tensor:
    """Euclidean norm over the gradient-component dim (sum of squares: torch's vector_norm over an
    outer dim is slow on the CPU)."""
    return torch.sqrt(torch.sum(g * g, dim=dim, keepdim=keepdim))


def _spacing_tuple(spacing, ndim: int) -> tuple[float, ...]:
    if isinstance(spacing, numbers.Real) and not isinstance(spacing, bool):
        return (_check_real(spacing, "spacing"),) * ndim
    items = list(spacing)
    if len(items) != ndim:
        raise ValueError(f"spacing must be a number or {ndim} numbers (one per axis), got {len(items)}")
    return tuple(_check_real(s, f"spacing[{k}]") for k, s in enumerate(items))


def _gradient_column_sums(shape: tuple[int, ...], spacing: tuple[float, ...], dtype, device) -> torch.Tensor:
    """sum_i |grad_ij| per pixel j: along each axis 1/h for each forward difference that pixel j enters."""
    out = torch.zeros(shape, dtype=dtype, device=device)
    ndim = len(shape)
    for d, (n, h) in enumerate(zip(shape, spacing)):
        idx = torch.arange(n, device=device)
        count = ((idx < n - 1).to(dtype) + (idx > 0).to(dtype)) / h
        out = out + count.reshape((n,) + (1,) * (ndim - 1 - d))
    return out


def tv_pdhg(
    A,
    y: torch.Tensor,
    lam: float,
    n_iter: int = 500,
    x0: torch.Tensor | None = None,
    nonneg: bool = False,
    tau: float | None = None,
    sigma: float | None = None,
    precondition: bool = False,
    callback=None,
    progress: bool = False,
    return_history: bool = False,
):
    """TV-regularised least squares ``min_x 1/2 ||A x - y||^2 + lam TV(x)`` (``x >= 0`` with ``nonneg``),
    by the primal-dual hybrid gradient method of Chambolle and Pock (2011, algorithm 1, theta = 1).

    ``TV(x) = sum_pixels |grad x|_2`` (isotropic; forward differences divided by the voxel spacing of
    ``A.volume``, zero across the far edges; 2D or 3D after the volume). With ``K = [A; grad]``,
    dual variables ``p`` (projections) and ``q`` (gradients), and ``xbar = x``:

        p <- (p + sigma (A xbar - y)) / (1 + sigma)
        q <- project_{|q_i| <= lam}(q + sigma grad xbar)
        x_new <- proj(x - tau (A.T p + grad.T q))       (proj: max(., 0) with nonneg, else identity)
        xbar <- 2 x_new - x;  x <- x_new

    Step sizes: ``sigma tau ||K||^2 < 1`` with ``||K||^2 <= ||A||^2 + ||grad||^2`` and
    ``||grad||^2 < 4 sum_d 1 / h_d^2`` (``h_d`` the spacing per axis), ``||A||`` by power iteration
    times 1.01. Defaults ``tau = sigma = 1 / L`` with ``L`` that bound; giving one of them sets the
    other to ``1 / (L^2 tau)``; giving both is checked against the bound.

    ``precondition=True``: diagonal preconditioning (Pock and Chambolle 2011, ICCV, alpha = 1)
    instead of scalar steps: ``sigma`` is ``1 / (A 1)`` per ray (1 where the sum is 0) and
    ``min_d h_d / 2`` for the gradients (one step for all components of a pixel, so the dual
    projection stays Euclidean), ``tau`` is ``1 / (A.T 1 + |grad|.T 1)`` per pixel; no
    operator norm is needed, and on CT problems it converges much faster than the scalar steps
    (see docs/reconstruction.md). ``tau`` and ``sigma`` must then be None. A zero operator (no ray
    of the geometry crosses the volume) raises a ValueError with either kind of step.

    History / info per batch item: ``residual`` = ``||A x - y||``, ``objective`` =
    ``1/2 ||A x - y||^2 + lam TV(x)``, and ``gap``: the primal-dual gap restricted to the box
    ``|x_j| <= rho`` (``0 <= x_j <= rho`` with nonneg), ``rho = max |x|`` of the current iterate:
    ``objective + 1/2 ||p||^2 + <p, y> + rho ||A.T p + grad.T q||_1`` (nonneg:
    ``- rho sum min(0, A.T p + grad.T q)``). It is >= 0 and bounds ``objective(x) - min`` of the
    objective over that box; it tends to 0 (not monotonically) as the iteration converges.
    """
    domain_shape, range_shape = _check_operator(A)
    _check_data(y, range_shape, A)
    lam = _check_real(lam, "lam", strict=False)
    n_iter = _check_n_iter(n_iter)
    nonneg = _check_flag(nonneg, "nonneg")
    precondition = _check_flag(precondition, "precondition")
    _check_flag(progress, "progress")
    _check_flag(return_history, "return_history")
    _check_callback(callback)
    ndim = len(domain_shape)
    volume = getattr(A, "volume", None)
    spacing = tuple(float(s) for s in volume.spacing) if volume is not None else (1.0,) * ndim
    if tau is not None:
        tau = _check_real(tau, "tau")
    if sigma is not None:
        sigma = _check_real(sigma, "sigma")
    rdim = len(range_shape)
    x = _start(x0, y, domain_shape, rdim)
    if nonneg:
        x = torch.clamp(x, min=0)

    if precondition:
        if tau is not None or sigma is not None:
            raise ValueError("tau and sigma must be None with precondition=True (the steps are then per ray and per pixel)")
        with torch.no_grad():
            rows = A(torch.ones(domain_shape, dtype=y.dtype, device=y.device))
            if not torch.compiler.is_compiling() and not bool(torch.any(rows != 0)):
                _raise_if_zero(A)  # all row sums zero: for a ray transform, no ray crosses the volume
            # Rays that miss the volume (zero rows of K) take any step: 1, so that their dual
            # values still converge (to -y), which the gap needs.
            sigma_p = torch.where(rows > 0, 1.0 / torch.where(rows > 0, rows, torch.ones_like(rows)), torch.ones_like(rows))
            # One step for all components of a pixel's gradient, so that the prox of the dual ball
            # constraint stays the Euclidean projection: 1 / (largest row sum 2 / h_d).
            sigma_q = min(spacing) / 2
            cols = A.T(torch.ones(range_shape, dtype=y.dtype, device=y.device))
            tau_x = 1.0 / (cols + _gradient_column_sums(domain_shape, spacing, y.dtype, y.device))
    else:
        L2 = _norm_of(A) ** 2 + 4.0 * sum(1.0 / h**2 for h in spacing)  # bound on ||K||^2
        if tau is None and sigma is None:
            tau = sigma = 1.0 / math.sqrt(L2)
        elif tau is None or sigma is None:
            given, value = ("sigma", sigma) if tau is None else ("tau", tau)
            other = 1.0 / (L2 * value)
            if not (math.isfinite(other) and other > 0):
                raise ValueError(
                    f"{given} = {value:g} is out of range: the other step, 1 / (||K||^2 {given}) with "
                    f"||K||^2 <= {L2:.6g}, is {other:g}, not a finite positive number"
                )
            tau, sigma = (other, sigma) if tau is None else (tau, other)
        elif sigma * tau * L2 > 1.0 + 1e-12:
            raise ValueError(
                f"tau and sigma must satisfy tau * sigma * ||K||^2 <= 1 (||K||^2 <= {L2:.6g}), "
                f"got tau * sigma = {tau * sigma:.6g}"
            )
        sigma_p = sigma_q = sigma
        tau_x = tau

    dims_d = tuple(range(-ndim, 0))
    dims_r = tuple(range(-rdim, 0))
    gdim = x.dim() - ndim  # the gradient-component dim in grad(x)
    G = FiniteDifferenceGradient(domain_shape, spacing)
    Ax = A(x)
    Gx = G(x)
    Ax_bar, Gx_bar = Ax, Gx
    p = torch.zeros_like(y.expand(Ax.shape))
    q = torch.zeros_like(Gx)

    def objective(Ax_, Gx_):
        res = Ax_ - y
        tv = torch.sum(_magnitude(Gx_, gdim), dim=dims_d)
        return res, 0.5 * torch.sum(res * res, dim=dims_r) + lam * tv

    def info(x_, Ax_, Gx_, KTpq):
        res, obj = objective(Ax_, Gx_)
        rho = torch.amax(torch.abs(x_), dim=dims_d)
        if nonneg:
            lin = -torch.sum(torch.clamp(KTpq, max=0), dim=dims_d)
        else:
            lin = torch.sum(torch.abs(KTpq), dim=dims_d)
        dual = -(0.5 * torch.sum(p * p, dim=dims_r) + torch.sum(p * y, dim=dims_r))
        gap = obj - dual + rho * lin
        return {"residual": _norms(res, rdim), "objective": obj, "gap": gap}

    monitor = _Monitor("tv_pdhg", n_iter, callback, progress, return_history)
    if monitor.record:
        res0, obj0 = objective(Ax, Gx)
        # At p = q = 0 the restricted dual value is 0, so the gap is the objective itself.
        monitor.start({"residual": _norms(res0, rdim), "objective": obj0, "gap": obj0})
    for k in range(1, n_iter + 1):
        p = steps.pdhg_dual_data_step(p, Ax_bar, y, sigma_p)
        q = steps.pdhg_dual_tv_step(q, Gx_bar, sigma_q, lam, gdim)
        KTpq = A.T(p) + G.T(q)
        x_new = steps.pdhg_primal_step(x, KTpq, tau_x, nonneg)
        Ax_new = A(x_new)
        Gx_new = G(x_new)
        # Linearity: A xbar = 2 A x_new - A x, so each iteration needs one A and one A.T.
        Ax_bar, Gx_bar = 2.0 * Ax_new - Ax, 2.0 * Gx_new - Gx
        x, Ax, Gx = x_new, Ax_new, Gx_new
        if monitor.step(k, x, lambda: info(x, Ax, Gx, KTpq)):
            break
    return _result(x, monitor, return_history)
