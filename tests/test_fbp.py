"""recon.FBP (parallel and fan beam): physical scaling on exact analytic data (full and short
scans, flat and curved detectors; 3D parallel beams slice by slice), FDK, windows, learnable
layers, batches, and clear errors."""
from __future__ import annotations

import math

import pytest
import torch

import known_ops as ko
import phantoms
import recon

VOLUME = ko.Volume((128, 128), 2.0)


def _flat_region_means(image: torch.Tensor) -> torch.Tensor:
    """Means over small boxes inside uniform parts of the modified Shepp-Logan phantom
    (rows increase with y; the phantom's unit is 128 mm here): two boxes of brain (0.2) and
    one inside the large ellipse e above the ventricles (0.3); each box is uniform in the
    phantom."""
    boxes = [(64, 72, 28, 36), (70, 78, 90, 98), (84, 92, 60, 68)]
    return torch.stack([image[..., r0:r1, c0:c1].mean(dim=(-2, -1)) for r0, r1, c0, c1 in boxes], dim=-1)


SHORT_SCAN = math.pi + 2 * math.atan(300 * 2.0 / 2 / 1000) + 0.05  # pi + the fan angle, and a margin

GEOMETRIES = {
    "parallel-pi": ko.ParallelBeam2D(ko.uniform_angles(360, math.pi), 185, 2.0),
    "parallel-2pi": ko.ParallelBeam2D(ko.uniform_angles(360, 2 * math.pi), 185, 2.0),
    "fan-flat-full": ko.FanBeam2D(ko.uniform_angles(360, 2 * math.pi), 500.0, 500.0, 300, 2.0, det_offset=3.0),
    "fan-curved-full": ko.FanBeam2D(ko.uniform_angles(360, 2 * math.pi), 500.0, 500.0, 300, 2.0, detector="curved"),
    "fan-flat-short": ko.FanBeam2D(ko.uniform_angles(300, SHORT_SCAN), 500.0, 500.0, 300, 2.0),
    "fan-curved-short": ko.FanBeam2D(ko.uniform_angles(300, SHORT_SCAN), 500.0, 500.0, 300, 2.0, detector="curved"),
}


@pytest.mark.parametrize("name", GEOMETRIES)
def test_exact_data_recovers_flat_regions_within_1_percent(name):
    geo = GEOMETRIES[name]
    x = phantoms.shepp_logan(VOLUME, dtype=torch.float64, supersample=8)
    y = phantoms.shepp_logan_projections(geo, volume=VOLUME, dtype=torch.float64)
    r = recon.fbp(y, VOLUME, geo)
    expected, got = _flat_region_means(x), _flat_region_means(r)
    # Measured: relative deviations of at most 0.11 % (parallel), 0.10 % (flat fan, full and
    # short scans, with a detector offset), 0.14 % (curved fan); the bound is the 1 %.
    assert torch.all((got - expected).abs() <= 0.01 * expected.abs()), (got, expected)


def test_windows_smooth_and_learnable_filter_starts_at_the_analytic_one():
    geo = ko.ParallelBeam2D(ko.uniform_angles(90, math.pi), 185, 2.0)
    y = phantoms.shepp_logan_projections(geo, volume=VOLUME, dtype=torch.float64)
    ram_lak = recon.FBP(VOLUME, geo)
    hann = recon.FBP(VOLUME, geo, filter="hann", cutoff=0.8)
    learnable = recon.FBP(VOLUME, geo, learnable=True).double()
    r0, r1, r2 = ram_lak(y), hann(y), learnable(y)
    assert torch.equal(r0, r2)
    # The Hann window removes high frequencies: less total variation.
    assert recon.total_variation(r1) < recon.total_variation(r0)
    r2.square().sum().backward()
    assert learnable.filter.response.grad is not None and learnable.filter.response.grad.abs().sum() > 0


def test_batch_and_float32():
    geo = ko.ParallelBeam2D(ko.uniform_angles(30, math.pi), 185, 2.0)
    y = torch.rand(2, 3, 30, 185)
    model = recon.FBP(VOLUME, geo)
    out = model(y)
    assert out.shape == (2, 3, 128, 128) and out.dtype == torch.float32
    assert torch.allclose(out[1, 2], model(y[1, 2]), atol=1e-6)


def test_helical_fdk_is_rejected_and_fan_needs_angles():
    helix = ko.ConeBeam3D(ko.uniform_angles(30, 4 * math.pi), 500.0, 500.0, (8, 64), 2.0, pitch=10.0)
    with pytest.raises(ValueError, match="FDK needs a circular scan"):
        recon.FDK(ko.Volume((8, 64, 64), 2.0), helix)
    with pytest.raises(TypeError, match="geometry must be a ParallelBeam2D, FanBeam2D, ParallelBeam3D or"):
        recon.FBP(VOLUME, "parallel")
    fan = ko.FanBeam2D(ko.uniform_angles(30, 2 * math.pi), 500.0, 500.0, 185, 2.0)
    with pytest.raises(ValueError, match="fan-beam FBP and FDK need a circular scan built from angles"):
        recon.FBP(VOLUME, ko.FanBeam2D.from_vectors(fan.to_vectors(), 185))


