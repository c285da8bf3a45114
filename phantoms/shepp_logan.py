"""The Shepp-Logan head phantom (original and modified/Toft), rasterised and analytically projected.

Tables: L. A. Shepp and B. F. Logan, "The Fourier reconstruction of a head
section", IEEE Trans. Nucl. Sci. 21(3), 1974, as tabulated in A. C. Kak and
M. Slaney, "Principles of Computerized Tomographic Imaging", IEEE Press 1988,
Table 3.1; the high-contrast intensities are P. Toft's, "The Radon Transform:
Theory and Implementation", PhD thesis, DTU 1996 (also MATLAB's
``phantom('Modified Shepp-Logan')``).

The tables live on the unit square [-1, 1]^2 with y pointing up (towards the top
of the head). In ``known_ops`` coordinates (x along columns, y along rows, row
index increasing with y) the top of the head is at the LAST rows: flip rows
(``torch.flip(img, [-2])`` / ``np.flipud``) to display it MATLAB/scikit-image
style or to compare with ASTRA. The unit square is scaled by ``scale`` mm per
unit about the physical origin (0, 0); see ``docs/phantoms.md``.
"""
from __future__ import annotations

import numbers

import torch

from known_ops import FanBeam2D, ParallelBeam2D, Volume

from .ellipses import Ellipse, _as_ellipses, _check_dtype, ellipse_image, ellipse_line_integrals

__all__ = [
    "SHEPP_LOGAN",
    "MODIFIED_SHEPP_LOGAN",
    "DEFAULT_SCALE",
    "shepp_logan_ellipses",
    "phantom_scale",
    "shepp_logan",
    "shepp_logan_projections",
]

# Kak & Slaney, Table 3.1, row by row (ellipses a..j), in the table's own form:
# intensity ("refractive index"), major-axis half-length along theta, minor-axis half-length,
# centre (x0, y0), rotation angle theta in degrees (counter-clockwise from +x).
SHEPP_LOGAN: tuple[Ellipse, ...] = _as_ellipses(
    [
        # intensity   a       b      x0      y0      theta
        (2.00,   0.92,   0.69,   0.00,   0.0000,  90.0),  # a: skull (outer)
        (-0.98,  0.874,  0.6624, 0.00,  -0.0184,  90.0),  # b: brain (inner)
        (-0.02,  0.31,   0.11,   0.22,   0.0000,  72.0),  # c: right ventricle
        (-0.02,  0.41,   0.16,  -0.22,   0.0000, 108.0),  # d: left ventricle
        (0.01,   0.25,   0.21,   0.00,   0.3500,  90.0),  # e
        (0.01,   0.046,  0.046,  0.00,   0.1000,   0.0),  # f
        (0.01,   0.046,  0.046,  0.00,  -0.1000,   0.0),  # g
        (0.01,   0.046,  0.023, -0.08,  -0.6050,   0.0),  # h
        (0.01,   0.023,  0.023,  0.00,  -0.6050,   0.0),  # i
        (0.01,   0.046,  0.023,  0.06,  -0.6050,  90.0),  # j
    ]
)

# Toft's high-contrast intensities on the same ellipses: skull 1.0, brain 0.2, ventricles 0.0,
# small structures 0.3 (0.4 where two overlap).
_TOFT_INTENSITIES = (1.0, -0.8, -0.2, -0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1)
MODIFIED_SHEPP_LOGAN: tuple[Ellipse, ...] = tuple(
    e._replace(intensity=rho) for e, rho in zip(SHEPP_LOGAN, _TOFT_INTENSITIES)
)

# Scale (mm per table unit) used by shepp_logan_projections when neither `scale` nor `volume`
# is given: the phantom's unit circle has a radius of 128 mm (outer ellipse 177 mm x 236 mm, an
# adult head). shepp_logan() derives the same value for a 256 mm wide volume, e.g. 256 x 256 at 1 mm.
DEFAULT_SCALE = 128.0


