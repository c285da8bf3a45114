"""known_ops.interop.odl against ODL 1.0 (skipped when odl is missing; the projector checks also need astra).

Measured here (CPU, astra-toolbox 2.5.0, odl 1.0.0), which set the tolerances:
  2D parallel, our projection vs ODL's astra_cpu ('linear', float32)      5.4e-6 relative (tolerance 1e-4)
  2D fan flat, vs ODL's astra_cpu ('line_fanflat', another discretisation) 2.4e-2 relative
  converting through ODL's ASTRA vectors (astra_conebeam_2d_geom_to_vec)  48 % mismatch (rotated by -90 degrees)
  ODL's astra_cpu parallel path with an off-centre detector partition      equals our *centred* detector (5e-6)
  ODL adjoint factor w_range / w_domain (180 views over pi, 1 mm bins): 1 mm pixels 1, 0.999 mm 0.0175, 0.5 mm 0.0698
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import known_ops as ko
import phantoms
from conftest import assert_same_lines, relative_error

odl = pytest.importorskip("odl", reason="odl is not installed: the ODL interoperability tests are skipped")
from known_ops.interop import odl as kodl  # noqa: E402

tomo = pytest.importorskip("odl.applications.tomo", reason="ODL < 1.0 has no odl.applications.tomo")
import recon  # noqa: E402


def _needs_astra():
    pytest.importorskip("astra", reason="astra-toolbox is not installed: ODL's astra_cpu back-end is unavailable")


# --- geometries: every ray equals ODL's ------------------------------------------------------------


def _odl_rays(geometry):
    """ODL's own detector point and detector-to-source direction of every (view, bin) / (view, row, col),
    in our array order."""
    angles = np.asarray(geometry.angles)
    grid = geometry.det_partition.grid
    if geometry.ndim == 2:
        p = np.asarray(grid.coord_vectors[0])
        a, b = angles[:, None], p[None, :]
        return geometry.det_point_position(a, b), geometry.det_to_src(a, b)
    u, v = (np.asarray(c) for c in grid.coord_vectors)
    a, uu, vv = np.meshgrid(angles, u, v, indexing="ij")  # full arrays: ODL's cylinder does not broadcast
    params = (uu, vv)
    point, direction = geometry.det_point_position(a, params), geometry.det_to_src(a, params)
    return np.swapaxes(point, 1, 2), np.swapaxes(direction, 1, 2)  # (view, u, v) -> (view, row = v, col = u)


def assert_same_rays(ours, odl_geometry, tolerance=1e-9):
    """Every ray of `ours` is the line of ODL's ray: parallel directions, and ODL's detector point on it."""
    rays = ours.rays().numpy()
    point, odl_direction = _odl_rays(odl_geometry)
    assert point.shape == rays[..., :ours.ndim].shape, (point.shape, rays.shape)
    assert_same_lines(rays[..., :ours.ndim], rays[..., ours.ndim:], point, odl_direction, tolerance)


def _geometries():
    apart = odl.uniform_partition(0, 2 * np.pi, 12)
    half = odl.uniform_partition(0.1, np.pi + 0.1, 12)
    return {
        "parallel2d": tomo.Parallel2dGeometry(half, odl.uniform_partition(-20, 20, 33)),
        "parallel2d_off_centre": tomo.Parallel2dGeometry(half, odl.uniform_partition(-10, 30, 33)),
        "parallel2d_rotated_start": tomo.Parallel2dGeometry(half, odl.uniform_partition(-20, 20, 33), det_pos_init=(1, 1)),
        "fan_flat": tomo.FanBeamGeometry(apart, odl.uniform_partition(-30, 30, 41), 120, 80),
        "fan_flat_shifted": tomo.FanBeamGeometry(apart, odl.uniform_partition(-20, 40, 41), 120, 80),
        "fan_curved": tomo.FanBeamGeometry(apart, odl.uniform_partition(-0.2, 0.2, 41), 120, 80, det_curvature_radius=200),
        "parallel3d": tomo.Parallel3dAxisGeometry(half, odl.uniform_partition([-20, -8], [20, 8], (21, 9))),
        "cone_flat": tomo.ConeBeamGeometry(apart, odl.uniform_partition([-30, -10], [30, 14], (21, 9)), 120, 80),
        "cone_curved": tomo.ConeBeamGeometry(apart, odl.uniform_partition([-0.2, -10], [0.2, 10], (21, 9)), 120, 80,
                                             det_curvature_radius=(200, None)),
        "cone_helical": tomo.ConeBeamGeometry(odl.uniform_partition(0, 4 * np.pi, 16),
                                              odl.uniform_partition([-30, -10], [30, 10], (21, 9)), 120, 80, pitch=12),
    }


@pytest.mark.parametrize("name", list(_geometries()))
def test_every_ray_is_odls_ray(name):
    odl_geometry = _geometries()[name]
    ours = kodl.geometry_from_odl(odl_geometry)
    expected_type = {"parallel2d": ko.ParallelBeam2D, "fan": ko.FanBeam2D, "parallel3d": ko.ParallelBeam3D,
                     "cone": ko.ConeBeam3D}[name.split("_")[0]]
    assert type(ours) is expected_type
    assert getattr(ours, "detector", "flat") == ("curved" if "curved" in name else "flat")
    assert_same_rays(ours, odl_geometry)


def test_default_odl_geometries_become_our_circular_scans():
    """ODL's default orientations are ours: the constructors' geometries come back, with ODL's angles."""
    g = _geometries()
    parallel = kodl.geometry_from_odl(g["parallel2d"])
    np.testing.assert_allclose(parallel.angles, g["parallel2d"].angles, rtol=0, atol=1e-15)
    assert parallel == ko.ParallelBeam2D(g["parallel2d"].angles, 33, 40 / 33)
    shifted = kodl.geometry_from_odl(g["parallel2d_off_centre"])
    assert shifted.det_offset == pytest.approx(10.0)
    fan = kodl.geometry_from_odl(g["fan_curved"])
    assert (fan.source_distance, fan.detector_distance, fan.detector) == (120, 80, "curved")
    assert fan.det_spacing[0] == pytest.approx(200 * 0.4 / 41)
    cone = kodl.geometry_from_odl(g["cone_flat"])
    assert cone.det_shape == (9, 21) and cone.det_offset == pytest.approx((2.0, 0.0))
    assert kodl.geometry_from_odl(g["parallel2d_rotated_start"]).angles is None  # not our circular scan: vectors


