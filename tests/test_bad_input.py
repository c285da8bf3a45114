"""Every bad input raises a clear ValueError / TypeError that names the offending parameter."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

import known_ops as ko

VOLUME = ko.Volume((9, 11))
PARALLEL = ko.ParallelBeam2D([0.0, 1.0], 13)
A = ko.RayTransform(VOLUME, PARALLEL)
NAN, INF = float("nan"), float("inf")


# --- operator inputs -------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(), (11,), (9,)], ids=["0d", "1d-nx", "1d-ny"])
def test_forward_rejects_fewer_than_two_dims(shape):
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 9, 11\)"):
        A(torch.zeros(shape))


@pytest.mark.parametrize("shape", [(11, 9), (9, 12), (2, 10, 11)], ids=["transposed", "wrong-nx", "batch-wrong-ny"])
def test_forward_rejects_a_trailing_shape_that_is_not_the_volume(shape):
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 9, 11\).*got " + re.escape(str(shape))):
        A(torch.zeros(shape))


@pytest.mark.parametrize("shape", [(13,), (13, 2), (2, 12), (4, 1, 13)], ids=["1d", "transposed", "wrong-det", "wrong-views"])
def test_adjoint_rejects_a_trailing_shape_that_is_not_the_sinogram(shape):
    with pytest.raises(ValueError, match=r"y must have shape \(\.\.\., 2, 13\)"):
        A.T(torch.zeros(shape))


@pytest.mark.parametrize(
    "dtype", [torch.int64, torch.int32, torch.bool, torch.complex64, torch.complex128, torch.float16, torch.bfloat16]
)
def test_forward_and_adjoint_reject_non_float32_64_dtypes(dtype):
    with pytest.raises(TypeError, match=f"x must be float32 or float64, got {dtype}"):
        A(torch.zeros(VOLUME.shape, dtype=dtype))
    with pytest.raises(TypeError, match=f"y must be float32 or float64, got {dtype}"):
        A.T(torch.zeros(PARALLEL.shape, dtype=dtype))


@pytest.mark.parametrize("value", [np.zeros((9, 11)), [[0.0] * 11] * 9, 1.0], ids=["ndarray", "list", "float"])
def test_forward_rejects_non_tensors(value):
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        A(value)
    with pytest.raises(TypeError, match="y must be a torch.Tensor"):
        A.T(value)


def test_device_mismatch_names_the_device():
    """A tensor on another device than the operator's tables (meta stands in for a GPU here)."""
    with pytest.raises(ValueError, match=r"x is on meta .* tables are on cpu.*\.to\('meta'\)"):
        A(torch.zeros(VOLUME.shape, device="meta"))
    with pytest.raises(ValueError, match=r"y is on meta .* tables are on cpu"):
        A.T(torch.zeros(PARALLEL.shape, device="meta"))


# --- RayTransform construction ---------------------------------------------------------------------


def test_three_dimensional_volume_with_a_2d_geometry():
    with pytest.raises(ValueError, match="volume is 3D but geometry is 2D"):
        ko.RayTransform(ko.Volume((3, 9, 11)), PARALLEL)


@pytest.mark.parametrize("volume", [(9, 11), np.zeros((9, 11)), None], ids=["tuple", "ndarray", "None"])
def test_volume_must_be_a_volume(volume):
    with pytest.raises(TypeError, match="volume must be a known_ops.Volume"):
        ko.RayTransform(volume, PARALLEL)


@pytest.mark.parametrize("geometry", [PARALLEL.to_vectors(), "parallel", None], ids=["vectors", "str", "None"])
def test_geometry_must_be_a_geometry(geometry):
    with pytest.raises(TypeError, match="geometry must be a ParallelBeam2D, FanBeam2D, ParallelBeam3D or ConeBeam3D"):
        ko.RayTransform(VOLUME, geometry)


@pytest.mark.parametrize("model", ["siddon", "Joseph", "", None])
def test_unknown_model(model):
    with pytest.raises(ValueError, match="model must be one of"):
        ko.RayTransform(VOLUME, PARALLEL, model=model)