def _check_modified(modified) -> bool:
    if not isinstance(modified, bool):
        raise TypeError(f"modified must be True or False, got {modified!r}")
    return modified


def shepp_logan_ellipses(modified: bool = True, scale: float = 1.0) -> tuple[Ellipse, ...]:
    """The ten ellipses, on the unit square (``scale=1``) or scaled to mm (``scale`` mm per unit)."""
    table = MODIFIED_SHEPP_LOGAN if _check_modified(modified) else SHEPP_LOGAN
    scale = _check_scale(scale)
    return tuple(e.scaled(scale) for e in table)


def _check_scale(scale) -> float:
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a positive number (mm per phantom unit), got {scale!r}")
    scale = float(scale)
    if not (scale > 0 and scale < float("inf")):
        raise ValueError(f"scale must be positive and finite (mm per phantom unit), got {scale}")
    return scale


def phantom_scale(volume: Volume) -> float:
    """Default scale for ``volume``: the unit square is inscribed in its field of view.

    ``min(extent_y, extent_x) / 2`` mm per unit, centred at the physical origin (the
    volume's offset does not move the phantom).
    """
    if not isinstance(volume, Volume):
        raise TypeError(f"volume must be a known_ops.Volume, got {type(volume).__name__}")
    return min(volume.extent[-2:]) / 2


def shepp_logan(
    volume: Volume,
    modified: bool = True,
    supersample: int = 4,
    dtype: torch.dtype = torch.float32,
    scale: float | None = None,
    device=None,
) -> torch.Tensor:
    """The Shepp-Logan phantom rasterised on ``volume``: a ``volume.shape`` tensor.

    ``modified=True`` uses Toft's high-contrast intensities (skull 1.0, brain 0.2),
    ``False`` the original ones (skull 2.0, brain 1.02). ``scale`` is the physical
    size in mm of one table unit; by default :func:`phantom_scale` (the phantom
    fills the square inscribed in the volume, centred at (0, 0) mm). Each pixel is
    the mean of ``supersample**2`` point samples. The top of the head (+y) is at
    the last rows.
    """
    scale = phantom_scale(volume) if scale is None else _check_scale(scale)
    return ellipse_image(volume, shepp_logan_ellipses(modified, scale), supersample, dtype, device)


def shepp_logan_projections(
    geometry,
    modified: bool = True,
    scale: float | None = None,
    volume: Volume | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Exact line integrals of the Shepp-Logan ellipses for every ray of ``geometry``.

    Returns a ``geometry.shape`` = ``(n_views, det_count)`` tensor (value x mm) for
    any 2D geometry: parallel, fan with flat or curved detector, or built from
    vectors. Each ray is the full line through the ray origin in the ray direction
    (``geometry.rays()``).

    The physical size: ``scale`` (mm per table unit) if given; otherwise derived
    from ``volume`` exactly as :func:`shepp_logan` does, so
    ``shepp_logan_projections(geo, volume=vol)`` is the sinogram of
    ``shepp_logan(vol)``; with neither, ``DEFAULT_SCALE`` = 128 mm, which is what
    ``shepp_logan`` uses for a 256 mm wide volume (e.g. 256 x 256 at 1 mm).
    """
    if not isinstance(geometry, (ParallelBeam2D, FanBeam2D)):
        raise TypeError(f"geometry must be a ParallelBeam2D or FanBeam2D, got {type(geometry).__name__}")
    if scale is not None and volume is not None:
        raise ValueError("give either scale or volume (the volume only serves to derive the scale), not both")
    if scale is not None:
        scale = _check_scale(scale)
    elif volume is not None:
        scale = phantom_scale(volume)
    else:
        scale = DEFAULT_SCALE
    _check_dtype(dtype)
    rays = geometry.rays()
    values = ellipse_line_integrals(rays[..., 0:2], rays[..., 2:4], shepp_logan_ellipses(modified, scale))
    return values.to(dtype)
