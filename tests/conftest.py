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