def test_fan_source_inside_the_volume():
    """A 64 x 64 mm image has half-diagonal 45.3 mm: a source 40 mm from the centre enters it at 45 degrees."""
    volume = ko.Volume((64, 64))
    geometry = ko.FanBeam2D(ko.uniform_angles(8, 2 * math.pi), 40.0, 100.0, 13)
    with pytest.raises(ValueError, match=r"source of view 1 .* lies inside the volume.*increase source_distance"):
        ko.RayTransform(volume, geometry)
    # Inside at every angle, and given as vectors.
    with pytest.raises(ValueError, match="source of view 0 .* inside the volume"):
        ko.RayTransform(volume, ko.FanBeam2D([0.0], 20.0, 100.0, 13))
    with pytest.raises(ValueError, match="inside the volume"):
        ko.RayTransform(volume, ko.FanBeam2D.from_vectors([[5.0, 3.0, 0.0, 100.0, 1.0, 0.0]], 13))
    # An off-centre volume moved onto the source.
    with pytest.raises(ValueError, match="inside the volume"):
        ko.RayTransform(ko.Volume((10, 10), offset=(-100.0, 0.0)), ko.FanBeam2D([0.0], 100.0, 100.0, 13))


# --- geometry validation ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_non_finite_angles(bad):
    with pytest.raises(ValueError, match="angles must contain only finite values"):
        ko.ParallelBeam2D([0.0, bad], 13)
    with pytest.raises(ValueError, match="angles must contain only finite values"):
        ko.FanBeam2D(np.array([bad]), 100.0, 100.0, 13)


@pytest.mark.parametrize("bad", [NAN, INF])
@pytest.mark.parametrize(
    "parameter", ["source_distance", "detector_distance", "det_spacing", "det_offset"]
)
def test_non_finite_fan_parameters(parameter, bad):
    arguments = dict(angles=[0.0], source_distance=100.0, detector_distance=100.0, det_count=13, det_spacing=1.0)
    arguments[parameter] = bad
    with pytest.raises(ValueError, match=f"{parameter} must be finite"):
        ko.FanBeam2D(**arguments)


@pytest.mark.parametrize("bad", [NAN, -INF])
@pytest.mark.parametrize("parameter", ["det_spacing", "det_offset"])
def test_non_finite_parallel_parameters(parameter, bad):
    with pytest.raises(ValueError, match=f"{parameter} must be finite"):
        ko.ParallelBeam2D([0.0], 13, **{parameter: bad})


@pytest.mark.parametrize("bad", [NAN, INF])
@pytest.mark.parametrize("column", range(6))
def test_non_finite_vectors(column, bad):
    vectors = ko.FanBeam2D([0.0, 1.0], 100.0, 100.0, 13).to_vectors()
    vectors[1, column] = bad
    with pytest.raises(ValueError, match="vectors must contain only finite values"):
        ko.FanBeam2D.from_vectors(vectors, 13)
    with pytest.raises(ValueError, match="vectors must contain only finite values"):
        ko.ParallelBeam2D.from_vectors(vectors, 13)


@pytest.mark.parametrize("bad", [NAN, INF])
def test_non_finite_volume_parameters(bad):
    with pytest.raises(ValueError, match="spacing must be finite"):
        ko.Volume((3, 3), spacing=bad)
    with pytest.raises(ValueError, match=r"offset\[1\] must be finite"):
        ko.Volume((3, 3), offset=(0.0, bad))


def test_zero_views():
    with pytest.raises(ValueError, match="angles must not be empty"):
        ko.ParallelBeam2D([], 13)
    with pytest.raises(ValueError, match="angles must not be empty"):
        ko.FanBeam2D(np.zeros(0), 100.0, 100.0, 13)
    with pytest.raises(ValueError, match="vectors must not be empty"):
        ko.ParallelBeam2D.from_vectors(np.zeros((0, 6)), 13)
    with pytest.raises(ValueError, match="vectors must not be empty"):
        ko.FanBeam2D.from_vectors(np.zeros((0, 6)), 13)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        ko.uniform_angles(0)


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_non_positive_spacings(bad):
    with pytest.raises(ValueError, match="spacing must be positive"):
        ko.Volume((3, 3), spacing=bad)
    with pytest.raises(ValueError, match=r"spacing\[0\] must be positive"):
        ko.Volume((3, 3), spacing=(bad, 1.0))
    with pytest.raises(ValueError, match="det_spacing must be positive"):
        ko.ParallelBeam2D([0.0], 13, det_spacing=bad)
    with pytest.raises(ValueError, match="det_spacing must be positive"):
        ko.FanBeam2D([0.0], 100.0, 100.0, 13, det_spacing=bad)
    with pytest.raises(ValueError, match="source_distance must be positive"):
        ko.FanBeam2D([0.0], bad, 100.0, 13)


