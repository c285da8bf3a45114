"""Ellipsoid phantoms: the parameter record, supersampled voxelisation and exact line integrals.

An ellipsoid is given in physical units (mm) in the coordinates of ``known_ops``
(x along columns, y along rows, z along slices, each index increasing with its
coordinate; see ``docs/conventions.md``). Its indicator function is

    f(p) = intensity   if  (e1 . (p - c) / a)^2 + (e2 . (p - c) / b)^2 + (e3 . (p - c) / c)^2 <= 1,

with centre ``c = (x0, y0, z0)`` and axes ``e1, e2, e3``, the columns of the rotation

    R = Rz(phi) Rx(theta) Rz(psi),   Rz(t) = [[cos t, -sin t, 0], [sin t, cos t, 0], [0, 0, 1]],
                                     Rx(t) = [[1, 0, 0], [0, cos t, -sin t], [0, sin t, cos t]],

(``phi_deg``, ``theta_deg``, ``psi_deg`` in degrees: the z-x-z Euler angles of
Schabel's ``phantom3d.m``, whose matrix ``alpha`` is ``R`` transposed). With
``theta = psi = 0``, ``e1 = (cos phi, sin phi, 0)``: ``a`` is the semi-axis in the
direction ``phi`` counter-clockwise from +x in the xy-plane, exactly like the 2D
:class:`phantoms.Ellipse` (its ``theta_deg`` is our ``phi_deg``) and Kak & Slaney's
single rotation angle. Phantoms are sums of such ellipsoids; ``docs/phantoms.md``
has the tables, orientation and scaling.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch

from known_ops import Volume

from .ellipses import _check_dtype, _check_rays, _pixel_range, _supersample_count

__all__ = ["Ellipsoid", "ellipsoid_volume", "ellipsoid_line_integrals"]

_FIELDS = "(intensity, a, b, c, x0, y0, z0, phi_deg, theta_deg, psi_deg)"
# ellipsoid_line_integrals: (ray, ellipsoid) pairs per chunk; its temporaries are a few pairs x 3 float64 arrays.
_PAIRS_PER_CHUNK = 1 << 20
# ellipsoid_volume: elements of the per-chunk temporaries (sample rows, or voxel rows x bounding-box columns).
_ELEMENTS_PER_CHUNK = 1 << 22


class Ellipsoid(NamedTuple):
    """One ellipsoid: ``intensity``; semi-axes ``a``, ``b``, ``c`` along the axes ``e1, e2, e3`` (the
    columns of ``R = Rz(phi) Rx(theta) Rz(psi)``; ``a, b, c`` along x, y, z when all angles are 0);
    centre ``(x0, y0, z0)``; Euler angles ``phi_deg``, ``theta_deg``, ``psi_deg`` in degrees (see the
    module docstring)."""

    intensity: float
    a: float
    b: float
    c: float
    x0: float
    y0: float
    z0: float
    phi_deg: float = 0.0
    theta_deg: float = 0.0
    psi_deg: float = 0.0

    def scaled(self, scale: float) -> "Ellipsoid":
        """The same ellipsoid with all lengths multiplied by ``scale`` (e.g. unit cube -> mm)."""
        return self._replace(
            a=self.a * scale, b=self.b * scale, c=self.c * scale,
            x0=self.x0 * scale, y0=self.y0 * scale, z0=self.z0 * scale,
        )

    def rotation(self) -> np.ndarray:
        """The 3x3 rotation ``R = Rz(phi) Rx(theta) Rz(psi)``; its columns are the axes of ``a``, ``b``, ``c``."""
        return _rotations(np.array([[self.phi_deg, self.theta_deg, self.psi_deg]]))[0]


def _rotations(angles_deg: np.ndarray) -> np.ndarray:
    """(n, 3, 3) rotations ``Rz(phi) Rx(theta) Rz(psi)`` for (n, 3) angles (phi, theta, psi) in degrees."""
    phi, theta, psi = np.deg2rad(np.asarray(angles_deg, dtype=np.float64)).T
    c1, s1, c2, s2, c3, s3 = np.cos(phi), np.sin(phi), np.cos(theta), np.sin(theta), np.cos(psi), np.sin(psi)
    return np.stack(
        [
            np.stack([c1 * c3 - s1 * c2 * s3, -c1 * s3 - s1 * c2 * c3, s1 * s2], axis=-1),
            np.stack([s1 * c3 + c1 * c2 * s3, -s1 * s3 + c1 * c2 * c3, -c1 * s2], axis=-1),
            np.stack([s2 * s3, s2 * c3, c2], axis=-1),
        ],
        axis=-2,
    )


def _ellipsoid_table(ellipsoids) -> np.ndarray:
    """Validated (n, 10) float64 array (columns as in Ellipsoid) from a sequence of Ellipsoid records,
    10-sequences, or an (n, 10) array/tensor."""
    if isinstance(ellipsoids, torch.Tensor):
        ellipsoids = ellipsoids.detach().cpu().numpy()
    try:
        table = np.array(ellipsoids, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"ellipsoids must be a sequence of Ellipsoid{_FIELDS} or an (n, 10) array") from None
    if table.ndim != 2 or table.shape[1] != len(Ellipsoid._fields):
        raise ValueError(f"ellipsoids must have shape (n, 10) {_FIELDS}, got {table.shape}")
    if not np.isfinite(table).all():
        raise ValueError("ellipsoids must contain only finite values")
    if (table[:, 1:4] <= 0).any():
        raise ValueError("ellipsoids: the semi-axes a, b and c must be positive")
    return table


def ellipsoid_volume(
    ellipsoids,
    volume: Volume,
    supersample: int = 2,
    dtype: torch.dtype = torch.float32,
    device=None,
) -> torch.Tensor:
    """Voxelise ``ellipsoids`` (mm, see the module docstring) on ``volume``: a ``volume.shape`` tensor.

    ``volume`` is a 3D ``known_ops.Volume`` ``(nz, ny, nx)``. Each voxel holds the
    average of ``supersample**3`` point samples on a regular sub-grid (the centres
    of the ``supersample**3`` sub-cells), an approximation of the voxel's mean value.

    Every line of samples along x is cut with each ellipsoid analytically: at
    ``(dy, dz) = (y - y0, z - z0)`` the ellipsoid is the interval of ``dx = x - x0``
    solving ``Qxx dx^2 + 2 (Qxy dy + Qxz dz) dx + (Qyy dy^2 + 2 Qyz dy dz + Qzz dz^2 - 1) <= 0``
    with ``Q = R diag(1/a^2, 1/b^2, 1/c^2) R^T``. The number of samples of such an
    interval that fall in voxel ``j`` is ``G((j+1) S) - G(j S)`` with
    ``G(m) = relu(m - first) - relu(m - end)`` (fine-grid sample indices, ``S`` the
    supersampling); the ``S^2`` lines of a voxel row are summed through
    cumulative sums of their scattered ``first``/``end`` indices, in exact
    integer arithmetic. Only the ellipsoid's bounding box is visited, in chunks
    of slices, so the temporaries stay small (a few tens of MB) for any volume.
    The result is accumulated in float64 on ``device`` and cast to ``dtype``.
    """
    if not isinstance(volume, Volume):
        raise TypeError(f"volume must be a known_ops.Volume, got {type(volume).__name__}")
    if volume.ndim != 3:
        raise ValueError(f"volume must be 3D (nz, ny, nx) for an ellipsoid phantom, got shape {volume.shape}")
    table = _ellipsoid_table(ellipsoids)
    n_sub = _supersample_count(supersample)
    _check_dtype(dtype)
    out = torch.zeros(volume.shape, dtype=torch.float64, device=device)
    centres = [volume.coordinates(axis) for axis in range(3)]  # z, y, x voxel centres
    # Sub-sample offsets from a voxel centre, in units of the voxel size.
    sub = (np.arange(n_sub) + 0.5) / n_sub - 0.5
    rotations = _rotations(table[:, 7:10])
    for row, rotation in zip(table, rotations):
        intensity, axes, centre = row[0], row[1:4], row[4:7]
        if intensity == 0:
            continue
        # Bounding box: half-width along axis k is sqrt((R diag(axes^2) R^T)_kk).
        half = np.sqrt(((rotation * axes) ** 2).sum(axis=1))  # x, y, z
        box = [
            _pixel_range(centres[k], volume.spacing[k], centre[2 - k] - half[2 - k], centre[2 - k] + half[2 - k])
            for k in range(3)
        ]
        if any(first >= last for first, last in box):
            continue
        quadratic = (rotation / axes**2) @ rotation.T
        (k0, k1), (i0, i1), (j0, j1) = box
        n_rows, n_cols = i1 - i0, j1 - j0
        slices_per_chunk = max(1, _ELEMENTS_PER_CHUNK // (n_rows * max(n_sub * n_sub, n_cols + 1)))
        for start in range(k0, k1, slices_per_chunk):
            stop = min(start + slices_per_chunk, k1)
            counts = _sample_counts(volume, centres, sub, quadratic, centre, (start, stop), (i0, i1), (j0, j1), device)
            out[start:stop, i0:i1, j0:j1].add_(counts, alpha=intensity / n_sub**3)
    return out.to(dtype)


def _sample_counts(volume, centres, sub, quadratic, centre, k_range, i_range, j_range, device) -> torch.Tensor:
    """Samples inside one ellipsoid per voxel of the box ``k_range x i_range x j_range``: integer (nk, ni, nj)."""
    (k0, k1), (i0, i1), (j0, j1) = k_range, i_range, j_range
    n_sub, (sz, sy, sx) = len(sub), volume.spacing
    # Sample rows: z sub-samples (nk, S, 1, 1) x y sub-samples (1, 1, ni, S), offsets from the centre.
    dz = (centres[0][k0:k1, None] + sub[None, :] * sz - centre[2]).reshape(-1, n_sub, 1, 1)
    dy = (centres[1][i0:i1, None] + sub[None, :] * sy - centre[1]).reshape(1, 1, -1, n_sub)
    dz, dy = torch.from_numpy(dz).to(device), torch.from_numpy(dy).to(device)
    q = quadratic
    lin = 2.0 * (q[0, 1] * dy + q[0, 2] * dz)
    const = q[1, 1] * dy.square() + (2.0 * q[1, 2]) * dy * dz + q[2, 2] * dz.square() - 1.0
    discriminant = lin.square() - (4.0 * q[0, 0]) * const
    root = torch.sqrt(torch.clamp(discriminant, min=0.0))
    # Fine grid along x inside the box: sample m (0 <= m < n_fine) at x_base + m * step; the interval's
    # ends dx = (-lin -+ root) / (2 Qxx) as fine-grid positions.
    step = sx / n_sub
    x_base = centres[2][j0] + sub[0] * sx
    n_fine = (j1 - j0) * n_sub
    to_fine = 1.0 / (2.0 * q[0, 0] * step)
    left = (-lin - root) * to_fine + (centre[0] - x_base) / step
    right = (root - lin) * to_fine + (centre[0] - x_base) / step
    first = torch.clamp(torch.ceil(left), 0, n_fine).to(torch.int64)
    end = torch.clamp(torch.floor(right) + 1, 0, n_fine).to(torch.int64)  # one past the last sample inside
    end = torch.where(discriminant >= 0, torch.maximum(end, first), first)  # empty rows: end == first
    # Per voxel row (k, i) and voxel boundary J = 0..nj: H(J) = sum over its S^2 sample rows of
    # relu(J S - first) - relu(J S - end) = J S N(J) - T(J), where N(J) and T(J) are the number and the
    # sum of the `first` indices with ceil(first / S) <= J, minus the same for `end`: cumulative sums of
    # (+-1, +-index) scattered to ceil(index / S). Voxel J then holds H(J + 1) - H(J) samples. All terms
    # are at most S^2 n_fine in magnitude: int32 unless that could overflow.
    counter = torch.int32 if n_sub**2 * n_fine < 2**30 else torch.int64
    n_groups, n_bounds = (k1 - k0) * (i1 - i0), j1 - j0 + 1
    group = torch.arange(n_groups, device=device, dtype=torch.int64).reshape(k1 - k0, 1, i1 - i0, 1) * n_bounds
    edges = torch.stack([first, end]).reshape(2, -1)  # (first | end, sample row)
    cell = (group.expand_as(first).reshape(1, -1) + torch.div(edges + (n_sub - 1), n_sub, rounding_mode="floor"))
    sign = torch.tensor([[1], [-1]], dtype=counter, device=device)
    source = torch.stack([sign.expand_as(edges), sign * edges.to(counter)], dim=-1)  # (2, rows, 2)
    scattered = torch.zeros((n_groups * n_bounds, 2), dtype=counter, device=device)
    scattered.index_add_(0, cell.reshape(-1), source.reshape(-1, 2))
    running = scattered.reshape(n_groups, n_bounds, 2).cumsum(1, dtype=counter)
    boundary = torch.arange(n_bounds, device=device, dtype=counter) * n_sub
    inside_before = boundary * running[..., 0] - running[..., 1]
    return torch.diff(inside_before, dim=1).reshape(k1 - k0, i1 - i0, j1 - j0)


def ellipsoid_line_integrals(ellipsoids, origins, directions) -> torch.Tensor:
    """Exact line integrals of a sum of ellipsoids along the full lines ``origin + t * direction``.

    ``origins`` and ``directions`` are ``(..., 3)`` arrays or tensors (x, y, z) in
    mm (directions need not be normalised; the sign does not matter);
    ``ellipsoids`` as for :func:`ellipsoid_volume`, in mm. Returns a float64
    tensor of shape ``origins.shape[:-1]`` (value x mm) on the origins' device.

    Each ellipsoid contributes ``intensity`` times its chord length. The affine
    map ``p -> M (p - c)``, ``M = diag(1/a, 1/b, 1/c) R^T``, takes the ellipsoid to
    the unit ball and the line to ``q + t e`` with ``q = M (o - c)``, ``e = M d``;
    the line meets the ball for a parameter interval of length
    ``2 sqrt(|e|^2 - |q x e|^2) / |e|^2``, and the chord is that times ``|d|``. Here
    ``|e|^2 = sum_k (e_k . d)^2 / s_k^2`` and, since ``(M u) x (M w) = cof(M) (u x w)``
    with ``cof(M) = diag(1/(b c), 1/(a c), 1/(a b)) R^T``,
    ``|q x e|^2 = sum_k (e_k . ((o - c) x d))^2 / (s_1 s_2 s_3 / s_k)^2`` (``e_k`` the
    axes, ``s_k`` = a, b, c). Rays are processed in chunks so that the
    temporaries (rays x ellipsoids x 3) stay small.
    """
    origins, directions, length = _check_rays(origins, directions, 3)
    table = _ellipsoid_table(ellipsoids)
    device = origins.device
    intensity = torch.from_numpy(table[:, 0]).to(device)
    axes = torch.from_numpy(table[:, 1:4]).to(device)
    centres = torch.from_numpy(table[:, 4:7]).to(device)
    rotation = torch.from_numpy(_rotations(table[:, 7:10])).to(device)  # (n, 3, 3), columns e_k
    inv_axes_sq = axes.pow(-2)  # |e|^2 weights
    inv_cofactor_sq = (axes / axes.prod(dim=1, keepdim=True)).square()  # |q x e|^2 weights: (s_k / (a b c))^2
    shape = origins.shape[:-1]
    origins, directions, length = origins.reshape(-1, 3), directions.reshape(-1, 3), length.reshape(-1)
    total = torch.empty(origins.shape[0], dtype=torch.float64, device=device)
    rays_per_chunk = max(1, _PAIRS_PER_CHUNK // max(1, table.shape[0]))
    for start in range(0, origins.shape[0], rays_per_chunk):
        rays = slice(start, start + rays_per_chunk)
        o, d = origins[rays], directions[rays]
        moment = torch.linalg.cross(o[:, None, :] - centres[None], d[:, None, :].expand(-1, centres.shape[0], -1))
        e_sq = (torch.einsum("ri,nik->rnk", d, rotation).square() * inv_axes_sq).sum(-1)  # (rays, n)
        cross_sq = (torch.einsum("rni,nik->rnk", moment, rotation).square() * inv_cofactor_sq).sum(-1)
        half_interval = torch.sqrt(torch.clamp(e_sq - cross_sq, min=0.0)) / e_sq
        total[rays] = 2.0 * length[rays] * (half_interval @ intensity)
    return total.reshape(shape)


def _as_ellipsoids(rows: Sequence[Sequence[float]]) -> tuple[Ellipsoid, ...]:
    return tuple(Ellipsoid(*map(float, row)) for row in rows)
