"""Shared helpers for the operator and geometry tests: error measures and a random geometry factory."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import known_ops as ko

GEOMETRY_KINDS = ("parallel", "fan_flat", "fan_curved", "parallel_vectors", "fan_vectors")

# Angles at which rays run exactly along the grid or along its diagonals: the
# places where Joseph's method switches its major axis or samples lie exactly
# on pixel centres.
SPECIAL_ANGLES = (0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4, math.pi, -math.pi / 2)


def relative_error(actual, expected) -> float:
    """||actual - expected|| / ||expected|| in float64 (tensors or arrays)."""
    actual = torch.as_tensor(actual).detach().cpu().double()
    expected = torch.as_tensor(expected).detach().cpu().double()
    return float(torch.linalg.vector_norm(actual - expected) / torch.linalg.vector_norm(expected))


def adjoint_mismatch(A, x: torch.Tensor, y: torch.Tensor) -> float:
    """|<A x, y> - <x, A.T y>| / (|A x| |y|), the quality-bar measure of an adjoint pair."""
    Ax = A(x)
    ATy = A.T(y)
    lhs = torch.sum(Ax * y)
    rhs = torch.sum(x * ATy)
    return float(abs(lhs - rhs) / (torch.linalg.vector_norm(Ax) * torch.linalg.vector_norm(y)))


def assert_gradients_are_normal_operators(A) -> None:
    """The gradient of ||A x||^2 is 2 A.T A x, and that of ||A.T y||^2 is 2 A A.T y (float64, batch dims)."""
    x = torch.rand((2, 3) + A.domain_shape, dtype=torch.float64, requires_grad=True)
    A(x).square().sum().backward()
    with torch.no_grad():
        expected = 2 * A.T(A(x))
    torch.testing.assert_close(x.grad, expected, rtol=1e-12, atol=1e-12)

    y = torch.rand((2, 3) + A.range_shape, dtype=torch.float64, requires_grad=True)
    A.T(y).square().sum().backward()
    with torch.no_grad():
        expected = 2 * A(A.T(y))
    torch.testing.assert_close(y.grad, expected, rtol=1e-12, atol=1e-12)


def assert_batch_dims_give_per_item_results(A, adjoint_atol: float = 0.0) -> None:
    """A and A.T on (2, 3, ...) inputs equal the per-item results; one leading dim and none work too."""
    x = torch.rand((2, 3) + A.domain_shape, dtype=torch.float64)
    y = torch.rand((2, 3) + A.range_shape, dtype=torch.float64)
    Ax, ATy = A(x), A.T(y)
    assert Ax.shape == (2, 3) + A.range_shape and ATy.shape == (2, 3) + A.domain_shape
    for b in range(2):
        for c in range(3):
            torch.testing.assert_close(Ax[b, c], A(x[b, c]), rtol=1e-12, atol=0)
            torch.testing.assert_close(ATy[b, c], A.T(y[b, c]), rtol=1e-12, atol=adjoint_atol)
    torch.testing.assert_close(A(x[0]), Ax[0], rtol=1e-12, atol=0)
    assert A(x[0, 0]).shape == A.range_shape and A.T(y[0, 0]).shape == A.domain_shape


def random_volume(rng: np.random.Generator) -> ko.Volume:
    """Small grid with odd or even sizes, anisotropic pixels and an off-centre position."""
    shape = (int(rng.integers(1, 14)), int(rng.integers(1, 14)))
    spacing = tuple(float(s) for s in rng.uniform(0.4, 2.5, size=2))
    offset = tuple(float(o) for o in rng.uniform(-3.0, 3.0, size=2))
    return ko.Volume(shape=shape, spacing=spacing, offset=offset)


def _half_diagonal_from_origin(volume: ko.Volume) -> float:
    """Largest distance from the origin to a corner of the volume (mm)."""
    (ylo, yhi), (xlo, xhi) = volume.bounds
    return max(math.hypot(x, y) for x in (xlo, xhi) for y in (ylo, yhi))


def random_angles(rng: np.random.Generator) -> np.ndarray:
    """1 to 5 angles, half of the time mixed with exactly 0, pi/4, pi/2, ..."""
    n_views = int(rng.integers(1, 6))
    angles = rng.uniform(-2 * math.pi, 2 * math.pi, size=n_views)
    if rng.random() < 0.5:
        special = rng.choice(SPECIAL_ANGLES, size=n_views)
        use_special = rng.random(n_views) < 0.6
        angles = np.where(use_special, special, angles)
    return angles


def _random_detector(rng: np.random.Generator, volume: ko.Volume, magnification: float = 1.0):
    """det_count, det_spacing, det_offset: a detector from a few bins up to twice the object's shadow."""
    object_size = math.hypot(*volume.extent) * magnification
    det_count = int(rng.integers(1, 40))
    coverage = rng.uniform(0.2, 2.0)  # < 1: detector smaller than the object, > 1: larger
    det_spacing = float(coverage * object_size / det_count)
    det_offset = float(rng.uniform(-0.3, 0.3) * object_size)
    return det_count, det_spacing, det_offset


