"""The 3D Shepp-Logan head phantoms (Kak-Slaney and modified/Schabel), voxelised and analytically projected.

Tables (facts copied from the publications, cross-checked against independent
transcriptions):

- ``SHEPP_LOGAN_3D``: A. C. Kak and M. Slaney, "Principles of Computerized
  Tomographic Imaging", IEEE Press 1988, Table 3.2 (p. 102), the 3D extension of
  the Shepp-Logan head used for their cone-beam simulations: ten ellipsoids, each
  rotated about z only, skull 2.0, brain 1.02 (as transcribed in TIGRE's
  ``sl3d.py`` ``kak_slaney`` by T. Sadakane, and with the same geometry in the
  ``yu-ye-wang`` tables of Schabel/Bolan's ``phantom3dAniso.m`` and Yu, Ye and
  Wang, "Katsevich-type algorithms for variable radius spiral cone-beam CT",
  Proc. SPIE 5535, 2004).
- ``MODIFIED_SHEPP_LOGAN_3D``: M. Schabel, ``phantom3d.m`` "Modified Shepp-Logan"
  (MATLAB Central File Exchange 9416, 2005; also TIGRE's ``toft-schabel``): the
  2D Shepp-Logan ellipses given a third semi-axis and a z centre, with P. Toft's
  high-contrast intensities (1, -0.8, -0.2, -0.2, 0.1, ...).

The two are different objects, as in the literature (not one geometry with two
sets of intensities like the 2D tables). ``phantom3d.m`` rotates a point *before*
subtracting the centre, so its centres are coordinates in the rotated frame; we
store physical centres ``R (x0, y0, z0)``, which changes only the two rotated
ventricles, so that the phantom is exactly ``phantom3d``'s.

The tables live on the unit cube [-1, 1]^3 in the same x and y as the 2D tables
(+y towards the top of the head in the 2D pictures, i.e. the last rows); z is the
third axis, along the volume's first index (slices), increasing with the slice
index. The cube is scaled by ``scale`` mm per unit about the physical origin; see
``docs/phantoms.md`` for which slice shows what.
"""
from __future__ import annotations

import numpy as np
import torch

from known_ops import Volume

from .ellipses import _check_dtype
from .ellipsoids import Ellipsoid, _as_ellipsoids, _rotations, ellipsoid_line_integrals, ellipsoid_volume
from .shepp_logan import DEFAULT_SCALE, _check_modified, _check_scale

__all__ = [
    "SHEPP_LOGAN_3D",
    "MODIFIED_SHEPP_LOGAN_3D",
    "shepp_logan_3d_ellipsoids",
    "phantom_scale_3d",
    "shepp_logan_3d",
    "shepp_logan_3d_projections",
]

# Kak & Slaney, Table 3.2, ellipsoids a..j: intensity, semi-axes (a along the angle phi in the
# xy-plane, b perpendicular to it in the xy-plane, c along z), centre (x0, y0, z0), phi in degrees.
SHEPP_LOGAN_3D: tuple[Ellipsoid, ...] = _as_ellipsoids(
    [
        # intensity  a       b      c      x0      y0      z0     phi
        (2.00,   0.6900, 0.920, 0.900,  0.00,   0.000,  0.000,   0.0),  # a: skull (outer)
        (-0.98,  0.6624, 0.874, 0.880,  0.00,   0.000,  0.000,   0.0),  # b: brain (inner)
        (-0.02,  0.4100, 0.160, 0.210, -0.22,   0.000, -0.250, 108.0),  # c: ventricle (x < 0)
        (-0.02,  0.3100, 0.110, 0.220,  0.22,   0.000, -0.250,  72.0),  # d: ventricle (x > 0)
        (0.02,   0.2100, 0.250, 0.500,  0.00,   0.350, -0.250,   0.0),  # e
        (0.02,   0.0460, 0.046, 0.046,  0.00,   0.100, -0.250,   0.0),  # f
        (0.01,   0.0460, 0.023, 0.020, -0.08,  -0.650, -0.250,   0.0),  # g
        (0.01,   0.0460, 0.023, 0.020,  0.06,  -0.650, -0.250,  90.0),  # h
        (0.02,   0.0560, 0.040, 0.100,  0.06,  -0.105,  0.625,  90.0),  # i
        (-0.02,  0.0560, 0.056, 0.100,  0.00,   0.100,  0.625,   0.0),  # j
    ]
)

# Schabel's phantom3d.m "Modified Shepp-Logan", row by row as published:
# A, a, b, c, x0, y0, z0 (in the rotated frame, see the module docstring), phi, theta, psi (degrees).
_SCHABEL_MODIFIED = (
    (1.0,  0.6900, 0.920, 0.810,  0.00,  0.0000,  0.00,   0.0, 0.0,  0.0),
    (-0.8, 0.6624, 0.874, 0.780,  0.00, -0.0184,  0.00,   0.0, 0.0,  0.0),
    (-0.2, 0.1100, 0.310, 0.220,  0.22,  0.0000,  0.00, -18.0, 0.0, 10.0),
    (-0.2, 0.1600, 0.410, 0.280, -0.22,  0.0000,  0.00,  18.0, 0.0, 10.0),
    (0.1,  0.2100, 0.250, 0.410,  0.00,  0.3500, -0.15,   0.0, 0.0,  0.0),
    (0.1,  0.0460, 0.046, 0.050,  0.00,  0.1000,  0.25,   0.0, 0.0,  0.0),
    (0.1,  0.0460, 0.046, 0.050,  0.00, -0.1000,  0.25,   0.0, 0.0,  0.0),
    (0.1,  0.0460, 0.023, 0.050, -0.08, -0.6050,  0.00,   0.0, 0.0,  0.0),
    (0.1,  0.0230, 0.023, 0.020,  0.00, -0.6060,  0.00,   0.0, 0.0,  0.0),
    (0.1,  0.0230, 0.046, 0.020,  0.06, -0.6050,  0.00,   0.0, 0.0,  0.0),
)


