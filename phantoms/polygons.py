"""Polygon phantoms: shapes outside the ellipse laws (rectangles, thin lines, stars), rasterised and
exactly projected.

A polygon is given in physical units (mm) in the xy-plane of ``known_ops`` (x along columns, y along
rows, row index increasing with y; see ``docs/conventions.md``) by its vertices in order (either
orientation). It must be simple (no two edges cross); its indicator function times ``intensity`` is
the phantom, and phantoms are sums of such polygons (and of ellipses, ``phantoms.ellipses``).
Straight edges at known positions make these phantoms the ground truth for edge-position measures,
and their corners and thin parts lie outside the law of the random ellipses used for training.
``docs/phantoms.md`` ("Polygons") has the details.
"""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np
import torch

from known_ops import Volume

from .ellipses import _add_intervals, _check_dtype, _check_rays, _pixel_range, _sample_grid, _supersample_count

__all__ = ["Polygon", "rectangle", "star", "polygon_image", "polygon_line_integrals"]

# Rays handled at once by polygon_line_integrals (its temporaries are rays x vertices float64 arrays).
_RAYS_PER_CHUNK = 1 << 15
# Edges checked at once against all others for simplicity (temporaries: chunk x edges arrays).
_EDGES_PER_CHUNK = 256


class Polygon(NamedTuple):
    """One polygon: ``intensity`` inside the closed path through ``vertices`` ((x, y) pairs in mm, in
    order, either orientation; the last vertex connects back to the first)."""

    intensity: float
    vertices: tuple[tuple[float, float], ...]

    def scaled(self, scale: float) -> "Polygon":
        """The same polygon with all lengths multiplied by ``scale`` (about the origin)."""
        return self._replace(vertices=tuple((x * scale, y * scale) for x, y in self.vertices))


def _real(value, name: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or (positive and value <= 0):
        raise ValueError(f"{name} must be finite{' and positive' if positive else ''}, got {value}")
    return value


def _placed(intensity, points: np.ndarray, x0, y0, theta_deg) -> Polygon:
    """``points`` (n, 2) rotated by ``theta_deg`` counter-clockwise and moved to ``(x0, y0)``."""
    t = math.radians(_real(theta_deg, "theta_deg"))
    rotation = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    moved = points @ rotation.T + np.array([_real(x0, "x0"), _real(y0, "y0")])
    return Polygon(_real(intensity, "intensity"), tuple((float(x), float(y)) for x, y in moved))


def rectangle(intensity: float, width: float, height: float, x0: float = 0.0, y0: float = 0.0,
              theta_deg: float = 0.0) -> Polygon:
    """A rectangle of ``width`` (along the direction ``theta_deg``) by ``height`` mm centred at
    ``(x0, y0)``; ``theta_deg = 0`` gives edges parallel to the axes. A thin line is a rectangle of
    small ``height``."""
    w, h = _real(width, "width", positive=True) / 2, _real(height, "height", positive=True) / 2
    return _placed(intensity, np.array([[-w, -h], [w, -h], [w, h], [-w, h]]), x0, y0, theta_deg)


def star(intensity: float, n_points: int, outer_radius: float, inner_radius: float, x0: float = 0.0,
         y0: float = 0.0, theta_deg: float = 90.0) -> Polygon:
    """A star with ``n_points`` spikes: ``2 n_points`` vertices alternately at ``outer_radius`` and
    ``inner_radius`` mm from ``(x0, y0)``, the first spike at ``theta_deg`` (default: pointing to +y)."""
    if isinstance(n_points, bool) or not isinstance(n_points, numbers.Integral) or n_points < 2:
        raise ValueError(f"n_points must be an integer >= 2, got {n_points!r}")
    outer = _real(outer_radius, "outer_radius", positive=True)
    inner = _real(inner_radius, "inner_radius", positive=True)
    if inner >= outer:
        raise ValueError(f"inner_radius must be smaller than outer_radius, got {inner} >= {outer}")
    k = np.arange(2 * n_points)
    radius = np.where(k % 2 == 0, outer, inner)
    angle = math.pi * k / n_points
    return _placed(intensity, np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1), x0, y0, theta_deg)


