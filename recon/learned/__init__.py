"""Learned reconstruction built on the known operators (precision learning).

Each model is an ``nn.Module`` built as ``Model(volume, geometry, **hyper_parameters)`` (or from a
ready operator where it has one) and called as ``model(y) -> x``: ``y`` of shape
``(B, [C,] *geometry.shape)`` to ``x`` of shape ``(B, [C,] *volume.shape)`` (every leading dim is a
batch dim), on any device, float32/float64, under autocast and ``torch.compile``. Known operators
are frozen buffers; only the unknown parts are parameters (``count_parameters``). Where an analytic
algorithm exists the model starts as that algorithm. See ``docs/learned.md``.
"""
from ._common import count_parameters
from .fbp import LearnedFBP
from .rebinning import DerivedRebinning
from .unet import UNet, UNetPostProcessing
from .unrolled import LearnedGradient, LearnedPrimal, LearnedPrimalDual
from .variational import VariationalNetwork

__all__ = ["count_parameters", "LearnedFBP", "VariationalNetwork", "LearnedGradient", "LearnedPrimal",
           "LearnedPrimalDual", "DerivedRebinning", "UNetPostProcessing", "UNet"]
