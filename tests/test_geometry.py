"""Geometry objects: the conventions of docs/conventions.md, immutability, printing, vectors and rays."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import known_ops as ko

ANGLES = np.array([0.0, 0.3, math.pi / 4, math.pi / 2, 2.0, math.pi, 4.5, -0.7])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _bin_offsets(det_count: int) -> np.ndarray:
    """c - (n-1)/2 for every detector bin c."""
    return np.arange(det_count) - (det_count - 1) / 2


# --- Volume --------------------------------------------------------------------------------------


def test_volume_centres_bounds_and_extent_follow_the_convention():
    vol = ko.Volume(shape=(4, 7), spacing=(0.5, 2.0), offset=(1.0, -3.0))
    ny, nx = vol.shape
    np.testing.assert_allclose(vol.coordinates(1), (np.arange(nx) - (nx - 1) / 2) * 2.0 - 3.0)
    np.testing.assert_allclose(vol.coordinates(0), (np.arange(ny) - (ny - 1) / 2) * 0.5 + 1.0)
    assert vol.extent == (2.0, 14.0)
    assert vol.bounds == ((0.0, 2.0), (-10.0, 4.0))
    assert vol.ndim == 2


def test_volume_scalar_spacing_and_offset_apply_to_every_axis():
    vol = ko.Volume((3, 5), spacing=1.5, offset=2)
    assert vol.spacing == (1.5, 1.5)
    assert vol.offset == (2.0, 2.0)
    assert ko.Volume((2, 3, 4)).ndim == 3


def test_volume_is_immutable():
    vol = ko.Volume((3, 5))
    with pytest.raises(AttributeError, match="immutable"):
        vol.shape = (4, 4)
    with pytest.raises(AttributeError):
        vol.new_attribute = 1


def test_volume_repr_is_readable_and_round_trips():
    vol = ko.Volume((3, 5), spacing=(0.5, 2.0), offset=(1.0, -2.0))
    text = repr(vol)
    assert text == "Volume(shape=(3, 5), spacing=(0.5, 2.0), offset=(1.0, -2.0))"
    assert eval(text, {"Volume": ko.Volume}) == vol


def test_volume_equality_and_hash():
    a = ko.Volume((3, 5), spacing=(1.0, 2.0))
    b = ko.Volume([3, 5], spacing=[1, 2], offset=0)
    assert a == b and hash(a) == hash(b)
    assert a != ko.Volume((3, 5), spacing=(2.0, 1.0))
    assert a != ko.Volume((5, 3), spacing=(1.0, 2.0))
    assert a != ko.Volume((3, 5), spacing=(1.0, 2.0), offset=(0.0, 0.1))
    assert a != "Volume"
    assert len({a, b}) == 1


# --- uniform_angles ------------------------------------------------------------------------------


def test_uniform_angles_excludes_the_endpoint():
    np.testing.assert_allclose(ko.uniform_angles(4), [0, math.pi / 4, math.pi / 2, 3 * math.pi / 4])
    np.testing.assert_allclose(ko.uniform_angles(3, range=2 * math.pi, start=1.0), 1.0 + np.arange(3) * 2 * math.pi / 3)
    angles = ko.uniform_angles(180, math.pi)
    assert angles.dtype == np.float64 and angles.shape == (180,)
    assert angles[0] == 0.0 and angles[-1] < math.pi


# --- circular constructors: the vectors of docs/conventions.md -------------------------------------


def test_parallel_vectors_follow_the_convention():
    du, offset = 0.7, 1.3
    geo = ko.ParallelBeam2D(ANGLES, det_count=5, det_spacing=du, det_offset=offset)
    c, s = np.cos(ANGLES), np.sin(ANGLES)
    expected = np.stack([s, -c, offset * c, offset * s, du * c, du * s], axis=1)
    np.testing.assert_allclose(geo.to_vectors(), expected, rtol=0, atol=1e-15)
    assert geo.n_views == len(ANGLES) and geo.det_count == 5 and geo.shape == (len(ANGLES), 5)
    np.testing.assert_array_equal(geo.angles, ANGLES)
    np.testing.assert_allclose(geo.det_spacing, du)


def test_parallel_detector_coordinate_is_x_cos_plus_y_sin():
    """The bin that sees point p has centre coordinate p . (cos t, sin t) (with no offset)."""
    geo = ko.ParallelBeam2D(ANGLES, det_count=1)
    v = geo.to_vectors()
    ray, centre, step = v[:, 0:2], v[:, 2:4], v[:, 4:6]
    point = np.array([2.5, -1.75])
    # p + t r = d + c u  =>  c = cross(r, p - d) / cross(r, u)
    coordinate = _cross(ray, point - centre) / _cross(ray, step)
    np.testing.assert_allclose(coordinate, point[0] * np.cos(ANGLES) + point[1] * np.sin(ANGLES), atol=1e-13)


@pytest.mark.parametrize("detector", ["flat", "curved"])
def test_fan_vectors_follow_the_convention(detector):
    d_so, d_od, du = 50.0, 30.0, 0.8
    geo = ko.FanBeam2D(ANGLES, d_so, d_od, det_count=7, det_spacing=du, detector=detector)
    c, s = np.cos(ANGLES), np.sin(ANGLES)
    expected = np.stack([d_so * s, -d_so * c, -d_od * s, d_od * c, du * c, du * s], axis=1)
    np.testing.assert_allclose(geo.to_vectors(), expected, rtol=0, atol=1e-13)
    np.testing.assert_allclose(geo.sources(), expected[:, 0:2], atol=1e-13)
    assert geo.detector == detector
    assert geo.source_distance == d_so and geo.detector_distance == d_od
    np.testing.assert_allclose(geo.det_spacing, du)


def test_flat_fan_offset_moves_the_detector_centre_along_u():
    d_so, d_od, offset = 50.0, 30.0, 4.0
    geo = ko.FanBeam2D(ANGLES, d_so, d_od, det_count=3, det_offset=offset)
    c, s = np.cos(ANGLES), np.sin(ANGLES)
    expected_centre = np.stack([-d_od * s + offset * c, d_od * c + offset * s], axis=1)
    np.testing.assert_allclose(geo.to_vectors()[:, 2:4], expected_centre, atol=1e-13)


def test_curved_fan_offset_rotates_the_detector_about_the_source():
    d_so, d_od, du, offset = 50.0, 30.0, 1.0, 6.0
    geo = ko.FanBeam2D(ANGLES, d_so, d_od, det_count=3, det_spacing=du, det_offset=offset, detector="curved")
    v = geo.to_vectors()
    source, centre, step = v[:, 0:2], v[:, 2:4], v[:, 4:6]
    radius = d_so + d_od
    np.testing.assert_allclose(np.linalg.norm(centre - source, axis=1), radius)
    # The detector centre is seen from the source at angle offset / radius from the central ray.
    central = np.stack([-np.sin(ANGLES), np.cos(ANGLES)], axis=1)
    cosine = np.sum(_unit(centre - source) * central, axis=1)
    np.testing.assert_allclose(cosine, math.cos(offset / radius), atol=1e-13)
    # ... towards +u, and u stays tangent to the arc with length du.
    tangent = np.stack([np.cos(ANGLES), np.sin(ANGLES)], axis=1)
    assert np.all(np.sum((centre - source) * tangent, axis=1) > 0)
    np.testing.assert_allclose(np.sum(step * (centre - source), axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(step, axis=1), du)


# --- detector offset: a shifted detector is a window of a wider centred one --------------------------


def _shifted_and_wide(kind: str, shift_bins: int, det_count: int, du: float):
    """(geometry with det_offset = shift_bins * du, centred geometry with det_count + 2 |shift| bins)."""
    wide = det_count + 2 * abs(shift_bins)
    if kind == "parallel":
        return (
            ko.ParallelBeam2D(ANGLES, det_count, du, det_offset=shift_bins * du),
            ko.ParallelBeam2D(ANGLES, wide, du),
        )
    detector = "flat" if kind == "fan_flat" else "curved"
    return (
        ko.FanBeam2D(ANGLES, 40.0, 25.0, det_count, du, det_offset=shift_bins * du, detector=detector),
        ko.FanBeam2D(ANGLES, 40.0, 25.0, wide, du, detector=detector),
    )


@pytest.mark.parametrize("kind", ["parallel", "fan_flat", "fan_curved"])
@pytest.mark.parametrize("shift_bins", [3, -2])
def test_detector_offset_selects_shifted_bins(kind, shift_bins):
    det_count, du = 6, 0.9
    shifted, wide = _shifted_and_wide(kind, shift_bins, det_count, du)
    first = abs(shift_bins) + shift_bins
    expected = wide.rays()[:, first : first + det_count]
    _assert_same_lines(shifted.rays(), expected)


def _assert_same_lines(rays: torch.Tensor, expected: torch.Tensor) -> None:
    """Both tables describe the same oriented lines (origins may differ along a line)."""
    rays, expected = rays.numpy(), expected.numpy()
    direction, expected_direction = _unit(rays[..., 2:4]), _unit(expected[..., 2:4])
    np.testing.assert_allclose(direction, expected_direction, atol=1e-12)
    np.testing.assert_allclose(_cross(direction, expected[..., 0:2] - rays[..., 0:2]), 0, atol=1e-10)


# --- rays(): checked against formulas written here ---------------------------------------------------


def test_parallel_rays_start_on_the_bin_centres_and_follow_r():
    du, offset, n = 0.6, -0.9, 5
    geo = ko.ParallelBeam2D(ANGLES, n, du, offset)
    rays = geo.rays()
    assert rays.dtype == torch.float64 and rays.shape == (len(ANGLES), n, 4)
    rays = rays.numpy()
    c, s = np.cos(ANGLES)[:, None], np.sin(ANGLES)[:, None]
    coordinate = np.broadcast_to(offset + _bin_offsets(n)[None, :] * du, (len(ANGLES), n))
    # Any point of the ray has detector coordinate x cos t + y sin t equal to the bin's centre.
    origin = rays[..., 0:2]
    np.testing.assert_allclose(origin[..., 0] * c + origin[..., 1] * s, coordinate, atol=1e-13)
    direction = _unit(rays[..., 2:4])
    np.testing.assert_allclose(direction[..., 0], np.broadcast_to(s, direction.shape[:2]), atol=1e-13)
    np.testing.assert_allclose(direction[..., 1], np.broadcast_to(-c, direction.shape[:2]), atol=1e-13)


def _assert_rays_from_source_through(rays: np.ndarray, sources: np.ndarray, targets: np.ndarray) -> None:
    """Every ray is the line from its view's source through its target point, pointing at the target."""
    origin, direction = rays[..., 0:2], _unit(rays[..., 2:4])
    expected_direction = _unit(targets - sources[:, None, :])
    np.testing.assert_allclose(direction, expected_direction, atol=1e-12)
    # The source lies on the ray's line.
    np.testing.assert_allclose(_cross(direction, sources[:, None, :] - origin), 0, atol=1e-10)


