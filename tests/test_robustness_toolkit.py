"""The robustness experiment's toolkit (benchmarks/_robustness.py): the PGD step raises the error inside its
bound, the edge-shift measure recovers known shifts, the Poisson doses have the stated mean and variance,
and the structure and contrast measures count what they say."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

import known_ops as ko
import phantoms
import recon

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

pytest.importorskip("scipy", reason="the structure counts label connected components with scipy.ndimage")
import _robustness as rb  # noqa: E402


# --- adversarial perturbations --------------------------------------------------------------------------------


def test_pgd_on_a_linear_map_raises_the_error_near_its_maximum_within_the_bound():
    gains = torch.linspace(0.1, 5.0, 40, dtype=torch.float64).reshape(5, 8)

    def model(y):
        return y * gains

    gen = torch.Generator().manual_seed(0)
    y = torch.rand(3, 5, 8, generator=gen, dtype=torch.float64) + 1
    offset = 0.01 * torch.randn(3, 5, 8, generator=gen, dtype=torch.float64)
    truth = model(y) + offset
    epsilon = 0.05
    delta, history = rb.adversarial_perturbation(model, y, truth, epsilon, steps=20)
    radius = epsilon * y.flatten(1).norm(dim=1)
    assert torch.all(delta.flatten(1).norm(dim=1) <= radius * (1 + 1e-12))
    error = (model(y + delta) - truth).square().flatten(1).sum(1)
    torch.testing.assert_close(history[0], offset.square().flatten(1).sum(1))  # delta = 0 first
    torch.testing.assert_close(error, history.amax(0))  # the best iterate is returned
    # The largest error lies between all of delta on the largest gain (with the offset's sign there) and
    # (||offset|| + max gain * radius)^2; 20 steps get within 10 % of it (the gains next to the largest are
    # close to it, so the ascent converges slowly, as a power iteration: PGD gives a lower bound on the worst case).
    flat = offset.flatten(1)
    reachable = (flat[:, -1].abs() + 5.0 * radius).square() + flat[:, :-1].square().sum(1)
    bound = (flat.norm(dim=1) + 5.0 * radius).square()
    assert torch.all(error >= 0.9 * reachable) and torch.all(error <= bound)
    # A random direction of the same norm does far less.
    random = rb.random_perturbation(y, epsilon, seed=1)
    torch.testing.assert_close(random.flatten(1).norm(dim=1), radius)
    assert torch.all((model(y + random) - truth).square().flatten(1).sum(1) < 0.5 * error)


def test_pgd_through_a_reconstruction_raises_its_error_and_respects_the_bound():
    volume = ko.Volume((24, 24), spacing=2.0)
    geometry = ko.FanBeam2D(ko.uniform_angles(30, math.radians(140)), 150.0, 150.0, 40, 2.5)
    fbp = recon.FBP(volume, geometry, filter="hann")

    def model(y):  # a nonlinear model through the library's operators: FBP, then a soft threshold
        x = fbp(y)
        return x - 0.05 * torch.tanh(x / 0.05)

    x = phantoms.random_ellipse_images(2, volume, generator=3)
    y = phantoms.random_ellipse_projections(2, geometry, volume=volume, generator=3, dtype=torch.float32)
    delta, history = rb.adversarial_perturbation(model, y, x, 0.03, steps=5)
    assert history.shape == (6, 2)
    assert torch.all(history[1] > history[0]) and torch.all(history.amax(0) > 1.05 * history[0])
    assert torch.all(delta.flatten(1).norm(dim=1) <= 0.03 * y.flatten(1).norm(dim=1) * (1 + 1e-6))
    random = rb.random_perturbation(y, 0.03, seed=2)
    assert torch.all((model(y + random) - x).square().flatten(1).sum(1) < history.amax(0))
    with pytest.raises(ValueError, match="epsilon"):
        rb.adversarial_perturbation(model, y, x, 0.0)
    with pytest.raises(ValueError, match="steps"):
        rb.adversarial_perturbation(model, y, x, 0.01, steps=0)


# --- Poisson noise at the experiment's doses ------------------------------------------------------------------


@pytest.mark.parametrize("photons", [1e3, 1e4, 1e5, 1e6])
def test_poisson_doses_have_the_stated_mean_and_variance(photons):
    mu = 0.02  # the experiment's mu per unit of image value (values relative to water)
    y = torch.tensor([0.0, 10.0, 40.0], dtype=torch.float64)[:, None].expand(3, 40_000)
    noisy = rb.poisson_sinograms(y, photons, mu, seed=7)
    rate = photons * torch.exp(-mu * y[:, 0])
    variance = 1 / (rate * mu**2)  # of the log transform, to first order
    bias = 1 / (2 * rate * mu)
    torch.testing.assert_close(noisy.var(1), variance, rtol=0.05 if photons > 1e3 else 0.08, atol=0.0)
    standard_error = (variance / 40_000).sqrt()
    assert torch.all((noisy.mean(1) - (y[:, 0] + bias)).abs() < 5 * standard_error + 2 * bias**2 * mu * 10)
    assert rb.relative_noise(noisy[1:2], y[1:2]) == pytest.approx(float(variance[1].sqrt()) / 10.0, rel=0.05)


# --- measures ---------------------------------------------------------------------------------------------------


def _slanted_rectangle(volume, grow=0.0, dx=0.0):
    width, height, x0, y0, theta = 30.0, 20.0, -3.3, 4.1, 160.0
    shape = phantoms.rectangle(1.0, width + 2 * grow, height + 2 * grow, x0 + dx, y0, theta)
    return phantoms.polygon_image(volume, [shape], dtype=torch.float64)[None], rb.rectangle_edges(width, height, x0,
                                                                                                    y0, theta)


def test_edge_shift_recovers_known_shifts_at_sub_pixel_precision():
    volume = ko.Volume((64, 64), spacing=1.0)
    truth, edges = _slanted_rectangle(volume)
    assert [round(e.normal_deg) for e in edges] == [160, 250, 340, 70]
    for grow in (0.3, -0.45, 1.7):
        grown, _ = _slanted_rectangle(volume, grow=grow)
        for edge in edges:
            assert rb.edge_shift(grown, truth, volume, edge)[0] == pytest.approx(grow, abs=0.03)
    moved, _ = _slanted_rectangle(volume, dx=0.4)  # moved along +x: each edge by 0.4 cos(normal)
    for edge in edges:
        expected = 0.4 * math.cos(math.radians(edge.normal_deg))
        assert rb.edge_shift(moved, truth, volume, edge)[0] == pytest.approx(expected, abs=0.03)
    # A symmetric blur moves no edge; an empty image loses every edge.
    blurred = torch.nn.functional.avg_pool2d(truth[None], 3, stride=1, padding=1, count_include_pad=False)[0]
    for edge in edges:
        assert abs(rb.edge_shift(blurred, truth, volume, edge)[0]) < 0.05
        assert math.isnan(rb.edge_shift(torch.zeros_like(truth), truth, volume, edge)[0])


def test_error_measures_structures_and_contrast():
    volume = ko.Volume((32, 32), spacing=1.0)
    truth = torch.zeros(1, 32, 32, dtype=torch.float64)
    truth[0, 4:12, 4:12] = 1.0  # an object with edges
    roi = torch.zeros(32, 32, dtype=torch.bool)
    roi[16:, 16:] = True
    x = truth.clone()
    x[0, 20:23, 20:23] += 0.5  # a 9-pixel bright blob far from every edge: appears
    x[0, 26, 26] -= 0.5  # one pixel: too small to count
    x[0, 3, 4:12] += 0.5  # along the object's edge: blurred edge, not a new structure
    m = rb.error_measures(x, truth, roi)
    assert m["max"] == [0.5] and m["max_roi"] == [0.5]
    assert m["mae"][0] == pytest.approx(0.5 * 18 / 1024) and m["mae_roi"][0] == pytest.approx(0.5 * 10 / 256)
    assert rb.false_structures(x, truth, threshold=0.1) == [{"count": 1, "pixels": 9, "bright": 1, "dark": 0}]
    x[0, 20:23, 20:23] -= 1.0  # now dark
    assert rb.false_structures(x, truth, threshold=0.1)[0]["dark"] == 1
    # Contrast: fully there, half there, gone.
    inside = truth[0] > 0.5
    assert rb.contrast_recovery(truth, truth, inside) == [pytest.approx(1.0)]
    assert rb.contrast_recovery(0.5 * truth + 0.2, truth, inside) == [pytest.approx(0.5)]
    assert rb.contrast_recovery(torch.zeros_like(truth), truth, inside) == [0.0]
    del volume


def test_out_of_distribution_phantoms_have_exact_sinograms_and_masks():
    volume = ko.Volume((128, 128), spacing=1.0)
    geometry = ko.FanBeam2D(ko.uniform_angles(60, math.radians(140)), 300.0, 300.0, 190, 2.0)
    alone = rb.ood_phantoms(volume, geometry, [], insert_radius=4.0, line_width=3.0)
    assert [p.name for p in alone] == ["insert", "line", "shapes"]
    # Exact sinograms: A of the rasterised image differs from them by the pixelisation alone, which halves
    # with the pixel size (small objects on 1 mm pixels: a few per cent).
    errors = []
    for vol in (ko.Volume((64, 64), spacing=2.0), volume):
        A = ko.RayTransform(vol, geometry)
        found = rb.ood_phantoms(vol, geometry, [], insert_radius=4.0, line_width=3.0)
        errors.append([float((A(p.image) - p.sinogram).norm() / p.sinogram.norm()) for p in found])
        for p, q in zip(found, alone):
            assert p.image.shape == vol.shape and torch.equal(p.sinogram, q.sinogram)
    assert all(fine < 0.1 and fine < 0.65 * coarse for coarse, fine in zip(*errors))
    # On a background: the background's exact sinogram and image are added.
    background = phantoms.random_ellipses(generator=5, scale=phantoms.phantom_scale(volume))
    found = rb.ood_phantoms(volume, geometry, background, insert_radius=4.0, line_width=3.0)
    rays = geometry.rays()
    exact = phantoms.ellipse_line_integrals(rays[..., 0:2], rays[..., 2:4], background).float()
    for p, q in zip(found[:2], alone[:2]):
        torch.testing.assert_close(p.sinogram - q.sinogram, exact, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(p.image - q.image, phantoms.ellipse_image(volume, background), atol=1e-5, rtol=0)
    insert, line, shapes = found
    assert int(insert.structure.sum()) == pytest.approx(math.pi * 4.0**2, rel=0.15)
    assert int(line.structure.sum()) == pytest.approx(40 * 3, rel=0.15)
    assert len(shapes.edges) == 4 and shapes.structure is None and float(shapes.image.max()) == pytest.approx(0.5)
