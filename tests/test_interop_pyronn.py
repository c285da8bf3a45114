"""known_ops.interop.pyronn against PYRO-NN 0.1.0 (skipped when pyronn is missing; `make venv` installs it
with --no-deps, without TensorFlow or PYRO-NN-Layers).

PYRO-NN's geometry classes and trajectories are pure NumPy, but its geometry module imports TensorFlow at
the top (and never uses it): where TensorFlow is absent, an empty placeholder module stands in for that
import while the classes load. The rays are checked against a NumPy transcription of what
PYRO-NN-Layers' CUDA kernels compute for each detector pixel (cone_projector_3D_CudaKernel.cu.cc,
par_projector_2D_CudaKernel.cu.cc, fan_projector_2D_CudaKernel.cu.cc):
  cone: source = the null space of P (SVD), the ray of pixel (row, col) along M^-1 (col, row, 1);
  parallel: ray r, detector axis (-r_y, r_x), bin c at detector_origin + c * detector_spacing along it;
  fan: source -sid * c, detector point source + sdd * c + u * (-c_y, c_x).
"""
from __future__ import annotations

import importlib
import math
import sys
import types
import warnings

import numpy as np
import pytest
import torch

import known_ops as ko
from conftest import assert_same_lines
from known_ops.interop.pyronn import from_pyronn, to_pyronn_matrices

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # pyronn warns that PYRO-NN-Layers (the CUDA kernels) are missing
    trajectories = pytest.importorskip(
        "pyronn.ct_reconstruction.helpers.trajectories.circular_trajectory",
        reason="pyronn is not installed (pip install --no-deps pyronn==0.1.0): the PYRO-NN tests are skipped",
    )


@pytest.fixture(scope="module")
def pyronn_geometry():
    """PYRO-NN's GeometryParallel2D, GeometryFan2D and GeometryCone3D (the real classes)."""
    placeholder = None
    try:
        importlib.import_module("tensorflow")
    except ImportError:
        placeholder = sys.modules["tensorflow"] = types.ModuleType("tensorflow")
    try:
        names = {"parallel": ("geometry_parallel_2d", "GeometryParallel2D"), "fan": ("geometry_fan_2d", "GeometryFan2D"),
                 "cone": ("geometry_cone_3d", "GeometryCone3D")}
        classes = {key: getattr(importlib.import_module(f"pyronn.ct_reconstruction.geometry.{module}"), cls)
                   for key, (module, cls) in names.items()}
    finally:
        if placeholder is not None:
            del sys.modules["tensorflow"]
            for name in [n for n in sys.modules if n.startswith("pyronn.ct_reconstruction.geometry")]:
                del sys.modules[name]  # loaded against the placeholder: not for anyone else
    return classes


# --- NumPy transcriptions of PYRO-NN-Layers' ray set-up ----------------------------------------------


def pyronn_cone_rays(P: np.ndarray, det_shape):
    """Source (n, 3) and ray directions (n, rows, cols, 3) as cone_projector_3D computes them (world units)."""
    sources, directions = [], []
    rows, cols = np.meshgrid(np.arange(det_shape[0]), np.arange(det_shape[1]), indexing="ij")
    pixels = np.stack([cols, rows, np.ones_like(rows)], axis=-1).astype(np.float64)  # (col, row, 1)
    for p in np.asarray(P, dtype=np.float64):
        centre = np.linalg.svd(p)[2][-1]  # right null space (Geometry::getCameraCenter)
        sources.append(centre[:3] / centre[3])
        directions.append(pixels @ np.linalg.inv(p[:, :3]).T)
    return np.array(sources), np.array(directions)


def pyronn_2d_rays(geometry):
    """A point on, and the direction of, every ray (n, bins, 2) as par/fan_projector_2D compute them."""
    n = int(geometry.detector_shape[-1])
    u = geometry.detector_origin[-1] + np.arange(n) * geometry.detector_spacing[-1]
    if hasattr(geometry, "central_ray_vectors"):
        c = np.asarray(geometry.central_ray_vectors, dtype=np.float64)
        axis = np.stack([-c[:, 1], c[:, 0]], axis=1)
        source = -geometry.source_isocenter_distance * c
        point = source[:, None] + geometry.source_detector_distance * c[:, None] + u[None, :, None] * axis[:, None]
        return np.broadcast_to(source[:, None], point.shape), point - source[:, None]
    r = np.asarray(geometry.ray_vectors, dtype=np.float64)
    axis = np.stack([-r[:, 1], r[:, 0]], axis=1)
    point = u[None, :, None] * axis[:, None]
    return point, np.broadcast_to(r[:, None], point.shape)


# --- cone beam -------------------------------------------------------------------------------------