@pytest.mark.parametrize("geometry", [
    ko.ParallelBeam2D(ko.uniform_angles(10, math.pi, 0.1), 33, 0.7, det_offset=1.2),
    ko.FanBeam2D(ko.uniform_angles(10), 100, 50, 33, 0.7, det_offset=1.2),
    ko.FanBeam2D(ko.uniform_angles(10), 100, 50, 33, 0.7, det_offset=1.2, detector="curved"),
    ko.ParallelBeam3D(ko.uniform_angles(10), (5, 7), (0.7, 0.9), det_offset=(0.3, 1.2)),
    ko.ConeBeam3D(ko.uniform_angles(10), 100, 50, (5, 7), (0.7, 0.9), det_offset=(0.3, 1.2)),
    ko.ConeBeam3D(ko.uniform_angles(10), 100, 50, (5, 7), (0.7, 0.9), det_offset=(0.3, 1.2), detector="curved"),
], ids=["parallel2d", "fan_flat", "fan_curved", "parallel3d", "cone_flat", "cone_curved"])
def test_geometry_round_trip_through_odl(geometry):
    odl_geometry = kodl.geometry_to_odl(geometry)
    assert_same_rays(geometry, odl_geometry)
    back = kodl.geometry_from_odl(odl_geometry)
    np.testing.assert_allclose(back.to_vectors(), geometry.to_vectors(), rtol=0, atol=1e-12 * 100)


def test_geometry_to_odl_refuses_what_odl_cannot_describe():
    with pytest.raises(ValueError, match="from vectors"):
        kodl.geometry_to_odl(ko.ParallelBeam2D.from_vectors(ko.ParallelBeam2D([0.0, 1.0], 5).to_vectors(), 5))
    with pytest.raises(ValueError, match="helical"):
        kodl.geometry_to_odl(ko.ConeBeam3D(ko.uniform_angles(4), 100, 50, (3, 3), pitch=5.0))
    with pytest.raises(TypeError, match="geometry"):
        kodl.geometry_from_odl("not a geometry")
    spherical = tomo.ConeBeamGeometry(odl.uniform_partition(0, 1, 2), odl.uniform_partition([-0.1, -0.1], [0.1, 0.1], (3, 3)),
                                      100, 50, det_curvature_radius=(150, 150))
    with pytest.raises(ValueError, match="SphericalDetector"):
        kodl.geometry_from_odl(spherical)
    off_source = tomo.FanBeamGeometry(odl.uniform_partition(0, 1, 2), odl.uniform_partition(-0.1, 0.1, 5), 100, 50,
                                      det_curvature_radius=80)
    with pytest.raises(ValueError, match="centred on the source"):
        kodl.geometry_from_odl(off_source)