def random_geometry(rng: np.random.Generator, volume: ko.Volume, kind: str):
    """A random projection geometry of `kind` (one of GEOMETRY_KINDS) that is valid for `volume`."""
    reach = _half_diagonal_from_origin(volume)
    if kind == "parallel":
        det_count, det_spacing, det_offset = _random_detector(rng, volume)
        return ko.ParallelBeam2D(random_angles(rng), det_count, det_spacing, det_offset)
    if kind in ("fan_flat", "fan_curved"):
        # The source must be outside the volume (plus one pixel) for every angle.
        source_distance = reach + 2 * max(volume.spacing) + float(rng.uniform(0.5, 3.0)) * reach
        detector_distance = float(rng.uniform(-0.5, 2.0)) * reach
        magnification = (source_distance + detector_distance) / source_distance
        det_count, det_spacing, det_offset = _random_detector(rng, volume, magnification)
        return ko.FanBeam2D(
            random_angles(rng),
            source_distance,
            detector_distance,
            det_count,
            det_spacing,
            det_offset,
            detector="flat" if kind == "fan_flat" else "curved",
        )
    n_views = int(rng.integers(1, 6))
    det_count = int(rng.integers(1, 40))
    if kind == "parallel_vectors":
        # Arbitrary ray directions (not normalised) and detectors tilted against the rays.
        ray = rng.normal(size=(n_views, 2))
        centre = rng.uniform(-reach, reach, size=(n_views, 2))
        tilt = rng.uniform(-1.2, 1.2, size=n_views)
        normal = np.stack([ray[:, 1], -ray[:, 0]], axis=1) / np.linalg.norm(ray, axis=1, keepdims=True)
        direction = np.stack(
            [np.cos(tilt) * normal[:, 0] - np.sin(tilt) * normal[:, 1], np.sin(tilt) * normal[:, 0] + np.cos(tilt) * normal[:, 1]],
            axis=1,
        )
        step = direction * rng.uniform(0.2, 3.0, size=(n_views, 1))
        return ko.ParallelBeam2D.from_vectors(np.concatenate([ray, centre, step], axis=1), det_count)
    if kind == "fan_vectors":
        # Sources on a random trajectory outside the volume; detectors beyond the volume, tilted.
        source_angle = rng.uniform(-math.pi, math.pi, size=n_views)
        source_radius = reach + 2 * max(volume.spacing) + rng.uniform(0.5, 3.0, size=n_views) * reach
        source = source_radius[:, None] * np.stack([np.cos(source_angle), np.sin(source_angle)], axis=1)
        towards = -source / source_radius[:, None]
        centre = source + towards * (source_radius + rng.uniform(0.0, 2.0, size=n_views) * reach)[:, None]
        centre += rng.uniform(-0.2, 0.2, size=(n_views, 2)) * reach
        tilt = rng.uniform(-1.0, 1.0, size=n_views)
        across = np.stack([-towards[:, 1], towards[:, 0]], axis=1)
        direction = np.cos(tilt)[:, None] * across + np.sin(tilt)[:, None] * towards
        step = direction * rng.uniform(0.2, 3.0, size=(n_views, 1))
        return ko.FanBeam2D.from_vectors(np.concatenate([source, centre, step], axis=1), det_count)
    raise ValueError(f"unknown geometry kind {kind!r}")



