"""phantoms: ground-truth images and their exact projections for testing CT operators.

2D Shepp-Logan (original and modified/Toft) as ellipse tables and 3D Shepp-Logan
(Kak-Slaney and modified/Schabel) as ellipsoid tables; random ellipse phantoms
(Adler-Oektem / dival distribution) as training data; supersampled
rasterisation / voxelisation on a ``known_ops.Volume`` and exact analytic line
integrals for any 2D or 3D geometry; polygons (rectangles, lines, stars) rasterised and
exactly projected; noise models (Gaussian, Poisson with the log transform).
Orientation and scaling are documented in
``docs/phantoms.md``.
"""
from .ellipses import Ellipse, ellipse_image, ellipse_line_integrals
from .ellipsoids import Ellipsoid, ellipsoid_line_integrals, ellipsoid_volume
from .noise import GaussianNoise, NoNoise, PoissonNoise, noise_from_dict
from .polygons import Polygon, polygon_image, polygon_line_integrals, rectangle, star
from .random_ellipses import (
    RandomEllipsesDataset,
    random_ellipse_images,
    random_ellipse_projections,
    random_ellipses,
)
from .shepp_logan import (
    DEFAULT_SCALE,
    MODIFIED_SHEPP_LOGAN,
    SHEPP_LOGAN,
    phantom_scale,
    shepp_logan,
    shepp_logan_ellipses,
    shepp_logan_projections,
)
from .shepp_logan_3d import (
    MODIFIED_SHEPP_LOGAN_3D,
    SHEPP_LOGAN_3D,
    phantom_scale_3d,
    shepp_logan_3d,
    shepp_logan_3d_ellipsoids,
    shepp_logan_3d_projections,
)

__all__ = [
    "Ellipse",
    "ellipse_image",
    "ellipse_line_integrals",
    "Polygon",
    "rectangle",
    "star",
    "polygon_image",
    "polygon_line_integrals",
    "SHEPP_LOGAN",
    "MODIFIED_SHEPP_LOGAN",
    "DEFAULT_SCALE",
    "phantom_scale",
    "shepp_logan",
    "shepp_logan_ellipses",
    "shepp_logan_projections",
    "Ellipsoid",
    "ellipsoid_volume",
    "ellipsoid_line_integrals",
    "SHEPP_LOGAN_3D",
    "MODIFIED_SHEPP_LOGAN_3D",
    "phantom_scale_3d",
    "shepp_logan_3d",
    "shepp_logan_3d_ellipsoids",
    "shepp_logan_3d_projections",
    "random_ellipses",
    "random_ellipse_images",
    "random_ellipse_projections",
    "RandomEllipsesDataset",
    "GaussianNoise",
    "PoissonNoise",
    "NoNoise",
    "noise_from_dict",
]
