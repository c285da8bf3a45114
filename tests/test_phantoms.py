"""The phantoms package: published tables, rasterisation (orientation, scaling, offsets) and exact projections."""
import math

import numpy as np
import pytest
import torch

import known_ops as ko
import phantoms
from phantoms import Ellipse

# The same ten ellipses as printed in the MATLAB / Wikipedia form: (intensity, semi-axis along x before
# rotation, semi-axis along y before rotation, x0, y0, rotation in degrees); Kak & Slaney list instead the
# major semi-axis along the rotation angle. Both must describe the same sets.
_WIKIPEDIA_FORM = [
    (2.0, 0.69, 0.92, 0.0, 0.0, 0.0),
    (-0.98, 0.6624, 0.874, 0.0, -0.0184, 0.0),
    (-0.02, 0.11, 0.31, 0.22, 0.0, -18.0),
    (-0.02, 0.16, 0.41, -0.22, 0.0, 18.0),
    (0.01, 0.21, 0.25, 0.0, 0.35, 0.0),
    (0.01, 0.046, 0.046, 0.0, 0.1, 0.0),
    (0.01, 0.046, 0.046, 0.0, -0.1, 0.0),
    (0.01, 0.046, 0.023, -0.08, -0.605, 0.0),
    (0.01, 0.023, 0.023, 0.0, -0.605, 0.0),
    (0.01, 0.023, 0.046, 0.06, -0.605, 0.0),
]


def _quadratic_form(a, b, theta_deg):
    """Matrix M with p^T M p <= 1 describing the centred ellipse."""
    t = math.radians(theta_deg)
    rotation = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return rotation @ np.diag([1 / a**2, 1 / b**2]) @ rotation.T


def _pixel_of(volume, x, y):
    """(row, column) of the pixel containing the point (x, y) mm."""
    (ny, nx), (sy, sx), (oy, ox) = volume.shape, volume.spacing, volume.offset
    return round((y - oy) / sy + (ny - 1) / 2), round((x - ox) / sx + (nx - 1) / 2)


# --- tables ------------------------------------------------------------------------------------------


def test_original_table_has_the_published_values():
    table = phantoms.SHEPP_LOGAN
    assert len(table) == 10
    assert table[0] == Ellipse(2.0, 0.92, 0.69, 0.0, 0.0, 90.0)
    assert table[1] == Ellipse(-0.98, 0.874, 0.6624, 0.0, -0.0184, 90.0)
    assert table[2] == Ellipse(-0.02, 0.31, 0.11, 0.22, 0.0, 72.0)
    assert table[3] == Ellipse(-0.02, 0.41, 0.16, -0.22, 0.0, 108.0)
    assert table[4].y0 == 0.35 and table[4].intensity == 0.01
    assert [e.y0 for e in table[7:]] == [-0.605] * 3
    assert table[9] == Ellipse(0.01, 0.046, 0.023, 0.06, -0.605, 90.0)