def _segments_cross(p: np.ndarray, q: np.ndarray, r: np.ndarray, s: np.ndarray) -> np.ndarray:
    """(m, n) bool: edge i (p[i] -> q[i]) and edge j (r[j] -> s[j]) cross or touch (the caller excludes
    edges that share a vertex). Orientation tests: the ends of each edge are not on one side of the other."""
    def orient(a, b, c):  # sign of (b - a) x (c - a), broadcast over (i, j)
        return np.sign((b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0]))

    pi, qi, pj, qj = p[:, None], q[:, None], r[None, :], s[None, :]
    # Bounding boxes that overlap (needed anyway, and it keeps collinear but disjoint edges apart).
    boxes = np.all((np.minimum(pi, qi) <= np.maximum(pj, qj)) & (np.minimum(pj, qj) <= np.maximum(pi, qi)), axis=-1)
    return boxes & (orient(pi, qi, pj) * orient(pi, qi, qj) <= 0) & (orient(pj, qj, pi) * orient(pj, qj, qi) <= 0)


def _polygon_tables(polygons) -> list[tuple[float, np.ndarray]]:
    """[(intensity, (n, 2) float64 vertices)], validated: finite, at least 3 vertices, non-zero area, simple."""
    if isinstance(polygons, Polygon):
        polygons = [polygons]
    try:
        polygons = list(polygons)
    except TypeError:
        raise TypeError(f"polygons must be a sequence of Polygon(intensity, vertices), got {type(polygons).__name__}") from None
    tables = []
    for index, polygon in enumerate(polygons):
        try:
            intensity, vertices = polygon
            vertices = np.array(vertices, dtype=np.float64)
            intensity = float(intensity)
        except (TypeError, ValueError):
            raise TypeError(f"polygons[{index}] must be a Polygon(intensity, vertices), got {polygon!r}") from None
        if vertices.ndim != 2 or vertices.shape[1] != 2 or vertices.shape[0] < 3:
            raise ValueError(f"polygons[{index}]: vertices must have shape (n >= 3, 2), got {vertices.shape}")
        if not (math.isfinite(intensity) and np.all(np.isfinite(vertices))):
            raise ValueError(f"polygons[{index}]: intensity and vertices must be finite")
        following = np.roll(vertices, -1, axis=0)
        area = 0.5 * float(np.sum(vertices[:, 0] * following[:, 1] - following[:, 0] * vertices[:, 1]))
        if area == 0:
            raise ValueError(f"polygons[{index}]: the polygon has zero area")
        n = len(vertices)
        for first in range(0, n, _EDGES_PER_CHUNK):  # bounded memory: chunk x n pairs of edges
            rows = np.arange(first, min(first + _EDGES_PER_CHUNK, n))
            crossing = _segments_cross(vertices[rows], following[rows], vertices, following)
            # An edge meets itself and shares a vertex with its two neighbours.
            for neighbour in (rows, (rows + 1) % n, (rows - 1) % n):
                crossing[rows - first, neighbour] = False
            if crossing.any():
                i, j = np.argwhere(crossing)[0]
                raise ValueError(f"polygons[{index}] must be simple: its edges {first + i} and {j} cross or touch")
        tables.append((intensity, vertices))
    return tables