def test_flat_fan_rays_go_from_the_source_through_the_bin_centres():
    d_so, d_od, du, offset, n = 60.0, 40.0, 1.7, 2.5, 9
    geo = ko.FanBeam2D(ANGLES, d_so, d_od, n, du, det_offset=offset)
    c, s = np.cos(ANGLES)[:, None], np.sin(ANGLES)[:, None]
    source = np.stack([d_so * np.sin(ANGLES), -d_so * np.cos(ANGLES)], axis=1)
    along = offset + _bin_offsets(n)[None, :] * du
    bin_centres = np.stack([-d_od * s + along * c, d_od * c + along * s], axis=-1)
    _assert_rays_from_source_through(geo.rays().numpy(), source, bin_centres)


def test_curved_fan_rays_are_equiangular_through_the_arc():
    d_so, d_od, du, offset, n = 60.0, 40.0, 1.7, 2.5, 9
    geo = ko.FanBeam2D(ANGLES, d_so, d_od, n, du, det_offset=offset, detector="curved")
    radius = d_so + d_od
    source = np.stack([d_so * np.sin(ANGLES), -d_so * np.cos(ANGLES)], axis=1)
    central = np.stack([-np.sin(ANGLES), np.cos(ANGLES)], axis=1)[:, None, :]  # unit, source -> isocentre
    tangent = np.stack([np.cos(ANGLES), np.sin(ANGLES)], axis=1)[:, None, :]
    # Bin c sits at arc length offset + (c - (n-1)/2) du, i.e. at angle gamma = that / radius.
    gamma = ((offset + _bin_offsets(n) * du) / radius)[None, :, None]
    arc_points = source[:, None, :] + radius * (np.cos(gamma) * central + np.sin(gamma) * tangent)
    _assert_rays_from_source_through(geo.rays().numpy(), source, arc_points)
    # Neighbouring rays are |u| / R apart in angle.
    direction = _unit(geo.rays().numpy()[..., 2:4])
    step = np.arccos(np.clip(np.sum(direction[:, 1:] * direction[:, :-1], axis=-1), -1, 1))
    np.testing.assert_allclose(step, du / radius, rtol=1e-7)