@pytest.fixture(autouse=True)
def _seeded_torch():
    """Every test starts from the same torch random state, so failures reproduce."""
    torch.manual_seed(0)


# --- 3D helpers ---------------------------------------------------------------------------------------

GEOMETRY_KINDS_3D = (
    "parallel",
    "cone_flat",
    "cone_curved",
    "helical",
    "parallel_vectors",
    "cone_vectors",
    "curved_vectors",
    "projection_matrices",
)


def random_volume_3d(rng: np.random.Generator) -> ko.Volume:
    """Small 3D grid with odd or even sizes (1 included), anisotropic voxels and an off-centre position."""
    shape = tuple(int(n) for n in rng.integers(1, 13, size=3))
    spacing = tuple(float(s) for s in rng.uniform(0.4, 2.5, size=3))
    offset = tuple(float(o) for o in rng.uniform(-3.0, 3.0, size=3))
    return ko.Volume(shape=shape, spacing=spacing, offset=offset)


def grown_reach_3d(volume: ko.Volume) -> float:
    """Largest distance from the origin to a corner of the volume grown by one voxel on every side (mm):
    a point source farther away than this (in the direction of the rays) lies outside the grown volume."""
    grown = [(lo - s, hi + s) for (lo, hi), s in zip(volume.bounds, volume.spacing)]
    return max(math.sqrt(z * z + y * y + x * x) for z in grown[0] for y in grown[1] for x in grown[2])


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def _rotate_about(vectors: np.ndarray, axes: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Rodrigues rotation of each row of `vectors` about the matching unit row of `axes` by `angles`."""
    c, s = np.cos(angles)[:, None], np.sin(angles)[:, None]
    along = np.sum(axes * vectors, axis=1, keepdims=True) * axes
    return c * vectors + s * np.cross(axes, vectors) + (1 - c) * along


def _perpendicular_basis(normal: np.ndarray, rng: np.random.Generator):
    """Two unit vectors spanning the plane perpendicular to each (unit) normal, randomly rolled."""
    helper = rng.normal(size=normal.shape)
    first = _unit(helper - np.sum(helper * normal, axis=1, keepdims=True) * normal)
    second = np.cross(normal, first)
    return first, second


def _tilted(normal: np.ndarray, rng: np.random.Generator, max_tilt: float) -> np.ndarray:
    """Each unit normal tilted by a random angle <= max_tilt about a random perpendicular axis."""
    axis, _ = _perpendicular_basis(normal, rng)
    return _rotate_about(normal, axis, rng.uniform(-max_tilt, max_tilt, size=normal.shape[0]))


def _detector_steps(normal: np.ndarray, rng: np.random.Generator, du: np.ndarray, dv: np.ndarray):
    """Column and row steps u, v spanning the plane perpendicular to `normal`, rolled and skewed at random."""
    first, second = _perpendicular_basis(normal, rng)
    skew = rng.uniform(-0.4, 0.4, size=normal.shape[0])[:, None]
    u = first * du[:, None]
    v = (np.cos(skew) * second + np.sin(skew) * first) * dv[:, None]
    return u, v


def _random_detector_3d(rng: np.random.Generator, volume: ko.Volume, magnification: float = 1.0):
    """det_shape, det_spacing (dv, du), det_offset (v, u): from a few pixels up to twice the object's shadow."""
    object_size = math.sqrt(sum(e * e for e in volume.extent)) * magnification
    det_shape = (int(rng.integers(1, 18)), int(rng.integers(1, 22)))
    coverage = rng.uniform(0.2, 2.0, size=2)  # < 1: detector smaller than the object, > 1: larger
    det_spacing = tuple(float(c * object_size / n) for c, n in zip(coverage, det_shape))
    det_offset = tuple(float(o) for o in rng.uniform(-0.3, 0.3, size=2) * object_size)
    return det_shape, det_spacing, det_offset


def random_geometry_3d(rng: np.random.Generator, volume: ko.Volume, kind: str):
    """A random 3D projection geometry of `kind` (one of GEOMETRY_KINDS_3D) that is valid for `volume`.

    Angles are mixed with exactly 0, pi/4, pi/2, ... (SPECIAL_ANGLES) half of the time; sources lie
    outside the volume grown by one voxel, in front of it, and off the z = 0 plane for the helical
    and vector kinds; detectors are tilted (vector kinds), offset, smaller or larger than the object.
    """
    reach = grown_reach_3d(volume)
    if kind == "parallel":
        det_shape, det_spacing, det_offset = _random_detector_3d(rng, volume)
        return ko.ParallelBeam3D(random_angles(rng), det_shape, det_spacing, det_offset)
    if kind in ("cone_flat", "cone_curved", "helical"):
        source_distance = reach * float(rng.uniform(1.1, 4.0)) + max(volume.spacing)
        detector_distance = float(rng.uniform(-0.5, 2.0)) * reach
        magnification = (source_distance + detector_distance) / source_distance
        det_shape, det_spacing, det_offset = _random_detector_3d(rng, volume, magnification)
        if kind == "helical":
            detector = "curved" if rng.random() < 0.5 else "flat"
        else:
            detector = "flat" if kind == "cone_flat" else "curved"
        pitch = float(rng.uniform(-2.0, 2.0) * volume.extent[0]) if kind == "helical" else 0.0
        return ko.ConeBeam3D(
            random_angles(rng), source_distance, detector_distance, det_shape, det_spacing, det_offset,
            detector=detector, pitch=pitch,
        )
    n_views = int(rng.integers(1, 6))
    det_shape = (int(rng.integers(1, 18)), int(rng.integers(1, 22)))
    if kind == "parallel_vectors":
        # Arbitrary (unnormalised) ray directions; detectors tilted against the rays by up to 1 rad.
        ray = rng.normal(size=(n_views, 3)) * rng.uniform(0.3, 3.0, size=(n_views, 1))
        normal = _tilted(_unit(ray), rng, 1.0)
        size = 2 * reach * rng.uniform(0.2, 2.0, size=(n_views, 2))
        u, v = _detector_steps(normal, rng, size[:, 0] / det_shape[1], size[:, 1] / det_shape[0])
        centre = rng.uniform(-0.5, 0.5, size=(n_views, 3)) * reach
        return ko.ParallelBeam3D.from_vectors(np.concatenate([ray, centre, u, v], axis=1), det_shape)
    if kind == "cone_vectors":
        # Sources anywhere on a sphere (any height), detectors beyond the volume, tilted by up to 0.6 rad.
        direction = _unit(rng.normal(size=(n_views, 3)))
        radius = reach * rng.uniform(1.3, 4.0, size=n_views) + max(volume.spacing)
        source = radius[:, None] * direction
        # Tilted by <= 0.6 rad: the plane through the source parallel to the detector misses the volume.
        normal = _tilted(-direction, rng, 0.6)
        centre = source - direction * (radius + rng.uniform(-0.2, 2.0, size=n_views) * reach)[:, None]
        centre += rng.uniform(-0.2, 0.2, size=(n_views, 3)) * reach
        magnification = np.sum((centre - source) * normal, axis=1) / radius
        size = 2 * reach * magnification[:, None] * rng.uniform(0.2, 2.0, size=(n_views, 2))
        u, v = _detector_steps(normal, rng, size[:, 0] / det_shape[1], size[:, 1] / det_shape[0])
        return ko.ConeBeam3D.from_vectors(np.concatenate([source, centre, u, v], axis=1), det_shape)
    if kind == "curved_vectors":
        # Cylinders with axes tilted from z by up to 0.8 rad, sources up to 0.4 rad above or below the
        # axis-perpendicular plane through the origin, the centre direction turned by up to 0.2 rad.
        axis = _tilted(np.tile([0.0, 0.0, 1.0], (n_views, 1)), rng, 0.8)
        across, _ = _perpendicular_basis(axis, rng)
        elevation = rng.uniform(-0.4, 0.4, size=n_views)[:, None]
        direction = np.cos(elevation) * across + np.sin(elevation) * axis
        radius = reach * rng.uniform(1.5, 4.0, size=n_views) + max(volume.spacing)
        source = radius[:, None] * direction
        e_c = _rotate_about(-across, axis, rng.uniform(-0.2, 0.2, size=n_views))
        e_u = np.cross(axis, e_c) * rng.choice([-1.0, 1.0], size=(n_views, 1))
        cylinder = radius + rng.uniform(-0.2, 2.0, size=n_views) * reach
        centre = source + cylinder[:, None] * e_c + rng.uniform(-0.3, 0.3, size=(n_views, 1)) * reach * axis
        magnification = cylinder / radius
        size = 2 * reach * magnification[:, None] * rng.uniform(0.2, 2.0, size=(n_views, 2))
        u, v = e_u * (size[:, 0] / det_shape[1])[:, None], axis * (size[:, 1] / det_shape[0])[:, None]
        return ko.ConeBeam3D.from_vectors(np.concatenate([source, centre, u, v], axis=1), det_shape, detector="curved")
    if kind == "projection_matrices":
        # Pinhole cameras P = lambda K [Rc | -Rc C], lambda of either sign, looking near the origin.
        direction = _unit(rng.normal(size=(n_views, 3)))
        distance = reach * rng.uniform(1.3, 4.0, size=n_views) + max(volume.spacing)
        camera = distance[:, None] * direction
        target = rng.uniform(-0.15, 0.15, size=(n_views, 3)) * reach
        z_c = _unit(target - camera)
        x_c, y_c = _perpendicular_basis(z_c, rng)
        rotation = np.stack([x_c, y_c, z_c], axis=1)  # rows: camera axes
        focal = rng.uniform(0.5, 3.0, size=n_views) * distance  # mm from the source to the detector plane
        du = float(np.mean(focal * 2 * reach / distance) * rng.uniform(0.2, 2.0) / det_shape[1])
        dv = du * float(rng.uniform(0.5, 2.0))  # pixels need not be square
        principal = np.stack(
            [(det_shape[1] - 1) / 2 + rng.uniform(-0.3, 0.3, n_views) * det_shape[1],
             (det_shape[0] - 1) / 2 + rng.uniform(-0.3, 0.3, n_views) * det_shape[0]], axis=1
        )
        K = np.zeros((n_views, 3, 3))
        K[:, 0, 0], K[:, 1, 1], K[:, 2, 2] = focal / du, focal / dv, 1.0
        K[:, 0, 2], K[:, 1, 2] = principal[:, 0], principal[:, 1]
        extrinsic = np.concatenate([rotation, -np.einsum("nij,nj->ni", rotation, camera)[:, :, None]], axis=2)
        scale = rng.uniform(0.1, 10.0, size=n_views) * rng.choice([-1.0, 1.0], size=n_views)
        P = scale[:, None, None] * np.einsum("nij,njk->nik", K, extrinsic)
        return ko.ConeBeam3D.from_projection_matrices(P, det_shape, (dv, du))
    raise ValueError(f"unknown 3D geometry kind {kind!r}")


def assert_same_lines(origin, direction, point, their_direction, tolerance: float = 1e-9) -> None:
    """Each ray (origin, direction), shape (..., 2 or 3), is the line of another tool's ray: the directions
    are parallel (either sign; `tolerance` in radians) and the other tool's `point` lies on it (within
    `tolerance` times the largest coordinate, mm). For checking geometries imported from ODL or PYRO-NN."""
    unit = direction / np.linalg.norm(direction, axis=-1, keepdims=True)
    theirs = their_direction / np.linalg.norm(their_direction, axis=-1, keepdims=True)
    off = point - origin
    if unit.shape[-1] == 2:
        cross = unit[..., 0] * theirs[..., 1] - unit[..., 1] * theirs[..., 0]
        miss = off[..., 0] * unit[..., 1] - off[..., 1] * unit[..., 0]
    else:
        cross = np.linalg.norm(np.cross(unit, theirs), axis=-1)
        miss = np.linalg.norm(np.cross(off, unit), axis=-1)
    scale = max(1.0, float(np.abs(point).max()))
    assert np.abs(cross).max() <= tolerance, f"directions differ by {np.abs(cross).max():.3g} rad"
    assert np.abs(miss).max() <= tolerance * scale, f"rays miss the other tool's points by {np.abs(miss).max():.3g} mm"
