"""Measurement noise for simulated sinograms: white Gaussian, Poisson (transmission counts), none.

Every model is a small picklable callable ``noise(sinogram, generator) -> noisy`` with the
signature that :class:`phantoms.RandomEllipsesDataset` expects for its ``noise=`` hook:

- ``sinogram``: a float tensor of line integrals (value x mm), shape ``(..., *sinogram_dims)``;
  the leading dims are a batch, and every item gets its own noise level and its own draws.
- ``generator``: a **CPU** ``torch.Generator``, or an int seed. All random numbers are drawn on
  the CPU from it, in float64, then moved to the sinogram's device and dtype, so that one seed
  gives the same noise on every device and in every dtype, up to rounding (the Poisson model
  also computes its rates on the CPU, in float64).
- Output: same shape, dtype and device as ``sinogram``, computed in float32 or float64
  (float16/bfloat16 sinograms in float32, cast back).

``to_dict()`` gives a JSON description and :func:`noise_from_dict` rebuilds the model. The
models are documented in ``docs/training.md`` ("Noise models").
"""
from __future__ import annotations

import math
import numbers

import torch

__all__ = ["GaussianNoise", "PoissonNoise", "NoNoise", "noise_from_dict"]


def _generator(generator) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        if generator.device.type != "cpu":
            raise ValueError(f"generator must be a CPU torch.Generator, got one on {generator.device}")
        return generator
    if isinstance(generator, numbers.Integral) and not isinstance(generator, bool) and 0 <= generator < 2**64:
        return torch.Generator().manual_seed(int(generator))
    raise TypeError(f"generator must be a CPU torch.Generator or an int seed in [0, 2**64), got {generator!r}")


def _sinogram(sinogram, ndim: int) -> torch.Tensor:
    if not isinstance(sinogram, torch.Tensor):
        raise TypeError(f"sinogram must be a torch.Tensor, got {type(sinogram).__name__}")
    if not sinogram.dtype.is_floating_point:
        raise TypeError(f"sinogram must be a floating-point tensor, got {sinogram.dtype}")
    if sinogram.dim() < ndim:
        raise ValueError(f"sinogram must have at least ndim={ndim} dims, got shape {tuple(sinogram.shape)}")
    return sinogram