def test_fan_from_vectors_rays_for_an_arbitrary_trajectory():
    rng = np.random.default_rng(7)
    n_views, n = 4, 6
    source = rng.uniform(-80, 80, size=(n_views, 2))
    centre = rng.uniform(-20, 20, size=(n_views, 2))
    step = rng.normal(size=(n_views, 2))
    geo = ko.FanBeam2D.from_vectors(np.concatenate([source, centre, step], axis=1), n)
    bin_centres = centre[:, None, :] + _bin_offsets(n)[None, :, None] * step[:, None, :]
    _assert_rays_from_source_through(geo.rays().numpy(), source, bin_centres)


def test_parallel_from_vectors_rays_for_an_arbitrary_trajectory():
    rng = np.random.default_rng(8)
    n_views, n = 4, 6
    ray, centre, step = rng.normal(size=(n_views, 2)), rng.uniform(-9, 9, size=(n_views, 2)), rng.normal(size=(n_views, 2))
    geo = ko.ParallelBeam2D.from_vectors(np.concatenate([ray, centre, step], axis=1), n)
    rays = geo.rays().numpy()
    bin_centres = centre[:, None, :] + _bin_offsets(n)[None, :, None] * step[:, None, :]
    direction = _unit(rays[..., 2:4])
    np.testing.assert_allclose(direction, np.broadcast_to(_unit(ray)[:, None, :], direction.shape), atol=1e-12)
    np.testing.assert_allclose(_cross(direction, bin_centres - rays[..., 0:2]), 0, atol=1e-10)


