"""Random ellipse phantoms: the synthetic training data of learned CT reconstruction.

The default distribution is the one of J. Adler and O. Oektem, "Learned
primal-dual reconstruction", IEEE Trans. Med. Imaging 37(6), 2018 (their
``random_ellipse`` in ``adler/odl/phantom.py``, used by
``learned_primal_dual/ellipses``), which is also the "ellipses" dataset of the
dival library (``EllipsesDataset``, J. Leuschner et al.). On the unit square
``[-1, 1]^2`` (scaled by ``scale`` mm per unit, as for the Shepp-Logan tables):

- intensity ``U(-1/2, 1/2) * Exp(mean 0.4)`` (symmetric, heavy-tailed, can be negative),
- semi-axes ``a, b`` independently ``0.2 * Exp(mean 1)``,
- centre ``(x0, y0)`` uniform on ``[-1, 1]^2``,
- angle uniform on ``[0, 360)`` degrees,
- 50 ellipses (dival); ``poisson=True`` draws the count from ``Poisson(50)`` (Adler).

One deliberate change makes the exact sinogram match the image: the sources
rasterise on a grid and so silently cut off ellipses that leave the field, whereas
an exact line integral would count the part outside. Here every ellipse is shrunk
about its centre (both semi-axes by the same factor) until it lies inside the
``region``: the square ``[-1, 1]^2`` (default; centres as in the sources) or the
unit disc (centres uniform on the disc). ``docs/phantoms.md`` has the details.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from known_ops import FanBeam2D, ParallelBeam2D, Volume

from .ellipses import Ellipse, _check_dtype, _supersample_count, ellipse_image, ellipse_line_integrals
from .shepp_logan import _check_scale, phantom_scale

__all__ = [
    "random_ellipses",
    "random_ellipse_images",
    "random_ellipse_projections",
    "RandomEllipsesDataset",
]

# Smallest semi-axis (table units) after shrinking: keeps every ellipse valid (a, b > 0) when a centre
# falls on the region's boundary; such an ellipse covers no pixel of any practical grid.
_MIN_AXIS = 1e-9
_REGIONS = ("square", "disc")


def _make_generator(generator) -> torch.Generator:
    """A CPU torch.Generator: the given one, one seeded with an int, or (None) one seeded from torch's global RNG."""
    if isinstance(generator, torch.Generator):
        if generator.device.type != "cpu":
            raise ValueError(f"generator must be a CPU torch.Generator, got one on {generator.device}")
        return generator
    if generator is None:
        seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))  # follows torch.manual_seed
        return torch.Generator().manual_seed(seed)
    if isinstance(generator, bool) or not isinstance(generator, numbers.Integral):
        raise TypeError(f"generator must be None, an int seed or a torch.Generator, got {type(generator).__name__}")
    if not 0 <= generator < 2**64:
        raise ValueError(f"generator: an int seed must lie in [0, 2**64), got {generator}")
    return torch.Generator().manual_seed(int(generator))


