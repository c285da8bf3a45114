"""Image quality metrics as used by CT benchmarks: PSNR, SSIM and RMSE, batched and differentiable.

Tensors in, tensors out: ``x`` and ``ref`` of shape ``(..., *image)`` (broadcastable), where the
image is the last ``ndim`` dims (``ndim=2``: ``(ny, nx)``, the default; ``ndim=3``: volumes
``(nz, ny, nx)``); the result has one value per batch item, shape ``(...)`` (a 0-dim tensor for
a single image). Computations run in the inputs' dtype on their device and are differentiable.

Conventions (see ``docs/reconstruction.md``):

- ``data_range``: given (a number, or a tensor broadcastable to the batch shape), or by default
  taken **per image from the reference**, ``max(ref) - min(ref)`` over the image dims, as in the
  published CT benchmarks (e.g. LoDoPaB-CT) that call scikit-image with
  ``data_range=gt.max() - gt.min()``.
  A constant reference (range 0) equal to ``x`` gives ``psnr = inf`` and ``ssim = 1``; one that
  ``x`` differs from raises a ``ValueError`` asking for ``data_range``.
- ``ssim`` defaults to scikit-image's ``structural_similarity`` defaults (uniform 7x7 window,
  ``K1=0.01``, ``K2=0.03``, sample covariance, mean over the windows that lie inside the image),
  which is what the CT benchmarks compute. Wang et al. (2004)'s original: ``gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False`` (an 11-tap Gaussian window).
- The values agree with scikit-image's ``peak_signal_noise_ratio``, ``structural_similarity``
  and ``sqrt(mean_squared_error)`` to rounding (tested to 1e-6 in float64).
"""
from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

__all__ = ["psnr", "ssim", "rmse"]