# --- vector round trips, equality, hashing -----------------------------------------------------------


def _circular_geometries():
    return [
        ko.ParallelBeam2D(ANGLES, 11, 0.7, det_offset=0.4),
        ko.FanBeam2D(ANGLES, 50.0, 30.0, 11, 1.3, det_offset=-2.0, detector="flat"),
        ko.FanBeam2D(ANGLES, 50.0, 30.0, 11, 1.3, det_offset=-2.0, detector="curved"),
    ]


@pytest.mark.parametrize("geo", _circular_geometries(), ids=["parallel", "fan_flat", "fan_curved"])
def test_to_vectors_from_vectors_round_trip(geo):
    vectors = geo.to_vectors()
    assert vectors.shape == (geo.n_views, 6) and vectors.dtype == np.float64
    if isinstance(geo, ko.ParallelBeam2D):
        rebuilt = ko.ParallelBeam2D.from_vectors(vectors, geo.det_count)
    else:
        rebuilt = ko.FanBeam2D.from_vectors(vectors, geo.det_count, detector=geo.detector)
    assert rebuilt == geo and hash(rebuilt) == hash(geo)
    np.testing.assert_array_equal(rebuilt.to_vectors(), vectors)
    torch.testing.assert_close(rebuilt.rays(), geo.rays(), rtol=0, atol=0)
    assert rebuilt.angles is None
    assert "from vectors" in repr(rebuilt)