@pytest.mark.parametrize("bad", [0, -3])
def test_non_positive_det_count(bad):
    with pytest.raises(ValueError, match="det_count must be a positive integer"):
        ko.ParallelBeam2D([0.0], bad)
    with pytest.raises(ValueError, match="det_count must be a positive integer"):
        ko.FanBeam2D([0.0], 100.0, 100.0, bad)
    with pytest.raises(ValueError, match="det_count must be a positive integer"):
        ko.ParallelBeam2D.from_vectors(PARALLEL.to_vectors(), bad)


@pytest.mark.parametrize("bad", [13.0, "13", True, None])
def test_det_count_must_be_an_integer(bad):
    with pytest.raises(TypeError, match="det_count must be a positive integer"):
        ko.ParallelBeam2D([0.0], bad)


def test_volume_shape_validation():
    with pytest.raises(ValueError, match=r"shape\[0\] must be a positive integer"):
        ko.Volume((0, 3))
    with pytest.raises(TypeError, match=r"shape\[1\] must be a positive integer"):
        ko.Volume((3, 2.5))
    with pytest.raises(ValueError, match="shape must have 2 .* or 3 .* entries"):
        ko.Volume((2, 3, 3, 3))
    with pytest.raises(TypeError, match="shape must be a sequence"):
        ko.Volume(5)
    with pytest.raises(ValueError, match="spacing must have 2 entries"):
        ko.Volume((3, 3), spacing=(1.0, 1.0, 1.0))


def test_detector_distance_must_leave_the_detector_beyond_the_source():
    with pytest.raises(ValueError, match="source_distance \\+ detector_distance must be positive"):
        ko.FanBeam2D([0.0], 100.0, -100.0, 13)


def test_unknown_detector_shape():
    with pytest.raises(ValueError, match="detector must be 'flat' or 'curved'"):
        ko.FanBeam2D([0.0], 100.0, 100.0, 13, detector="cylindrical")
    with pytest.raises(ValueError, match="detector must be 'flat' or 'curved'"):
        ko.FanBeam2D.from_vectors(ko.FanBeam2D([0.0], 100.0, 100.0, 13).to_vectors(), 13, detector=None)


def test_angles_must_be_a_1d_array_of_numbers():
    with pytest.raises(ValueError, match="angles must be 1-dimensional"):
        ko.ParallelBeam2D(np.zeros((2, 2)), 13)
    with pytest.raises(TypeError, match="angles must be an array of real numbers"):
        ko.ParallelBeam2D(["a", "b"], 13)


@pytest.mark.parametrize(
    "vectors, message",
    [
        (np.zeros((2, 4)), r"vectors must have shape \(n_views, 6\)"),
        (np.zeros(6), "vectors must be 2-dimensional"),
        ([[0.0, 1.0, 0.0, 0.0, 0.0, 0.0]], r"pixel step \(vectors\[:, 4:6\]\) must be a non-zero vector"),
        ([[0.0, 0.0, 0.0, 0.0, 1.0, 0.0]], r"ray direction \(vectors\[:, 0:2\]\) must be a non-zero vector"),
        ([[0.0, 1.0, 0.0, 0.0, 0.0, 2.0]], "detector .* must not be parallel to the rays"),
    ],
    ids=["shape", "ndim", "zero-u", "zero-r", "u-along-r"],
)
def test_degenerate_parallel_vectors(vectors, message):
    with pytest.raises(ValueError, match=message):
        ko.ParallelBeam2D.from_vectors(vectors, 13)


@pytest.mark.parametrize(
    "vectors, detector, message",
    [
        ([[0.0, 5.0, 0.0, 5.0, 1.0, 0.0]], "flat", "source-to-detector vector .* must be a non-zero vector"),
        ([[0.0, -5.0, 0.0, 5.0, 0.0, 0.0]], "flat", r"pixel step \(vectors\[:, 4:6\]\) must be a non-zero vector"),
        ([[0.0, -5.0, 0.0, 5.0, 0.0, 1.0]], "flat", "detector line must not pass through the source"),
        ([[0.0, -5.0, 0.0, 5.0, 1.0, 1.0]], "curved", "curved detector u must be perpendicular"),
    ],
    ids=["source-on-detector", "zero-u", "detector-through-source", "curved-not-tangent"],
)
def test_degenerate_fan_vectors(vectors, detector, message):
    with pytest.raises(ValueError, match=message):
        ko.FanBeam2D.from_vectors(vectors, 13, detector=detector)