def test_modified_table_has_toft_intensities_on_the_same_ellipses():
    intensities = [e.intensity for e in phantoms.MODIFIED_SHEPP_LOGAN]
    assert intensities == [1.0, -0.8, -0.2, -0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    for modified, original in zip(phantoms.MODIFIED_SHEPP_LOGAN, phantoms.SHEPP_LOGAN):
        assert modified[1:] == original[1:]


def test_table_describes_the_same_ellipses_as_the_matlab_form():
    for ours, (rho, a, b, x0, y0, theta) in zip(phantoms.SHEPP_LOGAN, _WIKIPEDIA_FORM):
        assert (ours.intensity, ours.x0, ours.y0) == (rho, x0, y0)
        np.testing.assert_allclose(
            _quadratic_form(ours.a, ours.b, ours.theta_deg), _quadratic_form(a, b, theta), rtol=1e-12, atol=1e-9
        )


def test_tables_are_immutable_data():
    with pytest.raises((TypeError, AttributeError)):
        phantoms.SHEPP_LOGAN[0] = Ellipse(0, 1, 1, 0, 0, 0)
    with pytest.raises(AttributeError):
        phantoms.SHEPP_LOGAN[0].a = 3.0


def test_scaled_ellipses_are_in_mm():
    e = phantoms.shepp_logan_ellipses(modified=False, scale=128.0)[2]
    assert e == Ellipse(-0.02, 0.31 * 128, 0.11 * 128, 0.22 * 128, 0.0, 72.0)


# --- rasterisation -----------------------------------------------------------------------------------


def _brute_force_image(volume, ellipses, supersample):
    """Direct point-in-ellipse test on every sub-sample (independent of the row-interval algorithm)."""
    (ny, nx), (sy, sx) = volume.shape, volume.spacing
    sub = (np.arange(supersample) + 0.5) / supersample - 0.5
    ys = (volume.coordinates(0)[:, None] + sub[None, :] * sy).reshape(-1)
    xs = (volume.coordinates(1)[:, None] + sub[None, :] * sx).reshape(-1)
    y, x = np.meshgrid(ys, xs, indexing="ij")
    fine = np.zeros_like(x)
    for rho, a, b, x0, y0, theta in ellipses:
        c, s = math.cos(math.radians(theta)), math.sin(math.radians(theta))
        u = ((x - x0) * c + (y - y0) * s) / a
        v = ((y - y0) * c - (x - x0) * s) / b
        fine += rho * (u**2 + v**2 <= 1)
    return fine.reshape(ny, supersample, nx, supersample).mean(axis=(1, 3))


def test_rasterisation_equals_direct_sampling_on_anisotropic_offset_grid():
    rng = np.random.default_rng(0)
    volume = ko.Volume((37, 50), spacing=(0.8, 1.3), offset=(2.5, -4.0))
    ellipses = [
        Ellipse(rng.uniform(-1, 1), rng.uniform(2, 20), rng.uniform(2, 20), rng.uniform(-40, 30), rng.uniform(-15, 20),
                rng.uniform(0, 180))
        for _ in range(8)
    ] + [Ellipse(0.7, 60.0, 45.0, 0.0, 0.0, 30.0)]  # larger than the grid: clipped
    for supersample in (1, 3, 4):
        ours = phantoms.ellipse_image(volume, ellipses, supersample=supersample, dtype=torch.float64).numpy()
        np.testing.assert_allclose(ours, _brute_force_image(volume, ellipses, supersample), atol=1e-12)


def test_default_output_shape_dtype_and_values():
    volume = ko.Volume((64, 48))
    image = phantoms.shepp_logan(volume)
    assert image.shape == (64, 48) and image.dtype == torch.float32
    assert phantoms.shepp_logan(volume, dtype=torch.float64).dtype == torch.float64
    assert image.min() > -1e-12 and abs(image.max().item() - 1.0) < 1e-6  # ventricles 0.0, skull 1.0
    original = phantoms.shepp_logan(volume, modified=False)
    assert abs(original.max().item() - 2.0) < 1e-6


def test_orientation_top_of_head_is_at_the_last_rows():
    volume = ko.Volume((256, 256))  # scale 128 mm per unit
    image = phantoms.shepp_logan(volume)
    s = 128.0

    def value(x, y):
        return image[_pixel_of(volume, x * s, y * s)].item()

    assert value(0.0, 0.35) == pytest.approx(0.3)  # ellipse e (y = +0.35, brighter than the brain)
    assert value(0.0, -0.35) == pytest.approx(0.2)  # plain brain at the mirrored point
    assert value(0.22, 0.0) == pytest.approx(0.0, abs=1e-6)  # ventricle c at x = +0.22, d at x = -0.22
    assert value(-0.22, 0.0) == pytest.approx(0.0, abs=1e-6)
    # c's long axis points to 72 degrees ("/"), d's to 108 degrees ("\"): on the axis towards +y they are
    # still ventricle; the mirror points (towards -y) lie outside them, in the brain.
    assert value(0.297, 0.238) == pytest.approx(0.0, abs=1e-6)
    assert value(0.297, -0.238) == pytest.approx(0.2)
    assert value(-0.327, 0.333) == pytest.approx(0.0, abs=1e-6)
    assert value(-0.327, -0.333) == pytest.approx(0.2)
    assert value(0.0, -0.605) == pytest.approx(0.3)  # ellipse i near the bottom (first rows)
    # The skull is thicker at the top (y from 0.8556 to 0.92) than at the bottom (-0.8924 to -0.92).
    centre_column = image[:, 127] + image[:, 128]
    rim = centre_column > 1.9
    assert rim[128:].sum() > 2 * rim[:128].sum() > 0


def test_orientation_matches_scikit_image_after_a_row_flip():
    data = pytest.importorskip("skimage.data")
    reference = data.shepp_logan_phantom()  # 400 x 400 modified Shepp-Logan, row 0 at the top of the head
    ours = phantoms.shepp_logan(ko.Volume(reference.shape), dtype=torch.float64).numpy()
    flipped_error = np.abs(np.flipud(ours) - reference).mean()
    unflipped_error = np.abs(ours - reference).mean()
    assert flipped_error < 0.01 < unflipped_error
    assert unflipped_error > 5 * flipped_error


def test_mean_value_matches_the_ellipse_areas():
    volume = ko.Volume((256, 256), spacing=0.5)
    scale = phantoms.phantom_scale(volume)
    assert scale == 64.0
    for modified in (True, False):
        exact_integral = sum(e.intensity * math.pi * e.a * e.b for e in phantoms.shepp_logan_ellipses(modified, scale))
        image = phantoms.shepp_logan(volume, modified=modified, dtype=torch.float64)
        integral = image.sum().item() * 0.5 * 0.5
        assert integral == pytest.approx(exact_integral, rel=2e-4)


def test_default_scale_fills_the_inscribed_square_of_an_anisotropic_volume():
    volume = ko.Volume((100, 80), spacing=(1.0, 2.0), offset=(7.0, -3.0))  # extents 100 mm (y), 160 mm (x)
    assert phantoms.phantom_scale(volume) == 50.0
    explicit = phantoms.shepp_logan(volume, scale=50.0)
    assert torch.equal(phantoms.shepp_logan(volume), explicit)


def test_volume_offset_shows_a_shifted_part_of_the_same_object():
    full = ko.Volume((64, 64), spacing=2.0)
    # Centres of `shifted`: y = 2 i - 31 - 16 = 2 (i + 8) - 63, x = 2 j - 39 + 10 = 2 (j + 17) - 63, i.e. the
    # pixels of `full` from row 8 and column 17 on.
    shifted = ko.Volume((32, 40), spacing=2.0, offset=(-16.0, 10.0))
    big = phantoms.shepp_logan(full, scale=60.0, dtype=torch.float64)
    part = phantoms.shepp_logan(shifted, scale=60.0, dtype=torch.float64)
    row0, col0 = 8, 17
    torch.testing.assert_close(part, big[row0 : row0 + 32, col0 : col0 + 40], rtol=0, atol=1e-12)


def test_supersampling_converges_to_the_area_fraction():
    # One pixel straddling a straight-ish edge: a huge disc whose boundary passes through the pixel centre.
    volume = ko.Volume((1, 1))
    disc = [Ellipse(1.0, 1e6, 1e6, -1e6, 0.0, 0.0)]  # boundary x = 0 near the origin: half the pixel inside
    for supersample in (2, 4, 8):
        assert phantoms.ellipse_image(volume, disc, supersample=supersample).item() == pytest.approx(0.5)


def test_rasterisation_speed_is_vectorised():
    import time

    volume = ko.Volume((512, 512))
    phantoms.shepp_logan(volume)
    start = time.process_time()
    phantoms.shepp_logan(volume, supersample=4)
    # CPU time (all threads); measured about 0.03-0.1 s here. A per-pixel Python loop would take minutes.
    assert time.process_time() - start < 2.0


# --- exact projections -------------------------------------------------------------------------------


def test_centred_disc_parallel_projection_at_angle_zero():
    rho, radius = 0.7, 40.0
    geo = ko.ParallelBeam2D([0.0], det_count=101, det_spacing=1.0, det_offset=0.3)
    rays = geo.rays()
    p = phantoms.ellipse_line_integrals(rays[..., :2], rays[..., 2:], [Ellipse(rho, radius, radius, 0, 0, 0)])
    s = 0.3 + (torch.arange(101, dtype=torch.float64) - 50) * 1.0  # detector coordinate = x at angle 0
    expected = 2 * rho * torch.sqrt(torch.clamp(radius**2 - s**2, min=0))
    torch.testing.assert_close(p[0], expected, rtol=1e-13, atol=1e-12)
    assert p[0, s.abs() > radius].abs().max() == 0


def test_rotated_ellipse_parallel_projection_matches_closed_form():
    # Closed form of an ellipse's parallel projection (Kak & Slaney, chapter 3):
    # p(t, s) = 2 rho a b sqrt(w^2 - s'^2) / w^2, with w^2 = a^2 cos^2(t - alpha) + b^2 sin^2(t - alpha)
    # and s' = s - (x0 cos t + y0 sin t).
    rng = np.random.default_rng(1)
    angles = rng.uniform(0, 2 * math.pi, size=23)
    geo = ko.ParallelBeam2D(angles, det_count=150, det_spacing=0.7, det_offset=-2.0)
    rays = geo.rays()
    s = -2.0 + (np.arange(150) - 74.5) * 0.7
    for _ in range(5):
        e = Ellipse(rng.uniform(-2, 2), rng.uniform(5, 40), rng.uniform(5, 40), rng.uniform(-10, 10),
                    rng.uniform(-10, 10), rng.uniform(-180, 180))
        alpha = math.radians(e.theta_deg)
        w_sq = e.a**2 * np.cos(angles - alpha) ** 2 + e.b**2 * np.sin(angles - alpha) ** 2
        shift = s[None, :] - (e.x0 * np.cos(angles) + e.y0 * np.sin(angles))[:, None]
        expected = 2 * e.intensity * e.a * e.b * np.sqrt(np.clip(w_sq[:, None] - shift**2, 0, None)) / w_sq[:, None]
        p = phantoms.ellipse_line_integrals(rays[..., :2], rays[..., 2:], [e]).numpy()
        np.testing.assert_allclose(p, expected, rtol=1e-10, atol=1e-10)


def test_line_integral_does_not_depend_on_the_parametrisation_of_the_line():
    rng = np.random.default_rng(2)
    origins = torch.from_numpy(rng.uniform(-300, 300, size=(40, 2)))
    directions = torch.from_numpy(rng.normal(size=(40, 2)))
    ellipses = phantoms.shepp_logan_ellipses(scale=100.0)
    reference = phantoms.ellipse_line_integrals(origins, directions, ellipses)
    moved = origins + 123.4 * directions
    torch.testing.assert_close(phantoms.ellipse_line_integrals(moved, -3.5 * directions, ellipses), reference)
    assert (reference > 0).any()


def test_projections_flip_under_half_turn():
    # p(t + pi, s) = p(t, -s) for parallel beams: the detector coordinate changes sign.
    angles = ko.uniform_angles(7, math.pi, start=0.3)
    geo = ko.ParallelBeam2D(np.concatenate([angles, angles + math.pi]), det_count=255)
    p = phantoms.shepp_logan_projections(geo)
    torch.testing.assert_close(p[7:], torch.flip(p[:7], [1]), rtol=1e-12, atol=1e-12)


def test_projections_scale_with_the_object():
    # Doubling the object and the detector pixel doubles every line integral (value x length).
    geo = ko.FanBeam2D(ko.uniform_angles(16, 2 * math.pi), 400.0, 300.0, det_count=64, det_spacing=3.0)
    geo_big = ko.FanBeam2D(ko.uniform_angles(16, 2 * math.pi), 800.0, 600.0, det_count=64, det_spacing=6.0)
    small = phantoms.shepp_logan_projections(geo, scale=90.0)
    big = phantoms.shepp_logan_projections(geo_big, scale=180.0)
    torch.testing.assert_close(big, 2 * small, rtol=1e-11, atol=1e-11)


def test_curved_and_flat_fan_detectors_give_the_same_integral_for_the_same_ray():
    # A one-pixel detector moved along the arc by phi = offset / (D_so + D_od) and a flat one moved by
    # (D_so + D_od) tan(phi) see the same line through the source.
    d_so, d_od, phi = 500.0, 400.0, 0.21
    angles = ko.uniform_angles(90, 2 * math.pi, start=0.05)
    curved = ko.FanBeam2D(angles, d_so, d_od, det_count=1, det_offset=phi * (d_so + d_od), detector="curved")
    flat = ko.FanBeam2D(angles, d_so, d_od, det_count=1, det_offset=(d_so + d_od) * math.tan(phi))
    p_curved = phantoms.shepp_logan_projections(curved)
    p_flat = phantoms.shepp_logan_projections(flat)
    torch.testing.assert_close(p_curved, p_flat, rtol=1e-10, atol=1e-10)
    assert p_flat.abs().max() > 1.0


def test_from_vectors_geometry_equals_the_circular_one():
    geo = ko.FanBeam2D(ko.uniform_angles(12, 2 * math.pi), 500.0, 500.0, det_count=80, det_spacing=2.0)
    same = ko.FanBeam2D.from_vectors(geo.to_vectors(), det_count=80)
    torch.testing.assert_close(phantoms.shepp_logan_projections(same), phantoms.shepp_logan_projections(geo))


def test_scale_defaults_and_volume_derivation():
    geo = ko.ParallelBeam2D(ko.uniform_angles(10), det_count=367)
    default = phantoms.shepp_logan_projections(geo)
    assert default.shape == geo.shape and default.dtype == torch.float64
    assert phantoms.DEFAULT_SCALE == phantoms.phantom_scale(ko.Volume((256, 256)))
    torch.testing.assert_close(default, phantoms.shepp_logan_projections(geo, volume=ko.Volume((256, 256))))
    torch.testing.assert_close(default, phantoms.shepp_logan_projections(geo, scale=128.0))
    smaller = phantoms.shepp_logan_projections(geo, volume=ko.Volume((200, 300), spacing=0.5))  # scale 50 mm
    torch.testing.assert_close(smaller, phantoms.shepp_logan_projections(geo, scale=50.0))
    assert phantoms.shepp_logan_projections(geo, dtype=torch.float32).dtype == torch.float32
    original = phantoms.shepp_logan_projections(geo, modified=False)
    assert not torch.allclose(original, default)


# --- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: phantoms.shepp_logan((256, 256)), TypeError, "volume"),
        (lambda: phantoms.shepp_logan(ko.Volume((4, 4, 4))), ValueError, "2D"),
        (lambda: phantoms.shepp_logan(ko.Volume((8, 8)), modified="yes"), TypeError, "modified"),
        (lambda: phantoms.shepp_logan(ko.Volume((8, 8)), supersample=0), ValueError, "supersample"),
        (lambda: phantoms.shepp_logan(ko.Volume((8, 8)), supersample=2.5), TypeError, "supersample"),
        (lambda: phantoms.shepp_logan(ko.Volume((8, 8)), dtype=torch.int32), TypeError, "dtype"),
        (lambda: phantoms.shepp_logan(ko.Volume((8, 8)), dtype="float32"), TypeError, "dtype"),
        (lambda: phantoms.shepp_logan(ko.Volume((8, 8)), scale=-1.0), ValueError, "scale"),
        (lambda: phantoms.shepp_logan(ko.Volume((8, 8)), scale=float("nan")), ValueError, "scale"),
        (lambda: phantoms.shepp_logan(ko.Volume((8, 8)), scale="1"), TypeError, "scale"),
        (lambda: phantoms.shepp_logan_projections(ko.Volume((8, 8))), TypeError, "geometry"),
        (lambda: phantoms.shepp_logan_projections(ko.ParallelBeam2D([0.0], 4), scale=0.0), ValueError, "scale"),
        (lambda: phantoms.shepp_logan_projections(ko.ParallelBeam2D([0.0], 4), scale=1.0, volume=ko.Volume((8, 8))),
         ValueError, "either scale or volume"),
        (lambda: phantoms.shepp_logan_projections(ko.ParallelBeam2D([0.0], 4), volume=(8, 8)), TypeError, "volume"),
        (lambda: phantoms.shepp_logan_projections(ko.ParallelBeam2D([0.0], 4), modified=1), TypeError, "modified"),
        (lambda: phantoms.ellipse_line_integrals(torch.zeros(3, 2), torch.ones(4, 2), phantoms.SHEPP_LOGAN),
         ValueError, "shape"),
        (lambda: phantoms.ellipse_line_integrals(torch.zeros(3, 2), torch.zeros(3, 2), phantoms.SHEPP_LOGAN),
         ValueError, "non-zero"),
        (lambda: phantoms.ellipse_line_integrals(torch.zeros(3, 2), torch.ones(3, 2), [(1.0, 0.0, 1.0, 0, 0, 0)]),
         ValueError, "semi-axes"),
        (lambda: phantoms.ellipse_line_integrals(torch.zeros(3, 2), torch.ones(3, 2), [(1.0, 1.0, 1.0)]),
         ValueError, r"\(n, 6\)"),
        (lambda: phantoms.ellipse_image(ko.Volume((8, 8)), [("a", 1, 1, 0, 0, 0)]), TypeError, "ellipses"),
    ],
)
def test_bad_input_raises_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()
