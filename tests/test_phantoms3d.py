"""3D phantoms: ellipsoid tables, rotation convention, voxelisation and exact line integrals."""
import math

import numpy as np
import pytest
import torch

import known_ops as ko
import phantoms
import phantoms.ellipsoids as ellipsoids_module
from phantoms import Ellipse, Ellipsoid


# Schabel's phantom3d.m "Modified Shepp-Logan" as printed there: A, a, b, c, x0, y0, z0, phi, theta, psi.
_PHANTOM3D_ROWS = [
    (1.0, 0.69, 0.92, 0.81, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    (-0.8, 0.6624, 0.874, 0.78, 0.0, -0.0184, 0.0, 0.0, 0.0, 0.0),
    (-0.2, 0.11, 0.31, 0.22, 0.22, 0.0, 0.0, -18.0, 0.0, 10.0),
    (-0.2, 0.16, 0.41, 0.28, -0.22, 0.0, 0.0, 18.0, 0.0, 10.0),
    (0.1, 0.21, 0.25, 0.41, 0.0, 0.35, -0.15, 0.0, 0.0, 0.0),
    (0.1, 0.046, 0.046, 0.05, 0.0, 0.1, 0.25, 0.0, 0.0, 0.0),
    (0.1, 0.046, 0.046, 0.05, 0.0, -0.1, 0.25, 0.0, 0.0, 0.0),
    (0.1, 0.046, 0.023, 0.05, -0.08, -0.605, 0.0, 0.0, 0.0, 0.0),
    (0.1, 0.023, 0.023, 0.02, 0.0, -0.606, 0.0, 0.0, 0.0, 0.0),
    (0.1, 0.023, 0.046, 0.02, 0.06, -0.605, 0.0, 0.0, 0.0, 0.0),
]


def _schabel_alpha(phi_deg, theta_deg, psi_deg):
    """The Euler matrix of phantom3d.m, written out as printed there (maps x to rotated coordinates)."""
    phi, theta, psi = np.deg2rad([phi_deg, theta_deg, psi_deg])
    cphi, sphi, cth, sth, cpsi, spsi = np.cos(phi), np.sin(phi), np.cos(theta), np.sin(theta), np.cos(psi), np.sin(psi)
    return np.array(
        [
            [cpsi * cphi - cth * sphi * spsi, cpsi * sphi + cth * cphi * spsi, spsi * sth],
            [-spsi * cphi - cth * sphi * cpsi, -spsi * sphi + cth * cphi * cpsi, cpsi * sth],
            [sth * sphi, -sth * cphi, cth],
        ]
    )


def _inside(points, e):
    """Indicator of Ellipsoid e at (..., 3) points, through Schabel's alpha (independent of Ellipsoid.rotation)."""
    local = (points - np.array([e.x0, e.y0, e.z0])) @ _schabel_alpha(e.phi_deg, e.theta_deg, e.psi_deg).T
    return ((local / np.array([e.a, e.b, e.c])) ** 2).sum(-1) <= 1


def _sample_points(volume, supersample):
    """(nz S, ny S, nx S, 3) sub-sample points (x, y, z) of `volume`."""
    sub = (np.arange(supersample) + 0.5) / supersample - 0.5
    axes = [(volume.coordinates(k)[:, None] + sub[None, :] * volume.spacing[k]).reshape(-1) for k in range(3)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    return np.stack([x, y, z], axis=-1)


def _brute_force_volume(volume, ellipsoids, supersample):
    """Direct point-in-ellipsoid test of every sub-sample, averaged per voxel."""
    points = _sample_points(volume, supersample)
    fine = sum(e.intensity * _inside(points, e) for e in ellipsoids)
    nz, ny, nx = volume.shape
    s = supersample
    return fine.reshape(nz, s, ny, s, nx, s).mean(axis=(1, 3, 5))


def _voxel_of(volume, x, y, z):
    """(slice, row, column) of the voxel containing the point (x, y, z) mm."""
    return tuple(
        round((p - volume.offset[k]) / volume.spacing[k] + (volume.shape[k] - 1) / 2) for k, p in enumerate((z, y, x))
    )


def _axis_rays(volume, shift=(0.0, 0.0)):
    """Rays along +z through the (x, y) centres of the voxel columns of `volume` (+ a shift in mm)."""
    y, x = np.meshgrid(volume.coordinates(1) + shift[1], volume.coordinates(2) + shift[0], indexing="ij")
    origins = torch.from_numpy(np.stack([x, y, np.full_like(x, -1000.0)], axis=-1))
    directions = torch.zeros_like(origins)
    directions[..., 2] = 1.0
    return origins, directions


def _random_ellipsoid(rng, size=(2.0, 8.0), spread=8.0):
    return Ellipsoid(
        float(rng.uniform(-1, 1)), *rng.uniform(*size, size=3), *rng.uniform(-spread, spread, size=3),
        *rng.uniform(-180, 180, size=3),
    )


class _RayGeometry:
    """Stand-in for a 3D geometry: ndim, shape and rays() (n_views, n_rows, n_cols, 6), nothing else."""

    ndim = 3

    def __init__(self, origins, directions):
        self._rays = torch.cat([torch.as_tensor(origins), torch.as_tensor(directions)], dim=-1).double()
        self.shape = tuple(self._rays.shape[:-1])

    def rays(self):
        return self._rays


def _circular_rays(angles, det_shape, det_spacing, source_distance=None, detector_distance=0.0):
    """Rays of a circular scan built by hand from the conventions in docs/conventions.md: detector
    centre d = (-D_od sin t, D_od cos t, 0), u = du (cos t, sin t, 0), v = (0, 0, dv); pixel
    d + (c - (n_cols-1)/2) u + (r - (n_rows-1)/2) v; cone: from s = (D_so sin t, -D_so cos t, 0) to the
    pixel; parallel: direction (sin t, -cos t, 0) through the pixel."""
    n_rows, n_cols = det_shape
    dv, du = det_spacing
    t = np.asarray(angles, dtype=np.float64)[:, None, None]
    cols = (np.arange(n_cols) - (n_cols - 1) / 2)[None, None, :]
    rows = (np.arange(n_rows) - (n_rows - 1) / 2)[None, :, None]
    zeros = np.zeros(np.broadcast_shapes(t.shape, rows.shape, cols.shape))
    pixel = np.stack(
        [
            -detector_distance * np.sin(t) + cols * du * np.cos(t) + zeros,
            detector_distance * np.cos(t) + cols * du * np.sin(t) + zeros,
            rows * dv + zeros,
        ],
        axis=-1,
    )
    if source_distance is None:
        direction = np.stack([np.sin(t) + zeros, -np.cos(t) + zeros, zeros], axis=-1)
        return torch.from_numpy(pixel), torch.from_numpy(direction)
    source = np.stack([source_distance * np.sin(t) + zeros, -source_distance * np.cos(t) + zeros, zeros], axis=-1)
    return torch.from_numpy(source), torch.from_numpy(pixel - source)


# --- tables ------------------------------------------------------------------------------------------


def test_kak_slaney_table_has_the_published_values():
    table = phantoms.SHEPP_LOGAN_3D
    assert len(table) == 10
    assert table[0] == Ellipsoid(2.0, 0.69, 0.92, 0.9, 0.0, 0.0, 0.0)
    assert table[1] == Ellipsoid(-0.98, 0.6624, 0.874, 0.88, 0.0, 0.0, 0.0)
    assert table[2] == Ellipsoid(-0.02, 0.41, 0.16, 0.21, -0.22, 0.0, -0.25, 108.0)
    assert table[3] == Ellipsoid(-0.02, 0.31, 0.11, 0.22, 0.22, 0.0, -0.25, 72.0)
    assert table[4] == Ellipsoid(0.02, 0.21, 0.25, 0.5, 0.0, 0.35, -0.25)
    assert table[7] == Ellipsoid(0.01, 0.046, 0.023, 0.02, 0.06, -0.65, -0.25, 90.0)
    assert table[8] == Ellipsoid(0.02, 0.056, 0.04, 0.1, 0.06, -0.105, 0.625, 90.0)
    assert table[9] == Ellipsoid(-0.02, 0.056, 0.056, 0.1, 0.0, 0.1, 0.625)
    assert [e.intensity for e in table] == [2.0, -0.98, -0.02, -0.02, 0.02, 0.02, 0.01, 0.01, 0.02, -0.02]
    assert all(e.theta_deg == 0 and e.psi_deg == 0 for e in table)  # rotations about z only


def test_modified_table_is_phantom3d_with_physical_centres():
    table = phantoms.MODIFIED_SHEPP_LOGAN_3D
    assert [e.intensity for e in table] == [1.0, -0.8, -0.2, -0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    for ours, row in zip(table, _PHANTOM3D_ROWS):
        assert (ours.intensity, ours.a, ours.b, ours.c) == row[:4]
        assert (ours.phi_deg, ours.theta_deg, ours.psi_deg) == row[7:]
        # phantom3d subtracts its centre after rotating: our physical centre is alpha^T (x0, y0, z0).
        expected = _schabel_alpha(*row[7:]).T @ np.array(row[4:7])
        np.testing.assert_allclose([ours.x0, ours.y0, ours.z0], expected, rtol=0, atol=1e-15)
    # With theta = 0 the two z rotations add up: -18 + 10 = -8 and 18 + 10 = 28 degrees.
    turned = np.deg2rad([-8.0, 28.0])
    np.testing.assert_allclose([table[2].x0, table[2].y0], 0.22 * np.array([np.cos(turned[0]), np.sin(turned[0])]))
    np.testing.assert_allclose([table[3].x0, table[3].y0], -0.22 * np.array([np.cos(turned[1]), np.sin(turned[1])]))
    assert table[4] == Ellipsoid(0.1, 0.21, 0.25, 0.41, 0.0, 0.35, -0.15)


def test_modified_phantom_equals_phantom3d_point_rule():
    # phantom3d.m's own rule at every sample: x' = alpha x, inside if sum(((x' - x0_row) / axes)^2) <= 1.
    volume = ko.Volume((21, 26, 23), spacing=(0.093, 0.077, 0.089), offset=(0.01, -0.02, 0.015))
    points = _sample_points(volume, 2)
    reference = np.zeros(points.shape[:-1])
    for rho, a, b, c, x0, y0, z0, phi, theta, psi in _PHANTOM3D_ROWS:
        rotated = points @ _schabel_alpha(phi, theta, psi).T
        reference += rho * ((((rotated - [x0, y0, z0]) / [a, b, c]) ** 2).sum(-1) <= 1)
    reference = reference.reshape(21, 2, 26, 2, 23, 2).mean(axis=(1, 3, 5))
    ours = phantoms.shepp_logan_3d(volume, scale=1.0, supersample=2, dtype=torch.float64).numpy()
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-12)


def test_tables_are_immutable_and_scale_to_mm():
    with pytest.raises((TypeError, AttributeError)):
        phantoms.SHEPP_LOGAN_3D[0] = Ellipsoid(0, 1, 1, 1, 0, 0, 0)
    with pytest.raises(AttributeError):
        phantoms.SHEPP_LOGAN_3D[0].c = 3.0
    e = phantoms.shepp_logan_3d_ellipsoids(modified=False, scale=100.0)[8]
    assert e == Ellipsoid(0.02, 0.056 * 100, 0.04 * 100, 0.1 * 100, 0.06 * 100, -0.105 * 100, 0.625 * 100, 90.0)


# --- rotation convention -----------------------------------------------------------------------------


def test_rotation_is_rz_rx_rz_and_the_transpose_of_phantom3d_alpha():
    def rz(t):
        c, s = math.cos(t), math.sin(t)
        return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])

    def rx(t):
        c, s = math.cos(t), math.sin(t)
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])

    rng = np.random.default_rng(3)
    for phi, theta, psi in rng.uniform(-180, 180, size=(10, 3)):
        r = Ellipsoid(1.0, 1, 1, 1, 0, 0, 0, phi, theta, psi).rotation()
        expected = rz(math.radians(phi)) @ rx(math.radians(theta)) @ rz(math.radians(psi))
        np.testing.assert_allclose(r, expected, atol=1e-14)
        np.testing.assert_allclose(r, _schabel_alpha(phi, theta, psi).T, atol=1e-14)
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-14)
        assert np.linalg.det(r) == pytest.approx(1.0)
    # A single rotation phi about z: a lies along (cos phi, sin phi, 0), like the 2D Ellipse's theta_deg.
    r = Ellipsoid(1.0, 1, 1, 1, 0, 0, 0, 30.0).rotation()
    np.testing.assert_allclose(r[:, 0], [math.cos(math.pi / 6), math.sin(math.pi / 6), 0], atol=1e-15)
    np.testing.assert_allclose(r[:, 2], [0, 0, 1], atol=1e-15)


