"""Analytic reconstruction built from known-operator layers: filtered back-projection.

``FBP`` = ramp filter (``known_ops.RampFilter``) -> voxel-driven back-projection
(``RayTransform(..., model="voxel").T``) -> physical scale, each a module, differentiable end
to end; with ``learnable=True`` the filter's frequency response is a parameter initialised to
the analytic one (precision learning).

Parallel beam (Kak & Slaney, ch. 3, eq. 3.45 discretised): for views spread uniformly over
pi or 2 pi,

    f(x) = (pi / n_views) * sum_views q_view(x cos t + y sin t),   q = ramp-filtered projections,

since every line is measured once over pi (twice over 2 pi, with twice the angular step). The
voxel-driven back-projector weights each view by pixel area / du (docs/conventions.md), which
the scale divides out. Limited-angle scans use the same formula (the missing lines are simply
missing). Fan beams and FDK need the FDK distance weighting in the back-projector and are not
available yet.
"""
from __future__ import annotations

import math

import torch
from torch import nn

import known_ops as ko

__all__ = ["FBP", "fbp"]


class FBP(nn.Module):
    """Filtered back-projection for a 2D parallel-beam ``geometry`` onto ``volume``.

    ``filter``: the window of the ramp filter (``"ram-lak"``, ``"shepp-logan"``, ``"cosine"``,
    ``"hamming"``, ``"hann"``), ``cutoff`` its frequency scaling (fraction of Nyquist),
    ``padding`` as in ``known_ops.RampFilter``; ``learnable=True`` makes the filter's frequency
    response a parameter. Input ``(..., n_views, det_count)``, output ``(..., ny, nx)`` in the
    phantom's units (attenuation per mm when the sinogram holds line integrals in mm).
    """

    def __init__(self, volume: ko.Volume, geometry, filter: str = "ram-lak", cutoff: float = 1.0, padding=True,
                 learnable: bool = False):
        super().__init__()
        if not isinstance(geometry, ko.ParallelBeam2D):
            raise NotImplementedError(
                f"FBP supports ParallelBeam2D so far, got {type(geometry).__name__}: fan-beam FBP and FDK need the "
                "FDK distance weighting in the voxel-driven back-projector, which is not implemented yet"
            )
        spacing = geometry.det_spacing
        if not torch.allclose(torch.from_numpy(spacing), torch.tensor(float(spacing[0]), dtype=torch.float64)):
            raise ValueError("geometry: FBP needs the same detector spacing in every view")
        du = float(spacing[0])
        self.filter = ko.RampFilter(geometry.det_count, det_spacing=du, window=filter, cutoff=cutoff,
                                    padding=padding, learnable=learnable)
        self.projector = ko.RayTransform(volume, geometry, model="voxel")  # its .T is the back-projector
        sy, sx = volume.spacing
        # (pi / n_views) for the angular sum, (du / pixel area) to undo the back-projector's weight.
        self.scale = math.pi / geometry.n_views * du / (sx * sy)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.projector.T(self.filter(y)) * self.scale


def fbp(y: torch.Tensor, volume: ko.Volume, geometry, **kwargs) -> torch.Tensor:
    """``FBP(volume, geometry, **kwargs)(y)``, moved to ``y``'s device."""
    return FBP(volume, geometry, **kwargs).to(y.device)(y)