def test_from_vectors_accepts_lists_and_tensors():
    vectors = ko.ParallelBeam2D(ANGLES, 4).to_vectors()
    from_list = ko.ParallelBeam2D.from_vectors(vectors.tolist(), 4)
    from_tensor = ko.ParallelBeam2D.from_vectors(torch.from_numpy(vectors), 4)
    assert from_list == from_tensor == ko.ParallelBeam2D(ANGLES, 4)
    assert ko.ParallelBeam2D(torch.tensor(ANGLES), 4) == ko.ParallelBeam2D(list(ANGLES), 4)


def test_geometry_equality_distinguishes_every_parameter():
    base = ko.FanBeam2D(ANGLES, 50.0, 30.0, 11, 1.3)
    assert base == ko.FanBeam2D(ANGLES.copy(), 50, 30, 11, 1.3)
    assert hash(base) == hash(ko.FanBeam2D(ANGLES.copy(), 50, 30, 11, 1.3))
    different = [
        ko.FanBeam2D(ANGLES, 50.0, 30.0, 11, 1.3, detector="curved"),
        ko.FanBeam2D(ANGLES, 50.0, 30.0, 12, 1.3),
        ko.FanBeam2D(ANGLES, 51.0, 30.0, 11, 1.3),
        ko.FanBeam2D(ANGLES, 50.0, 31.0, 11, 1.3),
        ko.FanBeam2D(ANGLES, 50.0, 30.0, 11, 1.4),
        ko.FanBeam2D(ANGLES, 50.0, 30.0, 11, 1.3, det_offset=0.1),
        ko.FanBeam2D(ANGLES[:-1], 50.0, 30.0, 11, 1.3),
        ko.ParallelBeam2D(ANGLES, 11, 1.3),
    ]
    for other in different:
        assert base != other, other
    assert ko.ParallelBeam2D(ANGLES, 11) != ko.ParallelBeam2D(ANGLES, 11, det_offset=1.0)
    assert len({base, *different}) == len(different) + 1


@pytest.mark.parametrize("geo", _circular_geometries(), ids=["parallel", "fan_flat", "fan_curved"])
def test_geometry_is_immutable(geo):
    with pytest.raises(AttributeError, match="immutable"):
        geo.det_count = 3
    with pytest.raises(AttributeError):
        geo.angles = np.zeros(3)
    with pytest.raises(ValueError, match="read-only"):
        geo.angles[0] = 1.0
    # to_vectors hands out a copy: editing it does not touch the geometry.
    vectors = geo.to_vectors()
    vectors[:] = 0.0
    assert np.any(geo.to_vectors() != 0.0)


def test_constructor_copies_the_callers_angles():
    angles = ANGLES.copy()
    geo = ko.ParallelBeam2D(angles, 3)
    angles[:] = 0.0
    np.testing.assert_array_equal(geo.angles, ANGLES)


def test_geometry_repr_is_readable():
    assert repr(ko.ParallelBeam2D(ko.uniform_angles(180), 367, 1.0)) == (
        "ParallelBeam2D(180 angles in [0, 3.124] rad, det_count=367, det_spacing=1 mm)"
    )
    text = repr(ko.FanBeam2D(ko.uniform_angles(360, 2 * math.pi), 500.0, 500.0, 256, 2.0, detector="curved"))
    for part in ("FanBeam2D(", "360 angles", "source_distance=500", "detector_distance=500", "det_count=256",
                 "det_spacing=2 mm", "detector='curved'"):
        assert part in text