def test_volume_space_round_trip_reverses_the_axes():
    volume = ko.Volume((5, 7, 9), spacing=(0.5, 0.75, 1.25), offset=(1.0, -2.0, 3.0))
    space = kodl.space_from_volume(volume)
    assert space.shape == (9, 7, 5)
    np.testing.assert_allclose(space.cell_sides, (1.25, 0.75, 0.5))
    assert kodl.volume_from_space(space) == volume
    x = torch.rand(volume.shape, dtype=torch.float64)
    element = kodl.volume_to_odl(x, space)
    assert element.shape == (9, 7, 5) and float(element.asarray()[8, 1, 2]) == float(x[2, 1, 8])
    torch.testing.assert_close(kodl.volume_from_odl(element), x, rtol=0, atol=0)
    with pytest.raises(TypeError, match="space"):
        kodl.volume_from_space(np.zeros((3, 3)))


def test_parallel_2d_geometry_equals_odls_after_a_transpose_of_the_image():
    """The fact: ODL's image is our image transposed; the geometry is the same."""
    space = odl.uniform_discr([-20, -16], [20, 16], (40, 32), dtype="float64")  # x: 40 pixels, y: 32
    volume = kodl.volume_from_space(space)
    assert volume == ko.Volume((32, 40))
    element = space.element(np.arange(40 * 32, dtype=np.float64).reshape(40, 32))
    np.testing.assert_array_equal(kodl.volume_from_odl(element).numpy(), element.asarray().T)


# --- projections against ODL's astra_cpu --------------------------------------------------------------


def _phantom_pair(space):
    volume = kodl.volume_from_space(space)
    x = phantoms.shepp_logan(volume).to(torch.float64)
    return volume, x, kodl.volume_to_odl(x.float(), space)


def test_parallel_projection_equals_odls_astra_cpu():
    _needs_astra()
    space = odl.uniform_discr([-24, -18], [24, 18], (64, 48), dtype="float32")  # 0.75 mm pixels
    geometry = tomo.Parallel2dGeometry(odl.uniform_partition(0, np.pi, 45), odl.uniform_partition(-36, 36, 96))
    ray_trafo = tomo.RayTransform(space, geometry, impl="astra_cpu")
    volume, ours = kodl.from_odl(ray_trafo)
    A = ko.RayTransform(volume, ours)
    adapter = kodl.to_odl(A, domain=space, range=ray_trafo.range)
    _, _, x = _phantom_pair(space)
    forward = relative_error(adapter(x).asarray(), ray_trafo(x).asarray())
    assert forward <= 1e-4, forward
    y = ray_trafo.range.element(np.random.default_rng(0).random(ray_trafo.range.shape))
    back = relative_error(adapter.adjoint(y).asarray(), ray_trafo.adjoint(y).asarray())
    assert back <= 1e-4, back  # the same weighting factor as ODL's own adjoint (0.75 mm pixels)
    # the adapter builds ODL's projection space itself when none is given
    assert kodl.to_odl(A, dtype="float32").range == ray_trafo.range


def test_fan_projection_differs_from_odls_line_fanflat_by_its_discretisation():
    _needs_astra()
    space = odl.uniform_discr([-32, -32], [32, 32], (64, 64), dtype="float32")
    geometry = tomo.FanBeamGeometry(odl.uniform_partition(0, 2 * np.pi, 90), odl.uniform_partition(-60, 60, 120), 200, 100)
    ray_trafo = tomo.RayTransform(space, geometry, impl="astra_cpu")
    volume, x, x_odl = _phantom_pair(space)
    ours = kodl.geometry_from_odl(geometry)
    assert_same_rays(ours, geometry)  # the same rays ...
    error = relative_error(ko.RayTransform(volume, ours)(x), kodl.projections_from_odl(ray_trafo(x_odl)))
    assert 5e-3 < error < 5e-2, error  # ... and another projector (ASTRA's line_fanflat): 2.4 %


