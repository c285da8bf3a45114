"""Polygon phantoms: rasterisation against direct sampling, exact line integrals against closed forms, the
projector and the ellipse code, and clear errors for bad polygons."""
import math

import numpy as np
import pytest
import torch

import known_ops as ko
import phantoms
from phantoms import Polygon


def _inside_even_odd(vertices: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Point-in-polygon by the even-odd rule, point by point (the reference for the rasteriser)."""
    inside = np.zeros(x.shape, dtype=bool)
    for (xa, ya), (xb, yb) in zip(vertices, np.roll(vertices, -1, 0)):
        crosses = (ya <= y) != (yb <= y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_cross = xa + (y - ya) / (yb - ya) * (xb - xa)
        inside ^= crosses & (x < x_cross)
    return inside


def _area(polygon: Polygon) -> float:
    v = np.array(polygon.vertices)
    w = np.roll(v, -1, 0)
    return 0.5 * abs(float(np.sum(v[:, 0] * w[:, 1] - w[:, 0] * v[:, 1])))


def test_rasterisation_equals_direct_sampling_on_an_anisotropic_offset_grid():
    volume = ko.Volume((23, 31), spacing=(1.3, 0.7), offset=(0.9, -1.7))
    shape = phantoms.star(1.0, 5, 9.0, 3.5, x0=0.6, y0=1.1, theta_deg=17.0)
    supersample = 3
    image = phantoms.polygon_image(volume, [shape], supersample=supersample, dtype=torch.float64)
    (sy, sx) = volume.spacing
    sub = (np.arange(supersample) + 0.5) / supersample - 0.5
    ys = volume.coordinates(0)[:, None] + sub[None, :] * sy
    xs = volume.coordinates(1)[:, None] + sub[None, :] * sx
    y, x = np.meshgrid(ys.reshape(-1), xs.reshape(-1), indexing="ij")
    inside = _inside_even_odd(np.array(shape.vertices), x, y).astype(np.float64)
    expected = inside.reshape(23, supersample, 31, supersample).mean(axis=(1, 3))
    np.testing.assert_allclose(image.numpy(), expected, atol=1e-12)


def test_pixel_aligned_rectangle_is_exact_and_areas_add_up():
    volume = ko.Volume((16, 16), spacing=1.0)  # pixel edges at integers
    image = phantoms.polygon_image(volume, [phantoms.rectangle(2.0, 6.0, 4.0, x0=1.0, y0=-2.0)], supersample=1)
    assert set(image.unique().tolist()) == {0.0, 2.0}
    assert float(image.sum()) == 2.0 * 24
    star = phantoms.star(1.0, 7, 6.0, 2.5, x0=0.3, y0=-0.2)
    fine = phantoms.polygon_image(volume, [star], supersample=32, dtype=torch.float64)
    assert float(fine.sum()) == pytest.approx(_area(star), rel=2e-3)


def test_a_comb_with_collinear_edges_is_simple_and_exact():
    comb = Polygon(1.0, ((0, 0), (1, 0), (1, 2), (2, 2), (2, 0), (3, 0), (3, 3), (0, 3)))  # two edges on y = 0
    image = phantoms.polygon_image(ko.Volume((6, 6), spacing=0.5, offset=(1.5, 1.5)), [comb], supersample=1)
    notch = torch.zeros(6, 6)
    notch[0:4, 2:4] = 1  # x in (1, 2), y in (0, 2)
    torch.testing.assert_close(image, 1 - notch)
    origins = torch.tensor([[-1.0, 1.0], [-1.0, 2.5]], dtype=torch.float64)
    directions = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(phantoms.polygon_line_integrals(origins, directions, [comb]),
                               torch.tensor([2.0, 3.0], dtype=torch.float64))


def test_orientation_and_sums_of_polygons():
    volume = ko.Volume((20, 20), spacing=1.5)
    square = phantoms.rectangle(1.0, 8.0, 8.0, theta_deg=30.0)
    reversed_square = Polygon(1.0, tuple(reversed(square.vertices)))
    torch.testing.assert_close(phantoms.polygon_image(volume, [square]), phantoms.polygon_image(volume, [reversed_square]))
    both = phantoms.polygon_image(volume, [square, square._replace(intensity=-0.25)])
    torch.testing.assert_close(both, 0.75 * phantoms.polygon_image(volume, [square]))
    assert square.scaled(2.0).vertices == tuple((2 * x, 2 * y) for x, y in square.vertices)


def test_line_integrals_of_a_square_match_the_closed_form():
    side = 10.0
    square = phantoms.rectangle(1.5, side, side)
    # Horizontal lines y = c: chord = side inside, 0 outside.
    c = torch.tensor([-6.0, -4.99, -2.0, 0.0, 3.3, 4.99, 6.0], dtype=torch.float64)
    origins = torch.stack([torch.full_like(c, -50.0), c], -1)
    directions = torch.tensor([[3.0, 0.0]], dtype=torch.float64).expand_as(origins)  # not normalised
    expected = torch.where(c.abs() < side / 2, 1.5 * side, 0.0).double()
    torch.testing.assert_close(phantoms.polygon_line_integrals(origins, directions, [square]), expected)
    # Lines at 45 degrees x - y = s: chord = sqrt(2) (side - |s|), the diagonal through two vertices included.
    s = torch.tensor([0.0, 2.5, -7.0, 9.9, 11.0], dtype=torch.float64)
    origins = torch.stack([s, torch.zeros_like(s)], -1)
    directions = torch.tensor([[1.0, 1.0]], dtype=torch.float64).expand_as(origins)
    expected = 1.5 * math.sqrt(2) * (side - s.abs()).clamp(min=0)
    torch.testing.assert_close(phantoms.polygon_line_integrals(origins, directions, [square]), expected)


def test_line_integrals_match_the_ellipse_code_for_a_fine_polygon_disc():
    n = 1000
    angle = np.linspace(0, 2 * math.pi, n, endpoint=False)
    disc = Polygon(0.7, tuple(zip(3.0 + 12.0 * np.cos(angle), -2.0 + 12.0 * np.sin(angle))))
    geometry = ko.FanBeam2D(ko.uniform_angles(24, 2 * math.pi), 200.0, 100.0, 61, 1.0)
    rays = geometry.rays()
    polygon = phantoms.polygon_line_integrals(rays[..., 0:2], rays[..., 2:4], [disc])
    ellipse = phantoms.ellipse_line_integrals(rays[..., 0:2], rays[..., 2:4], [phantoms.Ellipse(0.7, 12, 12, 3, -2, 0)])
    # The inscribed 1000-gon: chords shorter by at most about sqrt(2 r sagitta), sagitta = r (1 - cos(pi / n)).
    assert float((polygon - ellipse).abs().max()) < 0.7 * 2 * math.sqrt(2 * 12 * 12 * (1 - math.cos(math.pi / n)))
    assert float(polygon.abs().max()) > 10


def test_exact_sinogram_agrees_with_the_projector_and_keeps_the_mass():
    volume = ko.Volume((64, 64), spacing=1.0)
    geometry = ko.ParallelBeam2D(ko.uniform_angles(36), 95, 1.0)
    shapes = [phantoms.star(1.0, 5, 25.0, 10.0, 1.0, 2.0), phantoms.rectangle(-0.5, 20.0, 3.0, -5.0, -8.0, 20.0)]
    rays = geometry.rays()
    exact = phantoms.polygon_line_integrals(rays[..., 0:2], rays[..., 2:4], shapes)
    projected = ko.RayTransform(volume, geometry)(phantoms.polygon_image(volume, shapes, dtype=torch.float64))
    assert float((exact - projected).norm() / exact.norm()) < 0.05  # the pixelisation only
    # Each view integrates the whole object: the detector sum (bins of 0.1 mm) times the bin width is its mass.
    fine = ko.ParallelBeam2D(ko.uniform_angles(36), 951, 0.1).rays()
    mass = sum(p.intensity * _area(p) for p in shapes)
    sums = phantoms.polygon_line_integrals(fine[..., 0:2], fine[..., 2:4], shapes).sum(-1) * 0.1
    torch.testing.assert_close(sums, torch.full((36,), mass, dtype=torch.float64), rtol=1e-3, atol=0.0)


@pytest.mark.parametrize("call, error, match", [
    (lambda: phantoms.polygon_image(ko.Volume((8, 8)), [Polygon(1.0, ((0, 0), (4, 4), (4, 0), (0, 3)))]),
     ValueError, "must be simple"),
    (lambda: phantoms.polygon_image(ko.Volume((8, 8)), [Polygon(1.0, ((0, 0), (1, 1)))]), ValueError, "n >= 3"),
    (lambda: phantoms.polygon_image(ko.Volume((8, 8)), [Polygon(1.0, ((0, 0), (1, 1), (2, 2)))]), ValueError,
     "zero area"),
    (lambda: phantoms.polygon_image(ko.Volume((8, 8)), [Polygon(float("nan"), ((0, 0), (1, 0), (0, 1)))]),
     ValueError, "finite"),
    (lambda: phantoms.polygon_image(ko.Volume((8, 8)), [3.0]), TypeError, r"polygons\[0\]"),
    (lambda: phantoms.polygon_image(ko.Volume((8, 8, 8)), [phantoms.rectangle(1, 2, 2)]), ValueError, "2D"),
    (lambda: phantoms.polygon_image(ko.Volume((8, 8)), [phantoms.rectangle(1, 2, 2)], supersample=0), ValueError,
     "supersample"),
    (lambda: phantoms.rectangle(1.0, -2.0, 1.0), ValueError, "width"),
    (lambda: phantoms.star(1.0, 5, 2.0, 3.0), ValueError, "inner_radius"),
    (lambda: phantoms.star(1.0, 1, 2.0, 1.0), ValueError, "n_points"),
    (lambda: phantoms.polygon_line_integrals(torch.zeros(3, 2), torch.zeros(3, 2), [phantoms.rectangle(1, 2, 2)]),
     ValueError, "non-zero"),
])
def test_bad_input_raises_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()