def _cone(classes, det_shape=(30, 50), det_spacing=(1.5, 1.2)):
    geometry = classes["cone"]([32, 48, 40], [1.0, 0.8, 1.2], list(det_shape), list(det_spacing), 12, 2 * np.pi, 1200.0, 750.0)
    geometry.set_trajectory(trajectories.circular_trajectory_3d(geometry))
    return geometry


def test_cone_every_pixel_is_where_pyronns_kernel_casts_its_ray(pyronn_geometry):
    pyronn = _cone(pyronn_geometry)
    volume, ours = from_pyronn(pyronn)
    assert volume.shape == (32, 48, 40) and volume.offset == (0.0, 0.0, 0.0)
    np.testing.assert_allclose(volume.spacing, (1.0, 0.8, 1.2), rtol=1e-7)  # PYRO-NN keeps them in float32
    assert isinstance(ours, ko.ConeBeam3D) and ours.det_shape == (30, 50)
    np.testing.assert_allclose(ours.det_spacing, [[1.5, 1.2]] * 12, rtol=1e-6)
    sources, directions = pyronn_cone_rays(pyronn.projection_matrices, ours.det_shape)
    rays = ours.rays().numpy()
    np.testing.assert_allclose(rays[:, 0, 0, :3], sources, rtol=0, atol=1e-9 * 750)
    assert_same_lines(rays[..., :3], rays[..., 3:], np.broadcast_to(sources[:, None, None], directions.shape), directions)
    # the source circle and the source-to-detector distance of the PYRO-NN geometry
    np.testing.assert_allclose(np.linalg.norm(sources, axis=1), 750.0, rtol=1e-6)
    centre_depth = np.linalg.norm(ours.to_vectors()[:, 3:6] - sources, axis=1)
    np.testing.assert_allclose(centre_depth, np.hypot(1200.0, np.hypot(0.6, 0.75)), rtol=1e-6)