# FDK: 8 slices of 128^2 at 2 mm around the mid-plane; the detector covers the phantom across
# (300 columns of 2 mm at magnification 2) and 48 mm axially at the isocentre.
FDK_GEOMETRIES = {
    "flat-full": ko.ConeBeam3D(ko.uniform_angles(240, 2 * math.pi), 500.0, 500.0, (24, 300), 2.0),
    "curved-short": ko.ConeBeam3D(ko.uniform_angles(200, SHORT_SCAN), 500.0, 500.0, (24, 300), 2.0, detector="curved"),
}


@pytest.mark.parametrize("name", FDK_GEOMETRIES)
def test_fdk_recovers_flat_regions_near_the_mid_plane_within_1_percent(name):
    geo = FDK_GEOMETRIES[name]
    vol = ko.Volume((8, 128, 128), 2.0)
    x = phantoms.shepp_logan_3d(vol, dtype=torch.float64, scale=128.0, supersample=2)
    y = phantoms.shepp_logan_3d_projections(geo, scale=128.0, dtype=torch.float64)
    r = recon.fdk(y, vol, geo)
    expected, got = _flat_region_means(x[3:5].mean(0)), _flat_region_means(r[3:5].mean(0))
    # Measured: at most 0.81 % (full scan) and 0.20 % (short scan); a uniform ball of radius
    # 40 mm comes back at 0.9999 of its value.
    assert torch.all((got - expected).abs() <= 0.01 * expected.abs()), (got, expected)


def test_fdk_needs_a_cone_beam():
    with pytest.raises(TypeError, match="geometry must be a ConeBeam3D for FDK"):
        recon.FDK(VOLUME, GEOMETRIES["fan-flat-full"])


def test_parallel_beam_3d_is_slice_wise_parallel_fbp():
    """FBP of a 3D parallel beam: every slice equals the 2D FBP of its detector row (rows and
    slices aligned), and the 3D Shepp-Logan's flat regions come back within 1 %."""
    vol = ko.Volume((4, 128, 128), 2.0)
    geo = ko.ParallelBeam3D(ko.uniform_angles(180, math.pi), (4, 185), 2.0)
    x = phantoms.shepp_logan_3d(vol, dtype=torch.float64, scale=128.0, supersample=2)
    y = phantoms.shepp_logan_3d_projections(geo, scale=128.0, dtype=torch.float64)
    r = recon.fbp(y, vol, geo)
    assert r.shape == vol.shape and r.dtype == torch.float64
    geo_2d = ko.ParallelBeam2D(ko.uniform_angles(180, math.pi), 185, 2.0)
    torch.testing.assert_close(r[1], recon.fbp(y[:, 1], VOLUME, geo_2d), rtol=1e-10, atol=1e-12)
    expected, got = _flat_region_means(x[1:3].mean(0)), _flat_region_means(r[1:3].mean(0))
    assert torch.all((got - expected).abs() <= 0.01 * expected.abs()), (got, expected)


def test_limited_angle_parallel_fbp_leaves_the_missing_lines_missing():
    """A parallel scan shorter than pi is weighted by its angular step, each measured line once:
    the FBPs of the first 120 and of the remaining 60 of 180 views (over pi) add up to the FBP of
    all of them."""
    full = ko.ParallelBeam2D(ko.uniform_angles(180, math.pi), 185, 2.0)
    first = ko.ParallelBeam2D(full.angles[:120], 185, 2.0)
    rest = ko.ParallelBeam2D(full.angles[120:], 185, 2.0)
    y = phantoms.shepp_logan_projections(full, volume=VOLUME)
    whole = recon.fbp(y, VOLUME, full)
    torch.testing.assert_close(recon.fbp(y[:120], VOLUME, first) + recon.fbp(y[120:], VOLUME, rest), whole,
                               rtol=1e-10, atol=1e-12)


def test_parallel_overscan_is_weighted_for_redundancy():
    """Between pi and 2 pi some lines are measured twice: Parker's weights (fan angle 0) count each
    line once, so the flat regions come back within 1 % (a uniform pi / n_views would not weight
    the doubly measured lines correctly)."""
    geo = ko.ParallelBeam2D(ko.uniform_angles(270, 1.5 * math.pi), 185, 2.0)
    model = recon.FBP(VOLUME, geo)
    assert model.redundancy_weighting is not None
    x = phantoms.shepp_logan(VOLUME, dtype=torch.float64)
    r = model(phantoms.shepp_logan_projections(geo, volume=VOLUME))
    expected, got = _flat_region_means(x), _flat_region_means(r)
    assert torch.all((got - expected).abs() <= 0.01 * expected.abs()), (got, expected)


def test_limited_angle_fan_fbp_uses_reduced_scan_parker_weights():
    """Fan scans shorter than pi + the fan angle (limited angle) are reconstructed with Parker's weights
    for the reduced scan (known_ops.parker_weights(..., reduced_scan=True)), a learnable layer on request."""
    geo = ko.FanBeam2D(ko.uniform_angles(150, math.radians(150)), 500.0, 500.0, 300, 2.0)
    model = recon.FBP(VOLUME, geo, learnable=True)
    expected = ko.cosine_weights(geo) * ko.parker_weights(geo, reduced_scan=True)
    weight = model.redundancy_weighting.weight * model.cosine_weighting.weight
    torch.testing.assert_close(weight.detach().to(torch.float64).expand(geo.shape), expected.expand(geo.shape))
    out = model(phantoms.shepp_logan_projections(geo, volume=VOLUME).float())
    assert out.shape == VOLUME.shape and torch.isfinite(out).all()
