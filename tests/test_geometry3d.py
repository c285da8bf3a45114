"""3D geometries (ParallelBeam3D, ConeBeam3D): the conventions of docs/conventions.md ("3D geometries"),
vectors, rays, projection matrices, immutability, printing and bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import known_ops as ko

ANGLES = np.array([0.0, 0.3, math.pi / 4, math.pi / 2, 2.0, math.pi, 4.5, -0.7])
D_SO, D_OD = 500.0, 300.0
NAN, INF = float("nan"), float("inf")


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _offsets(n: int) -> np.ndarray:
    """k - (n-1)/2 for every pixel index k along one detector axis."""
    return np.arange(n) - (n - 1) / 2


def _circle(angles: np.ndarray):
    """Per view: (sin t, -cos t, 0), (cos t, sin t, 0) and e_z, each (n_views, 3)."""
    c, s, zero = np.cos(angles), np.sin(angles), np.zeros_like(angles)
    return np.stack([s, -c, zero], 1), np.stack([c, s, zero], 1), np.broadcast_to([0.0, 0.0, 1.0], (len(angles), 3))


def _project(P: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(col, row) of world points (n_views, ..., 3) under (n_views, 3, 4) projection matrices."""
    homogeneous = np.concatenate([points, np.ones(points.shape[:-1] + (1,))], axis=-1)
    image = np.einsum("vij,v...j->v...i", P, homogeneous)
    return image[..., 0:2] / image[..., 2:3]


def _pixel_indices(det_shape) -> np.ndarray:
    """(n_rows, n_cols, 2): (col, row) of every pixel, the order of the projection-matrix convention."""
    rows, cols = np.meshgrid(np.arange(det_shape[0]), np.arange(det_shape[1]), indexing="ij")
    return np.stack([cols, rows], axis=-1).astype(np.float64)


def _random_trajectory(rng, n_views: int, du: float, dv: float) -> np.ndarray:
    """cone_vec rows of a non-circular trajectory: sources around the origin, tilted detectors beyond
    it with perpendicular pixel steps of fixed size (du, dv)."""
    source = _unit(rng.normal(size=(n_views, 3))) * rng.uniform(300, 700, size=(n_views, 1))
    towards = -_unit(source)
    centre = source + towards * rng.uniform(600, 1200, size=(n_views, 1)) + rng.uniform(-20, 20, size=(n_views, 3))
    u = _unit(np.cross(towards, rng.normal(size=(n_views, 3))))
    v = np.cross(towards, u)  # unit, perpendicular to u and to towards
    tilt = rng.uniform(-0.4, 0.4, size=(n_views, 1))  # turn the detector about v
    u = np.cos(tilt) * u + np.sin(tilt) * towards
    return np.concatenate([source, centre, du * u, dv * v], axis=1)


# --- circular constructors -------------------------------------------------------------------------