def test_circular_trajectory_3d_puts_its_detector_half_a_pixel_off_centre(pyronn_geometry):
    """The measured fact: PYRO-NN's principal point is detector_shape * 0.5, so the isocentre projects to
    pixel (n_cols / 2, n_rows / 2), not to the detector's centre ((n - 1) / 2); its kernels cast the
    rays there, so the imported geometry keeps that half pixel along u and along v."""
    pyronn = _cone(pyronn_geometry)
    _, ours = from_pyronn(pyronn)
    P = np.asarray(pyronn.projection_matrices, dtype=np.float64)
    iso = P @ np.array([0.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(iso[:, :2] / iso[:, 2:], [[25.0, 15.0]] * 12, atol=1e-4)  # (col, row) = (50/2, 30/2)
    centred = ko.ConeBeam3D.from_vectors(ours.to_vectors(), ours.det_shape).to_projection_matrices()
    vectors = ours.to_vectors()
    s, d, u, v = vectors[:, 0:3], vectors[:, 3:6], vectors[:, 6:9], vectors[:, 9:12]
    # where the central ray (source -> isocentre) meets the detector, in pixels from its centre: -(+0.5, +0.5)
    normal = np.cross(u, v)
    t = np.sum((d - s) * normal, axis=1) / np.sum(-s * normal, axis=1)
    hit = s - t[:, None] * s - d
    along_u = np.sum(hit * u, axis=1) / np.sum(u * u, axis=1)
    along_v = np.sum(hit * v, axis=1) / np.sum(v * v, axis=1)
    np.testing.assert_allclose(along_u, 0.5, atol=1e-5)
    np.testing.assert_allclose(along_v, 0.5, atol=1e-5)
    np.testing.assert_allclose(centred / centred[:, 2:3, 3:4], P / P[:, 2:3, 3:4], rtol=0, atol=1e-6 * np.abs(P).max())


def test_pyronn_trajectory_axes(pyronn_geometry):
    """What circular_trajectory_3d describes in our terms: the source starts on +x and turns about z, the
    columns run along the trajectory's tangent and the rows along -z (row 0 at the top)."""
    _, ours = from_pyronn(_cone(pyronn_geometry))
    vectors = ours.to_vectors()
    np.testing.assert_allclose(vectors[0, 0:3], [750.0, 0.0, 0.0], atol=1e-3)
    np.testing.assert_allclose(vectors[:, 9:12] / 1.5, np.tile([0.0, 0.0, -1.0], (12, 1)), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors[:, 0:2], axis=1), 750.0, rtol=1e-6)


def test_to_pyronn_matrices_round_trip_and_kernel_rays(pyronn_geometry):
    ours = ko.ConeBeam3D(ko.uniform_angles(8), 600.0, 400.0, (9, 13), (1.1, 0.9), det_offset=(0.7, -1.3))
    P = to_pyronn_matrices(ours)
    pyronn = pyronn_geometry["cone"]([16, 16, 16], [1.0, 1.0, 1.0], [9, 13], [1.1, 0.9], 8, 2 * np.pi, 1000.0, 600.0)
    pyronn.set_trajectory(P)  # stored in float32, as PYRO-NN does
    _, back = from_pyronn(pyronn)
    np.testing.assert_allclose(back.to_vectors(), ours.to_vectors(), rtol=0, atol=1e-4)
    sources, directions = pyronn_cone_rays(P, ours.det_shape)
    rays = ours.rays().numpy()
    assert_same_lines(rays[..., :3], rays[..., 3:], np.broadcast_to(sources[:, None, None], directions.shape), directions)
    with pytest.raises(TypeError, match="ConeBeam3D"):
        to_pyronn_matrices(ko.ParallelBeam3D(ko.uniform_angles(3), (2, 2)))
    with pytest.raises(ValueError, match="curved"):
        to_pyronn_matrices(ko.ConeBeam3D(ko.uniform_angles(3), 600.0, 400.0, (3, 3), detector="curved"))


# --- 2D ----------------------------------------------------------------------------------------------


def test_parallel_2d_rays_and_angle_convention(pyronn_geometry):
    pyronn = pyronn_geometry["parallel"]([64, 48], [1.0, 0.5], 101, 0.7, 36, math.pi)
    pyronn.set_trajectory(trajectories.circular_trajectory_2d(pyronn))
    volume, ours = from_pyronn(pyronn)
    assert volume == ko.Volume((64, 48), spacing=(1.0, 0.5))  # exact in float32
    point, direction = pyronn_2d_rays(pyronn)
    rays = ours.rays().numpy()
    assert_same_lines(rays[..., :2], rays[..., 2:], point, direction)
    # PYRO-NN's angle theta (ray (cos theta, sin theta)) is our t = theta + pi / 2, with the same bin order
    theta = np.arange(36) * math.pi / 36
    circular = ko.ParallelBeam2D(theta + math.pi / 2, 101, 0.7)
    np.testing.assert_allclose(ours.to_vectors(), circular.to_vectors(), rtol=0, atol=1e-6)


def test_fan_2d_rays_and_its_mirrored_detector(pyronn_geometry):
    pyronn = pyronn_geometry["fan"]([64, 64], [1.0, 1.0], 151, 0.8, 40, 2 * math.pi, 1000.0, 600.0)
    pyronn.set_trajectory(trajectories.circular_trajectory_2d(pyronn))
    volume, ours = from_pyronn(pyronn)
    point, direction = pyronn_2d_rays(pyronn)
    rays = ours.rays().numpy()
    assert_same_lines(rays[..., :2], rays[..., 2:], point, direction)
    # PYRO-NN's source -sid (cos theta, sin theta) is our t = theta - pi / 2; its detector axis runs against our u
    theta = np.arange(40) * 2 * math.pi / 40
    circular = ko.FanBeam2D(theta - math.pi / 2, 600.0, 400.0, 151, 0.8)
    np.testing.assert_allclose(ours.to_vectors()[:, :4], circular.to_vectors()[:, :4], rtol=0, atol=1e-4)
    np.testing.assert_allclose(ours.to_vectors()[:, 4:], -circular.to_vectors()[:, 4:], rtol=0, atol=1e-6)
    x = torch.rand(volume.shape, dtype=torch.float64)
    mirrored = ko.RayTransform(volume, circular)(x).flip(-1)
    torch.testing.assert_close(ko.RayTransform(volume, ours)(x), mirrored, rtol=1e-5, atol=1e-5)


def test_volume_origin_and_detector_origin_are_read(pyronn_geometry):
    pyronn = pyronn_geometry["parallel"]([8, 10], [1.0, 2.0], 11, 1.0, 4, math.pi)
    pyronn.set_trajectory(trajectories.circular_trajectory_2d(pyronn))
    pyronn.volume_origin = pyronn.volume_origin + np.array([3.0, -4.0])
    pyronn.detector_origin = pyronn.detector_origin + 2.5
    volume, ours = from_pyronn(pyronn)
    assert volume == ko.Volume((8, 10), spacing=(1.0, 2.0), offset=(3.0, -4.0))
    point, direction = pyronn_2d_rays(pyronn)
    rays = ours.rays().numpy()
    assert_same_lines(rays[..., :2], rays[..., 2:], point, direction)


def test_from_pyronn_refuses_other_objects():
    with pytest.raises(TypeError, match="volume_shape"):
        from_pyronn(object())
    no_trajectory = types.SimpleNamespace(volume_shape=[4, 4], volume_spacing=[1.0, 1.0], detector_shape=[5],
                                          detector_spacing=[1.0])
    with pytest.raises(TypeError, match="set_trajectory"):
        from_pyronn(no_trajectory)
