"""DerivedRebinning: parallel-to-fan conversion derived from the analytic algorithm.

C. Syben, B. Stimpel, K. Breininger, T. Wuerfl, R. Fahrig, A. Doerfler and A. Maier, "Precision
learning: reconstruction filter kernel discretization" / "Deriving neural network architectures using
precision learning: parallel-to-fan beam conversion", GCPR 2018. The conversion

    p_fan = A_fan FBP_par(p_par)

(reconstruct the object from the parallel sinogram, project it in the fan geometry) is a network
of known operators: projection-domain weights and a ramp filter (the unknown discretisation,
learnable, initialised to the analytic ones), then the frozen parallel back-projection (FBP's, with
its exact transpose as gradient) and the frozen fan-beam projector. Its classical baseline is the
ray-by-ray interpolation rebinning ``known_ops.ParallelToFanRebinning``.
"""
from __future__ import annotations

import torch
from torch import nn

import known_ops as ko
from recon.analytic import FBP

from ._common import flatten_batch, unflatten_batch

__all__ = ["DerivedRebinning"]


class DerivedRebinning(nn.Module):
    """Parallel sinogram ``(B, [C,] *parallel_geometry.shape)`` -> fan sinogram ``(B, [C,] *fan_geometry.shape)``.

    Args:
        volume: the intermediate image grid; it must cover the field of view of both scans.
        geometry: the parallel-beam geometry of the input (``ParallelBeam2D``, a circular scan).
        fan_geometry: the fan-beam geometry of the output (``FanBeam2D``, or a dict from its
            ``to_dict()``, so that configs can name it).
        filter, cutoff: the initial ramp filter's window and cut-off.
        learn_filter: learn the filter's frequency response (default ``True``).
        learn_weights: learn a weight per parallel view and detector column, initialised to the
            redundancy weights of the scan (default ``True``).
        projector_model: the fan projector's discretisation (``"joseph"``, default, or ``"voxel"``).

    At initialisation the model is exactly ``A_fan FBP_par``.
    """

    def __init__(self, volume: ko.Volume, geometry, fan_geometry, filter: str = "ram-lak", cutoff: float = 1.0,
                 learn_filter: bool = True, learn_weights: bool = True, projector_model: str = "joseph"):
        super().__init__()
        if not isinstance(geometry, ko.ParallelBeam2D):
            raise TypeError(f"geometry must be the input's ParallelBeam2D, got {type(geometry).__name__}")
        if isinstance(fan_geometry, dict):
            fan_geometry = ko.geometry_from_dict(fan_geometry)
        if not isinstance(fan_geometry, ko.FanBeam2D):
            raise TypeError(f"fan_geometry must be a FanBeam2D (or its to_dict()), got {type(fan_geometry).__name__}")
        for name, flag in (("learn_filter", learn_filter), ("learn_weights", learn_weights)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, got {flag!r}")
        parts = [name for name, flag in (("filter", learn_filter), ("redundancy", learn_weights)) if flag]
        self.volume = volume
        self.geometry = geometry
        self.fan_geometry = fan_geometry
        self.reconstruction = FBP(volume, geometry, filter=filter, cutoff=cutoff, learnable=parts)
        self.projector = ko.RayTransform(volume, fan_geometry, model=projector_model)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        flat, lead = flatten_batch(y, tuple(self.geometry.shape), "y")
        return unflatten_batch(self.projector(self.reconstruction(flat)), lead)