def _draw_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _number(value, name: str, minimum: float = 0.0, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < minimum or (strict and value == minimum):
        relation = ">" if strict else ">="
        raise ValueError(f"{name} must be finite and {relation} {minimum:g}, got {value}")
    return value


def _sinogram_ndim(ndim) -> int:
    if isinstance(ndim, bool) or ndim not in (1, 2, 3):
        raise ValueError(f"ndim must be 1, 2 or 3 (the dims of one sinogram), got {ndim!r}")
    return int(ndim)


class GaussianNoise:
    """Additive white Gaussian noise, relative to each sinogram's mean absolute value.

    ``noisy = y + level * mean(|y|) * e`` with ``e ~ N(0, 1)`` per detector bin, and the mean
    taken per item over its last ``ndim`` dims (2: ``(n_views, det_count)``, a 2D sinogram;
    use ``ndim=3`` for 3D projections ``(n_views, rows, cols)``). ``level=0.05`` is the 5 %
    noise of Adler and Oektem (learned primal-dual, 2018). An all-zero sinogram stays zero.
    """

    def __init__(self, level: float, ndim: int = 2):
        self.level = _number(level, "level")
        self.ndim = _sinogram_ndim(ndim)

    def __call__(self, sinogram: torch.Tensor, generator) -> torch.Tensor:
        y = _sinogram(sinogram, self.ndim)
        gen = _generator(generator)
        dtype = _draw_dtype(y.dtype)
        e = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(device=y.device, dtype=dtype)
        dims = tuple(range(-self.ndim, 0))
        std = self.level * y.to(dtype).abs().mean(dim=dims, keepdim=True)
        return (y.to(dtype) + std * e).to(y.dtype)

    def to_dict(self) -> dict:
        return {"type": "gaussian", "level": self.level, "ndim": self.ndim}

    def __eq__(self, other):
        return type(other) is GaussianNoise and (self.level, self.ndim) == (other.level, other.ndim)

    def __repr__(self):
        return f"GaussianNoise(level={self.level:g}, ndim={self.ndim})"


class PoissonNoise:
    """Photon-counting noise of a transmission scan, followed by the log transform.

    Units: ``sinogram`` holds line integrals ``y`` (value x mm); ``mu_scale`` (per unit of
    ``y``) turns them into optical depths ``y * mu_scale`` (dimensionless), e.g. ``mu_scale =
    mu_water`` in 1/mm when the phantom's values are relative to water. ``photons`` is ``I0``,
    the expected count per detector bin without an object. Then

    - counts ``I ~ Poisson(I0 exp(-y mu_scale))`` per bin (:meth:`counts`),
    - ``noisy = -log(max(I, 1) / I0) / mu_scale``, back in the units of ``y``.

    Zero counts (photon starvation) are replaced by one count, so the largest value the model
    returns is ``log(I0) / mu_scale``; no other correction. At high dose the result is
    unbiased to first order: its mean is about ``y + 1 / (2 I0 exp(-y mu_scale)) / mu_scale``
    and its variance about ``1 / (I0 exp(-y mu_scale)) / mu_scale^2``. Negative line
    integrals (possible with the random ellipses, whose values can be negative) just give
    rates above ``I0``. Rates and counts are computed on the CPU in float64.
    """

    def __init__(self, photons: float, mu_scale: float = 1.0):
        self.photons = _number(photons, "photons", strict=True)
        self.mu_scale = _number(mu_scale, "mu_scale", strict=True)

    def counts(self, sinogram: torch.Tensor, generator) -> torch.Tensor:
        """The photon counts ``I`` (float64, on the CPU) for ``sinogram``."""
        y = _sinogram(sinogram, 1)
        gen = _generator(generator)
        rate = self.photons * torch.exp(-self.mu_scale * y.detach().to("cpu", torch.float64))
        return torch.poisson(rate, generator=gen)

    def __call__(self, sinogram: torch.Tensor, generator) -> torch.Tensor:
        counts = self.counts(sinogram, generator)
        noisy = -torch.log(counts.clamp(min=1.0) / self.photons) / self.mu_scale
        return noisy.to(device=sinogram.device, dtype=sinogram.dtype)

    def to_dict(self) -> dict:
        return {"type": "poisson", "photons": self.photons, "mu_scale": self.mu_scale}

    def __eq__(self, other):
        return type(other) is PoissonNoise and (self.photons, self.mu_scale) == (other.photons, other.mu_scale)

    def __repr__(self):
        return f"PoissonNoise(photons={self.photons:g}, mu_scale={self.mu_scale:g})"


class NoNoise:
    """No noise: returns the sinogram itself (the generator is not advanced)."""

    def __call__(self, sinogram: torch.Tensor, generator) -> torch.Tensor:
        _sinogram(sinogram, 1)
        _generator(generator)
        return sinogram

    def to_dict(self) -> dict:
        return {"type": "none"}

    def __eq__(self, other):
        return type(other) is NoNoise

    def __repr__(self):
        return "NoNoise()"


_TYPES = {"gaussian": (GaussianNoise, ("level", "ndim")), "poisson": (PoissonNoise, ("photons", "mu_scale")),
          "none": (NoNoise, ())}


def noise_from_dict(description) -> GaussianNoise | PoissonNoise | NoNoise:
    """The noise model that ``to_dict()`` described: ``{"type": "gaussian", "level": 0.05}``,
    ``{"type": "poisson", "photons": 1e4, "mu_scale": 1.0}`` or ``{"type": "none"}`` (``None``
    also means no noise). Unknown types or keys raise a ValueError that names them."""
    if description is None:
        return NoNoise()
    if not isinstance(description, dict):
        raise TypeError(f"a noise description must be a dict or None, got {type(description).__name__}")
    kind = description.get("type")
    if kind not in _TYPES:
        raise ValueError(f"noise type must be one of {sorted(_TYPES)}, got {kind!r}")
    cls, keys = _TYPES[kind]
    unknown = sorted(set(description) - set(keys) - {"type"})
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} for noise type {kind!r}; allowed: {list(keys)}")
    return cls(**{k: description[k] for k in keys if k in description})
