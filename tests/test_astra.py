"""Cross-check against ASTRA's CPU projectors on the same geometries (skipped when astra is missing).

ASTRA works in float32 and stores images with row 0 at the largest y, so images
are flipped on the way in and out; its vector geometries (parallel_vec,
fanflat_vec) take our to_vectors() unchanged. Both conversions are those of
known_ops.interop.astra (to_astra, image_to_astra, image_from_astra). ASTRA's CPU
projectors need square pixels.

Measured relative L2 differences (random image / random sinogram, the
geometries below) that set the tolerances, forward / back-projection:
  parallel `linear` (Joseph-like)   3.7e-6 / 3.3e-6 (ASTRA's float32 rounding): tolerance 2e-5
  parallel `line`                   2.1e-2 / 3.6e-2 (a different discretisation): tolerance 6e-2
  parallel `strip`                  7.1e-3 / 8.2e-3 (a different discretisation): tolerance 2e-2
  fan flat `line_fanflat`           2.5e-2 / 4.0e-2 (a different discretisation): tolerance 8e-2
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import known_ops as ko
from conftest import relative_error

astra = pytest.importorskip("astra", reason="astra-toolbox is not installed: the ASTRA cross-checks are skipped")
from known_ops.interop.astra import geometry_to_astra, image_from_astra, image_to_astra, volume_to_astra  # noqa: E402

VOLUME = ko.Volume((64, 48), spacing=0.75, offset=(3.0, -2.0))
PARALLEL = ko.ParallelBeam2D(ko.uniform_angles(45, math.pi, start=0.01), 95, 0.6, det_offset=1.5)
FAN = ko.FanBeam2D(ko.uniform_angles(40, 2 * math.pi, start=0.02), 150.0, 100.0, 120, 1.0, det_offset=2.0)


def _astra_project(volume: ko.Volume, projection_geometry, projector: str, image: np.ndarray, sino: np.ndarray):
    """ASTRA's forward projection of `image` and back-projection of `sino`, in our array orientation."""
    projector_id = astra.create_projector(projector, projection_geometry, volume_to_astra(volume))
    try:
        sino_id, forward = astra.create_sino(image_to_astra(image, volume), projector_id)
        astra.data2d.delete(sino_id)
        image_id, back = astra.create_backprojection(sino, projector_id)
        astra.data2d.delete(image_id)
    finally:
        astra.projector.delete(projector_id)
    return forward.astype(np.float64), image_from_astra(back, volume).astype(np.float64)


def _compare(volume, geometry, projection_geometry, projector: str):
    """Relative errors (forward, back-projection) of ours against ASTRA's `projector`."""
    rng = np.random.default_rng(0)
    image = rng.random(volume.shape)
    sino = rng.random(geometry.shape)
    astra_forward, astra_back = _astra_project(volume, projection_geometry, projector, image, sino)
    A = ko.RayTransform(volume, geometry)
    ours_forward = A(torch.from_numpy(image)).numpy()
    ours_back = A.T(torch.from_numpy(sino)).numpy()
    return relative_error(ours_forward, astra_forward), relative_error(ours_back, astra_back)


@pytest.mark.parametrize(
    "projector, tolerance", [("linear", 2e-5), ("line", 6e-2), ("strip", 2e-2)], ids=["linear", "line", "strip"]
)
def test_parallel_matches_astra(projector, tolerance):
    forward_error, back_error = _compare(VOLUME, PARALLEL, geometry_to_astra(PARALLEL), projector)
    assert forward_error <= tolerance, f"forward: relative error {forward_error:.3e} vs ASTRA {projector}"
    assert back_error <= tolerance, f"back-projection: relative error {back_error:.3e} vs ASTRA {projector}"


