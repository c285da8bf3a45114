"""Cosine weights, Parker redundancy weights and the projection-weight layer: formulas, conjugate rays,
from_vectors equivalence, physical scaling of fan-beam FBP (with RampFilter), learnable layers and bad
input (docs/filters_and_weights.md)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import known_ops as ko
from known_ops.weights import _parker_function

D_SO, D_OD = 300.0, 200.0
D_SD = D_SO + D_OD


def offsets(n):
    return np.arange(n) - (n - 1) / 2


# --- cosine weights -----------------------------------------------------------------------------


@pytest.mark.parametrize("det_offset", [0.0, 7.5])
def test_cosine_weights_fan_flat_formula(det_offset):
    n, du = 31, 1.7
    geo = ko.FanBeam2D(ko.uniform_angles(12, 2 * math.pi, 0.4), D_SO, D_OD, n, du, det_offset)
    w = ko.cosine_weights(geo)
    assert w.dtype == torch.float64 and w.shape == (1, n)  # the same for every view of a circular scan
    u = offsets(n) * du + det_offset
    np.testing.assert_allclose(w.numpy()[0], D_SD / np.sqrt(D_SD**2 + u**2), rtol=1e-13)
    if det_offset == 0:
        assert w[0, n // 2].item() == pytest.approx(1.0, abs=1e-15)  # central ray


@pytest.mark.parametrize("det_offset", [0.0, -9.0])
def test_cosine_weights_fan_curved_formula(det_offset):
    n, du = 30, 2.1
    geo = ko.FanBeam2D(ko.uniform_angles(7, math.pi, -1.0), D_SO, D_OD, n, du, det_offset, detector="curved")
    gamma = (offsets(n) * du + det_offset) / D_SD
    np.testing.assert_allclose(ko.cosine_weights(geo).numpy()[0], np.cos(gamma), rtol=1e-13)


@pytest.mark.parametrize("detector", ["flat", "curved"])
def test_cosine_weights_cone_formula(detector):
    rows, cols, dv, du = 9, 14, 1.3, 0.9
    v_off, u_off = 2.0, -3.0
    geo = ko.ConeBeam3D(
        ko.uniform_angles(5, 2 * math.pi), D_SO, D_OD, (rows, cols), (dv, du), (v_off, u_off), detector=detector
    )
    w = ko.cosine_weights(geo)
    assert w.shape == (1, rows, cols)
    v = (offsets(rows) * dv + v_off)[:, None]
    u = (offsets(cols) * du + u_off)[None, :]
    if detector == "flat":
        expected = D_SD / np.sqrt(D_SD**2 + u**2 + v**2)
    else:
        expected = np.cos(u / D_SD) * D_SD / np.sqrt(D_SD**2 + v**2)
    np.testing.assert_allclose(w.numpy()[0], expected, rtol=1e-13)


def test_cosine_weights_of_a_helical_scan_are_those_of_the_circular_one():
    kwargs = dict(det_shape=(6, 8), det_spacing=(1.5, 2.0), det_offset=(1.0, 0.5))
    angles = ko.uniform_angles(9, 4 * math.pi)
    circular = ko.cosine_weights(ko.ConeBeam3D(angles, D_SO, D_OD, **kwargs))
    helical = ko.cosine_weights(ko.ConeBeam3D(angles, D_SO, D_OD, pitch=30.0, **kwargs))
    torch.testing.assert_close(helical, circular, rtol=1e-13, atol=0)


def test_cosine_weights_from_vectors_match_the_circular_constructor():
    n, du, off = 21, 1.2, 3.3
    t = ko.uniform_angles(10, 2 * math.pi, 0.25)
    # fanflat_vec rows written out from docs/conventions.md, not taken from to_vectors().
    c, s = np.cos(t), np.sin(t)
    vectors = np.stack([D_SO * s, -D_SO * c, -D_OD * s + off * c, D_OD * c + off * s, du * c, du * s], axis=1)
    circular = ko.FanBeam2D(t, D_SO, D_OD, n, du, off)
    from_vectors = ko.cosine_weights(ko.FanBeam2D.from_vectors(vectors, n))
    torch.testing.assert_close(from_vectors, ko.cosine_weights(circular), rtol=1e-12, atol=0)
    for geo in (
        ko.FanBeam2D(t, D_SO, D_OD, n, du, off, detector="curved"),
        ko.ConeBeam3D(t, D_SO, D_OD, (5, n), (1.0, du), (0.5, off)),
        ko.ConeBeam3D(t, D_SO, D_OD, (5, n), (1.0, du), (0.5, off), detector="curved"),
    ):
        rebuilt = type(geo).from_vectors(geo.to_vectors(), getattr(geo, geo._det_attr), detector=geo.detector)
        torch.testing.assert_close(ko.cosine_weights(rebuilt), ko.cosine_weights(geo), rtol=0, atol=0)
        torch.testing.assert_close(ko.parker_weights(rebuilt), ko.parker_weights(geo), rtol=0, atol=0)


def test_cosine_weights_of_a_non_circular_trajectory_vary_per_view():
    vectors = ko.FanBeam2D(ko.uniform_angles(4, 2 * math.pi), D_SO, D_OD, 9).to_vectors()
    vectors[2, 0:2] *= 1.5  # one source farther away
    w = ko.cosine_weights(ko.FanBeam2D.from_vectors(vectors, 9))
    assert w.shape == (4, 9)
    assert not torch.allclose(w[2], w[0])


@pytest.mark.parametrize("pixels_per_chunk", [None, 70])
def test_cosine_weights_of_a_non_rigid_cone_trajectory(monkeypatch, pixels_per_chunk):
    if pixels_per_chunk is not None:  # several views per chunk, several chunks
        monkeypatch.setattr(ko.weights, "_PIXELS_PER_CHUNK", pixels_per_chunk)
    rows, cols = 5, 7
    geo = ko.ConeBeam3D(ko.uniform_angles(8, 2 * math.pi), D_SO, D_OD, (rows, cols), (1.1, 1.3))
    vectors = geo.to_vectors()
    axis = vectors[3, 3:6] - vectors[3, 0:3]
    vectors[3, 3:6] += 0.4 * axis  # view 3: detector farther from the source
    w = ko.cosine_weights(ko.ConeBeam3D.from_vectors(vectors, (rows, cols))).numpy()
    assert w.shape == (8, rows, cols)
    circular = ko.cosine_weights(geo).numpy()[0]
    np.testing.assert_allclose(np.delete(w, 3, axis=0), np.broadcast_to(circular, (7, rows, cols)), rtol=1e-13)
    d = 1.4 * D_SD
    u = offsets(cols)[None, :] * 1.3
    v = offsets(rows)[:, None] * 1.1
    np.testing.assert_allclose(w[3], d / np.sqrt(d * d + u * u + v * v), rtol=1e-13)


@pytest.mark.parametrize("pixels_per_chunk", [None, 40])
def test_parker_weights_of_a_rolled_cone_detector_vary_per_row(monkeypatch, pixels_per_chunk):
    if pixels_per_chunk is not None:
        monkeypatch.setattr(ko.weights, "_PIXELS_PER_CHUNK", pixels_per_chunk)
    rows, cols, n_views = 4, 9, 30
    geo = ko.ConeBeam3D(ko.uniform_angles(n_views, math.pi + 0.5), D_SO, D_OD, (rows, cols), 8.0)
    vectors = geo.to_vectors()
    # Roll the detector by 0.2 rad about the central ray: rows no longer step along z.
    a = _unit_rows(vectors[:, 3:6] - vectors[:, 0:3])
    c, s = math.cos(0.2), math.sin(0.2)
    for k in (6, 9):
        x = vectors[:, k : k + 3]
        vectors[:, k : k + 3] = c * x + s * np.cross(a, x) + (1 - c) * np.sum(a * x, axis=1, keepdims=True) * a
    rolled = ko.ConeBeam3D.from_vectors(vectors, (rows, cols))
    w = ko.parker_weights(rolled).numpy()
    assert w.shape == (n_views, rows, cols)
    rays = rolled.rays().numpy()
    src, direction = rays[..., 0:2], rays[..., 3:5]
    central = -src
    cross = central[..., 0] * direction[..., 1] - central[..., 1] * direction[..., 0]
    gamma = np.arctan2(cross, np.sum(central * direction, axis=-1))
    step = (math.pi + 0.5) / n_views
    beta = ((np.arange(n_views) + 0.5) * step)[:, None, None]
    expected = _parker_function(beta, gamma, math.pi + 0.5, np.max(np.abs(gamma)))
    np.testing.assert_allclose(w, expected, atol=1e-12)
    assert np.ptp(w, axis=1).max() > 1e-3  # the rows differ


def _unit_rows(a):
    return a / np.linalg.norm(a, axis=1, keepdims=True)


# --- Parker weights -----------------------------------------------------------------------------


@pytest.mark.parametrize("q", [1.0, 0.5, 0.25])
@pytest.mark.parametrize("extra", [0.0, 0.3, 1.5])
def test_parker_function_conjugate_rays_sum_to_one(q, extra):
    rng = np.random.default_rng(3)
    delta = 0.35
    scan = math.pi + 2 * delta + extra
    gamma = rng.uniform(-delta, delta, 4000)
    beta = rng.uniform(0, scan, 4000)
    conj = beta + math.pi + 2 * gamma  # the conjugate ray; outside [0, scan] it is not measured
    inside = conj <= scan
    w = _parker_function(beta, gamma, scan, delta, q)
    wc = _parker_function(conj[inside], -gamma[inside], scan, delta, q)
    np.testing.assert_allclose(w[inside] + wc, 1.0, atol=1e-12)
    # A line is measured twice at most: (beta, gamma) is itself the conjugate of (beta - pi + 2 gamma, -gamma).
    # When neither partner lies in the scan, the ray carries the whole line.
    alone = ~inside & (beta - math.pi + 2 * gamma < 0)
    assert np.any(alone)
    np.testing.assert_allclose(w[alone], 1.0, atol=1e-12)
    assert np.all((w >= 0) & (w <= 1))


def _curved_on_grid(n_views, sign=1.0, det_offset_bins=0):
    """A curved fan with conjugate rays on the sampling grid: bins alpha apart, views 2 alpha apart,
    pi a multiple of the view step."""
    m = 60
    alpha = math.pi / (2 * m)
    du = alpha * D_SD
    angles = sign * np.arange(n_views) * 2 * alpha + 0.1
    return ko.FanBeam2D(angles, D_SO, D_OD, 21, du, det_offset_bins * du, detector="curved")


def _check_conjugate_pairs(geo, w) -> int:
    """Every measured line: its two rays' weights sum to 1, or its single ray has weight 1; returns the
    number of measured pairs."""
    rays = geo.rays().numpy()
    origin, direction = rays[..., 0:2], rays[..., 2:4]
    direction = direction / np.linalg.norm(direction, axis=-1, keepdims=True)
    phi = np.arctan2(direction[..., 1], direction[..., 0])
    dist = origin[..., 0] * direction[..., 1] - origin[..., 1] * direction[..., 0]
    n_views, n = geo.shape
    pairs = 0
    for k in range(n_views):
        for c in range(n):
            # The same line traversed the other way: direction + pi, signed distance negated (bin mirrored).
            c2 = n - 1 - c
            dphi = np.angle(np.exp(1j * (phi[:, c2] - phi[k, c] - math.pi)))
            match = np.flatnonzero((np.abs(dphi) < 1e-9) & (np.abs(dist[:, c2] + dist[k, c]) < 1e-6))
            if match.size:
                assert match.size == 1
                assert w[k, c] + w[match[0], c2] == pytest.approx(1.0, abs=1e-12)
                pairs += 1
            else:
                assert w[k, c] == pytest.approx(1.0, abs=1e-12)  # its line is measured once
    return pairs


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["counter-clockwise", "clockwise"])
@pytest.mark.parametrize("q", [1.0, 0.3])
def test_parker_weights_of_conjugate_rays_sum_to_one_on_the_grid(sign, q):
    geo = _curved_on_grid(76, sign)  # 76 views of pi/60: 4 pi/15 more than pi + 2 delta = 70 pi/60 (delta: 10 bins)
    w = ko.parker_weights(geo, q=q).numpy()
    assert w.shape == geo.shape
    assert _check_conjugate_pairs(geo, w) > geo.n_views * geo.det_count // 4


def test_parker_weights_are_bounded_and_smooth():
    n = 41
    du = 1.0
    delta = math.atan((n / 2) * du / D_SD)
    margin = 0.2
    scan = math.pi + 2 * delta + margin
    n_views = 200
    geo = ko.FanBeam2D(ko.uniform_angles(n_views, scan), D_SO, D_OD, n, du)
    w = ko.parker_weights(geo).numpy()
    assert np.all((w >= 0) & (w <= 1))
    # |dw/dbeta| <= (pi/2) / b with b = 2 delta' -+ 2 gamma + eps >= eps (the overscan beyond pi + 2 delta').
    gamma_max = np.max(np.abs(np.arctan(offsets(n) * du / D_SD)))
    eps = scan - math.pi - 2 * gamma_max
    step = scan / n_views
    assert np.max(np.abs(np.diff(w, axis=0))) <= (math.pi / 2) / eps * step * (1 + 1e-9)
    assert np.max(np.abs(np.diff(w, axis=1))) < 0.2  # across neighbouring bins: no jumps either
    assert w.min() < 0.01 and w.max() == pytest.approx(1.0)


# --- Parker weights of reduced (limited-angle) scans: reduced_scan=True ------------------------------


@pytest.mark.parametrize("q", [1.0, 0.5])
@pytest.mark.parametrize("shortfall", [0.1, 0.7, 1.0, 1.5])  # pi + 2 delta - scan; delta = 0.35
def test_parker_function_of_a_reduced_scan_sums_conjugate_rays_to_one(q, shortfall):
    rng = np.random.default_rng(5)
    delta = 0.35
    scan = math.pi + 2 * delta - shortfall  # down to pi - 0.8 = below pi - 2 delta: no line twice
    reduced = (scan - math.pi) / 2
    gamma = rng.uniform(-delta, delta, 4000)
    beta = rng.uniform(0, scan, 4000)
    w = _parker_function(beta, gamma, scan, reduced, q)
    assert np.all((w >= 0) & (w <= 1))
    ahead, behind = beta + math.pi + 2 * gamma, beta - math.pi + 2 * gamma  # the two candidate partners
    in_ahead, in_behind = ahead <= scan, behind >= 0
    assert not np.any(in_ahead & in_behind)
    np.testing.assert_allclose(w[in_ahead] + _parker_function(ahead[in_ahead], -gamma[in_ahead], scan, reduced, q),
                               1.0, atol=1e-12)
    np.testing.assert_allclose(w[in_behind] + _parker_function(behind[in_behind], -gamma[in_behind], scan, reduced, q),
                               1.0, atol=1e-12)
    alone = ~in_ahead & ~in_behind
    np.testing.assert_allclose(w[alone], 1.0, atol=1e-12)
    assert np.any(alone)
    assert np.any(in_ahead) == (scan > math.pi - 2 * delta)


@pytest.mark.parametrize("n_views", [66, 60, 54])  # steps of pi/60: pi + 2 delta = 70 steps, so 1.1 pi, pi, 0.9 pi
@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["counter-clockwise", "clockwise"])
def test_parker_weights_of_a_reduced_scan_on_the_grid(n_views, sign):
    geo = _curved_on_grid(n_views, sign)
    with pytest.raises(ValueError, match="reduced_scan=True"):
        ko.parker_weights(geo)
    w = ko.parker_weights(geo, reduced_scan=True).numpy()
    assert w.shape == geo.shape
    assert np.all((w >= 0) & (w <= 1))
    assert _check_conjugate_pairs(geo, w) > 0


@pytest.mark.parametrize("degrees", [200.0, 180.0, 140.0])
def test_parker_weights_of_a_reduced_scan_are_smooth(degrees):
    n, du, n_views = 41, 6.0, 400
    gamma = np.arctan(offsets(n) * du / D_SD)
    assert math.pi + 2 * np.max(np.abs(gamma)) > math.radians(200.0)  # every case is a reduced scan
    scan = math.radians(degrees)
    geo = ko.FanBeam2D(ko.uniform_angles(n_views, scan), D_SO, D_OD, n, du)
    w = ko.parker_weights(geo, reduced_scan=True).numpy()
    assert np.all((w >= 0) & (w <= 1))
    # Per ray (column), the transitions are Parker's sin^2 over b = scan - pi -+ 2 gamma (where positive),
    # so |dw/dbeta| <= (pi / 2) / b: no jumps beyond those of the shortest transition of the column.
    step = scan / n_views
    for c in range(n):
        lengths = np.array([scan - math.pi - 2 * gamma[c], scan - math.pi + 2 * gamma[c]])
        lengths = lengths[lengths > 0]
        jump = np.max(np.abs(np.diff(w[:, c])))
        if lengths.size == 0:
            assert jump == 0.0 and np.all(w[:, c] == 1.0)
        else:
            assert jump <= (math.pi / 2) / lengths.min() * step * (1 + 1e-9)


def test_parker_weights_reduced_scan_agrees_at_the_short_scan_and_parallel_is_one():
    n, du = 31, 2.0
    delta = math.atan(((n - 1) / 2) * du / D_SD)  # the largest |fan angle| of the bin centres
    geo = ko.FanBeam2D(ko.uniform_angles(120, math.pi + 2 * delta), D_SO, D_OD, n, du)
    torch.testing.assert_close(ko.parker_weights(geo, reduced_scan=True), ko.parker_weights(geo), rtol=0, atol=0)
    longer = ko.FanBeam2D(ko.uniform_angles(120, math.pi + 2 * delta + 0.3), D_SO, D_OD, n, du)
    torch.testing.assert_close(ko.parker_weights(longer, reduced_scan=True), ko.parker_weights(longer), rtol=0, atol=0)
    par = ko.ParallelBeam2D(ko.uniform_angles(50, 0.7 * math.pi), 5)
    torch.testing.assert_close(ko.parker_weights(par, reduced_scan=True), torch.ones(50, 1, dtype=torch.float64),
                               rtol=0, atol=0)
    short = ko.FanBeam2D(ko.uniform_angles(90, math.pi), D_SO, D_OD, n, du)
    module = ko.ParkerWeighting(short, reduced_scan=True)
    y = torch.rand(2, *short.shape, dtype=torch.float64)
    torch.testing.assert_close(module(y), y * ko.parker_weights(short, reduced_scan=True))


def test_parker_full_scan_is_one_half_and_parallel_half_turn_is_one():
    fan = ko.FanBeam2D(ko.uniform_angles(36, 2 * math.pi, 1.0), D_SO, D_OD, 11)
    assert torch.equal(ko.parker_weights(fan), torch.full((1, 1), 0.5, dtype=torch.float64))
    cone = ko.ConeBeam3D(ko.uniform_angles(36, -2 * math.pi), D_SO, D_OD, (3, 11))
    assert torch.equal(ko.parker_weights(cone), torch.full((1, 1, 1), 0.5, dtype=torch.float64))
    par = ko.ParallelBeam2D(ko.uniform_angles(30, math.pi), 11)
    torch.testing.assert_close(ko.parker_weights(par), torch.ones(30, 1, dtype=torch.float64), rtol=0, atol=1e-15)
    par3 = ko.ParallelBeam3D(ko.uniform_angles(30, -1.2 * math.pi), (2, 11))
    assert ko.parker_weights(par3).shape == (30, 1, 1)
    assert ko.ParkerWeighting(par3)(torch.ones(par3.shape)).shape == par3.shape


def test_parker_parallel_between_half_and_full_turn():
    geo = ko.ParallelBeam2D(ko.uniform_angles(60, 1.5 * math.pi), 5)  # view k + 40 is view k turned by pi
    w = ko.parker_weights(geo).numpy()
    np.testing.assert_allclose(w[:20] + w[40:], 1.0, atol=1e-12)
    np.testing.assert_allclose(w[20:40], 1.0, atol=1e-12)
    assert w.shape == (60, 1)


@pytest.mark.parametrize("detector", ["flat", "curved"])
def test_parker_cone_is_the_fan_weight_of_each_column(detector):
    rows, cols, du = 7, 25, 1.4
    delta = (cols / 2) * du / D_SD if detector == "curved" else math.atan((cols / 2) * du / D_SD)
    angles = ko.uniform_angles(90, math.pi + 2 * delta + 0.1, 0.7)
    cone = ko.ConeBeam3D(angles, D_SO, D_OD, (rows, cols), (2.0, du), (3.0, 0.0), detector=detector)
    fan = ko.FanBeam2D(angles, D_SO, D_OD, cols, du, detector=detector)
    w3, w2 = ko.parker_weights(cone), ko.parker_weights(fan)
    assert w3.shape == (90, 1, cols)
    torch.testing.assert_close(w3[:, 0, :], w2, rtol=0, atol=1e-12)
    module = ko.ParkerWeighting(cone)
    y = torch.rand(2, *cone.shape)
    torch.testing.assert_close(module(y), y * w2[:, None, :].float())


# --- physical scaling: fan-beam FBP with cosine and Parker weights --------------------------------


def _disc_projections(geo, centre, radius):
    rays = geo.rays().numpy()
    origin, direction = rays[..., 0:2], rays[..., 2:4]
    direction = direction / np.linalg.norm(direction, axis=-1, keepdims=True)
    rel = centre - origin
    dist = np.abs(rel[..., 0] * direction[..., 1] - rel[..., 1] * direction[..., 0])
    return 2 * np.sqrt(np.clip(radius**2 - dist**2, 0, None))


def _fan_backproject(geo, q, points):
    """f(x) = sum_views (D_so D_sd / L^2) q(column of x) (times the angular step, by the caller): L is the
    distance from the source to x along the central ray (flat) or in full (curved)."""
    v = geo.to_vectors()
    s, d, u = v[:, 0:2], v[:, 2:4], v[:, 4:6]
    n = geo.det_count
    c0 = (n - 1) / 2
    central = -s / np.linalg.norm(s, axis=1, keepdims=True)
    out = []
    for x in points:
        rel = x - s
        if geo.detector == "flat":
            # s + t rel = d + a u, solved for a (Cramer's rule, all views at once).
            rhs = d - s
            det = rel[:, 0] * (-u[:, 1]) - rel[:, 1] * (-u[:, 0])
            a = (rel[:, 0] * rhs[:, 1] - rel[:, 1] * rhs[:, 0]) / det
            col = a + c0
            length = np.sum(rel * central, axis=1)
        else:
            h = d - s
            e_c = h / np.linalg.norm(h, axis=1, keepdims=True)
            e_u = u / np.linalg.norm(u, axis=1, keepdims=True)
            g = np.arctan2(np.sum(rel * e_u, axis=1), np.sum(rel * e_c, axis=1))
            col = g * D_SD / np.linalg.norm(u, axis=1) + c0
            length = np.linalg.norm(rel, axis=1)
        vals = np.array([np.interp(col[k], np.arange(n), q[k], left=0.0, right=0.0) for k in range(geo.n_views)])
        out.append(np.sum(D_SO * D_SD / length**2 * vals))
    return np.array(out)


@pytest.mark.parametrize("detector", ["flat", "curved"])
@pytest.mark.parametrize("scan", ["full", "short", "short-clockwise"])
def test_fan_fbp_with_cosine_and_parker_weights_recovers_a_disc(detector, scan):
    """The scaling convention of docs/filters_and_weights.md, end to end: an off-centre unit disc."""
    n, du, off = 301, 1.0, 2.5
    u_max = (n / 2) * du + off
    delta = u_max / D_SD if detector == "curved" else math.atan(u_max / D_SD)
    if scan == "full":
        scan_range, n_views = 2 * math.pi, 480
    else:
        scan_range, n_views = math.pi + 2 * delta + 0.05, 300
    if scan.endswith("clockwise"):
        scan_range = -scan_range
    geo = ko.FanBeam2D(ko.uniform_angles(n_views, scan_range, 0.3), D_SO, D_OD, n, du, off, detector=detector)
    centre, radius = np.array([15.0, -10.0]), 40.0
    p = torch.from_numpy(_disc_projections(geo, centre, radius))
    weighted = ko.ParkerWeighting(geo)(ko.CosineWeighting(geo)(p))
    filt = ko.RampFilter(n, du, arc_radius=D_SD if detector == "curved" else None)
    q = filt(weighted).numpy()
    points = [centre, centre + [20.0, 15.0], centre + [-30.0, 5.0], np.array([-40.0, 30.0])]
    f = _fan_backproject(geo, q, points) * abs(scan_range) / n_views
    np.testing.assert_allclose(f[:3], 1.0, atol=1e-3)
    assert abs(f[3]) < 0.03  # outside the disc: interpolation and view-aliasing artefacts only


def _sphere_projections(geo, centre, radius):
    rays = geo.rays().numpy()
    origin, direction = rays[..., 0:3], rays[..., 3:6]
    direction = direction / np.linalg.norm(direction, axis=-1, keepdims=True)
    rel = centre - origin
    along = np.sum(rel * direction, axis=-1)
    return 2 * np.sqrt(np.clip(radius**2 - (np.sum(rel * rel, axis=-1) - along**2), 0, None))


def _fdk_backproject(geo, q, x):
    """sum_views (D_so D_sd / L^2) q(row, col of x), bilinear; L: distance from the source to x along the
    central ray (flat), or within the plane perpendicular to the axis (curved)."""
    v = geo.to_vectors()
    s, d, u, w = v[:, 0:3], v[:, 3:6], v[:, 6:9], v[:, 9:12]
    n_rows, n_cols = geo.det_shape
    rel = x - s
    central = -s * [1.0, 1.0, 0.0]
    central /= np.linalg.norm(central, axis=1, keepdims=True)
    if geo.detector == "flat":
        normal = np.cross(u, w)
        t = np.sum((d - s) * normal, axis=1) / np.sum(rel * normal, axis=1)
        hit = s + t[:, None] * rel - d
        col = np.sum(hit * u, axis=1) / np.sum(u * u, axis=1) + (n_cols - 1) / 2
        row = np.sum(hit * w, axis=1) / np.sum(w * w, axis=1) + (n_rows - 1) / 2
        length = np.sum(rel * central, axis=1)
    else:
        h = (d - s) * [1.0, 1.0, 0.0]
        radius = np.linalg.norm(h, axis=1)
        e_c, e_u = h / radius[:, None], u / np.linalg.norm(u, axis=1, keepdims=True)
        flat_rel = rel * [1.0, 1.0, 0.0]
        length = np.linalg.norm(flat_rel, axis=1)
        g = np.arctan2(np.sum(flat_rel * e_u, axis=1), np.sum(flat_rel * e_c, axis=1))
        col = g * radius / np.linalg.norm(u, axis=1) + (n_cols - 1) / 2
        row = (rel[:, 2] * radius / length - (d - s)[:, 2]) / np.linalg.norm(w, axis=1) + (n_rows - 1) / 2
    r0 = np.clip(np.floor(row).astype(int), 0, n_rows - 2)
    c0 = np.clip(np.floor(col).astype(int), 0, n_cols - 2)
    fr, fc = row - r0, col - c0
    k = np.arange(geo.n_views)
    val = (
        (1 - fr) * (1 - fc) * q[k, r0, c0] + (1 - fr) * fc * q[k, r0, c0 + 1]
        + fr * (1 - fc) * q[k, r0 + 1, c0] + fr * fc * q[k, r0 + 1, c0 + 1]
    )
    return float(np.sum(D_SO * D_SD / length**2 * val))


@pytest.mark.parametrize("detector", ["flat", "curved"])
@pytest.mark.parametrize("scan", ["full", "short"])
def test_fdk_with_cosine_and_parker_weights_recovers_a_sphere(detector, scan):
    """FDK (flat and cylindrical detectors, full and short scans): a unit sphere, up to FDK's
    cone-angle error off the mid-plane."""
    rows, cols, spacing = 31, 81, 2.4
    u_max = (cols / 2) * spacing
    delta = u_max / D_SD if detector == "curved" else math.atan(u_max / D_SD)
    scan_range, n_views = (2 * math.pi, 180) if scan == "full" else (math.pi + 2 * delta + 0.05, 120)
    geo = ko.ConeBeam3D(ko.uniform_angles(n_views, scan_range), D_SO, D_OD, (rows, cols), spacing, detector=detector)
    centre, radius = np.array([10.0, -5.0, 4.0]), 30.0
    p = torch.from_numpy(_sphere_projections(geo, centre, radius))
    weighted = ko.ParkerWeighting(geo)(ko.CosineWeighting(geo)(p))
    q = ko.RampFilter(geo.det_shape, spacing, arc_radius=D_SD if detector == "curved" else None)(weighted).numpy()
    step = scan_range / n_views
    inside = [centre, centre + [10.0, 5.0, 0.0], centre + [-10.0, 8.0, -12.0]]
    f = np.array([_fdk_backproject(geo, q, x) * step for x in inside])
    np.testing.assert_allclose(f, 1.0, atol=5e-3)
    assert abs(_fdk_backproject(geo, q, np.array([-40.0, 30.0, 0.0])) * step) < 0.05


# --- the projection-weight layer ------------------------------------------------------------------


def test_projection_weight_learnable_starts_equal_and_receives_gradients():
    geo = ko.FanBeam2D(ko.uniform_angles(40, math.pi + 0.6), D_SO, D_OD, 17, 2.0)
    init = ko.parker_weights(geo)
    frozen = ko.ProjectionWeight(geo.shape, init=init)
    learn = ko.ProjectionWeight(geo.shape, init=init, learnable=True)
    assert list(frozen.parameters()) == [] and learn.weight.requires_grad
    assert learn.weight.shape == geo.shape and learn.weight.dtype == torch.float64
    y = torch.randn(3, *geo.shape)
    assert torch.equal(learn(y), frozen(y))
    assert torch.equal(frozen(y), y * init.float())
    learn(y).square().sum().backward()
    assert learn.weight.grad is not None and learn.weight.grad.abs().max() > 0
    assert learn.weight.grad.dtype == torch.float64


def test_projection_weight_gradcheck_and_broadcasting():
    w = ko.ProjectionWeight((1, 5), init=torch.linspace(0.5, 1.5, 5), learnable=True)
    y = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(w, (y,))

    def apply(weight, x):
        return torch.func.functional_call(w, {"weight": weight}, (x,))

    assert torch.autograd.gradcheck(apply, (w.weight.detach().clone().requires_grad_(), y))
    assert ko.ProjectionWeight((3, 5))(y).shape == y.shape  # ones
    assert torch.equal(ko.ProjectionWeight((3, 5))(y), y)
    assert ko.ProjectionWeight(init=np.full((3, 1), 2.0)).shape == (3, 1)


def test_weight_modules_keep_float64_and_follow_the_data_dtype():
    geo = ko.ConeBeam3D(ko.uniform_angles(8, 2 * math.pi), D_SO, D_OD, (4, 6))
    cos = ko.CosineWeighting(geo).float()
    assert cos.weight.dtype == torch.float64
    y = torch.rand(*geo.shape, dtype=torch.float32)
    out = cos(y)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, y * ko.cosine_weights(geo).float())
    assert torch.equal(cos(y.double()), y.double() * ko.cosine_weights(geo))
    assert cos(y.transpose(-1, -2).contiguous().transpose(-1, -2)).shape == y.shape  # non-contiguous input


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.cuda
def test_weights_on_cuda():
    geo = ko.FanBeam2D(ko.uniform_angles(40, math.pi + 0.6), D_SO, D_OD, 17, 2.0)
    y = torch.rand(2, *geo.shape)
    for module in (ko.CosineWeighting(geo), ko.ParkerWeighting(geo), ko.ProjectionWeight(geo.shape, learnable=True)):
        ref = module(y)
        torch.testing.assert_close(module.to("cuda")(y.cuda()).cpu(), ref)


# --- bad input ----------------------------------------------------------------------------------


def test_cosine_weights_bad_input():
    with pytest.raises(TypeError, match="parallel beams need none"):
        ko.cosine_weights(ko.ParallelBeam2D([0.0, 1.0], 5))
    with pytest.raises(TypeError, match="geometry must be a FanBeam2D or ConeBeam3D"):
        ko.cosine_weights("fan")
    vectors = np.array([[0.0, 0.0, 0.0, 10.0, 1.0, 0.0]])  # source at the rotation centre
    with pytest.raises(ValueError, match="rotation axis"):
        ko.cosine_weights(ko.FanBeam2D.from_vectors(vectors, 3))


def test_parker_weights_bad_input():
    fan = dict(source_distance=D_SO, detector_distance=D_OD, det_count=11)
    with pytest.raises(ValueError, match="equally spaced"):
        ko.parker_weights(ko.FanBeam2D([0.0, 0.1, 0.3, 0.4] + list(np.linspace(0.5, 4, 30)), **fan))
    with pytest.raises(ValueError, match="monotonic"):
        ko.parker_weights(ko.FanBeam2D([0.0, 0.1, 0.05], **fan))
    with pytest.raises(ValueError, match=r"less than the short scan pi \+ 2 delta"):
        ko.parker_weights(ko.FanBeam2D(ko.uniform_angles(50, math.pi), **fan))
    with pytest.raises(ValueError, match="less than the short scan"):
        ko.parker_weights(ko.ParallelBeam2D(ko.uniform_angles(50, 0.9 * math.pi), 5))
    with pytest.raises(ValueError, match="more than a full turn"):
        ko.parker_weights(ko.FanBeam2D(ko.uniform_angles(50, 2.5 * math.pi), **fan))
    with pytest.raises(ValueError, match="helical"):
        ko.parker_weights(ko.ConeBeam3D(ko.uniform_angles(50, 4.0), D_SO, D_OD, (3, 5), pitch=10.0))
    with pytest.raises(ValueError, match="at least 2 views"):
        ko.parker_weights(ko.FanBeam2D([0.0], **fan))
    vectors = ko.FanBeam2D(ko.uniform_angles(50, 4.0), **fan).to_vectors()
    vectors[3, 0:2] *= 1.1
    with pytest.raises(ValueError, match="circular scan"):
        ko.parker_weights(ko.FanBeam2D.from_vectors(vectors, 11))
    with pytest.raises(ValueError, match=r"q must be in \(0, 1\]"):
        ko.parker_weights(ko.FanBeam2D(ko.uniform_angles(50, 4.0), **fan), q=0.0)
    with pytest.raises(TypeError, match="reduced_scan must be True or False"):
        ko.parker_weights(ko.FanBeam2D(ko.uniform_angles(50, math.pi), **fan), reduced_scan=1)
    with pytest.raises(TypeError, match="q must be a real number"):
        ko.parker_weights(ko.FanBeam2D(ko.uniform_angles(50, 4.0), **fan), q="1")
    with pytest.raises(TypeError, match="geometry must be"):
        ko.parker_weights(ko.Volume((3, 3)))


def test_weight_modules_bad_input():
    geo = ko.FanBeam2D(ko.uniform_angles(6, 2 * math.pi), D_SO, D_OD, 9)
    module = ko.CosineWeighting(geo)
    with pytest.raises(ValueError, match=r"y must have shape \(\.\.\., 6, 9\)"):
        module(torch.zeros(6, 8))
    with pytest.raises(ValueError, match=r"y must have shape \(\.\.\., 6, 9\)"):
        module(torch.zeros(1, 9))  # the weights would broadcast, but the data must match the geometry
    with pytest.raises(TypeError, match="y must be float32 or float64"):
        module(torch.zeros(6, 9, dtype=torch.int32))
    with pytest.raises(ValueError, match="y is on meta but the weights are on cpu"):
        module(torch.zeros(6, 9, device="meta"))
    with pytest.raises(ValueError, match=r"does not broadcast to shape \(6, 9\)"):
        ko.ProjectionWeight((6, 9), init=torch.ones(5))
    with pytest.raises(TypeError, match="needs shape, init or both"):
        ko.ProjectionWeight()
    with pytest.raises(ValueError, match=r"shape\[1\] must be a positive integer"):
        ko.ProjectionWeight((6, 0))
    with pytest.raises(TypeError, match=r"shape\[0\] must be a positive integer"):
        ko.ProjectionWeight((6.0, 2))
    with pytest.raises(ValueError, match="init must contain only finite values"):
        ko.ProjectionWeight(init=[1.0, float("nan")])
    with pytest.raises(TypeError, match="learnable must be True or False"):
        ko.ProjectionWeight((2,), learnable=1)
    with pytest.raises(ValueError, match=r"y must have shape \(\.\.\., 3, 5\)"):
        ko.ProjectionWeight((3, 5))(torch.zeros(4, 5))