def test_converting_through_odls_astra_vectors_is_rotated():
    """ODL's astra_conebeam_2d_geom_to_vec is in ASTRA's frame, -90 degrees from ODL's world axes."""
    geometry = tomo.FanBeamGeometry(odl.uniform_partition(0, 2 * np.pi, 90), odl.uniform_partition(-60, 60, 120), 200, 100)
    ours = kodl.geometry_from_odl(geometry).to_vectors()
    odl_vectors = tomo.astra_conebeam_2d_geom_to_vec(geometry)
    rotate = np.array([[0.0, 1.0], [-1.0, 0.0]])  # (x, y) -> (y, -x): a rotation by -90 degrees
    for k in (0, 2, 4):
        np.testing.assert_allclose(odl_vectors[:, k:k + 2], ours[:, k:k + 2] @ rotate.T, rtol=0, atol=1e-9)
    volume = ko.Volume((64, 64))
    x = phantoms.shepp_logan(volume).to(torch.float64)
    right = ko.RayTransform(volume, ko.FanBeam2D.from_vectors(ours, 120))(x)
    wrong = ko.RayTransform(volume, ko.FanBeam2D.from_vectors(odl_vectors, 120))(x)
    assert relative_error(wrong, right) > 0.3  # measured 0.48: silently wrong


def test_odls_astra_cpu_ignores_an_off_centre_parallel_detector():
    """The pitfall documented in docs/interop.md: ODL's geometry says the detector is shifted by 15 mm, its
    astra_cpu parallel projection computes the centred detector; our conversion keeps the shift."""
    _needs_astra()
    space = odl.uniform_discr([-32, -32], [32, 32], (64, 64), dtype="float32")
    geometry = tomo.Parallel2dGeometry(odl.uniform_partition(0, np.pi, 40), odl.uniform_partition(-30, 60, 90))
    volume, x, x_odl = _phantom_pair(space)
    odl_sino = kodl.projections_from_odl(tomo.RayTransform(space, geometry, impl="astra_cpu")(x_odl))
    ours = kodl.geometry_from_odl(geometry)
    assert ours.det_offset == pytest.approx(15.0)
    assert_same_rays(ours, geometry)
    centred = ko.ParallelBeam2D(ours.angles, 90, 1.0)
    assert relative_error(ko.RayTransform(volume, centred)(x), odl_sino) < 1e-4
    assert relative_error(ko.RayTransform(volume, ours)(x), odl_sino) > 0.3


# --- the adjoint in ODL's inner products, and ODL's solvers on the adapter ---------------------------


@pytest.mark.parametrize("pixel", [0.5, 0.999, 1.0])
def test_adjoint_in_odls_inner_products(pixel):
    n = 24
    space = odl.uniform_discr([-n * pixel / 2] * 2, [n * pixel / 2] * 2, (n, n), dtype="float64")
    volume = kodl.volume_from_space(space)
    geometry = ko.ParallelBeam2D(ko.uniform_angles(180), 36, 1.0)
    adapter = kodl.to_odl(ko.RayTransform(volume, geometry))
    # ODL's weights: the cell volume, and angle step times detector cell (unweighted when the pixels are 1 mm)
    factor = 1.0 if pixel == 1.0 else (math.pi / 180) * 1.0 / pixel**2
    assert adapter._adjoint_scale == pytest.approx(factor, rel=1e-12)
    rng = np.random.default_rng(int(pixel * 1000))
    x = adapter.domain.element(rng.standard_normal(adapter.domain.shape))
    y = adapter.range.element(rng.standard_normal(adapter.range.shape))
    Ax = adapter(x)
    mismatch = abs(Ax.inner(y) - x.inner(adapter.adjoint(y))) / (Ax.norm() * y.norm())
    assert mismatch <= 1e-10, mismatch
    assert adapter.adjoint.adjoint is adapter


def _solver_problem():
    space = odl.uniform_discr([-16, -16], [16, 16], (32, 32), dtype="float64")  # 1 mm pixels
    half = odl.uniform_discr([-8, -8], [8, 8], (32, 32), dtype="float64")  # 0.5 mm pixels: weighted spaces
    geometry = tomo.Parallel2dGeometry(odl.uniform_partition(0, np.pi, 30), odl.uniform_partition(-24, 24, 48))
    return space, half, geometry