def _check_pair(x, ref, ndim) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(ndim, bool) or ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 (images) or 3 (volumes), got {ndim!r}")
    for name, t in (("x", x), ("ref", ref)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.dtype.is_floating_point:
            raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
        if t.dim() < ndim:
            raise ValueError(f"{name} must have at least ndim={ndim} dims (the image dims), got shape {tuple(t.shape)}")
    if x.device != ref.device:
        raise ValueError(f"x is on {x.device} but ref is on {ref.device}")
    if tuple(x.shape[-ndim:]) != tuple(ref.shape[-ndim:]):
        raise ValueError(
            f"x and ref must have the same image shape (last {ndim} dims), got {tuple(x.shape)} and {tuple(ref.shape)}"
        )
    try:
        x, ref = torch.broadcast_tensors(x, ref)
    except RuntimeError:
        raise ValueError(f"the batch dims of x {tuple(x.shape)} and ref {tuple(ref.shape)} do not broadcast") from None
    dtype = torch.promote_types(x.dtype, ref.dtype)
    return x.to(dtype), ref.to(dtype)


def _data_range(data_range, ref: torch.Tensor, ndim: int) -> torch.Tensor:
    """The data range per batch item, shape (...): given, or max(ref) - min(ref) over the image dims."""
    dims = tuple(range(-ndim, 0))
    batch = ref.shape[: ref.dim() - ndim]
    if data_range is None:
        with torch.no_grad():  # a property of the reference, not something to differentiate
            return torch.amax(ref, dim=dims) - torch.amin(ref, dim=dims)
    if isinstance(data_range, torch.Tensor):
        if data_range.dtype == torch.bool or data_range.dtype.is_complex:
            raise TypeError(f"data_range must be real, got a tensor of {data_range.dtype}")
        value = data_range.to(device=ref.device, dtype=ref.dtype)
        try:
            value = torch.broadcast_to(value, batch)
        except RuntimeError:
            raise ValueError(f"data_range of shape {tuple(value.shape)} does not broadcast to the batch shape {tuple(batch)}") from None
        if not torch.compiler.is_compiling() and bool(torch.any(~(value > 0)) | torch.any(~torch.isfinite(value))):
            raise ValueError("data_range must be positive and finite")
        return value
    if isinstance(data_range, bool) or not isinstance(data_range, numbers.Real):
        raise TypeError(f"data_range must be a positive number, a tensor or None, got {data_range!r}")
    if not (math.isfinite(float(data_range)) and data_range > 0):
        raise ValueError(f"data_range must be positive and finite, got {data_range}")
    return torch.full(batch, float(data_range), dtype=ref.dtype, device=ref.device)


def _constant_references(x: torch.Tensor, ref: torch.Tensor, dr: torch.Tensor, ndim: int, metric: str):
    """For the default data range: the batch items whose reference is constant (``dr == 0``) and those
    where ``x == ref`` exactly, both of shape (...). Raises ValueError where ``x`` differs from a
    constant reference (the metric then depends only on the data range, which the user must choose)."""
    flat = dr == 0
    same = torch.all(x == ref, dim=tuple(range(-ndim, 0)))
    if not torch.compiler.is_compiling():
        bad = flat & ~same
        if bool(torch.any(bad)):
            where = "the reference is constant"
            if bad.dim():
                items = [tuple(i) if len(i) > 1 else i[0] for i in bad.nonzero().tolist()]
                more = f" and {len(items) - 5} more" if len(items) > 5 else ""
                where = f"the reference of batch item(s) {', '.join(map(str, items[:5]))}{more} is constant"
            raise ValueError(
                f"{metric}: {where} (max(ref) - min(ref) = 0, the default data_range) and x differs from it, so "
                f"the {metric.upper()} is not defined by the image alone; pass data_range (e.g. the range of "
                f"the physical values, as a number or one value per batch item)"
            )
    return flat, same


def _mse(x: torch.Tensor, ref: torch.Tensor, ndim: int) -> torch.Tensor:
    d = x - ref
    return torch.mean(d * d, dim=tuple(range(-ndim, 0)))


def rmse(x: torch.Tensor, ref: torch.Tensor, ndim: int = 2) -> torch.Tensor:
    """Root-mean-square error ``sqrt(mean((x - ref)^2))`` over the image dims, per batch item."""
    x, ref = _check_pair(x, ref, ndim)
    return torch.sqrt(_mse(x, ref, ndim))


def psnr(x: torch.Tensor, ref: torch.Tensor, data_range=None, ndim: int = 2) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range^2 / mean((x - ref)^2))``, per batch item.

    ``data_range`` defaults to ``max(ref) - min(ref)`` per image; ``inf`` where ``x == ref``.
    Equals ``skimage.metrics.peak_signal_noise_ratio(ref, x, data_range=...)`` (note its
    argument order: reference first).

    A constant reference has no default data range (it is 0): where ``x`` equals it the result is
    ``inf`` (as for every data range), where ``x`` differs from it a ``ValueError`` asks for
    ``data_range`` (the PSNR would be ``-inf`` or NaN, a number that depends only on that choice).
    """
    x, ref = _check_pair(x, ref, ndim)
    dr = _data_range(data_range, ref, ndim)
    if data_range is None:
        flat, same = _constant_references(x, ref, dr, ndim, "psnr")
        # Identical images: inf for every positive data range (1 here, instead of 0 / 0). Under
        # torch.compile, where the check cannot raise, x != a constant ref gives NaN.
        dr = torch.where(flat, torch.where(same, torch.ones_like(dr), torch.full_like(dr, math.nan)), dr)
    return 10.0 * torch.log10(dr * dr / _mse(x, ref, ndim))


def _gaussian_taps(sigma: float, radius: int, dtype, device) -> torch.Tensor:
    """scipy.ndimage's Gaussian kernel: exp(-t^2 / (2 sigma^2)) on t = -radius..radius, normalised."""
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (t / sigma) ** 2)
    return (w / w.sum()).to(dtype=dtype, device=device)


def _filter_valid(t: torch.Tensor, taps: torch.Tensor, ndim: int) -> torch.Tensor:
    """Separable correlation with `taps` along each of the last ndim dims, 'valid' region only:
    (N, *shape) -> (N, *(shape - k + 1))."""
    k = taps.numel()
    weight = taps.reshape(1, 1, k)
    for d in range(ndim):
        dim = t.dim() - ndim + d
        moved = t.movedim(dim, -1)
        front = moved.shape[:-1]
        out = F.conv1d(moved.reshape(-1, 1, moved.shape[-1]), weight)
        t = out.reshape(front + (out.shape[-1],)).movedim(-1, dim)
    return t


