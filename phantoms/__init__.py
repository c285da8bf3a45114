"""phantoms: ground-truth images and their exact projections for testing CT operators.

2D Shepp-Logan (original and modified/Toft) as ellipse tables, supersampled
rasterisation on a ``known_ops.Volume`` and exact analytic line integrals for any
2D geometry. Orientation and scaling are documented in ``docs/phantoms.md``.
"""
from .ellipses import Ellipse, ellipse_image, ellipse_line_integrals
from .shepp_logan import (
    DEFAULT_SCALE,
    MODIFIED_SHEPP_LOGAN,
    SHEPP_LOGAN,
    phantom_scale,
    shepp_logan,
    shepp_logan_ellipses,
    shepp_logan_projections,
)

__all__ = [
    "Ellipse",
    "ellipse_image",
    "ellipse_line_integrals",
    "SHEPP_LOGAN",
    "MODIFIED_SHEPP_LOGAN",
    "DEFAULT_SCALE",
    "phantom_scale",
    "shepp_logan",
    "shepp_logan_ellipses",
    "shepp_logan_projections",
]