def _count(value, name: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _positive(value, name: str, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive number, got {value!r}")
    if not (0 < float(value) < math.inf):
        raise ValueError(f"{name} must be positive and finite, got {value}")
    return float(value)


def _interval(value, name: str):
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be None or a pair (low, high) of numbers, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise ValueError(f"{name} must be a finite pair with low <= high, got {value!r}")
    return lo, hi


def random_ellipses(
    n_ellipses: int = 50,
    generator=None,
    scale: float = 1.0,
    *,
    poisson: bool = False,
    mean_axis: float = 0.2,
    max_axis: float | None = None,
    intensity_range=None,
    region: str = "square",
) -> list[Ellipse]:
    """Draw one random ellipse phantom: a list of :class:`Ellipse` in mm (``scale`` mm per unit).

    ``n_ellipses`` ellipses (``poisson=True``: a ``Poisson(n_ellipses)`` number of them) with,
    in table units of the square ``[-1, 1]^2``,

    - semi-axes ``a, b = mean_axis * Exp(1)`` each, clipped to ``max_axis`` if given;
    - intensity ``U(-1/2, 1/2) * Exp(mean 0.4)`` (``intensity_range=None``, the
      Adler-Oektem/dival law) or uniform on ``intensity_range = (low, high)``;
    - angle ``theta_deg`` uniform on ``[0, 360)``;
    - centre uniform on the square ``[-1, 1]^2`` (``region="square"``) or on the unit
      disc (``region="disc"``), after which the ellipse is shrunk about its centre, if
      needed, to lie inside that region (so it lies inside the field of a volume whose
      :func:`phantom_scale` is ``scale``, and its exact sinogram matches its image).

    ``generator``: a CPU ``torch.Generator`` (advanced by the draws), an int seed, or
    ``None`` (a seed taken from torch's global RNG, so ``torch.manual_seed`` fixes it).
    The same seed and parameters give the same ellipses; ``scale`` only multiplies
    lengths, so one seed gives the same object at every scale.
    """
    gen = _make_generator(generator)
    n_ellipses = _count(n_ellipses, "n_ellipses")
    if not isinstance(poisson, bool):
        raise TypeError(f"poisson must be True or False, got {poisson!r}")
    scale = _check_scale(scale)
    mean_axis = _positive(mean_axis, "mean_axis")
    max_axis = _positive(max_axis, "max_axis", allow_none=True)
    intensity_range = _interval(intensity_range, "intensity_range")
    if region not in _REGIONS:
        raise ValueError(f"region must be one of {_REGIONS}, got {region!r}")

    f64 = dict(dtype=torch.float64, generator=gen)
    if poisson:
        n = int(torch.poisson(torch.tensor(float(n_ellipses), dtype=torch.float64), generator=gen))
    else:
        n = n_ellipses
    # Fixed draw order (one call per parameter) so that a seed always gives the same ellipses.
    if intensity_range is None:
        intensity = (torch.rand(n, **f64) - 0.5) * torch.empty(n, dtype=torch.float64).exponential_(2.5, generator=gen)
    else:
        lo, hi = intensity_range
        intensity = lo + (hi - lo) * torch.rand(n, **f64)
    axes = mean_axis * torch.empty(n, 2, dtype=torch.float64).exponential_(1.0, generator=gen)
    if max_axis is not None:
        axes = axes.clamp(max=max_axis)
    u = torch.rand(n, 2, **f64)
    theta = 360.0 * torch.rand(n, **f64)
    a, b = axes.unbind(1)
    if region == "square":
        centre = 2.0 * u - 1.0
        # Half-widths of the bounding box of the rotated ellipse; both scale linearly with (a, b).
        t = torch.deg2rad(theta)
        half_x = torch.hypot(a * torch.cos(t), b * torch.sin(t))
        half_y = torch.hypot(a * torch.sin(t), b * torch.cos(t))
        room = torch.minimum((1.0 - centre[:, 0].abs()) / half_x, (1.0 - centre[:, 1].abs()) / half_y)
    else:
        radius, phi = torch.sqrt(u[:, 0]), 2.0 * math.pi * u[:, 1]  # uniform on the unit disc
        centre = torch.stack([radius * torch.cos(phi), radius * torch.sin(phi)], 1)
        room = (1.0 - radius) / torch.maximum(a, b)  # |c| + max(a, b) <= 1 keeps it inside the disc
    shrink = room.clamp(max=1.0)
    a, b = (a * shrink).clamp(min=_MIN_AXIS), (b * shrink).clamp(min=_MIN_AXIS)
    rows = torch.stack([intensity, a, b, centre[:, 0], centre[:, 1], theta], 1).tolist()
    return [Ellipse(*row).scaled(scale) for row in rows]


def _check_volume_2d(volume) -> Volume:
    if not isinstance(volume, Volume):
        raise TypeError(f"volume must be a known_ops.Volume, got {type(volume).__name__}")
    if volume.ndim != 2:
        raise ValueError(f"volume must be 2D (ny, nx), got shape {volume.shape}")
    return volume


def _check_geometry_2d(geometry):
    if not isinstance(geometry, (ParallelBeam2D, FanBeam2D)):
        raise TypeError(f"geometry must be a ParallelBeam2D or FanBeam2D, got {type(geometry).__name__}")
    return geometry


def _resolve_scale(scale, volume) -> float:
    if scale is not None and volume is not None:
        raise ValueError("give either scale or volume (the volume only serves to derive the scale), not both")
    if scale is not None:
        return _check_scale(scale)
    if volume is None:
        raise ValueError("give volume (or scale) so that the sinogram describes the same object as the image")
    return phantom_scale(_check_volume_2d(volume))


def random_ellipse_images(
    n: int,
    volume: Volume,
    generator=None,
    supersample: int = 4,
    dtype: torch.dtype = torch.float32,
    device=None,
    scale: float | None = None,
    **params,
) -> torch.Tensor:
    """``n`` random ellipse phantoms rasterised on ``volume``: an ``(n, ny, nx)`` tensor.

    Phantom ``k`` is the ``k``-th call of :func:`random_ellipses` on one generator
    (``generator`` as there; ``params`` are its keyword arguments), at ``scale``
    (default :func:`phantom_scale` of ``volume``), rasterised by :func:`ellipse_image`.
    With the same int seed, scale and ``params``,
    :func:`random_ellipse_projections` gives the exact sinograms of these images.
    """
    n = _count(n, "n")
    volume = _check_volume_2d(volume)
    _check_dtype(dtype)
    scale = phantom_scale(volume) if scale is None else _check_scale(scale)
    gen = _make_generator(generator)
    images = torch.empty((n, *volume.shape), dtype=dtype, device=device)
    for k in range(n):
        ellipses = random_ellipses(generator=gen, scale=scale, **params)
        images[k] = _image(volume, ellipses, supersample, dtype, device)
    return images


def random_ellipse_projections(
    n: int,
    geometry,
    volume: Volume | None = None,
    generator=None,
    dtype: torch.dtype = torch.float64,
    scale: float | None = None,
    **params,
) -> torch.Tensor:
    """Exact sinograms of ``n`` random ellipse phantoms: an ``(n, n_views, n_det)`` tensor.

    The ellipses are those of :func:`random_ellipse_images` for the same ``generator``
    (an int seed; a ``torch.Generator`` is advanced, so pass a fresh one in the same
    state), ``params`` and scale; the scale is ``scale`` or derived from ``volume``
    (one of the two is required). Values are line integrals (value x mm) along every
    ray of ``geometry.rays()`` (any 2D geometry), computed by :func:`ellipse_line_integrals`.
    """
    n = _count(n, "n")
    geometry = _check_geometry_2d(geometry)
    scale = _resolve_scale(scale, volume)
    _check_dtype(dtype)
    gen = _make_generator(generator)
    rays = geometry.rays()
    origins, directions = rays[..., 0:2], rays[..., 2:4]
    sinograms = torch.empty((n, *geometry.shape), dtype=dtype)
    for k in range(n):
        ellipses = random_ellipses(generator=gen, scale=scale, **params)
        sinograms[k] = _line_integrals(origins, directions, ellipses).to(dtype)
    return sinograms


def _image(volume, ellipses, supersample, dtype, device=None) -> torch.Tensor:
    if not ellipses:  # n_ellipses=0 or a Poisson draw of 0: an empty phantom
        _supersample_count(supersample)
        return torch.zeros(volume.shape, dtype=dtype, device=device)
    return ellipse_image(volume, ellipses, supersample, dtype, device)


def _line_integrals(origins, directions, ellipses) -> torch.Tensor:
    if not ellipses:  # n_ellipses=0 or a Poisson draw of 0: an empty phantom
        return torch.zeros(origins.shape[:-1], dtype=torch.float64)
    return ellipse_line_integrals(origins, directions, ellipses)


def _index_seed(seed: int, index: int) -> int:
    """A 64-bit seed mixing (seed, index) (numpy's SeedSequence): independent streams per item."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0])


class RandomEllipsesDataset(torch.utils.data.Dataset):
    """Pairs (image, exact sinogram) of random ellipse phantoms, deterministic per index.

    Item ``k`` uses a ``torch.Generator`` seeded with a 64-bit mix of ``(seed, k)``
    (``numpy.random.SeedSequence``), so it is the same in every epoch, process and
    ``DataLoader`` worker, and independent of the order of access. The image is
    :func:`ellipse_image` of :func:`random_ellipses` (``params`` are its keyword
    arguments) on ``volume`` at ``phantom_scale(volume)``; the sinogram
    (``geometry.shape``) holds their exact line integrals. ``noise``, if given, is
    called as ``noise(sinogram, generator)`` with the item's generator (after the
    ellipse draws) and returns the noisy sinogram, so noise is reproducible too.
    """

    def __init__(
        self,
        length: int,
        volume: Volume,
        geometry,
        seed: int = 0,
        noise=None,
        supersample: int = 4,
        dtype: torch.dtype = torch.float32,
        **params,
    ):
        self.length = _count(length, "length")
        self.volume = _check_volume_2d(volume)
        self.geometry = _check_geometry_2d(geometry)
        self.seed = _count(seed, "seed")
        if noise is not None and not callable(noise):
            raise TypeError(f"noise must be None or a callable noise(sinogram, generator), got {type(noise).__name__}")
        self.noise = noise
        _check_dtype(dtype)
        self.dtype = dtype
        self.scale = phantom_scale(volume)
        self.params = dict(params)
        # Validate params now, not in a worker ('scale' and 'generator' are not parameters: TypeError).
        random_ellipses(generator=0, scale=self.scale, **self.params)
        self.supersample = _supersample_count(supersample)
        rays = geometry.rays()
        self._origins, self._directions = rays[..., 0:2], rays[..., 2:4]

    def __len__(self) -> int:
        return self.length

    def ellipses(self, index: int) -> list[Ellipse]:
        """The ellipses (mm) of item ``index``."""
        return random_ellipses(generator=self._generator(index), scale=self.scale, **self.params)

    def _generator(self, index) -> torch.Generator:
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise TypeError(f"index must be an integer, got {type(index).__name__}")
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for a dataset of length {self.length}")
        return torch.Generator().manual_seed(_index_seed(self.seed, int(index) % self.length))

    def __getitem__(self, index):
        gen = self._generator(index)
        ellipses = random_ellipses(generator=gen, scale=self.scale, **self.params)
        image = _image(self.volume, ellipses, self.supersample, self.dtype)
        sinogram = _line_integrals(self._origins, self._directions, ellipses).to(self.dtype)
        if self.noise is not None:
            sinogram = self.noise(sinogram, gen)
        return image, sinogram
