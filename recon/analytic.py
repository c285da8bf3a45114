"""Analytic reconstruction built from known-operator layers: filtered back-projection.

``FBP`` = redundancy and cosine weights (``known_ops.ProjectionWeight``) -> ramp filter
(``known_ops.RampFilter``) -> voxel-driven back-projection (``RayTransform(..., model="voxel").T``)
-> physical scale, each an injectable module, differentiable end to end; with ``learnable`` the
weights and the filter's frequency response are parameters initialised to the analytic ones
(precision learning; ``recon.learned.LearnedFBP``).

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
import numbers

import torch
from torch import nn

import known_ops as ko

__all__ = ["FBP", "fbp", "FDK", "fdk"]


class FBP(nn.Module):
    """Filtered back-projection for a 2D parallel- or fan-beam ``geometry`` onto ``volume``, or
    for a 3D parallel beam (slice-wise parallel FBP: every detector row filtered, then the
    3D back-projection), or (as :class:`FDK`) a circular cone beam.

    The chain is made of injectable known-operator parts, each a module (attribute names in brackets):

        x = scale * backprojector(ramp_filter(cosine_weighting(redundancy_weighting(y))))

    - ``redundancy_weighting`` [``redundancy_weighting``]: ``"parker"`` (default): Parker's weights
      for the scan's range (``parker_weights(geometry, reduced_scan=True)``: a full turn 1/2; a short
      scan of at least pi plus the fan angle: Parker's; a shorter, limited-angle scan: Parker's with
      the fan angle reduced to the scan, so that lines measured twice count once and the missing
      ones are missing); none for one view or parallel rays built from vectors. ``None``: no weight;
      a tensor/array (broadcastable to ``geometry.shape``): that weight; a module: used as is.
    - ``cosine_weighting`` [``cosine_weighting``]: ``"auto"`` (default): the cosine pre-weights of fan
      and cone beams (``cosine_weights``), none for parallel beams; ``None``, a tensor or a module.
    - ``ramp_filter`` [``filter``]: default ``RampFilter`` with window ``filter``, ``cutoff``,
      ``padding`` and ``spatial_ramp`` (and the arc radius of a curved detector); or a module.
    - ``backprojector`` [``backprojector``]: default the FDK-weighted voxel-driven back-projector
      ``RayTransform(volume, geometry, model="voxel", weighting="fdk").T`` (its gradient is its exact
      transpose); or any :class:`known_ops.LinearOperator` from ``geometry.shape`` to ``volume.shape``.
    - ``scale``: default the angular step (``pi / n_views`` for parallel rays from vectors, ``2 pi``
      for a single fan view); or a number.

    ``learnable``: ``False`` (default), ``True`` (the weights and the filter this geometry has) or an
    iterable of part names among ``"redundancy"``, ``"cosine"`` (fan and cone beams), ``"filter"``. A learnable weight is a parameter with
    one value per view and detector column (shape ``(n_views, det_count)``; 3D ``(n_views, 1, n_cols)``,
    or ``(n_views, n_rows, n_cols)`` for the cone beam's cosine weights, which vary along rows too)
    initialised to the analytic one; a learnable filter's frequency response is a parameter
    initialised to the analytic one (precision learning: at initialisation the module *is* FBP). The
    back-projector stays frozen. :class:`recon.learned.LearnedFBP` is this class with learnable
    redundancy weights.

    Input ``(..., n_views, det_count)`` (3D: ``(..., n_views, n_rows, n_cols)``), output
    ``(..., ny, nx)`` (3D: ``(..., nz, ny, nx)``) in the phantom's units (attenuation per mm when the
    sinogram holds line integrals in mm). Fan beams: the FDK-weighted back-projection
    ``D_so D_sd / L^2`` (docs/filters_and_weights.md).
    """

    PARTS = ("redundancy", "cosine", "filter")

    def __init__(self, volume: ko.Volume, geometry, filter: str = "ram-lak", cutoff: float = 1.0, padding=True,
                 learnable=False, *, spatial_ramp: bool = True, redundancy_weighting="parker", cosine_weighting="auto",
                 ramp_filter: nn.Module | None = None, backprojector=None, scale: float | None = None):
        super().__init__()
        if not isinstance(geometry, (ko.ParallelBeam2D, ko.FanBeam2D, ko.ParallelBeam3D, ko.ConeBeam3D)):
            raise TypeError(
                "geometry must be a ParallelBeam2D, FanBeam2D, ParallelBeam3D or (as FDK) a circular ConeBeam3D, "
                f"got {type(geometry).__name__}"
            )
        if not isinstance(volume, ko.Volume):
            raise TypeError(f"volume must be a known_ops.Volume, got {type(volume).__name__}")
        learn = _learnable_parts(learnable, self.PARTS)
        fan = isinstance(geometry, (ko.FanBeam2D, ko.ConeBeam3D))
        if fan and geometry.angles is None:
            raise ValueError("geometry: fan-beam FBP and FDK need a circular scan built from angles (not from vectors)")
        if getattr(geometry, "pitch", 0.0):
            raise ValueError("geometry: FDK needs a circular scan (pitch = 0), not a helical one")
        circular = geometry.angles is not None and geometry.n_views > 1
        if "cosine" in learn and not fan:
            if learnable is not True:
                raise ValueError("learnable: parallel beams have no cosine weights to learn")
            learn.discard("cosine")  # learnable=True: the parts this geometry has
        self.volume = volume
        self.geometry = geometry

        if isinstance(redundancy_weighting, str) and redundancy_weighting == "parker":
            # Each view stands for its angular step; Parker's weights (for the scan's own range, also
            # below pi + fan angle: reduced_scan) make every measured line count once.
            redundancy_weighting = ko.parker_weights(geometry, reduced_scan=True) if circular else None
        if isinstance(cosine_weighting, str) and cosine_weighting == "auto":
            cosine_weighting = ko.cosine_weights(geometry) if fan else None
        self.redundancy_weighting = _weighting(redundancy_weighting, "redundancy" in learn, geometry, "redundancy_weighting")
        self.cosine_weighting = _weighting(cosine_weighting, "cosine" in learn, geometry, "cosine_weighting")

        if ramp_filter is None:
            spacing = torch.from_numpy(geometry.det_spacing)  # (n_views,) in 2D, (n_views, 2) = (dv, du) in 3D
            if not torch.allclose(spacing, spacing[0].expand_as(spacing)):
                raise ValueError("geometry: FBP needs the same detector spacing in every view")
            det_spacing = float(spacing[0]) if geometry.ndim == 2 else tuple(float(s) for s in spacing[0])
            det_size = geometry.det_count if geometry.ndim == 2 else geometry.det_shape
            arc_radius = geometry.source_distance + geometry.detector_distance if fan and geometry.detector == "curved" else None
            ramp_filter = ko.RampFilter(det_size, det_spacing=det_spacing, window=filter, cutoff=cutoff, padding=padding,
                                        spatial_ramp=spatial_ramp, learnable="filter" in learn, arc_radius=arc_radius)
        elif not isinstance(ramp_filter, nn.Module):
            raise TypeError(f"ramp_filter must be a module (e.g. a known_ops.RampFilter) or None, got {type(ramp_filter).__name__}")
        self.filter = ramp_filter

        if backprojector is None:
            backprojector = ko.RayTransform(volume, geometry, model="voxel", weighting="fdk").T
        ko.linear.check_linear_operator(backprojector, "backprojector")
        if tuple(backprojector.domain_shape) != tuple(geometry.shape) or tuple(backprojector.range_shape) != tuple(volume.shape):
            raise ValueError(
                f"backprojector must map {tuple(geometry.shape)} (the geometry's projections) to {tuple(volume.shape)} "
                f"(the volume), got {tuple(backprojector.domain_shape)} -> {tuple(backprojector.range_shape)}"
            )
        self.backprojector = backprojector

        if scale is None:
            if circular:
                scale = abs(float(geometry.angles[1] - geometry.angles[0]))
            elif fan:  # one view
                scale = 2 * math.pi
            else:
                # Parallel rays from vectors (no angles): views assumed uniform over pi (every line once, step
                # pi / n) or 2 pi (every line twice with twice the step): pi / n either way.
                scale = math.pi / geometry.n_views
        self.scale = ko.linear._scalar(scale, "scale")

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        _check_projections(y, self.geometry)
        if self.redundancy_weighting is not None:
            y = self.redundancy_weighting(y)
        if self.cosine_weighting is not None:
            y = self.cosine_weighting(y)
        return self.backprojector(self.filter(y)) * self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale:.6g}"


def _check_projections(y, geometry) -> None:
    """``y`` must be a tensor of shape ``(..., *geometry.shape)``: the message names the geometry's
    projection shape (not that of a weight that broadcasts to it)."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}")
    what = "the geometry's projection shape (n_views, det_count)" if geometry.ndim == 2 else (
        "the geometry's projection shape (n_views, n_rows, n_cols)")
    ko.linear.check_trailing_shape(y, "y", tuple(geometry.shape), what)