def test_z_rotated_ellipsoid_slice_equals_the_2d_ellipse_of_its_cross_section():
    # A one-slice volume at z = z_s, so thin that its sub-samples are all at z_s: the 3D voxelisation must
    # equal the 2D rasterisation of the cross-sections (semi-axes times sqrt(1 - ((z_s - z0)/c)^2)).
    rng = np.random.default_rng(4)
    z_s = 1.5
    ellipsoids = [
        Ellipsoid(float(rng.uniform(-1, 1)), *rng.uniform(3, 12, size=3), *rng.uniform(-6, 6, size=2), 0.0,
                  float(rng.uniform(-180, 180)), 0.0, float(rng.uniform(-180, 180)))
        for _ in range(6)
    ]
    volume = ko.Volume((1, 30, 34), spacing=(1e-9, 0.9, 0.8), offset=(z_s, 1.0, -0.5))
    sections = []
    for e in ellipsoids:
        shrink = 1 - ((z_s - e.z0) / e.c) ** 2
        if shrink > 0:  # theta = 0: the z rotations add up
            sections.append(Ellipse(e.intensity, e.a * math.sqrt(shrink), e.b * math.sqrt(shrink), e.x0, e.y0,
                                    e.phi_deg + e.psi_deg))
    assert len(sections) >= 4
    for supersample in (1, 3):
        ours = phantoms.ellipsoid_volume(ellipsoids, volume, supersample=supersample, dtype=torch.float64)[0]
        flat = phantoms.ellipse_image(ko.Volume((30, 34), spacing=(0.9, 0.8), offset=(1.0, -0.5)), sections,
                                      supersample=supersample, dtype=torch.float64)
        torch.testing.assert_close(ours, flat, rtol=0, atol=1e-12)


