"""Ellipse phantoms: the parameter record, supersampled rasterisation and exact line integrals.

An ellipse is given in physical units (mm) in the xy-plane of ``known_ops``
(x along columns, y along rows, row index increasing with y; see
``docs/conventions.md``). Its indicator function is

    f(p) = intensity   if  (e1 . (p - c) / a)^2 + (e2 . (p - c) / b)^2 <= 1,

with centre ``c = (x0, y0)``, ``e1 = (cos t, sin t)``, ``e2 = (-sin t, cos t)``
and ``t = theta_deg`` (counter-clockwise from +x). Phantoms are sums of such
ellipses. ``docs/phantoms.md`` has the tables, orientation and scaling.
"""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple, Sequence

import numpy as np
import torch

from known_ops import Volume

__all__ = ["Ellipse", "ellipse_image", "ellipse_line_integrals"]

# Rays handled at once by ellipse_line_integrals (its temporaries are rays x ellipses float64 arrays).
_RAYS_PER_CHUNK = 1 << 16


class Ellipse(NamedTuple):
    """One ellipse: ``intensity``, semi-axis ``a`` along the direction ``theta_deg``, semi-axis ``b``
    perpendicular to it, centre ``(x0, y0)``, ``theta_deg`` in degrees counter-clockwise from +x."""

    intensity: float
    a: float
    b: float
    x0: float
    y0: float
    theta_deg: float

    def scaled(self, scale: float) -> "Ellipse":
        """The same ellipse with all lengths multiplied by ``scale`` (e.g. unit square -> mm)."""
        return self._replace(a=self.a * scale, b=self.b * scale, x0=self.x0 * scale, y0=self.y0 * scale)


def _ellipse_table(ellipses) -> np.ndarray:
    """(n, 6) float64 array from a sequence of Ellipse (or 6-sequences) or an (n, 6) array/tensor; validated."""
    if isinstance(ellipses, torch.Tensor):
        ellipses = ellipses.detach().cpu().numpy()
    try:
        table = np.array(ellipses, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            "ellipses must be a sequence of Ellipse(intensity, a, b, x0, y0, theta_deg) or an (n, 6) array"
        ) from None
    if table.ndim != 2 or table.shape[1] != 6:
        raise ValueError(f"ellipses must have shape (n, 6) (intensity, a, b, x0, y0, theta_deg), got {table.shape}")
    if not np.all(np.isfinite(table)):
        raise ValueError("ellipses must contain only finite values")
    if np.any(table[:, 1:3] <= 0):
        raise ValueError("ellipses: the semi-axes a and b must be positive")
    return table


def _check_rays(origins, directions, dim: int):
    """float64 tensors (origins, directions on the origins' device, |directions|), checked: shapes
    (..., dim), finite values, non-zero directions."""
    origins = torch.as_tensor(origins, dtype=torch.float64)
    directions = torch.as_tensor(directions, dtype=torch.float64, device=origins.device)
    if origins.shape[-1:] != (dim,) or directions.shape != origins.shape:
        raise ValueError(
            f"origins and directions must both have shape (..., {dim}), got {tuple(origins.shape)} and "
            f"{tuple(directions.shape)}"
        )
    if not bool(torch.isfinite(origins).all() and torch.isfinite(directions).all()):
        raise ValueError("origins and directions must be finite")
    length = torch.linalg.vector_norm(directions, dim=-1)
    if bool((length == 0).any()):
        raise ValueError("directions must be non-zero vectors")
    return origins, directions, length


def _check_dtype(dtype) -> None:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")