def _physical_centres(rows) -> tuple[Ellipsoid, ...]:
    """phantom3d.m rows -> Ellipsoid records with the centre moved to physical coordinates R (x0, y0, z0)."""
    table = np.array(rows, dtype=np.float64)
    table[:, 4:7] = np.einsum("nij,nj->ni", _rotations(table[:, 7:10]), table[:, 4:7])
    table[:, 4:7] = np.where(np.abs(table[:, 4:7]) < 1e-15, 0.0, table[:, 4:7])  # no -0.0 / rounding dust
    return _as_ellipsoids(table)


MODIFIED_SHEPP_LOGAN_3D: tuple[Ellipsoid, ...] = _physical_centres(_SCHABEL_MODIFIED)


def shepp_logan_3d_ellipsoids(modified: bool = True, scale: float = 1.0) -> tuple[Ellipsoid, ...]:
    """The ten ellipsoids, on the unit cube (``scale=1``) or scaled to mm (``scale`` mm per unit):
    ``MODIFIED_SHEPP_LOGAN_3D`` if ``modified`` else ``SHEPP_LOGAN_3D``."""
    table = MODIFIED_SHEPP_LOGAN_3D if _check_modified(modified) else SHEPP_LOGAN_3D
    scale = _check_scale(scale)
    return tuple(e.scaled(scale) for e in table)


def phantom_scale_3d(volume: Volume) -> float:
    """Default scale for a 3D ``volume``: the unit cube is inscribed in its field of view.

    ``min(extent_z, extent_y, extent_x) / 2`` mm per unit, centred at the physical
    origin (the volume's offset does not move the phantom). For a thin slab use
    ``phantoms.phantom_scale(volume)`` (the xy field of view only) as ``scale=``.
    """
    if not isinstance(volume, Volume):
        raise TypeError(f"volume must be a known_ops.Volume, got {type(volume).__name__}")
    if volume.ndim != 3:
        raise ValueError(f"volume must be 3D (nz, ny, nx) for the 3D phantom, got shape {volume.shape}")
    return min(volume.extent) / 2


def shepp_logan_3d(
    volume: Volume,
    modified: bool = True,
    supersample: int = 4,
    dtype: torch.dtype = torch.float32,
    scale: float | None = None,
    device=None,
) -> torch.Tensor:
    """The 3D Shepp-Logan phantom voxelised on ``volume``: a ``volume.shape`` = ``(nz, ny, nx)`` tensor.

    ``modified=True``: Schabel's modified phantom (skull 1.0, brain 0.2);
    ``False``: Kak & Slaney's (skull 2.0, brain 1.02). ``scale`` is the physical
    size in mm of one table unit; by default :func:`phantom_scale_3d` (the phantom
    fills the cube inscribed in the volume, centred at (0, 0, 0) mm). Each voxel is
    the mean of ``supersample**3`` point samples. +y (the top of the head in the
    2D pictures) is at the last rows, +z at the last slices.
    """
    scale = phantom_scale_3d(volume) if scale is None else _check_scale(scale)
    return ellipsoid_volume(shepp_logan_3d_ellipsoids(modified, scale), volume, supersample, dtype, device)


def shepp_logan_3d_projections(
    geometry,
    modified: bool = True,
    scale: float | None = None,
    volume: Volume | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Exact line integrals of the 3D Shepp-Logan ellipsoids for every ray of ``geometry``.

    ``geometry`` is any 3D geometry (``ndim == 3``) with ``rays()`` returning the
    ``(n_views, n_rows, n_cols, 6)`` origins and directions (mm) of its detector
    pixels: ``ParallelBeam3D``, ``ConeBeam3D`` with a flat or curved detector,
    circular, helical or built from vectors. Returns a ``geometry.shape`` tensor
    (value x mm), computed in float64 and cast to ``dtype``. Each ray is the full
    line through its origin in its direction.

    The physical size: ``scale`` (mm per table unit) if given; otherwise derived
    from ``volume`` exactly as :func:`shepp_logan_3d` does, so
    ``shepp_logan_3d_projections(geo, volume=vol)`` is the projection of
    ``shepp_logan_3d(vol)``; with neither, ``DEFAULT_SCALE`` = 128 mm, which is what
    ``shepp_logan_3d`` uses for a 256 mm cube (e.g. 256^3 voxels of 1 mm).
    """
    if getattr(geometry, "ndim", None) != 3 or not callable(getattr(geometry, "rays", None)):
        raise TypeError(
            "geometry must be a 3D geometry (ParallelBeam3D, ConeBeam3D, or any object with ndim == 3 and "
            f"rays()), got {type(geometry).__name__}"
        )
    if volume is None:
        scale = DEFAULT_SCALE if scale is None else _check_scale(scale)
    elif scale is None:
        scale = phantom_scale_3d(volume)
    else:
        raise ValueError("give either scale or volume (the volume only serves to derive the scale), not both")
    _check_dtype(dtype)
    rays = torch.as_tensor(geometry.rays())
    if rays.ndim < 1 or rays.shape[-1] != 6:
        raise ValueError(f"geometry.rays() must have shape (..., 6) (origin, direction), got {tuple(rays.shape)}")
    values = ellipsoid_line_integrals(shepp_logan_3d_ellipsoids(modified, scale), rays[..., 0:3], rays[..., 3:6])
    return values.to(dtype)