def test_uniform_angles_validation():
    with pytest.raises(ValueError, match="range must be finite"):
        ko.uniform_angles(3, NAN)
    with pytest.raises(ValueError, match="range must be non-zero"):
        ko.uniform_angles(3, 0.0)
    with pytest.raises(ValueError, match="start must be finite"):
        ko.uniform_angles(3, math.pi, start=INF)
    with pytest.raises(TypeError, match="n must be a positive integer"):
        ko.uniform_angles(3.0)


# --- the registered ops check their own arguments (RuntimeError from the C++ checks, never a crash) ---


def test_registered_ops_reject_inconsistent_arguments():
    ops = torch.ops.known_ops
    rays, views = A._rays, A._views
    image = torch.zeros(1, 9, 11, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="same dtype"):
        ops.joseph2d_forward(image.float(), rays, views)
    with pytest.raises(RuntimeError, match=r"image must have shape \(batch, ny, nx\)"):
        ops.joseph2d_forward(image[0], rays, views)
    with pytest.raises(RuntimeError, match="ray table must have shape"):
        ops.joseph2d_forward(image, rays[..., :3], views)
    with pytest.raises(RuntimeError, match="view table must have shape"):
        ops.joseph2d_forward(image, rays, views[:1])
    with pytest.raises(RuntimeError, match="does not match the ray table"):
        ops.joseph2d_adjoint(torch.zeros(1, 3, 13, dtype=torch.float64), rays, views, 9, 11)
    with pytest.raises(RuntimeError, match="does not match the ray table"):
        ops.joseph2d_adjoint_gather(torch.zeros(1, 2, 12, dtype=torch.float64), rays, views, 9, 11)
    with pytest.raises(RuntimeError, match="image size must be positive"):
        ops.joseph2d_adjoint(torch.zeros(1, 2, 13, dtype=torch.float64), rays, views, 0, 11)


def test_fan_source_level_with_the_volume():
    """A source beside the image (outside it, but with pixels behind its detector-parallel line) is rejected:
    those pixels would project through the source's plane."""
    # Source at x = 0, y = -20 (view angle 0).
    shifted = ko.Volume((64, 64), offset=(30.0, 0.0))  # y in [-2, 62]: the source at y = -20 is in front
    ko.RayTransform(shifted, ko.FanBeam2D([0.0], 20.0, 100.0, 13))
    beside = ko.Volume((64, 64), offset=(0.0, 60.0))  # x in [28, 92], y in [-32, 32]: level with the source
    with pytest.raises(ValueError, match="source of view 0 .* in front of the source"):
        ko.RayTransform(beside, ko.FanBeam2D([0.0], 20.0, 100.0, 13))


# --- 3D operators ------------------------------------------------------------------------------------

VOLUME_3D = ko.Volume((5, 6, 7))
CONE = ko.ConeBeam3D([0.0, 1.0], 50.0, 50.0, (4, 9))
A3 = ko.RayTransform(VOLUME_3D, CONE)


@pytest.mark.parametrize(
    "shape",
    [(), (7,), (6, 7), (7, 6, 5), (5, 6, 8), (4, 6, 7), (2, 5, 7, 6)],
    ids=["0d", "1d", "2d-slice", "reversed", "wrong-nx", "wrong-nz", "batch-transposed"],
)
def test_3d_forward_rejects_a_trailing_shape_that_is_not_the_volume(shape):
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 5, 6, 7\).*got " + re.escape(str(shape))):
        A3(torch.zeros(shape))


@pytest.mark.parametrize(
    "shape",
    [(4, 9), (2, 9, 4), (3, 4, 9), (2, 4, 8), (2, 5, 9), (1, 1, 4, 9), (9,)],
    ids=["one-view-2d", "transposed", "wrong-views", "wrong-cols", "wrong-rows", "batch-wrong-views", "1d"],
)
def test_3d_adjoint_rejects_a_trailing_shape_that_is_not_the_projections(shape):
    with pytest.raises(ValueError, match=r"y must have shape \(\.\.\., 2, 4, 9\) \(\(n_views, n_rows, n_cols\)\)"):
        A3.T(torch.zeros(shape))


def test_2d_volume_with_a_3d_geometry():
    with pytest.raises(ValueError, match="volume is 2D but geometry is 3D"):
        ko.RayTransform(VOLUME, CONE)
    with pytest.raises(ValueError, match="volume is 2D but geometry is 3D"):
        ko.RayTransform(VOLUME, ko.ParallelBeam3D([0.0], (3, 13)))