# --- voxelisation -------------------------------------------------------------------------------------


def test_voxelisation_equals_direct_sampling_on_anisotropic_offset_grid():
    rng = np.random.default_rng(0)
    volume = ko.Volume((13, 17, 19), spacing=(1.1, 0.8, 1.3), offset=(0.7, -1.0, 2.0))
    ellipsoids = [_random_ellipsoid(rng) for _ in range(7)]
    ellipsoids += [Ellipsoid(0.5, 30.0, 20.0, 15.0, 1.0, 2.0, 3.0, 10.0, 20.0, 30.0),  # larger than the grid
                   Ellipsoid(0.3, 2.0, 3.0, 4.0, 100.0, 0.0, 0.0)]  # entirely outside
    for supersample in (1, 2, 3):
        ours = phantoms.ellipsoid_volume(ellipsoids, volume, supersample=supersample, dtype=torch.float64).numpy()
        np.testing.assert_allclose(ours, _brute_force_volume(volume, ellipsoids, supersample), rtol=0, atol=1e-12)


def test_chunking_does_not_change_the_voxelisation(monkeypatch):
    volume = ko.Volume((20, 24, 22), spacing=2.0)
    reference = phantoms.shepp_logan_3d(volume, dtype=torch.float64)
    monkeypatch.setattr(ellipsoids_module, "_ELEMENTS_PER_CHUNK", 500)  # one slice per chunk
    assert torch.equal(phantoms.shepp_logan_3d(volume, dtype=torch.float64), reference)