def _learnable_parts(learnable, parts: tuple[str, ...]) -> set[str]:
    if isinstance(learnable, bool):
        return set(parts) if learnable else set()
    if isinstance(learnable, str):
        learnable = (learnable,)
    try:
        chosen = set(learnable)
    except TypeError:
        raise TypeError(f"learnable must be True, False or an iterable of part names {parts}, got {learnable!r}") from None
    unknown = chosen - set(parts)
    if unknown:
        raise ValueError(f"learnable: unknown part(s) {sorted(unknown)}; the parts are {parts}")
    return chosen


def weight_shape(geometry) -> tuple[int, ...]:
    """One weight per view and detector column: ``(n_views, det_count)``, 3D ``(n_views, 1, n_cols)``."""
    return (geometry.n_views, geometry.det_count) if geometry.ndim == 2 else (geometry.n_views, 1, geometry.det_shape[1])


def _weighting(part, learnable: bool, geometry, name: str):
    """A projection-weight module from a part specification (None, a tensor/array or a module)."""
    if isinstance(part, nn.Module):
        if learnable:
            raise ValueError(f"{name}: give a module that is learnable itself, or a tensor with learnable=...")
        return part
    if part is None:
        if not learnable:
            return None
        part = torch.ones(1, dtype=torch.float64)
    if isinstance(part, numbers.Real) and not isinstance(part, bool):
        part = torch.tensor([float(part)], dtype=torch.float64)
    if isinstance(part, str):
        raise ValueError(f"{name}: unknown weighting {part!r}")
    if learnable:
        init = torch.as_tensor(part)
        # Per view and column at least, and per pixel where the analytic weight varies along rows too.
        shape = torch.broadcast_shapes(weight_shape(geometry), tuple(init.shape))
        return ko.ProjectionWeight(shape, init=init, learnable=True)
    return ko.ProjectionWeight(init=part)


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
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}")
    return FDK(volume, geometry, **kwargs).to(y.device)(y)


def fbp(y: torch.Tensor, volume: ko.Volume, geometry, **kwargs) -> torch.Tensor:
    """``FBP(volume, geometry, **kwargs)(y)``, moved to ``y``'s device (the result has ``y``'s dtype)."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}")
    return FBP(volume, geometry, **kwargs).to(y.device)(y)