def _supersample_count(value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"supersample must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"supersample must be a positive integer, got {value}")
    return int(value)


def _pixel_range(centres: np.ndarray, spacing: float, lo: float, hi: float) -> tuple[int, int]:
    """Indices [first, last) of the pixels whose extent meets [lo, hi] (pixel centres ascending)."""
    first = int(np.searchsorted(centres + spacing / 2, lo, side="left"))
    last = int(np.searchsorted(centres - spacing / 2, hi, side="right"))
    return first, last


def ellipse_image(
    volume: Volume,
    ellipses,
    supersample: int = 4,
    dtype: torch.dtype = torch.float32,
    device=None,
) -> torch.Tensor:
    """Rasterise ``ellipses`` (mm, see the module docstring) on ``volume``: a ``volume.shape`` tensor.

    Each pixel holds the average of ``supersample**2`` point samples on a regular
    sub-grid (the centres of the ``supersample x supersample`` sub-cells), i.e. an
    approximation of the pixel's mean value.

    Instead of testing every sample, each row of samples is cut with the ellipse
    analytically: at height ``y`` the ellipse is the interval of ``x`` solving the
    quadratic ``A dx^2 + B dx + C <= 0`` (dx = x - x0, dy = y - y0) with
    ``A = cos^2/a^2 + sin^2/b^2``, ``B = 2 dy sin cos (1/a^2 - 1/b^2)``,
    ``C = dy^2 (sin^2/a^2 + cos^2/b^2) - 1``, and the samples inside are counted per
    pixel with integer arithmetic. Only rows and columns of the ellipse's bounding
    box are visited.
    """
    if not isinstance(volume, Volume):
        raise TypeError(f"volume must be a known_ops.Volume, got {type(volume).__name__}")
    if volume.ndim != 2:
        raise ValueError(f"volume must be 2D (ny, nx) for an ellipse phantom, got shape {volume.shape}")
    table = _ellipse_table(ellipses)
    n_sub = _supersample_count(supersample)
    _check_dtype(dtype)
    (ny, nx), (sy, sx) = volume.shape, volume.spacing
    ys, xs, sub, grid = _sample_grid(volume, n_sub)
    image = torch.zeros((ny, nx), dtype=torch.float64, device=device)
    for intensity, a, b, x0, y0, theta_deg in table:
        if intensity == 0:
            continue
        cos_t, sin_t = math.cos(math.radians(theta_deg)), math.sin(math.radians(theta_deg))
        # Half-widths of the axis-aligned bounding box of the rotated ellipse.
        half_x, half_y = math.hypot(a * cos_t, b * sin_t), math.hypot(a * sin_t, b * cos_t)
        i0, i1 = _pixel_range(ys, sy, y0 - half_y, y0 + half_y)
        j0, j1 = _pixel_range(xs, sx, x0 - half_x, x0 + half_x)
        if i0 >= i1 or j0 >= j1:
            continue
        dy = torch.from_numpy((ys[i0:i1, None] + sub[None, :] * sy - y0).reshape(-1)).to(device)
        quad_a = cos_t**2 / a**2 + sin_t**2 / b**2
        quad_b = 2.0 * dy * (sin_t * cos_t * (1.0 / a**2 - 1.0 / b**2))
        quad_c = dy.square() * (sin_t**2 / a**2 + cos_t**2 / b**2) - 1.0
        discriminant = quad_b.square() - 4.0 * quad_a * quad_c
        hit = discriminant >= 0
        root = torch.sqrt(torch.clamp(discriminant, min=0.0))
        x_left = x0 + (-quad_b - root) / (2.0 * quad_a)
        x_right = x0 + (-quad_b + root) / (2.0 * quad_a)
        _add_intervals(image, (i0, i1, j0, j1), x_left[:, None], x_right[:, None], hit[:, None], grid, intensity)
    return image.to(dtype)


def _sample_grid(volume: Volume, n_sub: int):
    """(ys, xs, sub, grid) of a 2D volume's supersampling: pixel centres along y and x, the sub-sample
    offsets ``((k + 1/2) / S - 1/2)`` (times the spacing) from a centre, k = 0..S-1, and the fine grid
    ``(x_first, step, n_fine, S)`` that the samples form along x (see :func:`_add_intervals`)."""
    sx, nx = volume.spacing[1], volume.shape[1]
    ys, xs = volume.coordinates(0), volume.coordinates(1)
    sub = (np.arange(n_sub) + 0.5) / n_sub - 0.5
    return ys, xs, sub, (xs[0] + sub[0] * sx, sx / n_sub, float(nx * n_sub), n_sub)


def _add_intervals(image, box, x_left, x_right, hit, grid, intensity) -> None:
    """Add ``intensity`` times the fraction of each pixel's samples that lie inside the intervals
    ``[x_left, x_right]`` of their sample row, to ``image[i0:i1, j0:j1]`` (``box = (i0, i1, j0, j1)``).

    ``x_left``, ``x_right``, ``hit``: ``(rows, k)`` tensors, ``k`` disjoint intervals per sample row (the
    ``(i1 - i0) * n_sub`` rows of the box, in order), ``hit`` false where an interval is empty; ``grid =
    (x_first, step, n_fine, n_sub)``: along x the samples form one fine grid, ``x_m = x_first + m * step``,
    sample k of pixel j being ``m = j n_sub + k``, ``n_fine = nx n_sub``. Shared by the ellipse and polygon
    rasterisers."""
    i0, i1, j0, j1 = box
    x_first, step, n_fine, n_sub = grid
    # Fine-grid indices of the first and last sample inside, per interval (empty where no hit); clamped to
    # the grid (plus one) so that the int32 conversion cannot overflow.
    first = torch.clamp(torch.ceil((x_left - x_first) / step), -1.0, n_fine).to(torch.int32)
    last = torch.clamp(torch.floor((x_right - x_first) / step), -1.0, n_fine).to(torch.int32)
    last = torch.where(hit, last, first - 1)
    pixel_start = torch.arange(j0, j1, device=image.device, dtype=torch.int32) * n_sub  # first sample of pixel j
    lo = torch.maximum(first[:, :, None], pixel_start[None, None, :])
    hi = torch.minimum(last[:, :, None], pixel_start[None, None, :] + (n_sub - 1))
    counts = torch.clamp(hi - lo + 1, min=0).sum(dim=1).reshape(i1 - i0, n_sub, j1 - j0).sum(dim=1)
    image[i0:i1, j0:j1] += counts.to(torch.float64) * (intensity / n_sub**2)


def ellipse_line_integrals(origins, directions, ellipses) -> torch.Tensor:
    """Exact line integrals of a sum of ellipses along the full lines ``origin + t * direction``.

    ``origins`` and ``directions`` are ``(..., 2)`` tensors (x, y) in mm (directions
    need not be normalised); ``ellipses`` as for :func:`ellipse_image`, in mm. Returns
    a float64 tensor of shape ``origins.shape[:-1]`` (value x mm).

    Each ellipse contributes ``intensity`` times its chord length. The affine map
    ``p -> M (p - c)``, ``M = diag(1/a, 1/b) R(theta)^T``, takes the ellipse to the
    unit disc and the line to ``q' + t d'`` with ``q' = M (o - c)``, ``d' = M d``; the
    line meets the disc for a parameter interval of length
    ``2 sqrt(|d'|^2 - (q' x d')^2) / |d'|^2``, and the physical chord is that times ``|d|``.
    Since ``det M = 1/(a b)``, ``q' x d' = (o x d - c x d) / (a b)``, and
    ``|d'|^2 = d^T Q d`` with ``Q = M^T M = R diag(1/a^2, 1/b^2) R^T``, so all ellipses
    are handled at once with two small matrix products.
    """
    origins, directions, direction_len = _check_rays(origins, directions, 2)
    table = torch.from_numpy(_ellipse_table(ellipses)).to(origins.device)
    intensity, a, b, x0, y0, theta = table.unbind(1)
    cos_t, sin_t = torch.cos(torch.deg2rad(theta)), torch.sin(torch.deg2rad(theta))
    # d^T Q d = [dx^2, 2 dx dy, dy^2] . [Qxx, Qxy, Qyy] per ellipse.
    q_xx = cos_t**2 / a**2 + sin_t**2 / b**2
    q_xy = cos_t * sin_t * (1 / a**2 - 1 / b**2)
    q_yy = sin_t**2 / a**2 + cos_t**2 / b**2
    quadratic = torch.stack([q_xx, q_xy, q_yy])  # (3, n_ellipses)
    centre_cross = torch.stack([y0, -x0])  # d . (y0, -x0) = -(c x d)
    inverse_area = 1.0 / (a * b)
    shape = origins.shape[:-1]
    origins, directions = origins.reshape(-1, 2), directions.reshape(-1, 2)
    direction_len = direction_len.reshape(-1)
    total = torch.empty(origins.shape[0], dtype=torch.float64, device=origins.device)
    for start in range(0, origins.shape[0], _RAYS_PER_CHUNK):  # bounded memory: rays x ellipses per chunk
        rays = slice(start, start + _RAYS_PER_CHUNK)
        o, d = origins[rays], directions[rays]
        dx, dy = d[:, 0], d[:, 1]
        d_sq = torch.stack([dx * dx, 2 * dx * dy, dy * dy], 1) @ quadratic  # |d'|^2, (rays, ellipses)
        cross = (o[:, 0] * dy - o[:, 1] * dx)[:, None] + d @ centre_cross  # (o - c) x d
        cross *= inverse_area  # q' x d'
        half_interval = torch.sqrt(torch.clamp_(d_sq - cross.square_(), min=0.0)).div_(d_sq)
        total[rays] = 2.0 * direction_len[rays] * (half_interval @ intensity)
    return total.reshape(shape)


def _as_ellipses(rows: Sequence[Sequence[float]]) -> tuple[Ellipse, ...]:
    return tuple(Ellipse(*map(float, row)) for row in rows)