def test_supersampling_converges():
    # One voxel cut in half by the flat-looking boundary of a huge sphere: exactly half of the samples.
    half_space = [Ellipsoid(1.0, 1e6, 1e6, 1e6, -1e6, 0.0, 0.0)]
    for supersample in (2, 4, 8):
        value = phantoms.ellipsoid_volume(half_space, ko.Volume((1, 1, 1)), supersample=supersample).item()
        assert value == pytest.approx(0.5)
    # The integral of the phantom converges to sum(intensity * 4/3 pi a b c).
    volume = ko.Volume((40, 40, 40), spacing=3.0)  # scale 60 mm
    exact = sum(e.intensity * 4 / 3 * math.pi * e.a * e.b * e.c for e in phantoms.shepp_logan_3d_ellipsoids(True, 60.0))
    errors = []
    for supersample in (1, 2, 4):
        image = phantoms.shepp_logan_3d(volume, supersample=supersample, dtype=torch.float64)
        errors.append(abs(image.sum().item() * 27.0 / exact - 1))
    assert errors[2] < errors[0] and errors[2] < 1e-3


def test_default_output_shape_dtype_and_values():
    volume = ko.Volume((24, 32, 28), spacing=(2.0, 1.5, 2.0))
    image = phantoms.shepp_logan_3d(volume)
    assert image.shape == (24, 32, 28) and image.dtype == torch.float32 and image.device.type == "cpu"
    assert phantoms.shepp_logan_3d(volume, dtype=torch.float64, device="cpu").dtype == torch.float64
    assert image.min() > -1e-6 and image.max() < 1.0 + 1e-6
    # Point values (supersample=1) on a finer grid: ventricles 0.0, skull 1.0 (original: skull 2.0).
    fine = ko.Volume((40, 48, 40), spacing=(2.0, 1.0, 1.0))
    points = phantoms.shepp_logan_3d(fine, supersample=1)
    assert points.min() > -1e-6 and abs(points.max().item() - 1.0) < 1e-6 and (points.abs() < 1e-6).sum() > 0
    assert abs(phantoms.shepp_logan_3d(fine, modified=False, supersample=1).max().item() - 2.0) < 1e-6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_device_gives_the_cpu_result():
    volume = ko.Volume((20, 24, 22), spacing=2.0)
    on_gpu = phantoms.shepp_logan_3d(volume, dtype=torch.float64, device="cuda")
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), phantoms.shepp_logan_3d(volume, dtype=torch.float64), rtol=0, atol=1e-12)
    origins, directions = _axis_rays(volume)
    ellipsoids = phantoms.shepp_logan_3d_ellipsoids(scale=24.0)
    on_gpu = phantoms.ellipsoid_line_integrals(ellipsoids, origins.cuda(), directions.cuda())
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), phantoms.ellipsoid_line_integrals(ellipsoids, origins, directions))


def test_orientation_of_the_tables_in_the_volume():
    volume = ko.Volume((64, 64, 64), spacing=2.0)  # scale 64 mm per unit
    s = 64.0
    # supersample=1: point values at the voxel centres (each checked point's voxel centre is well inside).
    modified = phantoms.shepp_logan_3d(volume, supersample=1, dtype=torch.float64)
    original = phantoms.shepp_logan_3d(volume, modified=False, supersample=1, dtype=torch.float64)

    def value(image, x, y, z):
        return image[_voxel_of(volume, x * s, y * s, z * s)].item()

    # Modified: g at (0, -0.1, +0.25) is in the last slices (z > 0); at z = -0.25 there is plain brain.
    assert value(modified, 0.0, -0.1, 0.25) == pytest.approx(0.3)
    assert value(modified, 0.0, -0.1, -0.25) == pytest.approx(0.2)
    assert value(modified, 0.0, 0.35, -0.15) == pytest.approx(0.3)  # e, below the centre
    assert value(modified, 0.23, -0.03, 0.0) == pytest.approx(0.0, abs=1e-9)  # ventricle (x > 0)
    # Kak-Slaney: ventricles at z = -0.25 (none at z = 0), i and j at z = +0.625.
    assert value(original, 0.22, 0.0, -0.25) == pytest.approx(1.0)
    assert value(original, 0.22, 0.0, 0.0) == pytest.approx(1.02)
    assert value(original, 0.06, -0.105, 0.625) == pytest.approx(1.04)
    assert value(original, 0.0, 0.1, 0.625) == pytest.approx(1.0)
    assert value(original, 0.0, 0.1, -0.625) == pytest.approx(1.02)