@pytest.mark.parametrize(
    "dtype", [torch.int64, torch.int32, torch.uint8, torch.bool, torch.complex64, torch.float16, torch.bfloat16]
)
def test_3d_forward_and_adjoint_reject_non_float32_64_dtypes(dtype):
    with pytest.raises(TypeError, match=f"x must be float32 or float64, got {dtype}"):
        A3(torch.zeros(VOLUME_3D.shape, dtype=dtype))
    with pytest.raises(TypeError, match=f"y must be float32 or float64, got {dtype}"):
        A3.T(torch.zeros(CONE.shape, dtype=dtype))


@pytest.mark.parametrize("value", [np.zeros((5, 6, 7)), 1.0, None], ids=["ndarray", "float", "None"])
def test_3d_forward_rejects_non_tensors(value):
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        A3(value)
    with pytest.raises(TypeError, match="y must be a torch.Tensor"):
        A3.T(value)


def test_3d_device_mismatch_names_the_device():
    """A tensor on another device than the operator's frames (meta stands in for a GPU here; with CUDA
    present, tests/test_cuda.py covers real devices)."""
    with pytest.raises(ValueError, match=r"x is on meta .* tables are on cpu.*\.to\('meta'\)"):
        A3(torch.zeros(VOLUME_3D.shape, device="meta"))
    with pytest.raises(ValueError, match=r"y is on meta .* tables are on cpu"):
        A3.T(torch.zeros(CONE.shape, device="meta"))
    with pytest.raises(ValueError, match=r"x is on meta"):
        A3(torch.zeros(VOLUME_3D.shape, device="meta"), views=[1])


@pytest.mark.parametrize("detector", ["flat", "curved"])
def test_cone_source_inside_the_volume(detector):
    """A 64^3 mm cube has a half-diagonal of 55 mm (45 mm in the xy-plane): a source 40 mm from the axis
    enters it at 45 degrees; one 20 mm away is inside at every angle."""
    volume = ko.Volume((64, 64, 64))
    circular = ko.ConeBeam3D(ko.uniform_angles(8, 2 * math.pi), 40.0, 100.0, (5, 13), detector=detector)
    with pytest.raises(ValueError, match=r"source of view 1 .* lies inside the volume.*increase source_distance"):
        ko.RayTransform(volume, circular)
    with pytest.raises(ValueError, match=r"source of view 0 at \(0, -20, 0\) mm .* inside the volume"):
        ko.RayTransform(volume, ko.ConeBeam3D([0.0], 20.0, 100.0, (5, 13), detector=detector))
    helical = ko.ConeBeam3D(ko.uniform_angles(8, 4 * math.pi), 20.0, 100.0, (5, 13), detector=detector, pitch=30.0)
    with pytest.raises(ValueError, match="source of view 0 .* inside the volume"):
        ko.RayTransform(volume, helical)
    # Given as vectors: the source at (5, 3, -7), the detector beyond it.
    vectors = [[5.0, 3.0, -7.0, 5.0, 103.0, -7.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]]
    with pytest.raises(ValueError, match="source of view 0 .* inside the volume"):
        ko.RayTransform(volume, ko.ConeBeam3D.from_vectors(vectors, (5, 13), detector=detector))
    # An off-centre volume moved onto the source.
    with pytest.raises(ValueError, match="inside the volume"):
        ko.RayTransform(ko.Volume((10, 10, 10), offset=(0.0, -100.0, 0.0)), ko.ConeBeam3D([0.0], 100.0, 100.0, (5, 13)))


def test_cone_source_level_with_the_volume():
    """A volume beside the source (outside it, but partly behind the plane through the source parallel to the
    detector) is rejected; moved in front of that plane it is accepted."""
    geometry = ko.ConeBeam3D([0.0], 20.0, 100.0, (5, 13))  # source at (0, -20, 0), looking along +y
    ko.RayTransform(ko.Volume((8, 64, 64), offset=(0.0, 30.0, 0.0)), geometry)  # y in [-2, 62]: in front
    with pytest.raises(ValueError, match="source of view 0 .* in front of the source"):
        ko.RayTransform(ko.Volume((8, 64, 64), offset=(0.0, 0.0, 60.0)), geometry)  # y in [-32, 32], x in [28, 92]
    with pytest.raises(ValueError, match="source of view 0 .* in front of the source"):  # above the source, level in y
        ko.RayTransform(ko.Volume((8, 8, 8), offset=(60.0, -20.0, 0.0)), geometry)


