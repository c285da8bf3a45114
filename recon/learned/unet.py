"""UNetPostProcessing: FBP followed by a residual U-Net (FBPConvNet).

K. H. Jin, M. T. McCann, E. Froustey and M. Unser, "Deep convolutional neural network for inverse
problems in imaging", IEEE TIP 26(9), 2017 (FBPConvNet); the U-Net of O. Ronneberger, P. Fischer and
T. Brox, MICCAI 2015; the reference U-Net of J. Adler and O. Oektem's "Learned primal-dual
reconstruction" experiments (``learned_primal_dual/ellipses/unet_reference.py``, ``reference_unet``
in ``adler/tensorflow/layers.py``). ``docs/learned.md`` has the details.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

import known_ops as ko

from ._common import check_ndim, flag, flatten_batch, initial_reconstruction, positive_int, ray_transform, unflatten_batch

__all__ = ["UNet", "UNetPostProcessing"]


class UNet(nn.Module):
    """A standard U-Net on ``(N, in_channels, *spatial)`` (2D or 3D) with ``depth`` down/up levels.

    Level ``l`` (0 at the top) has ``features * 2**l`` channels and two 3x3 convolutions ('same' zero
    padding), each followed by (optional batch norm and) ReLU; down: 2x2 max pooling; up: a 2x2
    transposed convolution with stride 2 to the level's channels, followed by (batch norm and) ReLU
    as in Adler's ``reference_unet``, concatenated with the skip; last: a 1x1 convolution to
    ``out_channels``. Sizes that do not divide by ``2**depth`` are zero-padded (evenly on both
    sides) and cropped back. Weights: Xavier (Glorot) normal, biases 0 (Adler's ``init='xavier'``);
    ``zero_last=True`` zeros the 1x1 layer (a residual branch that starts at 0). With
    ``batch_norm`` the convolutions have no bias (the norm's shift replaces it).
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, features: int = 32, depth: int = 4,
                 batch_norm: bool = False, ndim: int = 2, zero_last: bool = True):
        super().__init__()
        in_channels = positive_int(in_channels, "in_channels")
        out_channels = positive_int(out_channels, "out_channels")
        self.features = positive_int(features, "features")
        self.depth = positive_int(depth, "depth")
        self.batch_norm = flag(batch_norm, "batch_norm")
        zero_last = flag(zero_last, "zero_last")
        if isinstance(ndim, bool) or ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {ndim!r}")
        self.ndim = int(ndim)
        conv, convT = (nn.Conv2d, nn.ConvTranspose2d) if ndim == 2 else (nn.Conv3d, nn.ConvTranspose3d)
        norm = nn.BatchNorm2d if ndim == 2 else nn.BatchNorm3d
        self.pool = nn.MaxPool2d(2) if ndim == 2 else nn.MaxPool3d(2)

        def block(layer, n_out):
            parts = [layer]
            if batch_norm:
                parts.append(norm(n_out))
            parts.append(nn.ReLU())
            return parts

        def double_conv(n_in, n_out):
            return nn.Sequential(*block(conv(n_in, n_out, 3, padding=1, bias=not batch_norm), n_out),
                                 *block(conv(n_out, n_out, 3, padding=1, bias=not batch_norm), n_out))

        widths = [self.features * 2**level for level in range(self.depth + 1)]
        self.down = nn.ModuleList([double_conv(in_channels, widths[0])]
                                  + [double_conv(widths[k - 1], widths[k]) for k in range(1, self.depth + 1)])
        self.up = nn.ModuleList([nn.Sequential(*block(convT(widths[k], widths[k - 1], 2, stride=2, bias=not batch_norm), widths[k - 1]))
                                 for k in range(self.depth, 0, -1)])
        self.merge = nn.ModuleList([double_conv(2 * widths[k - 1], widths[k - 1]) for k in range(self.depth, 0, -1)])
        self.last = conv(widths[0], out_channels, 1)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
                nn.init.xavier_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        if zero_last:
            nn.init.zeros_(self.last.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.ndim + 2:
            raise ValueError(f"x must have shape (N, C, *{self.ndim}D image), got {tuple(x.shape)}")
        spatial = tuple(x.shape[2:])
        multiple = 2**self.depth
        padded = tuple(math.ceil(n / multiple) * multiple for n in spatial)
        pads = []  # F.pad order: last dim first, (before, after)
        for n, m in zip(reversed(spatial), reversed(padded)):
            pads += [(m - n) // 2, m - n - (m - n) // 2]
        if any(pads):
            x = F.pad(x, pads)
        skips = []
        for level, block in enumerate(self.down):
            if level > 0:
                x = self.pool(x)
            x = block(x)
            skips.append(x)
        skips.pop()  # the coarsest level is not a skip
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        x = self.last(x)
        if any(pads):
            x = x[(slice(None), slice(None)) + tuple(slice(p, p + n) for p, n in zip(pads[-2::-2], spatial))]
        return x

    def extra_repr(self) -> str:
        return f"features={self.features}, depth={self.depth}, batch_norm={self.batch_norm}, ndim={self.ndim}"


class UNetPostProcessing(nn.Module):
    """FBPConvNet: ``x = FBP(y) + UNet(FBP(y))``, a frozen FBP followed by a residual U-Net.

    ``FBP`` is ``recon.FBP(volume, geometry, filter=fbp_filter, cutoff=fbp_cutoff)`` with no
    parameters (frozen; Hann window by default, as Adler and Oektem's reference U-Net), ``UNet`` a
    :class:`UNet` with one input and one output channel, ``features`` channels at the top level,
    doubling over ``depth`` levels, optional ``batch_norm`` (default off, as Adler's reference; Jin
    et al. used it) and ReLU. The last 1x1 convolution is zero-initialised, so at initialisation the
    model *is* the FBP, exactly; then only that layer has a non-zero gradient, and after the first
    optimiser step all layers do.

    Parameters (``count_parameters``): 7,759,521 for the defaults (``features=32, depth=4``),
    31,030,593 for Jin et al.'s and Adler's ``features=64, depth=4`` (31,037,441 with batch norm).

    Papers (from memory): Jin et al. learn the residual ``x - FBP(y)`` with a U-Net of 64 to 1024
    channels over four poolings, 3x3 convolutions with batch norm and ReLU, max pooling, up-sampling
    by transposed convolutions and skip concatenations, trained on sparse-view FBPs. Adler and
    Oektem's reference (their U-Net baseline) is the same shape with 64 features, no batch norm,
    ReLU, Xavier initialisation, 2x2 stride-2 transposed convolutions followed by the activation,
    and a Hann-filtered FBP. Changed here: 32 features by default (a quarter of the parameters);
    the last layer starts at zero (Adler's is Xavier-initialised), so training starts from the FBP;
    sizes that do not divide by ``2**depth`` are zero-padded and cropped (Adler's TensorFlow layers
    handle odd sizes with 'SAME' pooling and an explicit output shape of the transposed convolution).

    Args:
        volume, geometry: the reconstruction grid and the scan (2D; 3D volumes use 3D convolutions).
        features: channels of the top level (default 32).
        depth: number of down-sampling steps (default 4); any image size works (zero-padded to a
            multiple of ``2**depth`` and cropped back).
        batch_norm: batch normalisation after every convolution (default ``False``).
        fbp_filter, fbp_cutoff: the FBP's window and cut-off (default ``"hann"``, 1).
        operator: accepted for the models' common signature and checked against ``volume`` and
            ``geometry``; post-processing has no data term and does not use it.

    Input ``(B, [C,] *geometry.shape)``, output ``(B, [C,] *volume.shape)`` (all leading dims are
    batch dims, processed as one batch of the U-Net).
    """

    def __init__(self, volume: ko.Volume, geometry, features: int = 32, depth: int = 4, batch_norm: bool = False,
                 fbp_filter: str = "hann", fbp_cutoff: float = 1.0, operator=None):
        super().__init__()
        if operator is not None:
            ray_transform(volume, geometry, operator)  # checked only: no data term here
        self.fbp = initial_reconstruction(volume, geometry, fbp_filter, fbp_cutoff)  # checks volume and geometry
        ndim = check_ndim(volume, "UNetPostProcessing")
        self.unet = UNet(1, 1, features=features, depth=depth, batch_norm=batch_norm, ndim=ndim, zero_last=True)
        self.volume = volume
        self.geometry = geometry

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        y, lead = flatten_batch(y, tuple(self.geometry.shape), "y")
        x0 = self.fbp(y)
        x = x0 + self.unet(x0.unsqueeze(1)).squeeze(1)
        return unflatten_batch(x, lead)