def test_central_slice_resembles_the_2d_modified_phantom():
    # 1 mm pixels, scale 128 mm.
    scale = 128.0
    flat = phantoms.shepp_logan(ko.Volume((256, 256)), scale=scale, dtype=torch.float64)
    # A slab of 1e-6 mm: all its samples lie at z = 0, so the slice is exactly the section z = 0.
    section = phantoms.shepp_logan_3d(ko.Volume((1, 256, 256), spacing=(1e-6, 1.0, 1.0)), scale=scale,
                                      dtype=torch.float64)[0]
    # The voxelised central slice of 1 mm voxels (the mean over |z| < 0.5 mm) is close to the section.
    central = phantoms.shepp_logan_3d(ko.Volume((3, 256, 256)), scale=scale, dtype=torch.float64)[1]
    assert (central - section).abs().mean() < 1e-3
    difference = (section - flat).abs()
    # The same skull, brain and lower small structures; known differences (docs/phantoms.md): phantom3d's
    # ventricles turned by +10 degrees about the origin, f and g at z = +0.25 (absent here), e centred
    # at z = -0.15 (cut 7 % smaller), i at y = -0.606.
    assert difference.mean() < 0.01
    assert (difference > 1e-9).double().mean() < 0.06
    rows, cols = torch.nonzero(difference > 1e-9, as_tuple=True)
    x = (cols.double() - 127.5) / scale
    y = (rows.double() - 127.5) / scale
    assert bool(((x.abs() < 0.5) & (y.abs() < 0.7)).all())  # all well inside the brain: none at the skull


def test_volume_offset_shows_a_shifted_part_of_the_same_object():
    full = ko.Volume((16, 20, 20), spacing=4.0)
    shifted = ko.Volume((8, 10, 12), spacing=4.0, offset=(-8.0, 12.0, 4.0))  # from slice 2, row 8, column 5
    big = phantoms.shepp_logan_3d(full, scale=35.0, dtype=torch.float64)
    part = phantoms.shepp_logan_3d(shifted, scale=35.0, dtype=torch.float64)
    torch.testing.assert_close(part, big[2:10, 8:18, 5:17], rtol=0, atol=1e-12)


def test_default_scale_inscribes_the_unit_cube():
    volume = ko.Volume((40, 100, 80), spacing=(2.0, 1.0, 2.0), offset=(3.0, -7.0, 5.0))  # 80, 100, 160 mm
    assert phantoms.phantom_scale_3d(volume) == 40.0
    assert phantoms.phantom_scale(volume) == 50.0  # the 2D rule: the xy field of view only
    assert torch.equal(phantoms.shepp_logan_3d(volume, supersample=2),
                       phantoms.shepp_logan_3d(volume, supersample=2, scale=40.0))
    assert phantoms.phantom_scale_3d(ko.Volume((256, 256, 256))) == phantoms.DEFAULT_SCALE


# --- exact line integrals ----------------------------------------------------------------------------