def test_parallel_linear_matches_astra_with_its_circular_geometry():
    """ASTRA's own `parallel` geometry (angles, no vectors) agrees with our circular constructor."""
    geometry = ko.ParallelBeam2D(ko.uniform_angles(36, 2 * math.pi, start=0.2), 90, 0.75)
    projection_geometry = astra.create_proj_geom("parallel", 0.75, 90, geometry.angles)
    forward_error, back_error = _compare(VOLUME, geometry, projection_geometry, "linear")
    assert forward_error <= 2e-5 and back_error <= 2e-5, (forward_error, back_error)


def test_parallel_linear_matches_astra_on_an_arbitrary_trajectory():
    """Tilted detectors and unnormalised ray directions, given as parallel_vec."""
    rng = np.random.default_rng(3)
    n_views = 12
    angles = rng.uniform(0, 2 * math.pi, n_views)
    ray = np.stack([np.sin(angles), -np.cos(angles)], axis=1) * rng.uniform(0.5, 2.0, (n_views, 1))
    tilt = angles + rng.uniform(-0.4, 0.4, n_views)
    step = 0.7 * np.stack([np.cos(tilt), np.sin(tilt)], axis=1)
    centre = rng.uniform(-3, 3, (n_views, 2))
    geometry = ko.ParallelBeam2D.from_vectors(np.concatenate([ray, centre, step], axis=1), 90)
    forward_error, back_error = _compare(VOLUME, geometry, geometry_to_astra(geometry), "linear")
    assert forward_error <= 2e-5 and back_error <= 2e-5, (forward_error, back_error)


def test_fan_flat_matches_astra_line_fanflat():
    forward_error, back_error = _compare(VOLUME, FAN, geometry_to_astra(FAN), "line_fanflat")
    assert forward_error <= 8e-2, f"forward: relative error {forward_error:.3e} vs ASTRA line_fanflat"
    assert back_error <= 8e-2, f"back-projection: relative error {back_error:.3e} vs ASTRA line_fanflat"


def test_fan_flat_matches_astra_line_fanflat_with_its_circular_geometry():
    geometry = ko.FanBeam2D(ko.uniform_angles(40, 2 * math.pi, start=0.02), 150.0, 100.0, 120, 1.0)
    projection_geometry = astra.create_proj_geom("fanflat", 1.0, 120, geometry.angles, 150.0, 100.0)
    forward_error, back_error = _compare(VOLUME, geometry, projection_geometry, "line_fanflat")
    assert forward_error <= 8e-2 and back_error <= 8e-2, (forward_error, back_error)


def test_joseph_is_closer_to_astra_linear_than_astra_line_is():
    """Sanity of the tolerances: ASTRA's two parallel models differ far more than we differ from `linear`."""
    rng = np.random.default_rng(1)
    image = rng.random(VOLUME.shape)
    sino = rng.random(PARALLEL.shape)
    linear, _ = _astra_project(VOLUME, geometry_to_astra(PARALLEL), "linear", image, sino)
    line, _ = _astra_project(VOLUME, geometry_to_astra(PARALLEL), "line", image, sino)
    ours = ko.RayTransform(VOLUME, PARALLEL)(torch.from_numpy(image)).numpy()
    assert relative_error(ours, linear) < 1e-2 * relative_error(line, linear)


@pytest.mark.parametrize("detector_distance", [100.0, 0.0, -50.0])
def test_circular_vectors_equal_astras_conversion(detector_distance):
    """astra.geom_2vec turns ASTRA's circular geometries into vectors: ours must be identical."""
    angles = np.array([0.0, 0.1, 1.0, math.pi / 2, 4.0])
    fan = astra.geom_2vec(astra.create_proj_geom("fanflat", 1.3, 5, angles, 150.0, detector_distance))
    np.testing.assert_allclose(
        ko.FanBeam2D(angles, 150.0, detector_distance, 5, 1.3).to_vectors(), fan["Vectors"], rtol=1e-12, atol=1e-12
    )
    parallel = astra.geom_2vec(astra.create_proj_geom("parallel", 1.3, 5, angles))
    np.testing.assert_allclose(ko.ParallelBeam2D(angles, 5, 1.3).to_vectors(), parallel["Vectors"], rtol=1e-12, atol=1e-12)
