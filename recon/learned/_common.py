"""Shared pieces of the learned models: operator set-up, batch handling, small CNN blocks."""
from __future__ import annotations

import math
import numbers

import torch
from torch import nn

import known_ops as ko

__all__ = ["count_parameters", "ConvBlock", "ray_transform", "normalising_norm", "flatten_batch", "unflatten_batch", "initial_reconstruction",
           "positive_int", "flag", "check_ndim"]


def positive_int(value, name: str, minimum: int = 1) -> int:
    """``value`` as an int ``>= minimum``; a TypeError or ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def flag(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def check_ndim(volume, model: str) -> int:
    if volume.ndim not in (2, 3):
        raise ValueError(f"{model}: volume must be 2D or 3D, got {volume.ndim}D")
    return volume.ndim


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """The number of (trainable, by default) parameters of ``model``; shared parameters count once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def ray_transform(volume, geometry, operator=None) -> ko.RayTransform:
    """The model's forward operator: ``operator`` if given (checked against volume and geometry), else
    ``RayTransform(volume, geometry)`` (Joseph's method with its exact adjoint)."""
    if not isinstance(volume, ko.Volume):
        raise TypeError(f"volume must be a known_ops.Volume, got {type(volume).__name__}")
    if operator is None:
        return ko.RayTransform(volume, geometry)
    ko.linear.check_linear_operator(operator, "operator")
    if tuple(operator.domain_shape) != tuple(volume.shape) or tuple(operator.range_shape) != tuple(geometry.shape):
        raise ValueError(
            f"operator must map the volume's shape {tuple(volume.shape)} to the geometry's projections "
            f"{tuple(geometry.shape)}, got {tuple(operator.domain_shape)} -> {tuple(operator.range_shape)}"
        )
    return operator


def normalising_norm(A) -> float:
    """``||A||`` (power iteration) for the ``A / ||A||`` normalisation of the unrolled networks; a clear
    error when ``A`` is zero (no ray of the geometry crosses the volume)."""
    norm = A.norm()
    if norm == 0.0:
        raise ValueError("operator: the operator is zero (no ray of the geometry crosses the volume), so it cannot be "
                         "normalised by its norm; check the geometry's detector size and the volume's position")
    return norm


def flatten_batch(t: torch.Tensor, item_shape: tuple[int, ...], name: str) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``(*lead, *item_shape) -> (N, *item_shape)`` with ``N = prod(lead)`` (at least one leading dim
    is not required), and ``lead`` to undo it with :func:`unflatten_batch`."""
    t = ko._dtypes.floating_input(t, name)
    ko.linear.check_trailing_shape(t, name, tuple(item_shape), "a batch of the geometry's projections" if name == "y" else "")
    lead = tuple(t.shape[: t.dim() - len(item_shape)])
    return t.reshape((math.prod(lead),) + tuple(item_shape)), lead


def unflatten_batch(t: torch.Tensor, lead: tuple[int, ...]) -> torch.Tensor:
    return t.reshape(lead + tuple(t.shape[1:]))


def _conv(ndim: int):
    return nn.Conv2d if ndim == 2 else nn.Conv3d


class ConvBlock(nn.Sequential):
    """Three ``kernel_size`` convolutions ``in -> hidden -> hidden -> out`` ('same' padding, biases), the
    first two followed by an activation: ``"prelu"`` (per channel, initialised to 0, i.e. ReLU at the
    start, as Adler's ``prelu``) or ``"relu"``. Weights: Xavier (Glorot) normal, biases 0, as in
    Adler and Oektem's reference code; ``zero_last=True`` zeros the last layer, so that a residual
    update starts at 0. 2D (``ndim=2``) or 3D convolutions."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 32, activation: str = "prelu",
                 kernel_size: int = 3, ndim: int = 2, zero_last: bool = False):
        if activation not in ("prelu", "relu"):
            raise ValueError(f"activation must be 'prelu' or 'relu', got {activation!r}")
        if ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {ndim!r}")
        conv = _conv(ndim)
        pad = kernel_size // 2

        def act(n):
            return nn.PReLU(n, init=0.0) if activation == "prelu" else nn.ReLU()

        layers = [conv(in_channels, hidden, kernel_size, padding=pad), act(hidden),
                  conv(hidden, hidden, kernel_size, padding=pad), act(hidden),
                  conv(hidden, out_channels, kernel_size, padding=pad)]
        super().__init__(*layers)
        for layer in self:
            if isinstance(layer, (nn.Conv2d, nn.Conv3d)):
                nn.init.xavier_normal_(layer.weight)
                nn.init.zeros_(layer.bias)
        if zero_last:
            nn.init.zeros_(self[-1].weight)


def initial_reconstruction(volume, geometry, fbp_filter: str = "ram-lak", fbp_cutoff: float = 1.0):
    """The frozen FBP/FDK (``recon.FBP`` with window ``fbp_filter`` and cut-off ``fbp_cutoff``) that
    starts an unrolled scheme or feeds a post-processing network; errors about the window and the
    cut-off name the models' hyper-parameters ``fbp_filter`` and ``fbp_cutoff``."""
    from recon.analytic import FBP

    try:
        fbp = FBP(volume, geometry, filter=fbp_filter, cutoff=fbp_cutoff)
    except (TypeError, ValueError) as err:
        message = str(err)
        for old, new in (("window", "fbp_filter"), ("cutoff", "fbp_cutoff")):
            if message.startswith(old + " "):
                raise type(err)(new + message[len(old):]) from None
        raise
    for p in fbp.parameters():
        p.requires_grad_(False)
    return fbp