def test_3d_empty_views():
    with pytest.raises(ValueError, match="views must not be empty"):
        A3(torch.zeros(VOLUME_3D.shape), views=[])
    with pytest.raises(ValueError, match="views must not be empty"):
        A3.T(torch.zeros((0, 4, 9)), views=[])
    with pytest.raises(ValueError, match="angles must not be empty"):
        ko.ConeBeam3D([], 50.0, 50.0, (4, 9))
    with pytest.raises(ValueError, match="angles must not be empty"):
        ko.ParallelBeam3D(np.zeros(0), (4, 9))
    with pytest.raises(ValueError, match="vectors must not be empty"):
        ko.ConeBeam3D.from_vectors(np.zeros((0, 12)), (4, 9))
    with pytest.raises(ValueError, match="vectors must not be empty"):
        ko.ParallelBeam3D.from_vectors(np.zeros((0, 12)), (4, 9))
    with pytest.raises(ValueError, match="P must not be empty"):
        ko.ConeBeam3D.from_projection_matrices(np.zeros((0, 3, 4)), (4, 9), 1.0)


def test_3d_registered_ops_reject_inconsistent_arguments():
    frames = A3._frames
    volume = torch.zeros(1, 5, 6, 7, dtype=torch.float64)
    proj = torch.zeros(1, 2, 4, 9, dtype=torch.float64)
    ops3d = torch.ops.known_ops
    with pytest.raises(RuntimeError, match="frames must be float64"):
        ops3d.joseph3d_forward(volume, frames.float(), 4, 9)
    with pytest.raises(RuntimeError, match=r"frames must have shape \(n_views, 44\)"):
        ops3d.joseph3d_forward(volume, frames[:, :39], 4, 9)
    with pytest.raises(RuntimeError, match=r"frames were built for another detector shape than \(5, 11\)"):
        ops3d.joseph3d_forward(volume, frames, 5, 11)
    with pytest.raises(RuntimeError, match=r"volume must have shape \(batch, nz, ny, nx\)"):
        ops3d.joseph3d_forward(volume[0], frames, 4, 9)
    with pytest.raises(RuntimeError, match="volume must be float32 or float64"):
        ops3d.joseph3d_forward(volume.half(), frames, 4, 9)
    with pytest.raises(RuntimeError, match="frames were built for another volume shape"):
        ops3d.joseph3d_forward(torch.zeros(1, 5, 7, 6, dtype=torch.float64), frames, 4, 9)
    with pytest.raises(RuntimeError, match="detector size must be positive"):
        ops3d.joseph3d_forward(volume, frames, 0, 9)
    for adjoint in (ops3d.joseph3d_adjoint, ops3d.joseph3d_adjoint_gather):
        with pytest.raises(RuntimeError, match="projections have 3 views but frames 2"):
            adjoint(torch.zeros(1, 3, 4, 9, dtype=torch.float64), frames, 5, 6, 7)
        with pytest.raises(RuntimeError, match=r"projections must have shape \(batch, n_views, n_rows, n_cols\)"):
            adjoint(proj[0], frames, 5, 6, 7)
        with pytest.raises(RuntimeError, match="volume size must be positive"):
            adjoint(proj, frames, 0, 6, 7)
        with pytest.raises(RuntimeError, match="frames were built for another volume shape"):
            adjoint(proj, frames, 5, 6, 8)
        with pytest.raises(RuntimeError, match=r"frames were built for another detector shape than \(5, 11\)"):
            adjoint(torch.zeros(1, 2, 5, 11, dtype=torch.float64), frames, 5, 6, 7)


@pytest.mark.parametrize("make", [
    lambda: ko.FanBeam2D([0.0], 100.0, 100.0, det_count=101, det_spacing=7.0, detector="curved"),
    lambda: ko.ConeBeam3D([0.0], 100.0, 100.0, det_shape=(3, 101), det_spacing=7.0, detector="curved"),
    lambda: ko.FanBeam2D.from_vectors([[0.0, -100.0, 0.0, 100.0, 7.0, 0.0]], 101, detector="curved"),
], ids=["fan", "cone", "fan-from-vectors"])
def test_curved_detector_must_stay_within_90_degrees(make):
    """Columns beyond 90 degrees from the centre would look away from the object (rays are full lines)."""
    with pytest.raises(ValueError, match=r"det_spacing: the curved detector spans \+-100\.3 degrees .* within \+-90 degrees"):
        make()


# --- the supported range of lengths, table checks and size checks (docs/conventions.md, "Bad input and limits") ---


