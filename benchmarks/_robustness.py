"""The robustness toolkit (benchmarks/robustness.py): test-time perturbations and error measures.

Perturbations of a sinogram ``y`` (``(B, *geometry.shape)``):

- :func:`poisson_sinograms`: photon-counting noise at a dose of ``photons`` incident photons per
  detector bin (``phantoms.PoissonNoise``: counts ``Poisson(I0 exp(-mu y))``, then the log transform);
  :func:`relative_noise` states what a dose means in the units of the training noise.
- :func:`adversarial_perturbation`: projected gradient ascent (Madry et al., ICLR 2018, the L2 version)
  on the reconstruction's squared error, inside the ball ``||delta|| <= epsilon ||y||`` per sinogram;
  :func:`random_perturbation`: a random direction of the same norm, for comparison.

Measures of a reconstruction ``x`` against the truth (``(B, ny, nx)``):

- :func:`error_measures`: mean and maximum absolute error over the image and a region of interest;
- :func:`false_structures`: structures that appear (connected components of ``|x - truth| > threshold``
  away from the truth's edges, at least ``min_pixels`` pixels);
- :func:`contrast_recovery`: how much of a known insert's contrast survives (a structure vanishes when
  less than half of it does);
- :func:`edge_shift`: the displacement in mm of a known straight edge, from the half-level crossing of the
  profile across it, at sub-pixel precision.

:func:`ood_phantoms` builds the out-of-distribution test phantoms (a small high-contrast disc and a thin
line on a held-out random-ellipse phantom, and a rectangle with a star: straight edges and corners that the
random ellipses never have), each with its exact sinogram.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

import phantoms

__all__ = ["poisson_sinograms", "relative_noise", "adversarial_perturbation", "random_perturbation",
           "error_measures", "false_structures", "contrast_recovery", "Edge", "rectangle_edges", "edge_shift",
           "ood_phantoms"]


# --- perturbations ---------------------------------------------------------------------------------------------


def poisson_sinograms(y_exact: torch.Tensor, photons: float, mu_scale: float, seed: int) -> torch.Tensor:
    """``y_exact`` with Poisson noise at ``photons`` incident photons per bin (``phantoms.PoissonNoise``;
    ``mu_scale`` turns line integrals into optical depths), drawn from ``seed``."""
    return phantoms.PoissonNoise(photons, mu_scale)(y_exact, torch.Generator().manual_seed(seed))


def relative_noise(y_noisy: torch.Tensor, y_exact: torch.Tensor) -> float:
    """The noise as the training noise model states it: ``std(y_noisy - y_exact) / mean|y_exact|`` (over all
    bins and items), so that a dose can be set beside Gaussian noise of a level (e.g. 0.01 = 1 %)."""
    return float((y_noisy - y_exact).double().std() / y_exact.double().abs().mean())


def _item_norms(t: torch.Tensor) -> torch.Tensor:
    """The L2 norm of every item (all dims after the first), shape (B, 1, ..., 1) for broadcasting."""
    return torch.linalg.vector_norm(t.flatten(1), dim=1).reshape(-1, *([1] * (t.dim() - 1)))


def _project(delta: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """``delta`` scaled back onto the ball of ``radius`` (per item) where it left it."""
    return delta * torch.clamp(radius / _item_norms(delta).clamp(min=1e-30), max=1.0)


def adversarial_perturbation(model, y: torch.Tensor, truth: torch.Tensor, epsilon: float, steps: int = 20,
                             step_fraction: float = 2.5, mask: torch.Tensor | None = None):
    """``(delta, history)``: a perturbation of each sinogram of ``y`` (``(B, *sinogram)``) with
    ``||delta_b|| <= epsilon ||y_b||`` that makes ``model(y + delta)`` far from ``truth`` (``(B, *image)``).

    Projected gradient ascent on the squared error ``L_b = sum (model(y + delta) - truth)^2`` (over
    ``mask``, a boolean image, when given), the L2 version of Madry et al. (ICLR 2018): from
    ``delta = 0``, ``steps`` times ``delta <- P(delta + alpha g / ||g||)`` with ``g = dL/d delta`` per item,
    ``alpha = step_fraction epsilon ||y|| / steps`` and ``P`` the projection onto the ball. The model is
    differentiated end to end (the library's operators have exact adjoints as gradients); its parameters
    are not changed. Returns the iterate of largest error per item (never below ``delta = 0``'s error)
    and ``history``: the per-item error ``L`` before the first step and after each step, ``(steps + 1, B)``.
    """
    if not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon must be a positive number (a fraction of ||y||), got {epsilon!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    y, truth = y.detach(), truth.detach()
    radius = epsilon * _item_norms(y)
    alpha = step_fraction * radius / steps
    weight = None if mask is None else mask.to(truth.dtype)

    def errors(delta, grad: bool):
        with torch.enable_grad():
            delta = delta.detach().requires_grad_(grad)
            squared = (model(y + delta) - truth).square()
            if weight is not None:
                squared = squared * weight
            per_item = squared.flatten(1).sum(1)
            g = torch.autograd.grad(per_item.sum(), delta)[0] if grad else None
        return per_item.detach(), g

    delta = torch.zeros_like(y)
    best, best_error = delta.clone(), None
    history = []
    for step in range(steps + 1):
        error, g = errors(delta, grad=step < steps)
        history.append(error)
        better = torch.ones_like(error, dtype=torch.bool) if best_error is None else error > best_error
        best = torch.where(better.reshape(-1, *([1] * (y.dim() - 1))), delta, best)
        best_error = error if best_error is None else torch.maximum(error, best_error)
        if g is not None:
            delta = _project(delta + alpha * g / _item_norms(g).clamp(min=1e-30), radius)
    return best, torch.stack(history)


def random_perturbation(y: torch.Tensor, epsilon: float, seed: int) -> torch.Tensor:
    """A white Gaussian direction per sinogram scaled to ``||delta_b|| = epsilon ||y_b||`` (drawn from ``seed``)."""
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(y)
    return g * (epsilon * _item_norms(y) / _item_norms(g))


# --- measures ---------------------------------------------------------------------------------------------------


def error_measures(x: torch.Tensor, truth: torch.Tensor, roi: torch.Tensor) -> dict:
    """Per image (lists): mean and maximum absolute error over the whole image and inside ``roi`` (a
    boolean image), and the 99th percentile of the absolute error over the image (a maximum that one
    pixel cannot set)."""
    error = (x.double() - truth.double()).abs().flatten(1)
    inside = error[:, roi.flatten()]
    return {"mae": error.mean(1).tolist(), "max": error.amax(1).tolist(),
            "p99": torch.quantile(error, 0.99, dim=1).tolist(),
            "mae_roi": inside.mean(1).tolist(), "max_roi": inside.amax(1).tolist()}


def _edges_of(truth: np.ndarray, threshold: float, band: int) -> np.ndarray:
    """Pixels within ``band`` pixels of an edge of ``truth``: where the value range of a 3 x 3 neighbourhood
    exceeds ``threshold``."""
    spread = ndimage.maximum_filter(truth, size=3) - ndimage.minimum_filter(truth, size=3)
    edges = spread > threshold
    return ndimage.binary_dilation(edges, iterations=band) if band > 0 else edges


def false_structures(x: torch.Tensor, truth: torch.Tensor, threshold: float, min_pixels: int = 4,
                     edge_band: int = 2) -> list[dict]:
    """Structures that appear, per image: the 8-connected components of ``|x - truth| > threshold`` that lie
    outside the truth's edges (:func:`_edges_of` with the same threshold, widened by ``edge_band`` pixels,
    so that a blurred or shifted edge does not count; that is :func:`edge_shift`'s job) and have at least
    ``min_pixels`` pixels. Returns ``[{"count", "pixels", "bright", "dark"}]`` (``bright``: components where
    the reconstruction is too high on average; ``dark``: too low)."""
    out = []
    for xi, ti in zip(x.double().cpu().numpy(), truth.double().cpu().numpy()):
        error = xi - ti
        candidate = (np.abs(error) > threshold) & ~_edges_of(ti, threshold, edge_band)
        labels, n = ndimage.label(candidate, structure=np.ones((3, 3)))
        sizes = ndimage.sum_labels(np.ones_like(error), labels, index=np.arange(1, n + 1))
        means = ndimage.mean(error, labels, index=np.arange(1, n + 1)) if n else np.zeros(0)
        keep = sizes >= min_pixels
        out.append({"count": int(keep.sum()), "pixels": int(sizes[keep].sum()),
                    "bright": int((keep & (means > 0)).sum()), "dark": int((keep & (means < 0)).sum())})
    return out


def _dilate(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    return F.max_pool2d(mask[None, None].double(), 2 * pixels + 1, stride=1, padding=pixels)[0, 0] > 0


def contrast_recovery(x: torch.Tensor, truth: torch.Tensor, inside: torch.Tensor, guard: int = 2,
                      surround: int = 3) -> list[float]:
    """Recovered contrast of a known structure, per image: ``(mean x over inside - mean x over the surround) /
    (the same for the truth)``; ``inside`` is the structure's boolean mask, the surround the pixels between
    ``guard`` and ``guard + surround`` pixels of it (a ring or band). 1: fully recovered; below 0.5 we count
    the structure as vanished."""
    inside = inside.bool()
    ring = _dilate(inside, guard + surround) & ~_dilate(inside, guard)

    def contrast(image):
        image = image.double()
        return image[..., inside].mean(-1) - image[..., ring].mean(-1)

    return (contrast(x.cpu()) / contrast(truth.cpu())).tolist()


class Edge(NamedTuple):
    """A straight edge: its midpoint ``(x, y)`` in mm, the direction of its outward normal in degrees
    (counter-clockwise from +x) and the half-length in mm over which its profiles are averaged."""

    x: float
    y: float
    normal_deg: float
    half_length: float


def rectangle_edges(width: float, height: float, x0: float, y0: float, theta_deg: float,
                    margin: float = 0.25) -> list[Edge]:
    """The four edges of ``phantoms.rectangle(_, width, height, x0, y0, theta_deg)``, each averaged over its
    middle ``1 - 2 margin`` (away from the corners)."""
    t = math.radians(theta_deg)
    along, across = np.array([math.cos(t), math.sin(t)]), np.array([-math.sin(t), math.cos(t)])
    centre = np.array([x0, y0])
    out = []
    for normal, distance, length in ((along, width / 2, height), (across, height / 2, width),
                                     (-along, width / 2, height), (-across, height / 2, width)):
        mid = centre + distance * normal
        out.append(Edge(float(mid[0]), float(mid[1]), math.degrees(math.atan2(normal[1], normal[0])) % 360,
                        (0.5 - margin) * length))
    return out


def _profiles(images: torch.Tensor, volume, edge: Edge, search: float, step: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, profiles): bilinear samples of ``images`` (B, ny, nx) at signed distances ``s`` (mm, + outward)
    from the edge along its normal, averaged over the edge's length (samples one pixel apart)."""
    (ny, nx), (sy, sx), (oy, ox) = volume.shape, volume.spacing, volume.offset
    n = np.array([math.cos(math.radians(edge.normal_deg)), math.sin(math.radians(edge.normal_deg))])
    tangent = np.array([-n[1], n[0]])
    s = np.arange(-search, search + step / 2, step)
    n_along = max(1, int(2 * edge.half_length / min(sx, sy)) + 1)
    u = np.linspace(-edge.half_length, edge.half_length, n_along)
    points = np.array([edge.x, edge.y]) + s[:, None, None] * n + u[None, :, None] * tangent  # (S, U, 2)
    column = (points[..., 0] - ox) / sx + (nx - 1) / 2
    row = (points[..., 1] - oy) / sy + (ny - 1) / 2
    grid = np.stack([2 * column / (nx - 1) - 1, 2 * row / (ny - 1) - 1], -1)  # grid_sample's (x, y) order
    grid = torch.from_numpy(grid)[None].expand(images.shape[0], -1, -1, -1)
    samples = F.grid_sample(images.double()[:, None].cpu(), grid, mode="bilinear", align_corners=True)
    return torch.from_numpy(s), samples[:, 0].mean(-1)


def _crossing(s: torch.Tensor, profile: torch.Tensor, level: float) -> float:
    """The zero of ``profile - level`` (linear between samples) nearest to ``s = 0``; nan if none."""
    d = (profile - level).numpy()
    sign_change = np.nonzero((d[:-1] > 0) != (d[1:] > 0))[0]
    if len(sign_change) == 0:
        return math.nan
    s = s.numpy()
    k = sign_change
    at = s[k] + (s[k + 1] - s[k]) * d[k] / (d[k] - d[k + 1])
    return float(at[np.argmin(np.abs(at))])


def edge_shift(x: torch.Tensor, truth: torch.Tensor, volume, edge: Edge, search: float | None = None,
               step: float | None = None) -> list[float]:
    """Displacement of ``edge`` in mm per image (+: outward, the object larger), at sub-pixel precision.

    The profile across the edge (:func:`_profiles`: bilinear samples every ``step`` mm, default a tenth of
    a pixel, within ``search`` mm, default 4 pixels, averaged along the edge) of the truth gives the two
    levels (means over ``|s| >= 2`` pixels on each side) and their half level; the shift is the position
    where the reconstruction's profile crosses the half level (the crossing nearest to the edge) minus the
    position where the truth's profile does (measured the same way, so the interpolation's bias cancels).
    nan: the reconstruction's profile never crosses the half level within the search range (edge lost)."""
    pixel = float(min(volume.spacing))
    search = 4 * pixel if search is None else search
    step = pixel / 10 if step is None else step
    s, truth_profile = _profiles(truth, volume, edge, search, step)
    _, profile = _profiles(x, volume, edge, search, step)
    out = []
    for tp, p in zip(truth_profile, profile):
        inner, outer = tp[s <= -2 * pixel].mean(), tp[s >= 2 * pixel].mean()
        level = float(inner + outer) / 2
        out.append(_crossing(s, p, level) - _crossing(s, tp, level))
    return out


# --- out-of-distribution phantoms ------------------------------------------------------------------------------


class OODPhantom(NamedTuple):
    """A test phantom: its name, image ``(ny, nx)`` float32, exact sinogram float32, the boolean mask of the
    structure whose contrast is measured (or None) and the edges whose shifts are measured."""

    name: str
    image: torch.Tensor
    sinogram: torch.Tensor
    structure: torch.Tensor | None
    edges: list


def _scene(volume, geometry, ellipses=(), polygons=()):
    """Image (float32, 4x4 supersampled) and exact sinogram (float32) of a sum of ellipses and polygons."""
    rays = geometry.rays()
    origins, directions = rays[..., 0:2], rays[..., 2:4]
    image = torch.zeros(volume.shape, dtype=torch.float64)
    sinogram = torch.zeros(geometry.shape, dtype=torch.float64)
    if ellipses:
        image += phantoms.ellipse_image(volume, ellipses, dtype=torch.float64)
        sinogram += phantoms.ellipse_line_integrals(origins, directions, ellipses)
    if polygons:
        image += phantoms.polygon_image(volume, polygons, dtype=torch.float64)
        sinogram += phantoms.polygon_line_integrals(origins, directions, polygons)
    return image.float(), sinogram.float()


def ood_phantoms(volume, geometry, background, insert_radius: float, line_width: float,
                 contrast: float = 1.0) -> list[OODPhantom]:
    """The out-of-distribution test phantoms (sizes in mm, so the same objects at every scale):

    - ``insert``: ``background`` (a list of ``phantoms.Ellipse``, a held-out random-ellipse phantom) plus a
      disc of radius ``insert_radius`` and intensity ``contrast`` at (12, 18) mm, inside the region of
      interest;
    - ``line``: the same background plus a line (a rectangle 40 mm long and ``line_width`` wide, intensity
      ``contrast``) through (-10, -16) mm along 20 degrees (normal at 110 degrees);
    - ``shapes``: a rectangle 40 x 24 mm of intensity 0.5 at (-18, 14) mm turned by 160 degrees (edge normals
      at 160 and 70 degrees, and the opposite ones) and a five-pointed star (radii 18 and 8 mm, intensity
      0.3) at (24, -18) mm, on an empty background: straight edges, corners and spikes, none of them in the
      random ellipses' law.

    The structure mask (insert, line) is where the structure covers at least half of a pixel."""
    insert = phantoms.Ellipse(contrast, insert_radius, insert_radius, 12.0, 18.0, 0.0)
    line = phantoms.rectangle(contrast, 40.0, line_width, -10.0, -16.0, 20.0)
    rect = (40.0, 24.0, -18.0, 14.0, 160.0)
    shapes = [phantoms.rectangle(0.5, *rect), phantoms.star(0.3, 5, 18.0, 8.0, 24.0, -18.0)]
    out = []
    image, sinogram = _scene(volume, geometry, ellipses=list(background) + [insert])
    mask = phantoms.ellipse_image(volume, [insert._replace(intensity=1.0)], dtype=torch.float64) >= 0.5
    out.append(OODPhantom("insert", image, sinogram, mask, []))
    image, sinogram = _scene(volume, geometry, ellipses=list(background), polygons=[line])
    mask = phantoms.polygon_image(volume, [line._replace(intensity=1.0)], dtype=torch.float64) >= 0.5
    out.append(OODPhantom("line", image, sinogram, mask, []))
    image, sinogram = _scene(volume, geometry, polygons=shapes)
    out.append(OODPhantom("shapes", image, sinogram, None, rectangle_edges(*rect)))
    return out