def test_sphere_chords():
    rng = np.random.default_rng(5)
    rho, radius, centre = 0.7, 25.0, np.array([3.0, -4.0, 5.0])
    sphere = [Ellipsoid(rho, radius, radius, radius, *centre)]
    directions = rng.normal(size=(50, 3))
    unit = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    # Through the centre, from anywhere on the line: 2 r rho.
    origins = centre + rng.uniform(-300, 300, size=(50, 1)) * unit
    torch.testing.assert_close(phantoms.ellipsoid_line_integrals(sphere, origins, directions),
                               torch.full((50,), 2 * radius * rho, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    # At distance p from the centre: 2 rho sqrt(r^2 - p^2), 0 beyond r.
    normal = np.cross(unit, rng.normal(size=(50, 3)))
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    p = rng.uniform(0, 1.3 * radius, size=50)
    chords = phantoms.ellipsoid_line_integrals(sphere, origins + p[:, None] * normal, directions).numpy()
    np.testing.assert_allclose(chords, 2 * rho * np.sqrt(np.clip(radius**2 - p**2, 0, None)), rtol=1e-10, atol=1e-9)


def test_rotated_ellipsoid_chords_match_numerical_integration():
    rng = np.random.default_rng(6)
    for _ in range(3):
        e = _random_ellipsoid(rng, size=(5.0, 20.0), spread=5.0)
        centre = np.array([e.x0, e.y0, e.z0])
        directions = rng.normal(size=(12, 3))
        unit = directions / np.linalg.norm(directions, axis=1, keepdims=True)
        origins = centre + rng.uniform(-6, 6, size=(12, 3)) - 100 * unit  # near the centre, then pulled back
        exact = phantoms.ellipsoid_line_integrals([e], origins, directions).numpy()
        # Midpoint rule of the indicator (Schabel's alpha, independent of our rotation code) along the
        # unit-speed line for t in [60, 140], which contains the ellipsoid (|t - 100| <= 20 + 6 sqrt(3)).
        n = 40_000
        dt = 80.0 / n
        t = 60.0 + (np.arange(n) + 0.5) * dt
        for k in range(12):
            numeric = e.intensity * dt * _inside(origins[k] + t[:, None] * unit[k], e).sum()
            assert abs(numeric - exact[k]) <= 1e-3 * max(abs(e.intensity) * 2 * min(e.a, e.b, e.c), abs(exact[k]))
        assert (np.abs(exact) > 0).sum() >= 6


def test_line_integral_does_not_depend_on_the_parametrisation_of_the_line():
    rng = np.random.default_rng(7)
    origins = torch.from_numpy(rng.uniform(-60, 60, size=(4, 5, 3)))
    directions = torch.from_numpy(rng.normal(size=(4, 5, 3)))
    ellipsoids = phantoms.shepp_logan_3d_ellipsoids(scale=100.0) + (_random_ellipsoid(rng, (20, 60), 40),)
    reference = phantoms.ellipsoid_line_integrals(ellipsoids, origins, directions)
    assert reference.shape == (4, 5) and reference.dtype == torch.float64
    moved = origins + 123.4 * directions
    torch.testing.assert_close(phantoms.ellipsoid_line_integrals(ellipsoids, moved, -3.5 * directions), reference)
    as_arrays = phantoms.ellipsoid_line_integrals(ellipsoids, moved.numpy(), directions.numpy())
    torch.testing.assert_close(as_arrays, reference)
    assert (reference > 0).any()


def test_line_integrals_scale_with_the_object():
    # Scaling the object and the rays' origins by s multiplies every line integral (value x length) by s.
    rng = np.random.default_rng(8)
    origins, directions = rng.uniform(-150, 150, size=(200, 3)), rng.normal(size=(200, 3))
    for modified in (True, False):
        small = phantoms.ellipsoid_line_integrals(phantoms.shepp_logan_3d_ellipsoids(modified, 90.0), origins,
                                                  directions)
        big = phantoms.ellipsoid_line_integrals(phantoms.shepp_logan_3d_ellipsoids(modified, 225.0), 2.5 * origins,
                                                directions)
        torch.testing.assert_close(big, 2.5 * small, rtol=1e-11, atol=1e-11)
        assert small.abs().max() > 10


def test_chunking_does_not_change_the_line_integrals(monkeypatch):
    rng = np.random.default_rng(9)
    origins, directions = rng.uniform(-80, 80, size=(101, 3)), rng.normal(size=(101, 3))
    ellipsoids = phantoms.shepp_logan_3d_ellipsoids(scale=70.0)
    reference = phantoms.ellipsoid_line_integrals(ellipsoids, origins, directions)
    monkeypatch.setattr(ellipsoids_module, "_PAIRS_PER_CHUNK", 37)  # 3 rays per chunk
    assert torch.equal(phantoms.ellipsoid_line_integrals(ellipsoids, origins, directions), reference)


def test_sum_of_the_voxelised_phantom_along_z_matches_the_exact_line_integrals():
    # A parallel projection along z: sum over slices * sz.
    volume = ko.Volume((64, 128, 128), spacing=(2.0, 1.0, 1.0))  # 128 mm cube, scale R = 64 mm
    supersample = 4
    image = phantoms.shepp_logan_3d(volume, supersample=supersample, dtype=torch.float64)
    projection = image.sum(0) * volume.spacing[0]
    ellipsoids = phantoms.shepp_logan_3d_ellipsoids(True, phantoms.phantom_scale_3d(volume))
    # (1) Against the exact integrals averaged over the voxelisation's S x S sub-rays: only the sampling
    # along z differs, by at most one sample (sz / S) per ellipsoid chord.
    sub = (np.arange(supersample) + 0.5) / supersample - 0.5
    sub_rays = [_axis_rays(volume, (dx * volume.spacing[2], dy * volume.spacing[1])) for dx in sub for dy in sub]
    origins, directions = torch.stack([o for o, _ in sub_rays]), torch.stack([d for _, d in sub_rays])
    averaged = phantoms.ellipsoid_line_integrals(ellipsoids, origins, directions).mean(0)
    bound = sum(abs(e.intensity) for e in ellipsoids) * volume.spacing[0] / supersample
    assert (projection - averaged).abs().max() <= bound
    # (2) Against the rays through the pixel centres: the voxelisation (partial-volume) error, measured
    # 2.4 % = 1.5 h / R here (h = 1 mm pixels); bounded by 2 h / R.
    exact = phantoms.ellipsoid_line_integrals(ellipsoids, *_axis_rays(volume))
    relative = ((projection - exact).norm() / exact.norm()).item()
    assert relative < 2 * volume.spacing[2] / 64.0


# --- projections for 3D geometries -------------------------------------------------------------------


def test_projections_of_a_stand_in_parallel_geometry_along_z():
    volume = ko.Volume((32, 40, 36), spacing=(3.0, 2.5, 3.0))  # extents 96, 100, 108 mm: scale 48 mm
    origins, directions = _axis_rays(volume)
    geo = _RayGeometry(origins[None], directions[None])  # one view, detector = the volume's (y, x) grid
    p = phantoms.shepp_logan_3d_projections(geo, volume=volume)
    assert p.shape == geo.shape == (1, 40, 36) and p.dtype == torch.float32
    exact = phantoms.ellipsoid_line_integrals(phantoms.shepp_logan_3d_ellipsoids(True, 48.0), origins, directions)
    torch.testing.assert_close(p[0], exact.float())
    p64 = phantoms.shepp_logan_3d_projections(geo, scale=48.0, dtype=torch.float64)
    torch.testing.assert_close(p64[0], exact, rtol=0, atol=0)


def test_projections_of_a_stand_in_cone_geometry():
    angles = [0.0, 0.7, 2.0]
    source, direction = _circular_rays(angles, (6, 8), (12.0, 15.0), source_distance=400.0, detector_distance=300.0)
    geo = _RayGeometry(source, direction)
    p = phantoms.shepp_logan_3d_projections(geo, modified=False, dtype=torch.float64)
    assert p.shape == (3, 6, 8)
    # The same lines given by their detector pixels and the reversed direction.
    reversed_lines = phantoms.ellipsoid_line_integrals(phantoms.shepp_logan_3d_ellipsoids(False, 128.0),
                                                       source + direction, -direction)
    torch.testing.assert_close(p, reversed_lines, rtol=1e-12, atol=1e-12)
    assert p.max() > 200.0  # near-central rays cross about 236 mm of skull (2.0) and 224 mm of brain (-0.98)


def test_projection_scale_defaults_and_volume_derivation():
    origins, directions = _circular_rays([0.3, 1.1], (5, 7), (20.0, 25.0))
    geo = _RayGeometry(origins, directions)
    default = phantoms.shepp_logan_3d_projections(geo, dtype=torch.float64)
    torch.testing.assert_close(default, phantoms.shepp_logan_3d_projections(geo, scale=128.0, dtype=torch.float64))
    torch.testing.assert_close(default, phantoms.shepp_logan_3d_projections(geo, volume=ko.Volume((256, 256, 256)),
                                                                            dtype=torch.float64))
    smaller = phantoms.shepp_logan_3d_projections(geo, volume=ko.Volume((100, 200, 300), spacing=0.5))  # 25 mm
    torch.testing.assert_close(smaller, phantoms.shepp_logan_3d_projections(geo, scale=25.0))
    assert not torch.allclose(phantoms.shepp_logan_3d_projections(geo, modified=False, dtype=torch.float64), default)


def test_cone_beam_3d_projections_match_hand_built_rays():
    angles = ko.uniform_angles(4, 2 * math.pi)
    geo = ko.ConeBeam3D(angles=angles, source_distance=500.0, detector_distance=500.0, det_shape=(16, 20),
                        det_spacing=2.0)
    p = phantoms.shepp_logan_3d_projections(geo, scale=100.0, dtype=torch.float64)
    assert p.shape == geo.shape == (4, 16, 20)
    hand = _RayGeometry(*_circular_rays(angles, (16, 20), (2.0, 2.0), source_distance=500.0, detector_distance=500.0))
    torch.testing.assert_close(p, phantoms.shepp_logan_3d_projections(hand, scale=100.0, dtype=torch.float64),
                               rtol=1e-10, atol=1e-10)
    assert p.max() > 40.0  # about 2 * 92 mm of skull (1.0) minus 2 * 87 mm of brain (0.8), plus the rest


def test_parallel_beam_3d_projections_match_hand_built_rays():
    angles = ko.uniform_angles(5, math.pi)
    geo = ko.ParallelBeam3D(angles, (12, 14), 10.0)
    p = phantoms.shepp_logan_3d_projections(geo, scale=64.0, dtype=torch.float64)
    assert p.shape == geo.shape == (5, 12, 14)
    hand = _RayGeometry(*_circular_rays(angles, (12, 14), (10.0, 10.0)))
    torch.testing.assert_close(p, phantoms.shepp_logan_3d_projections(hand, scale=64.0, dtype=torch.float64),
                               rtol=1e-10, atol=1e-10)
    assert p.max() > 25.0


def test_curved_and_flat_cone_detectors_give_the_same_integral_for_the_same_ray():
    d_so, d_od, phi = 500.0, 400.0, 0.21
    angles = ko.uniform_angles(24, 2 * math.pi, start=0.05)
    curved = ko.ConeBeam3D(angles, d_so, d_od, (3, 1), det_spacing=(30.0, 1.0), det_offset=(0.0, phi * (d_so + d_od)),
                           detector="curved")
    flat = ko.ConeBeam3D(angles, d_so, d_od, (3, 1), det_spacing=(30.0 / math.cos(phi), 1.0),
                         det_offset=(0.0, (d_so + d_od) * math.tan(phi)))
    # Rows of the curved detector sit at the cylinder radius, those of the flat one 1/cos(phi) further away:
    # scaled row spacing makes them the same rays.
    p_curved = phantoms.shepp_logan_3d_projections(curved, dtype=torch.float64)
    p_flat = phantoms.shepp_logan_3d_projections(flat, dtype=torch.float64)
    torch.testing.assert_close(p_curved, p_flat, rtol=1e-9, atol=1e-9)
    assert p_flat.abs().max() > 1.0


# --- bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: phantoms.shepp_logan_3d((8, 8, 8)), TypeError, "volume"),
        (lambda: phantoms.shepp_logan_3d(ko.Volume((8, 8))), ValueError, "3D"),
        (lambda: phantoms.shepp_logan_3d(ko.Volume((4, 4, 4)), modified="yes"), TypeError, "modified"),
        (lambda: phantoms.shepp_logan_3d(ko.Volume((4, 4, 4)), supersample=0), ValueError, "supersample"),
        (lambda: phantoms.shepp_logan_3d(ko.Volume((4, 4, 4)), supersample=1.5), TypeError, "supersample"),
        (lambda: phantoms.shepp_logan_3d(ko.Volume((4, 4, 4)), dtype=torch.int64), TypeError, "dtype"),
        (lambda: phantoms.shepp_logan_3d(ko.Volume((4, 4, 4)), scale=0.0), ValueError, "scale"),
        (lambda: phantoms.shepp_logan_3d(ko.Volume((4, 4, 4)), scale="2"), TypeError, "scale"),
        (lambda: phantoms.phantom_scale_3d(ko.Volume((8, 8))), ValueError, "volume"),
        (lambda: phantoms.ellipsoid_volume(phantoms.SHEPP_LOGAN_3D, (4, 4, 4)), TypeError, "volume"),
        (lambda: phantoms.ellipsoid_volume(phantoms.SHEPP_LOGAN_3D, ko.Volume((4, 4))), ValueError, "3D"),
        (lambda: phantoms.ellipsoid_volume([(1.0, 1.0, 1.0, 1.0, 0, 0, 0)], ko.Volume((4, 4, 4))), ValueError,
         r"\(n, 10\)"),
        (lambda: phantoms.ellipsoid_volume([(1.0, 1.0, -1.0, 1.0, 0, 0, 0, 0, 0, 0)], ko.Volume((4, 4, 4))),
         ValueError, "semi-axes"),
        (lambda: phantoms.ellipsoid_volume([("x",) * 10], ko.Volume((4, 4, 4))), TypeError, "ellipsoids"),
        (lambda: phantoms.ellipsoid_volume([(1.0, 1, 1, 1, 0, 0, float("inf"), 0, 0, 0)], ko.Volume((4, 4, 4))),
         ValueError, "finite"),
        (lambda: phantoms.ellipsoid_line_integrals(phantoms.SHEPP_LOGAN_3D, torch.zeros(3, 3), torch.ones(3, 2)),
         ValueError, "shape"),
        (lambda: phantoms.ellipsoid_line_integrals(phantoms.SHEPP_LOGAN_3D, torch.zeros(3, 2), torch.ones(3, 2)),
         ValueError, "shape"),
        (lambda: phantoms.ellipsoid_line_integrals(phantoms.SHEPP_LOGAN_3D, torch.zeros(3, 3), torch.zeros(3, 3)),
         ValueError, "non-zero"),
        (lambda: phantoms.ellipsoid_line_integrals(phantoms.SHEPP_LOGAN_3D, torch.full((1, 3), float("nan")),
                                                   torch.ones(1, 3)), ValueError, "finite"),
        (lambda: phantoms.ellipsoid_line_integrals(phantoms.SHEPP_LOGAN, torch.zeros(1, 3), torch.ones(1, 3)),
         ValueError, r"\(n, 10\)"),
        (lambda: phantoms.shepp_logan_3d_projections(ko.ParallelBeam2D([0.0], 4)), TypeError, "geometry"),
        (lambda: phantoms.shepp_logan_3d_projections(ko.Volume((4, 4, 4))), TypeError, "geometry"),
        (lambda: phantoms.shepp_logan_3d_projections(_RayGeometry(torch.zeros(1, 1, 1, 3), torch.ones(1, 1, 1, 3)),
                                                     scale=1.0, volume=ko.Volume((4, 4, 4))),
         ValueError, "either scale or volume"),
        (lambda: phantoms.shepp_logan_3d_projections(_RayGeometry(torch.zeros(1, 1, 1, 3), torch.ones(1, 1, 1, 3)),
                                                     scale=-2.0), ValueError, "scale"),
        (lambda: phantoms.shepp_logan_3d_projections(_RayGeometry(torch.zeros(1, 1, 1, 3), torch.ones(1, 1, 1, 3)),
                                                     dtype=torch.int32), TypeError, "dtype"),
        (lambda: phantoms.shepp_logan_3d_projections(_RayGeometry(torch.zeros(1, 1, 1, 3), torch.ones(1, 1, 1, 3)),
                                                     modified=None), TypeError, "modified"),
    ],
)
def test_bad_input_raises_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()