def ssim(
    x: torch.Tensor,
    ref: torch.Tensor,
    data_range=None,
    ndim: int = 2,
    win_size: int | None = None,
    gaussian_weights: bool = False,
    sigma: float = 1.5,
    K1: float = 0.01,
    K2: float = 0.03,
    use_sample_covariance: bool = True,
) -> torch.Tensor:
    """Mean structural similarity index (Wang et al. 2004) per batch item, scikit-image's conventions.

    Local means, variances and covariance over a sliding window (``win_size``, default 7,
    uniform; with ``gaussian_weights=True`` a Gaussian of std ``sigma`` truncated at
    ``int(3.5 sigma + 0.5)`` pixels, 11 taps for sigma 1.5, and ``win_size`` must then be None or
    that size), ``C1 = (K1 L)^2``, ``C2 = (K2 L)^2`` with ``L = data_range``, covariances
    normalised by ``N - 1`` (``use_sample_covariance=True``, ``N = win_size^ndim``) or ``N``;
    the SSIM map is averaged over the windows that lie entirely inside the image (scikit-image
    computes it everywhere with reflected edges, then crops ``(win_size - 1) / 2`` pixels: the
    same values). 3D volumes (``ndim=3``) use cubic windows.

    Defaults = ``skimage.metrics.structural_similarity(ref, x, data_range=max(ref) - min(ref))``,
    the CT-benchmark convention. Wang et al.'s original: ``gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False``.

    A constant reference has no default data range (it is 0, and ``C1 = C2 = 0`` give 0 / 0): where
    ``x`` equals it the result is 1 (the SSIM of identical images for every data range), where ``x``
    differs from it a ``ValueError`` asks for ``data_range`` (the value then depends on that choice).
    """
    x, ref = _check_pair(x, ref, ndim)
    if not isinstance(gaussian_weights, bool):
        raise TypeError(f"gaussian_weights must be True or False, got {gaussian_weights!r}")
    if not isinstance(use_sample_covariance, bool):
        raise TypeError(f"use_sample_covariance must be True or False, got {use_sample_covariance!r}")
    for name, value in (("K1", K1), ("K2", K2), ("sigma", sigma)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a real number, got {value!r}")
        if not math.isfinite(float(value)) or value < 0 or (name == "sigma" and value == 0):
            raise ValueError(f"{name} must be {'positive' if name == 'sigma' else 'non-negative'} and finite, got {value}")
    if gaussian_weights:
        radius = int(3.5 * sigma + 0.5)
        if win_size is not None and win_size != 2 * radius + 1:
            raise ValueError(
                f"win_size must be None or {2 * radius + 1} with gaussian_weights=True and sigma={sigma} "
                f"(the window is the Gaussian truncated at 3.5 sigma), got {win_size!r}"
            )
        win_size = 2 * radius + 1
    elif win_size is None:
        win_size = 7
    if isinstance(win_size, bool) or not isinstance(win_size, numbers.Integral):
        raise TypeError(f"win_size must be an odd positive integer, got {win_size!r}")
    if win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"win_size must be an odd positive integer, got {win_size}")
    win_size = int(win_size)
    if use_sample_covariance and win_size == 1:
        raise ValueError("win_size must be at least 3 with use_sample_covariance=True")
    image = tuple(x.shape[-ndim:])
    if min(image) < win_size:
        raise ValueError(f"win_size {win_size} exceeds the image shape {image}; pass a smaller odd win_size")

    dr = _data_range(data_range, ref, ndim)
    flat = None
    if data_range is None:
        flat, same = _constant_references(x, ref, dr, ndim, "ssim")
        # Identical images have SSIM 1 for every positive data range: compute those items with range 1
        # (not 0, whose constants C1 = C2 = 0 give 0 / 0) and set them to exactly 1 below.
        dr = torch.where(flat, torch.ones_like(dr), dr)
    batch = x.shape[: x.dim() - ndim]
    if gaussian_weights:
        taps = _gaussian_taps(float(sigma), win_size // 2, x.dtype, x.device)
    else:
        taps = torch.full((win_size,), 1.0 / win_size, dtype=x.dtype, device=x.device)
    # Filter the five local moments of the whole batch together: (5 * B, *image).
    a = x.reshape((-1,) + image)
    b = ref.reshape((-1,) + image)
    n = a.shape[0]
    moments = _filter_valid(torch.cat([a, b, a * a, b * b, a * b], dim=0), taps, ndim)
    ux, uy, uxx, uyy, uxy = torch.split(moments, n, dim=0)
    npix = win_size**ndim
    cov_norm = npix / (npix - 1) if use_sample_covariance else 1.0
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    L = dr.reshape((n,) + (1,) * ndim)
    C1 = (K1 * L) ** 2
    C2 = (K2 * L) ** 2
    s = ((2 * ux * uy + C1) * (2 * vxy + C2)) / ((ux * ux + uy * uy + C1) * (vx + vy + C2))
    value = torch.mean(s, dim=tuple(range(-ndim, 0))).reshape(batch)
    if flat is not None:
        # Under torch.compile, where the check cannot raise, x != a constant ref gives NaN.
        value = torch.where(flat, torch.where(same, torch.ones_like(value), torch.full_like(value, math.nan)), value)
    return value