def polygon_image(volume: Volume, polygons, supersample: int = 4, dtype: torch.dtype = torch.float32,
                  device=None) -> torch.Tensor:
    """Rasterise ``polygons`` (mm) on ``volume``: a ``volume.shape`` tensor.

    Each pixel holds the average of ``supersample**2`` point samples on the regular sub-grid (the
    centres of the ``supersample x supersample`` sub-cells), as :func:`phantoms.ellipse_image`. Each
    row of samples is cut with the polygon analytically: the edges that cross the row's height
    (half-open in y, so that a vertex on the row counts once) give the x of the crossings, which,
    sorted, bound the inside intervals in pairs; the samples inside are counted per pixel.
    """
    if not isinstance(volume, Volume):
        raise TypeError(f"volume must be a known_ops.Volume, got {type(volume).__name__}")
    if volume.ndim != 2:
        raise ValueError(f"volume must be 2D (ny, nx) for a polygon phantom, got shape {volume.shape}")
    tables = _polygon_tables(polygons)
    n_sub = _supersample_count(supersample)
    _check_dtype(dtype)
    (ny, nx), (sy, sx) = volume.shape, volume.spacing
    ys, xs, sub, grid = _sample_grid(volume, n_sub)
    image = torch.zeros((ny, nx), dtype=torch.float64, device=device)
    for intensity, vertices in tables:
        if intensity == 0:
            continue
        i0, i1 = _pixel_range(ys, sy, vertices[:, 1].min(), vertices[:, 1].max())
        j0, j1 = _pixel_range(xs, sx, vertices[:, 0].min(), vertices[:, 0].max())
        if i0 >= i1 or j0 >= j1:
            continue
        y = torch.from_numpy((ys[i0:i1, None] + sub[None, :] * sy).reshape(-1)).to(device)[:, None]
        start = torch.from_numpy(vertices).to(device)
        end = torch.roll(start, -1, 0)
        y_a, y_b = start[:, 1][None, :], end[:, 1][None, :]
        crosses = (y_a <= y) != (y_b <= y)  # the edge spans the row's height (half-open)
        fraction = (y - y_a) / torch.where(y_b == y_a, torch.ones_like(y_b), y_b - y_a)
        x_cross = start[:, 0][None, :] + fraction * (end[:, 0] - start[:, 0])[None, :]
        x_cross = torch.where(crosses, x_cross, torch.full_like(x_cross, math.inf))
        if x_cross.shape[1] % 2:  # an even number of columns, so that the crossings pair up
            x_cross = torch.cat([x_cross, torch.full_like(x_cross[:, :1], math.inf)], 1)
        x_cross = x_cross.sort(dim=1).values
        x_left, x_right = x_cross[:, 0::2], x_cross[:, 1::2]  # (rows, pairs); unused pairs are (inf, inf)
        _add_intervals(image, (i0, i1, j0, j1), x_left, x_right, torch.isfinite(x_right), grid, intensity)
    return image.to(dtype)


def polygon_line_integrals(origins, directions, polygons) -> torch.Tensor:
    """Exact line integrals of a sum of polygons along the full lines ``origin + t * direction``.

    ``origins`` and ``directions`` are ``(..., 2)`` tensors (x, y) in mm (directions need not be
    normalised); ``polygons`` as for :func:`polygon_image`. Returns a float64 tensor of shape
    ``origins.shape[:-1]`` (value x mm).

    Each vertex ``v`` gets the side ``s(v) = d x (v - o)`` of the line, classified as ``s > 0`` or not
    (so every crossing is counted once, also through a vertex). An edge whose ends are classified
    differently crosses the line at ``t = d . (q - o) / |d|^2``, ``q`` its point with ``s = 0``. Along the
    line the inside of a simple polygon alternates at these crossings, and whether a crossing enters
    or leaves is given by its direction (the classification going from ``> 0`` to ``<= 0`` or back)
    and the polygon's orientation, so the chord length is ``|d| |sum_k sign_k t_k|`` without sorting.
    """
    origins, directions, direction_len = _check_rays(origins, directions, 2)
    tables = _polygon_tables(polygons)
    shape = origins.shape[:-1]
    origins, directions = origins.reshape(-1, 2), directions.reshape(-1, 2)
    direction_len = direction_len.reshape(-1)
    total = torch.zeros(origins.shape[0], dtype=torch.float64, device=origins.device)
    for intensity, vertices in tables:
        if intensity == 0:
            continue
        v = torch.from_numpy(vertices).to(origins.device)
        for start in range(0, origins.shape[0], _RAYS_PER_CHUNK):  # bounded memory: rays x vertices
            rays = slice(start, start + _RAYS_PER_CHUNK)
            o, d = origins[rays], directions[rays]
            rel_x = v[None, :, 0] - o[:, 0:1]  # (rays, vertices)
            rel_y = v[None, :, 1] - o[:, 1:2]
            side = d[:, 0:1] * rel_y - d[:, 1:2] * rel_x
            along = d[:, 0:1] * rel_x + d[:, 1:2] * rel_y  # |d|^2 t of each vertex's projection
            above = side > 0
            side_b, along_b, above_b = (torch.roll(t, -1, 1) for t in (side, along, above))
            crossing = above != above_b
            denominator = torch.where(crossing, side - side_b, torch.ones_like(side))
            t_cross = (side * along_b - side_b * along) / denominator  # |d|^2 t at s = 0, linear in s
            sign = above.to(torch.float64) - above_b.to(torch.float64)  # +1 leaving "> 0", -1 entering it
            chord = (torch.where(crossing, t_cross, torch.zeros_like(t_cross)) * sign).sum(1).abs()
            total[rays] += intensity * chord / direction_len[rays]
    return total.reshape(shape)