@pytest.mark.parametrize(
    "make, parameter",
    [
        (lambda v: ko.Volume((3, 3), spacing=v), "spacing"),
        (lambda v: ko.Volume((3, 3, 3), offset=(0.0, v, 0.0)), r"offset\[1\]"),
        (lambda v: ko.ParallelBeam2D([0.0], 13, det_spacing=v), "det_spacing"),
        (lambda v: ko.ParallelBeam2D([0.0], 13, det_offset=v), "det_offset"),
        (lambda v: ko.FanBeam2D([0.0], v, 100.0, 13), "source_distance"),
        (lambda v: ko.FanBeam2D([0.0], 100.0, v, 13), "detector_distance"),
        (lambda v: ko.ParallelBeam3D([0.0], (3, 13), det_spacing=(1.0, v)), r"det_spacing\[1\]"),
        (lambda v: ko.ConeBeam3D([0.0], v, 100.0, (3, 13), detector="curved"), "source_distance"),
        (lambda v: ko.ConeBeam3D([0.0, 1.0], 100.0, 100.0, (3, 13), pitch=v), "pitch"),
        (lambda v: ko.RampFilter(13, det_spacing=v), "det_spacing"),
    ],
    ids=["volume-spacing", "volume-offset", "parallel-det-spacing", "parallel-det-offset", "fan-source",
         "fan-detector", "parallel3d-det-spacing", "cone-source", "cone-pitch", "ramp-det-spacing"],
)
def test_lengths_beyond_the_supported_range(make, parameter):
    """Lengths whose squares overflow float64 (and, for spacings, tiny ones) name the parameter and the bound."""
    with pytest.raises(ValueError, match=parameter + r" must be at most 1e\+150 mm.*overflow float64"):
        make(1e160)
    make(1e3)  # well inside: accepted


@pytest.mark.parametrize(
    "make, parameter",
    [
        (lambda v: ko.Volume((3, 3), spacing=(1.0, v)), r"spacing\[1\]"),
        (lambda v: ko.ParallelBeam2D([0.0], 13, det_spacing=v), "det_spacing"),
        (lambda v: ko.ConeBeam3D([0.0], 100.0, 100.0, (3, 13), det_spacing=v), "det_spacing"),
    ],
    ids=["volume", "parallel", "cone"],
)
def test_spacings_below_the_supported_range(make, parameter):
    with pytest.raises(ValueError, match=parameter + r" must be at least 1e-150 mm.*overflow float64"):
        make(3e-308)


def test_extreme_vectors_and_extents_name_the_problem():
    with pytest.raises(ValueError, match=r"vectors: view 1 has an entry of 1e\+200 mm, beyond the 1e\+150 mm"):
        ko.FanBeam2D.from_vectors([[0.0, -100.0, 0.0, 100.0, 1.0, 0.0], [0.0, -1e200, 0.0, 100.0, 1.0, 0.0]], 13)
    with pytest.raises(ValueError, match=r"pixel step .* at least 1e-150 mm long \(view 0: 1e-200 mm\)"):
        ko.ParallelBeam2D.from_vectors([[0.0, -1.0, 0.0, 0.0, 1e-200, 0.0]], 13)
    with pytest.raises(ValueError, match="shape and spacing: the volume .* reaches 5e\\+151 mm"):
        ko.Volume((10**6, 3), spacing=1e146)
    with pytest.raises(ValueError, match="det_count, det_spacing and det_offset: the detector .* reaches"):
        ko.ParallelBeam2D([0.0], 10**6, det_spacing=1e146)
    with pytest.raises(ValueError, match="pitch and angles: the helix reaches"):
        ko.ConeBeam3D([0.0, 1e300], 100.0, 100.0, (3, 13), pitch=1e10)
    P = ko.ConeBeam3D([0.0], 100.0, 100.0, (3, 13)).to_projection_matrices()
    P[:, :, :3] *= 1e-200  # the source 1e200 mm away
    with pytest.raises(ValueError, match="P: the geometry that P describes .* is not usable: vectors: .* 1e\\+150 mm"):
        ko.ConeBeam3D.from_projection_matrices(P, (3, 13), 1.0)


def test_huge_detector_offset_is_not_reported_as_a_source_inside_the_volume():
    """det_offset = 1e300 used to overflow into a false 'source lies inside the volume'."""
    for make in (lambda: ko.FanBeam2D([0.0], 100.0, 100.0, 13, det_offset=1e300, detector="curved"),
                 lambda: ko.ConeBeam3D([0.0], 100.0, 100.0, (3, 13), det_offset=1e300, detector="curved")):
        with pytest.raises(ValueError, match="det_offset") as err:
            make()
        assert "inside the volume" not in str(err.value)


