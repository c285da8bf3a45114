"""known-ops: differentiable CT operators (ray transforms and friends) for PyTorch.

Conventions (units, axes, geometry vectors) are in docs/conventions.md; the architecture and the
rules of the house in docs/design.md.
"""
from . import _ops  # loads the compiled extension first, with a clear error if it is missing
from .geometry import ConeBeam3D, FanBeam2D, ParallelBeam2D, ParallelBeam3D, Volume, geometry_from_dict, uniform_angles
from .linear import (
    ComposedOperator,
    FiniteDifferenceGradient,
    IdentityOperator,
    LinearOperator,
    MatrixOperator,
    ScaledOperator,
    SumOperator,
    adjointness_test,
)
from .operators import RayTransform
from .filters import RampFilter
from .rebinning import FanToParallelRebinning, ParallelToFanRebinning
from .linalg import operator_norm
from .weights import CosineWeighting, ParkerWeighting, ProjectionWeight, cosine_weights, parker_weights

__all__ = ["Volume", "ParallelBeam2D", "FanBeam2D", "ParallelBeam3D", "ConeBeam3D", "uniform_angles", "geometry_from_dict",
           "LinearOperator", "ComposedOperator", "SumOperator", "ScaledOperator", "IdentityOperator", "MatrixOperator",
           "FiniteDifferenceGradient", "adjointness_test", "RayTransform", "FanToParallelRebinning", "ParallelToFanRebinning",
           "RampFilter", "ProjectionWeight", "CosineWeighting", "ParkerWeighting", "cosine_weights", "parker_weights", "operator_norm"]
__version__ = "0.1.0"
