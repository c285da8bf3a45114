"""Analytic reconstruction built from known-operator layers: filtered back-projection.

``FBP`` = ramp filter (``known_ops.RampFilter``) -> voxel-driven back-projection
(``RayTransform(..., model="voxel").T``) -> physical scale, each a module, differentiable end
to end; with ``learnable=True`` the filter's frequency response is a parameter initialised to
the analytic one (precision learning).

Parallel beam (Kak & Slaney, ch. 3, eq. 3.45 discretised): for a circular scan of angle step
dt,

    f(x) = dt * sum_views w_view q_view(x cos t + y sin t),   q = ramp-filtered projections,

with Parker's redundancy weights w (``known_ops.parker_weights(geometry, reduced_scan=True)``:
1 over pi, 1/2 over 2 pi, smooth transitions in between, and 1 for limited-angle scans shorter
than pi, whose missing lines are simply missing). Parallel geometries built from vectors (no
angles) use dt * w = pi / n_views (views uniform over pi or 2 pi). Fan beams:
FDK-style weighting (``FBP``'s docstring); ``FDK`` for circular cone beams. The back-projector
is ``RayTransform(volume, geometry, model="voxel", weighting="fdk").T``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

import known_ops as ko

__all__ = ["FBP", "fbp", "FDK", "fdk"]


class FBP(nn.Module):
    """Filtered back-projection for a 2D parallel- or fan-beam ``geometry`` onto ``volume``, or
    for a 3D parallel beam (slice-wise parallel FBP: every detector row filtered, then the
    3D back-projection).

    ``filter``: the window of the ramp filter (``"ram-lak"``, ``"shepp-logan"``, ``"cosine"``,
    ``"hamming"``, ``"hann"``), ``cutoff`` its frequency scaling (fraction of Nyquist),
    ``padding`` as in ``known_ops.RampFilter``; ``learnable=True`` makes the filter's frequency
    response and the projection weights parameters initialised to the analytic ones.
    Input ``(..., n_views, det_count)`` (3D: ``(..., n_views, n_rows, n_cols)``), output
    ``(..., ny, nx)`` (3D: ``(..., nz, ny, nx)``) in the phantom's units
    (attenuation per mm when the sinogram holds line integrals in mm).

    Every circular scan (built from angles) is weighted by Parker's redundancy weights for its
    range (``parker_weights(geometry, reduced_scan=True)``: a full turn 1/2; a short scan of at
    least pi plus the fan angle: Parker's; a shorter, limited-angle scan: Parker's with the fan
    angle reduced to the scan, so that lines measured twice count once and the missing ones are
    missing), times the angular step. Fan beam (flat or curved detector): also cosine pre-weights,
    and the FDK-weighted back-projection ``D_so D_sd / L^2`` (docs/filters_and_weights.md).
    """

    def __init__(self, volume: ko.Volume, geometry, filter: str = "ram-lak", cutoff: float = 1.0, padding=True,
                 learnable: bool = False):
        super().__init__()
        if not isinstance(geometry, (ko.ParallelBeam2D, ko.FanBeam2D, ko.ParallelBeam3D, ko.ConeBeam3D)):
            raise TypeError(
                "geometry must be a ParallelBeam2D, FanBeam2D, ParallelBeam3D or (as FDK) a circular ConeBeam3D, "
                f"got {type(geometry).__name__}"
            )
        spacing = torch.from_numpy(geometry.det_spacing)  # (n_views,) in 2D, (n_views, 2) = (dv, du) in 3D
        if not torch.allclose(spacing, spacing[0].expand_as(spacing)):
            raise ValueError("geometry: FBP needs the same detector spacing in every view")
        det_spacing = float(spacing[0]) if geometry.ndim == 2 else tuple(float(s) for s in spacing[0])
        det_size = geometry.det_count if geometry.ndim == 2 else geometry.det_shape
        arc_radius = None
        fan = isinstance(geometry, (ko.FanBeam2D, ko.ConeBeam3D))
        if fan and geometry.angles is None:
            raise ValueError("geometry: fan-beam FBP and FDK need a circular scan built from angles (not from vectors)")
        if getattr(geometry, "pitch", 0.0):
            raise ValueError("geometry: FDK needs a circular scan (pitch = 0), not a helical one")
        if geometry.angles is not None and geometry.n_views > 1:
            # Each view stands for its angular step; Parker's weights (for the scan's own range, also
            # below pi + fan angle: reduced_scan) make every measured line count once.
            weights = ko.parker_weights(geometry, reduced_scan=True)
            if fan:
                weights = ko.cosine_weights(geometry) * weights
            self.weighting = ko.ProjectionWeight(init=weights, learnable=learnable)
            self.scale = abs(float(geometry.angles[1] - geometry.angles[0]))
        elif fan:  # one view
            weights = ko.cosine_weights(geometry)
            self.weighting = ko.ProjectionWeight(init=weights, learnable=learnable)
            self.scale = 2 * math.pi
        else:
            # Parallel rays from vectors (no angles): views assumed uniform over pi (every line once, step
            # pi / n) or 2 pi (every line twice with twice the step): pi / n either way.
            self.weighting = None
            self.scale = math.pi / geometry.n_views
        if fan and geometry.detector == "curved":
            arc_radius = geometry.source_distance + geometry.detector_distance
        self.filter = ko.RampFilter(det_size, det_spacing=det_spacing, window=filter, cutoff=cutoff,
                                    padding=padding, learnable=learnable, arc_radius=arc_radius)
        # .T of the FDK-weighted voxel-driven pair is the FBP/FDK back-projector (weight 1 for parallel beams).
        self.projector = ko.RayTransform(volume, geometry, model="voxel", weighting="fdk")

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if self.weighting is not None:
            y = self.weighting(y)
        return self.projector.T(self.filter(y)) * self.scale


class FDK(FBP):
    """Feldkamp-Davis-Kress reconstruction (J. Opt. Soc. Am. A 1(6), 1984) for a circular
    ``ConeBeam3D`` (flat or cylindrical detector, full or Parker short scan): ``FBP`` with the
    ramp filter along the detector rows and the FDK-weighted cone-beam back-projection."""

    def __init__(self, volume: ko.Volume, geometry, **kwargs):
        if not isinstance(geometry, ko.ConeBeam3D):
            raise TypeError(f"geometry must be a ConeBeam3D for FDK, got {type(geometry).__name__} (use FBP in 2D)")
        super().__init__(volume, geometry, **kwargs)


def fdk(y: torch.Tensor, volume: ko.Volume, geometry, **kwargs) -> torch.Tensor:
    """``FDK(volume, geometry, **kwargs)(y)``, moved to ``y``'s device."""
    return FDK(volume, geometry, **kwargs).to(y.device)(y)


def fbp(y: torch.Tensor, volume: ko.Volume, geometry, **kwargs) -> torch.Tensor:
    """``FBP(volume, geometry, **kwargs)(y)``, moved to ``y``'s device and dtype."""
    return FBP(volume, geometry, **kwargs).to(y.device)(y)