def test_precisions_that_would_overflow_are_refused_with_the_reason():
    """Each length is in range, but together they put ray positions beyond float32's range (1e150 pixels):
    float64 data are projected, float32 data refused; the voxel pair's weights (products of up to four
    lengths) bound the lengths it accepts in each precision."""
    A = ko.RayTransform(ko.Volume((9, 11), spacing=1e-150), PARALLEL)
    assert bool(torch.isfinite(A(torch.ones(9, 11, dtype=torch.float64))).all())
    with pytest.raises(ValueError, match="x is float32, but the projector's float32 ray tables overflow.*use float64"):
        A(torch.ones(9, 11))
    with pytest.raises(ValueError, match="y is float32, but"):
        A.T(torch.ones(PARALLEL.shape))
    voxel = ko.RayTransform(ko.Volume((9, 11), spacing=1e30), PARALLEL, model="voxel")
    assert bool(torch.isfinite(voxel(torch.ones(9, 11, dtype=torch.float64))).all())
    with pytest.raises(ValueError, match=r"x is float32, but the lengths .* beyond \[1e-09, 1e\+09\] mm.*voxel"):
        voxel(torch.ones(9, 11))
    with pytest.raises(ValueError, match=r"volume and geometry: the lengths .* beyond \[1e-75, 1e\+75\] mm"):
        ko.RayTransform(ko.Volume((9, 11), spacing=1e100), PARALLEL, model="voxel")


def test_extreme_but_valid_geometries_give_finite_projections():
    """Small voxels beside a far source, a wide detector, large offsets: every precision the operator
    accepts gives finite projections of finite data (a refused one says why)."""
    for volume, geometry in [
        (ko.Volume((9, 11), spacing=1e-3, offset=(1e-3, 0.0)), ko.FanBeam2D([0.0, 2.0], 1e5, 1e5, 13, det_spacing=1e3)),
        (ko.Volume((9, 11), spacing=1e30), ko.ParallelBeam2D([0.0, 1.0], 13, det_spacing=1e30, det_offset=3e30)),
        (ko.Volume((9, 11), spacing=1e-150), ko.FanBeam2D([0.0, 2.0], 1.0, 1.0, 13, det_spacing=1e-150)),
        (ko.Volume((5, 6, 7), spacing=1e-3), ko.ConeBeam3D([0.0, 2.0], 1e4, 1e4, (3, 13), det_spacing=1e2)),
        (ko.Volume((5, 6, 7), spacing=1e-150), ko.ConeBeam3D([0.0, 2.0], 100.0, 100.0, (3, 13))),
        (ko.Volume((5, 6, 7), spacing=1e140), ko.ParallelBeam3D([0.0, 2.0], (3, 13), det_spacing=1e140)),
    ]:
        for model in ("joseph", "voxel"):
            try:
                A = ko.RayTransform(volume, geometry, model=model)
            except ValueError as err:
                assert model == "voxel" and "voxel-driven pair's weights" in str(err), err
                continue
            for dtype in (torch.float64, torch.float32):
                try:
                    y = A(torch.ones(volume.shape, dtype=dtype))
                except ValueError as err:
                    assert dtype == torch.float32 and "x is float32, but" in str(err), err
                    continue
                x = A.T(torch.ones_like(y))
                assert bool(torch.isfinite(y).all()) and bool(torch.isfinite(x).all()), (volume, geometry, model, dtype)


def test_size_checks_refuse_only_what_cannot_fit():
    from known_ops._memory import SizeError, device_memory_bytes

    total = device_memory_bytes()
    assert total is not None and total > 0
    with pytest.raises(ValueError, match=r"ray tables of 2 views x 1000000000 detector bins .* would need about 96 GB") as err:
        ko.RayTransform(VOLUME, ko.ParallelBeam2D([0.0, 1.0], 10**9))
    assert isinstance(err.value, (SizeError, MemoryError))
    with pytest.raises(MemoryError, match="RayTransform.forward: the projections of a batch of 1000000000"):
        A(torch.zeros(1, 9, 11).expand(10**9, 9, 11))
    with pytest.raises(SizeError, match="RampFilter: the frequency response"):
        ko.RampFilter(10**10)
    # Normal sizes pass: a 512^2 image with 720 views of 725 bins (25 MB of tables).
    big = ko.RayTransform(ko.Volume((512, 512)), ko.ParallelBeam2D(ko.uniform_angles(720), 725))
    assert big(torch.zeros(1, 512, 512)).shape == (1, 720, 725)