@pytest.mark.parametrize("pixels", ["1mm", "0.5mm"])
def test_odl_solvers_run_on_the_adapter_and_agree_with_recon(pixels):
    space, half, geometry = _solver_problem()
    space = space if pixels == "1mm" else half
    volume, ours = kodl.from_odl(space, geometry)
    A = ko.RayTransform(volume, ours)
    adapter = kodl.to_odl(A)
    x_true = phantoms.shepp_logan(volume).to(torch.float64)
    y = A(x_true)
    rhs = kodl.projections_to_odl(y, adapter.range)

    x = adapter.domain.zero()
    odl.solvers.conjugate_gradient_normal(adapter, x, rhs, niter=8)
    cgls = recon.cgls(A, y, n_iter=8)
    assert relative_error(kodl.volume_from_odl(x), cgls) <= 1e-8

    omega = 0.5 / float(adapter.norm(estimate=True)) ** 2
    x = adapter.domain.zero()
    odl.solvers.landweber(adapter, x, rhs, niter=5, omega=omega)
    # ODL's step is omega * A* = omega * (w_range / w_domain) * A.T
    landweber = recon.landweber(A, y, n_iter=5, step=omega * adapter._adjoint_scale)
    assert relative_error(kodl.volume_from_odl(x), landweber) <= 1e-8


def test_odl_solvers_agree_with_odls_own_operator():
    """ODL's astra_cpu works in float32 only. 3 CG iterations: adapter and ODL's operator agree to 5e-6 (measured
    against recon.cgls in float64: 2e-6 and 5e-7); by 8 iterations float32 CG itself drifts by 0.2-3 % from the
    float64 iterates (either operator), so more iterations would test float32 rounding, not the adapter."""
    _needs_astra()
    space, half, geometry = _solver_problem()
    for sp in (space, half):
        sp32 = odl.uniform_discr(sp.min_pt, sp.max_pt, sp.shape, dtype="float32")
        ray_trafo = tomo.RayTransform(sp32, geometry, impl="astra_cpu")
        adapter = kodl.to_odl(ko.RayTransform(*kodl.from_odl(ray_trafo)), dtype="float32")
        assert adapter.range == ray_trafo.range
        _, _, x_odl = _phantom_pair(sp32)
        rhs = ray_trafo(x_odl)
        results = []
        for op in (ray_trafo, adapter):
            x = op.domain.zero()
            odl.solvers.conjugate_gradient_normal(op, x, rhs, niter=3)
            x_l = op.domain.zero()
            odl.solvers.landweber(op, x_l, rhs, niter=5, omega=0.5 / float(ray_trafo.norm(estimate=True)) ** 2)
            results.append((x.asarray(), x_l.asarray()))
        assert relative_error(results[1][0], results[0][0]) <= 1e-4, relative_error(results[1][0], results[0][0])
        assert relative_error(results[1][1], results[0][1]) <= 1e-4, relative_error(results[1][1], results[0][1])


def test_to_odl_checks_its_arguments():
    volume = ko.Volume((8, 8))
    A = ko.RayTransform(volume, ko.ParallelBeam2D(ko.uniform_angles(6), 12))
    with pytest.raises(TypeError, match="operator"):
        kodl.to_odl("A")
    with pytest.raises(ValueError, match="domain"):
        kodl.to_odl(A, domain=kodl.space_from_volume(ko.Volume((8, 9))))
    with pytest.raises(ValueError, match="domain and range"):
        kodl.to_odl(ko.IdentityOperator((3,)))
    identity = kodl.to_odl(ko.IdentityOperator((3,)), domain=odl.rn(3), range=odl.rn(3))
    assert np.array_equal(identity(odl.rn(3).element([1.0, 2.0, 3.0])).asarray(), [1.0, 2.0, 3.0])


def test_adapter_on_odls_pytorch_backend():
    """ODL 1.0 can keep its elements as torch tensors (impl="pytorch"): the adapter passes them through."""
    try:
        space = odl.uniform_discr([-4, -4], [4, 4], (16, 16), dtype="float64", impl="pytorch")
    except Exception as err:  # noqa: BLE001 - whatever ODL raises when its pytorch backend is unavailable
        pytest.skip(f"ODL's pytorch backend is unavailable: {err}")
    A = ko.RayTransform(kodl.volume_from_space(space), ko.ParallelBeam2D(ko.uniform_angles(10), 24, 0.5))
    adapter = kodl.to_odl(A, domain=space)
    assert adapter.range.impl == "pytorch"
    x = space.element(torch.rand(16, 16, dtype=torch.float64))
    y = adapter.range.element(torch.rand(10, 24, dtype=torch.float64))
    Ax = adapter(x)
    assert isinstance(Ax.data, torch.Tensor)
    torch.testing.assert_close(kodl.projections_from_odl(Ax), A(kodl.volume_from_odl(x)), rtol=1e-14, atol=0)
    mismatch = abs(Ax.inner(y) - x.inner(adapter.adjoint(y))) / (Ax.norm() * y.norm())
    assert mismatch <= 1e-10, mismatch