@pytest.mark.parametrize("detector", ["flat", "curved"])
def test_circular_cone_vectors_follow_the_convention(detector):
    dv, du = 1.5, 0.8
    geo = ko.ConeBeam3D(ANGLES, D_SO, D_OD, (4, 7), det_spacing=(dv, du), detector=detector)
    ray, tangent, e_z = _circle(ANGLES)
    expected = np.concatenate([D_SO * ray, -D_OD * ray, du * tangent, dv * e_z], axis=1)
    np.testing.assert_allclose(geo.to_vectors(), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(geo.sources(), D_SO * ray, rtol=0, atol=1e-12)
    assert geo.to_vectors().shape == (len(ANGLES), 12) and geo.to_vectors().dtype == np.float64
    assert geo.ndim == 3 and geo.n_views == len(ANGLES)
    assert geo.det_shape == (4, 7) and geo.shape == (len(ANGLES), 4, 7)
    assert geo.detector == detector and geo._kind == (1 if detector == "flat" else 2)
    assert geo.source_distance == D_SO and geo.detector_distance == D_OD and geo.pitch == 0.0
    assert geo.det_offset == (0.0, 0.0)
    np.testing.assert_array_equal(geo.angles, ANGLES)
    np.testing.assert_allclose(geo.det_spacing, np.broadcast_to([dv, du], (len(ANGLES), 2)))


def test_circular_parallel3d_vectors_follow_the_convention():
    dv, du, v_offset, u_offset = 0.6, 1.1, -0.7, 2.5
    geo = ko.ParallelBeam3D(ANGLES, (3, 5), det_spacing=(dv, du), det_offset=(v_offset, u_offset))
    ray, tangent, e_z = _circle(ANGLES)
    expected = np.concatenate([ray, u_offset * tangent + v_offset * e_z, du * tangent, dv * e_z], axis=1)
    np.testing.assert_allclose(geo.to_vectors(), expected, rtol=0, atol=1e-15)
    assert geo.shape == (len(ANGLES), 3, 5) and geo.det_offset == (v_offset, u_offset) and geo._kind == 0
    assert geo.ndim == 3


def test_scalar_spacing_and_offset_apply_to_rows_and_columns():
    a = ko.ConeBeam3D(ANGLES, D_SO, D_OD, (4, 7), det_spacing=1.3, det_offset=0.4)
    b = ko.ConeBeam3D(ANGLES, D_SO, D_OD, [4, 7], det_spacing=[1.3, 1.3], det_offset=(0.4, 0.4))
    assert a == b and a.det_offset == (0.4, 0.4)
    assert ko.ParallelBeam3D(ANGLES, (2, 3), 0.5) == ko.ParallelBeam3D(ANGLES, (2, 3), (0.5, 0.5))


def test_cone_vectors_match_astra_cone():
    """ASTRA's 'cone' takes (det_spacing_x = columns, det_spacing_y = rows, det_row_count, det_col_count,
    angles, source_origin, origin_det); geom_2vec gives exactly our vectors (no sign or angle difference)."""
    astra = pytest.importorskip("astra", reason="astra-toolbox is not installed: the ASTRA cross-check is skipped")
    dv, du, rows, cols = 1.5, 0.8, 4, 7
    geo = ko.ConeBeam3D(ANGLES, D_SO, D_OD, (rows, cols), det_spacing=(dv, du))
    proj_geom = astra.functions.geom_2vec(astra.create_proj_geom("cone", du, dv, rows, cols, ANGLES, D_SO, D_OD))
    assert proj_geom["type"] == "cone_vec"
    assert (proj_geom["DetectorRowCount"], proj_geom["DetectorColCount"]) == geo.det_shape
    np.testing.assert_allclose(proj_geom["Vectors"], geo.to_vectors(), rtol=0, atol=1e-12)
    # ASTRA's 3D projection data are (n_rows, n_views, n_cols); ours are (n_views, n_rows, n_cols).
    assert astra.functions.geom_size(proj_geom) == (rows, len(ANGLES), cols)


def test_parallel3d_vectors_match_astra_parallel3d():
    astra = pytest.importorskip("astra", reason="astra-toolbox is not installed: the ASTRA cross-check is skipped")
    dv, du, rows, cols = 0.6, 1.1, 3, 5
    geo = ko.ParallelBeam3D(ANGLES, (rows, cols), det_spacing=(dv, du))
    proj_geom = astra.functions.geom_2vec(astra.create_proj_geom("parallel3d", du, dv, rows, cols, ANGLES))
    assert proj_geom["type"] == "parallel3d_vec"
    np.testing.assert_allclose(proj_geom["Vectors"], geo.to_vectors(), rtol=0, atol=1e-15)


@pytest.mark.parametrize("detector", ["flat", "curved"])
def test_helical_pitch_moves_source_and_detector_together(detector):
    pitch, v_offset = 12.0, 1.5
    angles = ko.uniform_angles(9, 4 * math.pi, start=0.3)
    geo = ko.ConeBeam3D(angles, D_SO, D_OD, (4, 7), det_offset=(v_offset, 0.0), detector=detector, pitch=pitch)
    circular = ko.ConeBeam3D(angles, D_SO, D_OD, (4, 7), det_offset=(v_offset, 0.0), detector=detector)
    z = pitch * (angles - angles.mean()) / (2 * math.pi)
    vectors, reference = geo.to_vectors(), circular.to_vectors()
    np.testing.assert_allclose(vectors[:, 2], z, rtol=0, atol=1e-12)
    np.testing.assert_allclose(vectors[:, 5], z + v_offset, rtol=0, atol=1e-12)
    # z advances by one pitch per turn, centred on z = 0; nothing else changes.
    np.testing.assert_allclose(np.diff(vectors[:, 2]) / np.diff(angles), pitch / (2 * math.pi))
    assert abs(vectors[:, 2].mean()) < 1e-12
    np.testing.assert_allclose(np.delete(vectors, [2, 5], axis=1), np.delete(reference, [2, 5], axis=1), atol=0)
    assert geo.pitch == pitch and "pitch=12 mm" in repr(geo)
    assert geo != circular


def test_single_view_helix_sits_at_z_zero():
    geo = ko.ConeBeam3D([1.0], D_SO, D_OD, (2, 2), pitch=30.0)
    assert geo.to_vectors()[0, 2] == 0.0 and geo.to_vectors()[0, 5] == 0.0


# --- detector offsets ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["parallel", "flat"])
def test_offset_moves_a_flat_detector_along_u_and_v(kind):
    v_offset, u_offset = -2.0, 3.5
    make = (
        (lambda offset: ko.ParallelBeam3D(ANGLES, (3, 5), (0.7, 1.3), offset))
        if kind == "parallel"
        else (lambda offset: ko.ConeBeam3D(ANGLES, D_SO, D_OD, (3, 5), (0.7, 1.3), offset))
    )
    shifted, centred = make((v_offset, u_offset)).to_vectors(), make(0.0).to_vectors()
    moved = centred[:, 3:6] + u_offset * _unit(centred[:, 6:9]) + v_offset * _unit(centred[:, 9:12])
    np.testing.assert_allclose(shifted[:, 3:6], moved, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(np.delete(shifted, [3, 4, 5], axis=1), np.delete(centred, [3, 4, 5], axis=1))


def test_curved_offset_rotates_the_detector_about_the_source_axis():
    du, v_offset, u_offset = 1.2, 2.0, 40.0
    geo = ko.ConeBeam3D(ANGLES, D_SO, D_OD, (3, 5), du, (v_offset, u_offset), detector="curved", pitch=5.0)
    vectors = geo.to_vectors()
    source, centre, u, v = vectors[:, 0:3], vectors[:, 3:6], vectors[:, 6:9], vectors[:, 9:12]
    radius = D_SO + D_OD
    h = centre - source
    np.testing.assert_allclose(h[:, 2], v_offset, atol=1e-12)  # v_offset shifts d along v (= +z)
    np.testing.assert_allclose(np.hypot(h[:, 0], h[:, 1]), radius)
    # Seen from the source, the centre is turned by u_offset / R from the central ray, towards +u.
    ray, tangent, _ = _circle(ANGLES)
    central = -ray
    horizontal = _unit(h * [1, 1, 0])
    np.testing.assert_allclose(np.sum(horizontal * central, axis=1), math.cos(u_offset / radius), atol=1e-13)
    assert np.all(np.sum(horizontal * tangent, axis=1) > 0)
    # u turns with it: tangent (perpendicular to d - s and v), length du.
    np.testing.assert_allclose(np.sum(u * h, axis=1), 0, atol=1e-10)
    np.testing.assert_allclose(np.sum(u * v, axis=1), 0, atol=1e-15)
    np.testing.assert_allclose(np.linalg.norm(u, axis=1), du)


def _shifted_and_wide(kind: str, shift: tuple[int, int], det_shape: tuple[int, int], spacing: tuple[float, float]):
    """(geometry with det_offset = shift * spacing, centred geometry with the detector grown by 2 |shift|)."""
    offset = (shift[0] * spacing[0], shift[1] * spacing[1])
    wide = (det_shape[0] + 2 * abs(shift[0]), det_shape[1] + 2 * abs(shift[1]))
    if kind == "parallel":
        return ko.ParallelBeam3D(ANGLES, det_shape, spacing, offset), ko.ParallelBeam3D(ANGLES, wide, spacing)
    return (
        ko.ConeBeam3D(ANGLES, D_SO, D_OD, det_shape, spacing, offset, detector=kind, pitch=8.0),
        ko.ConeBeam3D(ANGLES, D_SO, D_OD, wide, spacing, detector=kind, pitch=8.0),
    )


@pytest.mark.parametrize("kind", ["parallel", "flat", "curved"])
@pytest.mark.parametrize("shift", [(2, -3), (-1, 4)])
def test_detector_offset_selects_shifted_pixels(kind, shift):
    """A detector shifted by whole pixels sees the same rays as a window of a wider centred one."""
    det_shape = (3, 4)
    shifted, wide = _shifted_and_wide(kind, shift, det_shape, (0.9, 1.4))
    r, c = abs(shift[0]) + shift[0], abs(shift[1]) + shift[1]
    expected = wide.rays()[:, r : r + det_shape[0], c : c + det_shape[1]].numpy()
    rays = shifted.rays().numpy()
    np.testing.assert_allclose(_unit(rays[..., 3:6]), _unit(expected[..., 3:6]), atol=1e-12)
    np.testing.assert_allclose(np.cross(_unit(rays[..., 3:6]), expected[..., 0:3] - rays[..., 0:3]), 0, atol=1e-9)


# --- rays ------------------------------------------------------------------------------------------


def test_flat_cone_rays_go_from_the_source_through_the_pixel_centres():
    dv, du, v_offset, u_offset, pitch = 1.5, 0.8, -2.0, 3.0, 20.0
    rows, cols = 4, 7
    geo = ko.ConeBeam3D(ANGLES, D_SO, D_OD, (rows, cols), (dv, du), (v_offset, u_offset), pitch=pitch)
    rays = geo.rays()
    assert rays.dtype == torch.float64 and rays.shape == (len(ANGLES), rows, cols, 6)
    rays = rays.numpy()
    ray, tangent, e_z = _circle(ANGLES)
    z = (pitch * (ANGLES - ANGLES.mean()) / (2 * math.pi))[:, None]
    source = D_SO * ray + z * e_z
    along_u = u_offset + _offsets(cols) * du  # (cols,)
    along_v = v_offset + _offsets(rows) * dv  # (rows,)
    centres = (
        (-D_OD * ray + z * e_z)[:, None, None, :]
        + along_u[None, None, :, None] * tangent[:, None, None, :]
        + along_v[None, :, None, None] * e_z[:, None, None, :]
    )
    np.testing.assert_allclose(rays[..., 0:3], np.broadcast_to(source[:, None, None, :], centres.shape), atol=1e-12)
    np.testing.assert_allclose(rays[..., 0:3] + rays[..., 3:6], centres, atol=1e-10)


def test_parallel3d_rays_start_on_the_pixel_centres_and_follow_r():
    dv, du, v_offset, u_offset = 0.6, 1.1, -0.7, 2.5
    rows, cols = 3, 5
    geo = ko.ParallelBeam3D(ANGLES, (rows, cols), (dv, du), (v_offset, u_offset))
    rays = geo.rays()
    assert rays.dtype == torch.float64 and rays.shape == (len(ANGLES), rows, cols, 6)
    rays = rays.numpy()
    ray, tangent, _ = _circle(ANGLES)
    origin = rays[..., 0:3]
    # A point's detector coordinates are x cos t + y sin t (columns) and z (rows).
    np.testing.assert_allclose(
        np.sum(origin * tangent[:, None, None, :], axis=-1),
        np.broadcast_to((u_offset + _offsets(cols) * du)[None, None, :], origin.shape[:3]),
        atol=1e-12,
    )
    np.testing.assert_allclose(
        origin[..., 2], np.broadcast_to((v_offset + _offsets(rows) * dv)[None, :, None], origin.shape[:3]), atol=1e-12
    )
    np.testing.assert_allclose(rays[..., 3:6], np.broadcast_to(ray[:, None, None, :], origin.shape), atol=1e-15)


def test_curved_cone_pixels_lie_on_the_cylinder_equally_spaced_in_arc_length():
    dv, du, v_offset, u_offset = 1.5, 2.0, 3.0, -25.0
    rows, cols = 3, 9
    geo = ko.ConeBeam3D(ANGLES, D_SO, D_OD, (rows, cols), (dv, du), (v_offset, u_offset), detector="curved", pitch=9.0)
    vectors, rays = geo.to_vectors(), geo.rays().numpy()
    source = vectors[:, None, None, 0:3]
    np.testing.assert_allclose(rays[..., 0:3], np.broadcast_to(source, rays[..., 0:3].shape), atol=0)
    centres = rays[..., 0:3] + rays[..., 3:6]
    relative = centres - source
    radius = D_SO + D_OD
    # Distance R from the axis through the source along v (= z).
    np.testing.assert_allclose(np.hypot(relative[..., 0], relative[..., 1]), radius, rtol=1e-13)
    # Neighbouring columns are |u| = du apart in arc length; neighbouring rows |v| = dv apart along v.
    # Columns advance towards +u, i.e. clockwise seen from +z (u = (cos t, sin t, 0), source at angle t - pi/2).
    azimuth = np.unwrap(np.arctan2(relative[..., 1], relative[..., 0]), axis=2)
    np.testing.assert_allclose(-np.diff(azimuth, axis=2) * radius, du, rtol=1e-9)
    np.testing.assert_allclose(np.diff(relative[..., 2], axis=1), dv, rtol=1e-12)
    np.testing.assert_allclose(np.diff(relative[..., 0:2], axis=1), 0, atol=1e-12)
    # Row heights relative to the source: v_offset + (r - r0) dv.
    np.testing.assert_allclose(relative[:, :, 0, 2], np.broadcast_to(v_offset + _offsets(rows) * dv, (len(ANGLES), rows)))
    # The middle column (odd count) is at the detector centre d, turned by u_offset / R from the central ray.
    np.testing.assert_allclose(centres[:, 1, cols // 2], vectors[:, 3:6], atol=1e-10)
    central_azimuth = np.arctan2(np.cos(ANGLES), -np.sin(ANGLES))
    turn = np.angle(np.exp(1j * (azimuth[:, 0, cols // 2] - central_azimuth)))
    np.testing.assert_allclose(-turn * radius, u_offset, rtol=1e-12)


def test_curved_rays_from_vectors_for_a_tilted_axis():
    """A curved detector given by vectors whose v is not along z: the formula of the docs, pixel by pixel."""
    rng = np.random.default_rng(3)
    e_v = _unit(rng.normal(size=3))
    e_c = _unit(np.cross(e_v, rng.normal(size=3)))
    e_u = np.cross(e_v, e_c)
    s = rng.normal(size=3) * 50
    radius, h_v, du, dv = 700.0, 4.0, 1.7, 0.9
    d = s + radius * e_c + h_v * e_v
    geo = ko.ConeBeam3D.from_vectors([np.concatenate([s, d, du * e_u, dv * e_v])], (2, 3), detector="curved")
    rays = geo.rays().numpy()[0]
    for r in range(2):
        for c in range(3):
            gamma = (c - 1) * du / radius
            expected = s + radius * (math.cos(gamma) * e_c + math.sin(gamma) * e_u) + h_v * e_v + (r - 0.5) * dv * e_v
            np.testing.assert_allclose(rays[r, c, 0:3] + rays[r, c, 3:6], expected, atol=1e-10)


def test_from_vectors_rays_for_an_arbitrary_trajectory():
    rng = np.random.default_rng(5)
    rows, cols = 3, 4
    vectors = _random_trajectory(rng, 6, 1.3, 0.7)
    vectors[:, 6:9] += 0.3 * vectors[:, 9:12]  # a sheared (non-rectangular) pixel grid is allowed for flat detectors
    geo = ko.ConeBeam3D.from_vectors(vectors, (rows, cols))
    rays = geo.rays().numpy()
    s, d, u, v = vectors[:, 0:3], vectors[:, 3:6], vectors[:, 6:9], vectors[:, 9:12]
    centres = (
        d[:, None, None] + _offsets(cols)[None, None, :, None] * u[:, None, None] + _offsets(rows)[None, :, None, None] * v[:, None, None]
    )
    np.testing.assert_allclose(rays[..., 0:3] + rays[..., 3:6], centres, atol=1e-10)
    np.testing.assert_allclose(rays[..., 0:3], np.broadcast_to(s[:, None, None], centres.shape), atol=0)
    parallel = ko.ParallelBeam3D.from_vectors(np.concatenate([d - s, d, u, v], axis=1), (rows, cols)).rays().numpy()
    np.testing.assert_allclose(parallel[..., 0:3], centres, atol=1e-10)
    np.testing.assert_allclose(parallel[..., 3:6], np.broadcast_to((d - s)[:, None, None], centres.shape), atol=0)


# --- projection matrices ---------------------------------------------------------------------------


def _matrix_geometries():
    rng = np.random.default_rng(11)
    return {
        "circular": ko.ConeBeam3D(ANGLES, D_SO, D_OD, (5, 8), (1.5, 0.8)),
        "helical": ko.ConeBeam3D(ko.uniform_angles(12, 6 * math.pi), D_SO, D_OD, (4, 6), (1.2, 1.2), pitch=25.0),
        "offset": ko.ConeBeam3D(ANGLES, D_SO, -100.0, (3, 9), (0.9, 1.7), det_offset=(4.0, -12.5)),
        "one_pixel": ko.ConeBeam3D(ANGLES, D_SO, D_OD, (1, 1), (2.0, 3.0)),
        "random_trajectory": ko.ConeBeam3D.from_vectors(_random_trajectory(rng, 7, 1.3, 0.7), (6, 5)),
    }


@pytest.mark.parametrize("name", list(_matrix_geometries()))
def test_projection_matrix_round_trip(name):
    geo = _matrix_geometries()[name]
    P = geo.to_projection_matrices()
    assert P.shape == (geo.n_views, 3, 4) and P.dtype == np.float64
    spacing = tuple(geo.det_spacing[0])
    rebuilt = ko.ConeBeam3D.from_projection_matrices(P, geo.det_shape, spacing)
    np.testing.assert_allclose(rebuilt.to_vectors(), geo.to_vectors(), rtol=0, atol=1e-9)
    assert rebuilt.detector == "flat" and rebuilt.angles is None and rebuilt.det_shape == geo.det_shape
    # Any positive or negative multiple of P is the same camera.
    again = ko.ConeBeam3D.from_projection_matrices(-3.7 * torch.from_numpy(P), geo.det_shape, spacing)
    np.testing.assert_allclose(again.to_vectors(), geo.to_vectors(), rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", list(_matrix_geometries()))
def test_projection_matrix_maps_every_ray_to_its_pixel(name):
    geo = _matrix_geometries()[name]
    P = geo.to_projection_matrices()
    rays = geo.rays().numpy()
    expected = np.broadcast_to(_pixel_indices(geo.det_shape), rays.shape[:3] + (2,))
    for t in (1.0, 0.25, 0.6, 1.7):  # the pixel centre and other points of its ray
        np.testing.assert_allclose(_project(P, rays[..., 0:3] + t * rays[..., 3:6]), expected, rtol=0, atol=1e-9)
    # The world origin is in front of the source: P[2] . (0, 0, 0, 1) > 0.
    assert np.all(P[:, 2, 3] > 0)


def test_projection_matrices_of_a_pinhole_camera():
    """P = K [R | -R C] of a camera at C looking along R[2], focal length f (mm), pixel size (dv, du)
    and principal point (cp, rp) gives the source C and a detector f mm in front of it."""
    rng = np.random.default_rng(2)
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rotation *= np.sign(np.linalg.det(rotation))
    camera = np.array([30.0, -600.0, 12.0])
    if (rotation @ -camera)[2] <= 0:  # keep the world origin in front of the camera
        rotation[1:] *= -1
    f, du, dv, cp, rp = 900.0, 0.5, 0.75, 40.3, 17.9
    K = np.array([[f / du, 0.0, cp], [0.0, f / dv, rp], [0.0, 0.0, 1.0]])
    P = K @ np.concatenate([rotation, -(rotation @ camera)[:, None]], axis=1)
    rows, cols = 30, 64
    geo = ko.ConeBeam3D.from_projection_matrices(P[None], (rows, cols), (dv, du))
    s, d, u, v = np.split(geo.to_vectors()[0], 4)
    np.testing.assert_allclose(s, camera, atol=1e-9)
    np.testing.assert_allclose(u, du * rotation[0], atol=1e-12)
    np.testing.assert_allclose(v, dv * rotation[1], atol=1e-12)
    principal = d + (cp - (cols - 1) / 2) * u + (rp - (rows - 1) / 2) * v
    np.testing.assert_allclose(principal, camera + f * rotation[2], atol=1e-9)


def test_curved_detectors_have_no_projection_matrices():
    geo = ko.ConeBeam3D(ANGLES, D_SO, D_OD, (3, 5), detector="curved")
    with pytest.raises(ValueError, match="to_projection_matrices: a curved"):
        geo.to_projection_matrices()


# --- round trips, equality, immutability, printing -------------------------------------------------


def _geometries():
    return {
        "parallel": ko.ParallelBeam3D(ANGLES, (3, 5), (0.6, 1.1), det_offset=(0.2, -0.4)),
        "cone_flat": ko.ConeBeam3D(ANGLES, D_SO, D_OD, (4, 7), (1.5, 0.8), det_offset=(1.0, 2.0), pitch=3.0),
        "cone_curved": ko.ConeBeam3D(ANGLES, D_SO, D_OD, (4, 7), (1.5, 0.8), det_offset=(1.0, 2.0), detector="curved"),
    }


@pytest.mark.parametrize("name", list(_geometries()))
def test_to_vectors_from_vectors_round_trip(name):
    geo = _geometries()[name]
    vectors = geo.to_vectors()
    if isinstance(geo, ko.ParallelBeam3D):
        rebuilt = ko.ParallelBeam3D.from_vectors(vectors, geo.det_shape)
    else:
        rebuilt = ko.ConeBeam3D.from_vectors(torch.from_numpy(vectors), list(geo.det_shape), detector=geo.detector)
        assert rebuilt.source_distance is None and rebuilt.pitch is None
    assert rebuilt == geo and hash(rebuilt) == hash(geo)
    np.testing.assert_array_equal(rebuilt.to_vectors(), vectors)
    torch.testing.assert_close(rebuilt.rays(), geo.rays(), rtol=0, atol=0)
    assert rebuilt.angles is None and rebuilt.det_offset is None
    assert "from vectors" in repr(rebuilt)


def test_geometry_equality_distinguishes_every_parameter():
    base = ko.ConeBeam3D(ANGLES, D_SO, D_OD, (4, 7), (1.5, 0.8))
    same = ko.ConeBeam3D(list(ANGLES), 500, 300, [4, 7], [1.5, 0.8], det_offset=0, detector="flat", pitch=0)
    assert base == same and hash(base) == hash(same)
    different = [
        ko.ConeBeam3D(ANGLES, D_SO, D_OD, (4, 7), (1.5, 0.8), detector="curved"),
        ko.ConeBeam3D(ANGLES, D_SO, D_OD, (7, 4), (1.5, 0.8)),
        ko.ConeBeam3D(ANGLES, D_SO, D_OD, (4, 8), (1.5, 0.8)),
        ko.ConeBeam3D(ANGLES, D_SO + 1, D_OD, (4, 7), (1.5, 0.8)),
        ko.ConeBeam3D(ANGLES, D_SO, D_OD + 1, (4, 7), (1.5, 0.8)),
        ko.ConeBeam3D(ANGLES, D_SO, D_OD, (4, 7), (0.8, 1.5)),
        ko.ConeBeam3D(ANGLES, D_SO, D_OD, (4, 7), (1.5, 0.8), det_offset=(0.1, 0.0)),
        ko.ConeBeam3D(ANGLES, D_SO, D_OD, (4, 7), (1.5, 0.8), det_offset=(0.0, 0.1)),
        ko.ConeBeam3D(ANGLES, D_SO, D_OD, (4, 7), (1.5, 0.8), pitch=1.0),
        ko.ConeBeam3D(ANGLES[:-1], D_SO, D_OD, (4, 7), (1.5, 0.8)),
        ko.ParallelBeam3D(ANGLES, (4, 7), (1.5, 0.8)),
        ko.FanBeam2D(ANGLES, D_SO, D_OD, 7, 0.8),
    ]
    for other in different:
        assert base != other, other
    assert len({base, *different}) == len(different) + 1
    assert ko.ParallelBeam3D(ANGLES, (2, 3)) != ko.ParallelBeam3D(ANGLES, (2, 3), det_offset=(0.0, 1.0))


@pytest.mark.parametrize("name", list(_geometries()))
def test_geometry_is_immutable(name):
    geo = _geometries()[name]
    with pytest.raises(AttributeError, match="immutable"):
        geo.det_shape = (1, 1)
    with pytest.raises(AttributeError):
        geo.new_attribute = 1
    with pytest.raises(ValueError, match="read-only"):
        geo.angles[0] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        geo._vectors[0, 0] = 1.0
    vectors = geo.to_vectors()  # a copy
    vectors[:] = 0.0
    assert np.any(geo.to_vectors() != 0.0)
    if isinstance(geo, ko.ConeBeam3D):
        sources = geo.sources()
        sources[:] = 0.0
        assert np.any(geo.sources() != 0.0)


def test_from_vectors_and_constructors_copy_the_callers_arrays():
    angles = ANGLES.copy()
    geo = ko.ConeBeam3D(angles, D_SO, D_OD, (2, 3))
    angles[:] = 0.0
    np.testing.assert_array_equal(geo.angles, ANGLES)
    vectors = geo.to_vectors()
    rebuilt = ko.ConeBeam3D.from_vectors(vectors, (2, 3))
    vectors[:] = 1.0
    assert rebuilt == geo


def test_geometry_repr_is_readable():
    assert repr(ko.ParallelBeam3D(ko.uniform_angles(180), (64, 96), (0.5, 1.0))) == (
        "ParallelBeam3D(180 angles in [0, 3.124] rad, det_shape=(64, 96), det_spacing=(0.5, 1) mm)"
    )
    text = repr(
        ko.ConeBeam3D(ko.uniform_angles(360, 2 * math.pi), 500.0, 300.0, (16, 256), (1.0, 2.0), (0.0, 1.25), "curved", 40.0)
    )
    assert text == (
        "ConeBeam3D(360 angles in [0, 6.266] rad, source_distance=500, detector_distance=300, det_shape=(16, 256), "
        "det_spacing=(1, 2) mm, det_offset=(0, 1.25) mm, pitch=40 mm, detector='curved')"
    )
    assert repr(ko.ConeBeam3D.from_vectors(ko.ConeBeam3D([0.0, 1.0], 5, 5, (1, 2)).to_vectors(), (1, 2))) == (
        "ConeBeam3D(2 views from vectors, det_shape=(1, 2), det_spacing=(1, 1) mm, detector='flat')"
    )


def test_uniform_angles_and_the_2d_classes_are_unchanged_by_the_3d_ones():
    assert ko.ParallelBeam2D(ANGLES, 5).ndim == 2 and ko.FanBeam2D(ANGLES, 50, 30, 5).ndim == 2
    assert ko.ConeBeam3D(ko.uniform_angles(4, 2 * math.pi), 5, 5, (1, 1)).n_views == 4


# --- bad input: a clear ValueError / TypeError naming the parameter --------------------------------


def _cone(**changes):
    kwargs = dict(angles=ANGLES, source_distance=D_SO, detector_distance=D_OD, det_shape=(4, 7))
    kwargs.update(changes)
    return ko.ConeBeam3D(**kwargs)


def _parallel(**changes):
    kwargs = dict(angles=ANGLES, det_shape=(4, 7))
    kwargs.update(changes)
    return ko.ParallelBeam3D(**kwargs)


COMMON_BAD = [
    (dict(angles=[]), ValueError, "angles must not be empty"),
    (dict(angles=[[0.0, 1.0]]), ValueError, "angles must be 1-dimensional"),
    (dict(angles=[0.0, NAN]), ValueError, "angles must contain only finite values"),
    (dict(angles=["a"]), TypeError, "angles must be an array of real numbers"),
    (dict(det_shape=(4,)), ValueError, r"det_shape must have 2 entries \(n_rows, n_cols\), got 1"),
    (dict(det_shape=(4, 7, 1)), ValueError, "det_shape must have 2 entries"),
    (dict(det_shape=7), TypeError, "det_shape must be a pair"),
    (dict(det_shape=(0, 7)), ValueError, r"det_shape\[0\] must be a positive integer, got 0"),
    (dict(det_shape=(4, -2)), ValueError, r"det_shape\[1\] must be a positive integer, got -2"),
    (dict(det_shape=(4.0, 7)), TypeError, r"det_shape\[0\] must be a positive integer"),
    (dict(det_shape=(True, 7)), TypeError, r"det_shape\[0\] must be a positive integer"),
    (dict(det_spacing=0.0), ValueError, r"det_spacing must be positive, got 0"),
    (dict(det_spacing=(1.0, 0.0)), ValueError, r"det_spacing\[1\] must be positive, got 0"),
    (dict(det_spacing=(-1.0, 1.0)), ValueError, r"det_spacing\[0\] must be positive"),
    (dict(det_spacing=(1.0, NAN)), ValueError, r"det_spacing\[1\] must be finite"),
    (dict(det_spacing=(1.0, 1.0, 1.0)), ValueError, r"det_spacing must have 2 entries \(rows, cols\), got 3"),
    (dict(det_spacing=("1", 1.0)), TypeError, r"det_spacing\[0\] must be a real number"),
    (dict(det_spacing=None), TypeError, "det_spacing must be a number or a sequence of 2 numbers"),
    (dict(det_offset=INF), ValueError, "det_offset must be finite"),
    (dict(det_offset=(0.0, NAN)), ValueError, r"det_offset\[1\] must be finite"),
    (dict(det_offset=[1.0]), ValueError, "det_offset must have 2 entries"),
]

CONE_BAD = [
    (dict(source_distance=0.0), ValueError, "source_distance must be positive"),
    (dict(source_distance=-5.0), ValueError, "source_distance must be positive"),
    (dict(source_distance=NAN), ValueError, "source_distance must be finite"),
    (dict(source_distance="500"), TypeError, "source_distance must be a real number"),
    (dict(detector_distance=INF), ValueError, "detector_distance must be finite"),
    (dict(detector_distance=-D_SO), ValueError, r"source_distance \+ detector_distance must be positive"),
    (dict(detector="round"), ValueError, "detector must be 'flat' or 'curved'"),
    (dict(pitch=NAN), ValueError, "pitch must be finite"),
    (dict(pitch="1"), TypeError, "pitch must be a real number"),
]


@pytest.mark.parametrize("changes, error, message", COMMON_BAD + CONE_BAD)
def test_cone_constructor_rejects_bad_input(changes, error, message):
    with pytest.raises(error, match=message):
        _cone(**changes)


@pytest.mark.parametrize("changes, error, message", COMMON_BAD)
def test_parallel_constructor_rejects_bad_input(changes, error, message):
    with pytest.raises(error, match=message):
        _parallel(**changes)


def _good_cone_vectors() -> np.ndarray:
    return ko.ConeBeam3D(ANGLES, D_SO, D_OD, (4, 7), (1.5, 0.8)).to_vectors()


def _with(columns: slice, value, view: int = 2) -> np.ndarray:
    vectors = _good_cone_vectors()
    vectors[view, columns] = value
    return vectors


def _tilted_u(towards: str) -> np.ndarray:
    """Curved-detector vectors whose u leans (1e-6 relative) towards d - s or towards v in one view."""
    vectors = _good_cone_vectors()
    s, d, u, v = vectors[3, 0:3], vectors[3, 3:6], vectors[3, 6:9], vectors[3, 9:12]
    lean = _unit(d - s) if towards == "radial" else _unit(v)
    vectors[3, 6:9] = u + 1e-6 * np.linalg.norm(u) * lean
    return vectors


VECTOR_BAD = [
    (lambda: np.zeros((3, 6)), "flat", ValueError, r"vectors must have shape \(n_views, 12\)"),
    (lambda: np.zeros(12), "flat", ValueError, "vectors must be 2-dimensional"),
    (lambda: np.zeros((0, 12)), "flat", ValueError, "vectors must not be empty"),
    (lambda: _with(slice(4, 5), NAN), "flat", ValueError, "vectors must contain only finite values"),
    (lambda: _with(slice(6, 9), 0.0), "flat", ValueError, r"the detector column step u \(vectors\[:, 6:9\]\) must be a non-zero"),
    (lambda: _with(slice(9, 12), 0.0), "curved", ValueError, r"the detector row step v \(vectors\[:, 9:12\]\) must be a non-zero"),
    (lambda: _with(slice(6, 9), [0.0, 0.0, 2.0]), "flat", ValueError, "vectors: the detector steps u .* and v .* must not be parallel"),
    (lambda: _with(slice(3, 6), [0.0, -D_SO, 7.0], view=0), "flat", ValueError, "vectors: the source must not lie in the detector plane"),
    (lambda: _with(slice(3, 6), [0.0, -D_SO, 7.0], view=0), "curved", ValueError, r"the part of \(d - s\) across v .* non-zero"),
    (lambda: _tilted_u("radial"), "curved", ValueError, "vectors: for a curved detector u must be perpendicular to v and to"),
    (lambda: _tilted_u("axial"), "curved", ValueError, "vectors: for a curved detector u must be perpendicular to v and to"),
]


@pytest.mark.parametrize("make, detector, error, message", VECTOR_BAD)
def test_cone_from_vectors_rejects_bad_vectors(make, detector, error, message):
    with pytest.raises(error, match=message):
        ko.ConeBeam3D.from_vectors(make(), (4, 7), detector=detector)


def test_cone_from_vectors_rejects_bad_detector_arguments():
    with pytest.raises(ValueError, match=r"det_shape\[1\] must be a positive integer"):
        ko.ConeBeam3D.from_vectors(_good_cone_vectors(), (4, 0))
    with pytest.raises(ValueError, match="detector must be 'flat' or 'curved'"):
        ko.ConeBeam3D.from_vectors(_good_cone_vectors(), (4, 7), detector="spherical")
    with pytest.raises(TypeError, match="vectors must be an array of real numbers"):
        ko.ConeBeam3D.from_vectors("vectors", (4, 7))


def test_curved_from_vectors_tolerates_rounding():
    vectors = ko.ConeBeam3D(ANGLES, D_SO, D_OD, (4, 7), detector="curved", det_offset=(1.0, 33.0)).to_vectors()
    vectors[:, 6:9] *= 1 + 1e-15
    ko.ConeBeam3D.from_vectors(vectors, (4, 7), detector="curved")


def test_parallel3d_from_vectors_rejects_bad_vectors():
    good = ko.ParallelBeam3D(ANGLES, (4, 7)).to_vectors()
    with pytest.raises(ValueError, match=r"vectors must have shape \(n_views, 12\)"):
        ko.ParallelBeam3D.from_vectors(good[:, :6], (4, 7))
    zero_ray = good.copy()
    zero_ray[1, 0:3] = 0.0
    with pytest.raises(ValueError, match=r"the ray direction r \(vectors\[:, 0:3\]\) must be a non-zero"):
        ko.ParallelBeam3D.from_vectors(zero_ray, (4, 7))
    in_plane = good.copy()
    in_plane[1, 0:3] = in_plane[1, 6:9] + 2 * in_plane[1, 9:12]
    with pytest.raises(ValueError, match=r"vectors: the rays .* must not be parallel to the detector plane"):
        ko.ParallelBeam3D.from_vectors(in_plane, (4, 7))
    parallel_steps = good.copy()
    parallel_steps[1, 9:12] = 3 * parallel_steps[1, 6:9]
    with pytest.raises(ValueError, match="vectors: the detector steps u .* and v .* must not be parallel"):
        ko.ParallelBeam3D.from_vectors(parallel_steps, (4, 7))
    with pytest.raises(ValueError, match=r"det_shape\[0\] must be a positive integer, got -1"):
        ko.ParallelBeam3D.from_vectors(good, (-1, 7))


def _good_matrices() -> np.ndarray:
    return ko.ConeBeam3D(ANGLES, D_SO, D_OD, (4, 7), (1.5, 0.8)).to_projection_matrices()


def test_from_projection_matrices_rejects_bad_matrices():
    with pytest.raises(ValueError, match=r"P must have shape \(n_views, 3, 4\), got \(8, 3, 3\)"):
        ko.ConeBeam3D.from_projection_matrices(_good_matrices()[:, :, :3], (4, 7), (1.5, 0.8))
    with pytest.raises(ValueError, match="P must be 3-dimensional"):
        ko.ConeBeam3D.from_projection_matrices(_good_matrices()[0], (4, 7), (1.5, 0.8))
    with pytest.raises(ValueError, match="P must contain only finite values"):
        P = _good_matrices()
        P[1, 0, 0] = NAN
        ko.ConeBeam3D.from_projection_matrices(P, (4, 7), (1.5, 0.8))
    behind = _good_matrices()
    behind[2, 2, 3] = 0.0
    with pytest.raises(ValueError, match=r"P: P\[2, 2, 3\] = 0"):
        ko.ConeBeam3D.from_projection_matrices(behind, (4, 7), (1.5, 0.8))
    singular = _good_matrices()
    singular[5, 1, 0:3] = 2 * singular[5, 0, 0:3]
    with pytest.raises(ValueError, match=r"P: the left 3x3 block of P\[5\] is singular"):
        ko.ConeBeam3D.from_projection_matrices(singular, (4, 7), (1.5, 0.8))


def test_from_projection_matrices_rejects_a_det_spacing_that_does_not_fit():
    with pytest.raises(ValueError, match=r"det_spacing: the pixel aspect ratio of P .* does not match det_spacing"):
        ko.ConeBeam3D.from_projection_matrices(_good_matrices(), (4, 7), (0.8, 1.5))
    with pytest.raises(ValueError, match="det_spacing: the pixel aspect ratio"):
        ko.ConeBeam3D.from_projection_matrices(_good_matrices(), (4, 7), 1.0)
    # A uniform scale of det_spacing is only a different detector distance, not an error.
    scaled = ko.ConeBeam3D.from_projection_matrices(_good_matrices(), (4, 7), (3.0, 1.6))
    np.testing.assert_allclose(scaled.det_spacing, np.broadcast_to([3.0, 1.6], (len(ANGLES), 2)))
    with pytest.raises(ValueError, match=r"det_spacing\[0\] must be positive"):
        ko.ConeBeam3D.from_projection_matrices(_good_matrices(), (4, 7), (0.0, 0.8))
    with pytest.raises(ValueError, match="det_shape must have 2 entries"):
        ko.ConeBeam3D.from_projection_matrices(_good_matrices(), (4, 7, 1), (1.5, 0.8))
