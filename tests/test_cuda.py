"""CUDA kernels: agreement with the CPU, adjointness, gradients, batching, streams (skipped without a GPU)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import known_ops as ko
from conftest import GEOMETRY_KINDS, adjoint_mismatch, random_geometry, random_volume, relative_error

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available"),
    pytest.mark.skipif(not ko._ops.WITH_CUDA, reason="known_ops was built without its CUDA kernels"),
]

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}
DTYPES = [torch.float32, torch.float64]
DTYPE_IDS = ["float32", "float64"]


def _geometries():
    angles = ko.uniform_angles(90, 2 * math.pi, start=0.01)
    return {
        "parallel": ko.ParallelBeam2D(ko.uniform_angles(90, math.pi), 97, 1.1, det_offset=0.7),
        "fan_flat": ko.FanBeam2D(angles, 120.0, 80.0, 110, 1.6, det_offset=-2.0),
        "fan_curved": ko.FanBeam2D(angles, 120.0, 80.0, 110, 1.5, det_offset=1.0, detector="curved"),
    }


GEOMETRIES = _geometries()
FAMILIES = list(GEOMETRIES)
VOLUME = ko.Volume((64, 57), spacing=(1.0, 1.1), offset=(0.5, -1.5))


def _pair(volume: ko.Volume, geometry):
    """The same operator on the CPU and on the current CUDA device (separate modules: .to() is in place)."""
    return ko.RayTransform(volume, geometry), ko.RayTransform(volume, geometry).to("cuda")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_cuda_agrees_with_cpu(family, dtype):
    cpu, gpu = _pair(VOLUME, GEOMETRIES[family])
    generator = torch.Generator().manual_seed(0)
    x = torch.rand((3,) + VOLUME.shape, generator=generator, dtype=torch.float64).to(dtype)
    y = torch.rand((3,) + cpu.range_shape, generator=generator, dtype=torch.float64).to(dtype)
    forward, adjoint = gpu(x.cuda()), gpu.T(y.cuda())
    assert forward.device.type == "cuda" and forward.dtype == dtype
    assert adjoint.device.type == "cuda" and adjoint.dtype == dtype
    forward_error = relative_error(forward.cpu(), cpu(x))
    adjoint_error = relative_error(adjoint.cpu(), cpu.T(y))
    assert forward_error <= TOLERANCE[dtype], f"forward: CUDA vs CPU relative error {forward_error:.2e}"
    assert adjoint_error <= TOLERANCE[dtype], f"adjoint: CUDA vs CPU relative error {adjoint_error:.2e}"


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", GEOMETRY_KINDS)
def test_cuda_agrees_with_cpu_and_is_adjoint_over_random_geometries(kind, seed):
    rng = np.random.default_rng([seed, 200 + GEOMETRY_KINDS.index(kind)])
    volume = random_volume(rng)
    cpu, gpu = _pair(volume, random_geometry(rng, volume, kind))
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(volume.shape, generator=generator, dtype=torch.float64)
    y = torch.randn(cpu.range_shape, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(gpu(x.cuda()).cpu(), cpu(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gpu.T(y.cuda()).cpu(), cpu.T(y), rtol=1e-12, atol=1e-12)
    if torch.count_nonzero(cpu(x)) > 0:
        assert adjoint_mismatch(gpu, x.cuda(), y.cuda()) <= 1e-6


@pytest.mark.parametrize("family", FAMILIES)
def test_cuda_adjoint_test_in_float64(family):
    _, gpu = _pair(VOLUME, GEOMETRIES[family])
    generator = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn((2,) + VOLUME.shape, generator=generator, device="cuda", dtype=torch.float64)
    y = torch.randn((2,) + gpu.range_shape, generator=generator, device="cuda", dtype=torch.float64)
    assert adjoint_mismatch(gpu, x, y) <= 1e-6


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_cuda_adjoint_equals_the_cpu_gather_formulation(dtype):
    """The CUDA adjoint is the pixel-driven gather; the CPU runs the same header code as joseph2d_adjoint_gather."""
    cpu, gpu = _pair(VOLUME, GEOMETRIES["fan_curved"])
    ny, nx = VOLUME.shape
    sino = torch.rand((2,) + cpu.range_shape, dtype=torch.float64).to(dtype)
    cpu_gather = torch.ops.known_ops.joseph2d_adjoint_gather(sino, cpu._rays.to(dtype), cpu._views.to(dtype), ny, nx)
    cuda_gather = torch.ops.known_ops.joseph2d_adjoint_gather(
        sino.cuda(), gpu._rays.to(dtype), gpu._views.to(dtype), ny, nx
    )
    assert relative_error(cuda_gather.cpu(), cpu_gather) <= TOLERANCE[dtype]


@pytest.mark.parametrize("family", FAMILIES)
def test_cuda_gradcheck_and_gradgradcheck(family):
    volume = ko.Volume((9, 11), spacing=(0.8, 1.1), offset=(0.3, -0.4))
    geometry = {
        "parallel": ko.ParallelBeam2D([0.0, math.pi / 4, 2.0], 13),
        "fan_flat": ko.FanBeam2D([0.0, math.pi / 4, 2.0], 30.0, 20.0, 13, 1.7),
        "fan_curved": ko.FanBeam2D([0.0, math.pi / 4, 2.0], 30.0, 20.0, 13, 1.5, detector="curved"),
    }[family]
    A = ko.RayTransform(volume, geometry).to("cuda")
    x = torch.randn((2,) + volume.shape, device="cuda", dtype=torch.float64, requires_grad=True)
    y = torch.randn((2,) + geometry.shape, device="cuda", dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(A, (x,))
    assert torch.autograd.gradcheck(A.T, (y,))
    assert torch.autograd.gradgradcheck(A, (x,))
    assert torch.autograd.gradgradcheck(A.T, (y,))


def test_cuda_backward_of_squared_norm():
    _, gpu = _pair(VOLUME, GEOMETRIES["fan_flat"])
    x = torch.rand((2, 3) + VOLUME.shape, device="cuda", dtype=torch.float64, requires_grad=True)
    gpu(x).square().sum().backward()
    with torch.no_grad():
        expected = 2 * gpu.T(gpu(x))
    torch.testing.assert_close(x.grad, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("family", FAMILIES)
def test_cuda_batch_and_channel_dims_equal_per_item_results(family):
    _, gpu = _pair(VOLUME, GEOMETRIES[family])
    x = torch.rand((2, 3) + VOLUME.shape, device="cuda", dtype=torch.float64)
    y = torch.rand((2, 3) + gpu.range_shape, device="cuda", dtype=torch.float64)
    Ax, ATy = gpu(x), gpu.T(y)
    assert Ax.shape == (2, 3) + gpu.range_shape and ATy.shape == (2, 3) + VOLUME.shape
    for b in range(2):
        for c in range(3):
            torch.testing.assert_close(Ax[b, c], gpu(x[b, c]), rtol=1e-12, atol=0)
            torch.testing.assert_close(ATy[b, c], gpu.T(y[b, c]), rtol=1e-12, atol=0)


def test_cuda_non_contiguous_inputs_equal_contiguous():
    _, gpu = _pair(VOLUME, GEOMETRIES["parallel"])
    ny, nx = VOLUME.shape
    x = torch.rand(2, nx, ny, device="cuda").transpose(-1, -2)
    y = torch.rand(gpu.range_shape[0], 2 * gpu.range_shape[1], device="cuda")[:, ::2]
    assert not x.is_contiguous() and not y.is_contiguous()
    torch.testing.assert_close(gpu(x), gpu(x.contiguous()), rtol=0, atol=0)
    torch.testing.assert_close(gpu.T(y), gpu.T(y.contiguous()), rtol=0, atol=0)


@pytest.mark.parametrize("batch", [1, 3])
def test_cuda_is_deterministic(batch):
    _, gpu = _pair(VOLUME, GEOMETRIES["fan_flat"])
    x = torch.rand((batch,) + VOLUME.shape, device="cuda")
    y = torch.rand((batch,) + gpu.range_shape, device="cuda")
    first_forward, first_adjoint = gpu(x), gpu.T(y)
    for _ in range(3):
        assert torch.equal(gpu(x), first_forward)
        assert torch.equal(gpu.T(y), first_adjoint)


def test_cuda_runs_without_host_synchronisation():
    _, gpu = _pair(VOLUME, GEOMETRIES["fan_curved"])
    x = torch.rand((4,) + VOLUME.shape, device="cuda", requires_grad=True)
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        sino = gpu(x)
        back = gpu.T(sino)
        back.sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    assert x.grad is not None


def test_cuda_runs_on_the_current_stream():
    cpu, gpu = _pair(VOLUME, GEOMETRIES["parallel"])
    x = torch.rand((8,) + VOLUME.shape, dtype=torch.float64)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())  # the tables were copied to the GPU on the default stream
    with torch.cuda.stream(side):
        x_gpu = x.to("cuda", non_blocking=False)
        sino = gpu(x_gpu * 2.0)  # the producer and the projector share the side stream
        back = gpu.T(sino)
    side.synchronize()
    torch.testing.assert_close(sino.cpu(), cpu(2.0 * x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(back.cpu(), cpu.T(cpu(2.0 * x)), rtol=1e-12, atol=1e-12)


def test_cuda_opcheck():
    A = ko.RayTransform(ko.Volume((9, 11)), ko.FanBeam2D([0.0, 1.0, 2.0], 30.0, 20.0, 13, detector="curved")).to("cuda")
    for dtype in DTYPES:
        rays, views = A._rays.to(dtype), A._views.to(dtype)
        image = torch.randn(2, 9, 11, device="cuda", dtype=dtype, requires_grad=True)
        sino = torch.randn(2, 3, 13, device="cuda", dtype=dtype, requires_grad=True)
        torch.library.opcheck(torch.ops.known_ops.joseph2d_forward, (image, rays, views))
        torch.library.opcheck(torch.ops.known_ops.joseph2d_adjoint, (sino, rays, views, 9, 11))
        torch.library.opcheck(torch.ops.known_ops.joseph2d_adjoint_gather, (sino, rays, views, 9, 11))


def test_cuda_tensor_fed_to_a_cpu_operator_names_the_devices():
    cpu = ko.RayTransform(VOLUME, GEOMETRIES["parallel"])
    with pytest.raises(ValueError, match=r"x is on cuda:0 .* tables are on cpu"):
        cpu(torch.zeros(VOLUME.shape, device="cuda"))
    gpu = ko.RayTransform(VOLUME, GEOMETRIES["parallel"]).to("cuda")
    with pytest.raises(ValueError, match=r"y is on cpu .* tables are on cuda:0"):
        gpu.T(torch.zeros(gpu.range_shape))


# --- 3D: ParallelBeam3D and ConeBeam3D (flat, curved, helical) -------------------------------------

TOLERANCE_3D = {torch.float32: 1e-5, torch.float64: 1e-10}
TABLE_BYTES_ENV = "KNOWN_OPS_CUDA_TABLE_BYTES"


def _cases_3d():
    volume = ko.Volume((9, 11, 13), spacing=(1.0, 0.9, 1.1), offset=(0.3, -0.5, 0.7))
    circle = ko.uniform_angles(12, 2 * math.pi, start=0.2)
    cone = dict(source_distance=40.0, detector_distance=25.0, det_shape=(12, 19), det_spacing=(1.5, 1.4))
    return {
        "parallel": (
            volume,
            ko.ParallelBeam3D(ko.uniform_angles(12, math.pi, start=0.1), (10, 17), (1.2, 0.9), det_offset=(0.4, -0.6)),
        ),
        "cone_flat": (volume, ko.ConeBeam3D(circle, **cone, det_offset=(0.8, -1.1))),
        "cone_curved": (volume, ko.ConeBeam3D(circle, **cone, det_offset=(0.8, -1.1), detector="curved")),
        "helical": (
            ko.Volume((15, 10, 12), spacing=(0.7, 1.0, 1.0), offset=(0.0, 0.4, -0.3)),
            ko.ConeBeam3D(ko.uniform_angles(16, 4 * math.pi), 45.0, 30.0, (6, 21), (1.3, 1.5), pitch=5.0),
        ),
        # Odd sizes, anisotropic voxels, an off-centre volume, detector offsets and views at 0, 45 and 90 degrees.
        "offset_anisotropic": (
            ko.Volume((5, 13, 7), spacing=(2.1, 0.6, 1.3), offset=(-1.2, 0.9, 2.0)),
            ko.ConeBeam3D([0.0, math.pi / 4, math.pi / 2, 2.0, 4.0], 35.0, 22.0, (9, 15), (1.7, 1.1), det_offset=(-0.9, 1.3)),
        ),
    }


CASES_3D = _cases_3d()
FAMILIES_3D = list(CASES_3D)


def _frames_3d(volume: ko.Volume, geometry) -> torch.Tensor:
    """The per-view frames of the 3D kernels (float64, CPU), built from the geometry's vectors."""
    sz, sy, sx = volume.spacing
    oz, oy, ox = volume.offset
    return ko._ops.frames_3d(
        torch.from_numpy(geometry.to_vectors()), geometry._kind, geometry.det_shape, volume.shape, [sz, sy, sx, oz, oy, ox]
    )


def _view_table_bytes(geometry, dtype: torch.dtype) -> int:
    """Bytes of one view's ray table on the GPU: n_rows x n_cols x 8 fields."""
    n_rows, n_cols = geometry.det_shape
    return n_rows * n_cols * 8 * torch.empty((), dtype=dtype).element_size()


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("family", FAMILIES_3D)
def test_cuda3d_agrees_with_cpu(family, dtype):
    volume, geometry = CASES_3D[family]
    cpu, gpu = _pair(volume, geometry)
    generator = torch.Generator().manual_seed(3)
    x = torch.rand((2,) + volume.shape, generator=generator, dtype=torch.float64).to(dtype)
    y = torch.rand((2,) + geometry.shape, generator=generator, dtype=torch.float64).to(dtype)
    forward, adjoint = gpu(x.cuda()), gpu.T(y.cuda())
    assert forward.device.type == "cuda" and forward.dtype == dtype and forward.shape == (2,) + geometry.shape
    assert adjoint.device.type == "cuda" and adjoint.dtype == dtype and adjoint.shape == (2,) + volume.shape
    forward_error = relative_error(forward.cpu(), cpu(x))
    adjoint_error = relative_error(adjoint.cpu(), cpu.T(y))
    assert forward_error <= TOLERANCE_3D[dtype], f"forward: CUDA vs CPU relative error {forward_error:.2e}"
    assert adjoint_error <= TOLERANCE_3D[dtype], f"adjoint: CUDA vs CPU relative error {adjoint_error:.2e}"


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("family", ["cone_curved", "offset_anisotropic"])
def test_cuda3d_ops_equal_the_cpu_ops_and_the_cpu_gather(family, dtype):
    """The registered ops on CUDA against the CPU ops, frames built directly: the forward, and the CUDA
    adjoint (a gather) against the CPU scatter and against the CPU run of the same gather code."""
    volume, geometry = CASES_3D[family]
    frames = _frames_3d(volume, geometry)
    n_rows, n_cols = geometry.det_shape
    x = torch.rand((2,) + volume.shape, dtype=torch.float64).to(dtype)
    y = torch.rand((2,) + geometry.shape, dtype=torch.float64).to(dtype)
    ops = torch.ops.known_ops
    forward = ops.joseph3d_forward(x.cuda(), frames.cuda(), n_rows, n_cols).cpu()
    assert relative_error(forward, ops.joseph3d_forward(x, frames, n_rows, n_cols)) <= TOLERANCE_3D[dtype]
    for name in ("joseph3d_adjoint", "joseph3d_adjoint_gather"):
        adjoint = getattr(ops, name)(y.cuda(), frames.cuda(), *volume.shape).cpu()
        assert relative_error(adjoint, ops.joseph3d_adjoint_gather(y, frames, *volume.shape)) <= TOLERANCE_3D[dtype]
        assert relative_error(adjoint, ops.joseph3d_adjoint(y, frames, *volume.shape)) <= TOLERANCE_3D[dtype]


@pytest.mark.parametrize("family", FAMILIES_3D)
def test_cuda3d_adjoint_test_in_float64(family):
    volume, geometry = CASES_3D[family]
    _, gpu = _pair(volume, geometry)
    generator = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn((2,) + volume.shape, generator=generator, device="cuda", dtype=torch.float64)
    y = torch.randn((2,) + geometry.shape, generator=generator, device="cuda", dtype=torch.float64)
    assert adjoint_mismatch(gpu, x, y) <= 1e-6


@pytest.mark.parametrize("family", ["parallel", "cone_flat", "cone_curved"])
def test_cuda3d_gradcheck_and_gradgradcheck(family):
    volume = ko.Volume((3, 4, 5), spacing=(0.9, 1.1, 0.8), offset=(0.2, -0.3, 0.1))
    angles = [0.0, math.pi / 4, 2.0]
    geometry = {
        "parallel": ko.ParallelBeam3D(angles, (3, 6), (1.0, 0.9)),
        "cone_flat": ko.ConeBeam3D(angles, 20.0, 15.0, (3, 6), (1.3, 1.2)),
        "cone_curved": ko.ConeBeam3D(angles, 20.0, 15.0, (3, 6), (1.3, 1.2), detector="curved"),
    }[family]
    A = ko.RayTransform(volume, geometry).to("cuda")
    x = torch.randn(volume.shape, device="cuda", dtype=torch.float64, requires_grad=True)
    y = torch.randn(geometry.shape, device="cuda", dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(A, (x,))
    assert torch.autograd.gradcheck(A.T, (y,))
    assert torch.autograd.gradgradcheck(A, (x,))
    assert torch.autograd.gradgradcheck(A.T, (y,))


@pytest.mark.parametrize("family", ["parallel", "cone_curved"])
def test_cuda3d_batch_and_channel_dims_equal_per_item_results(family):
    volume, geometry = CASES_3D[family]
    _, gpu = _pair(volume, geometry)
    x = torch.rand((2, 3) + volume.shape, device="cuda", dtype=torch.float64)
    y = torch.rand((2, 3) + geometry.shape, device="cuda", dtype=torch.float64)
    Ax, ATy = gpu(x), gpu.T(y)
    assert Ax.shape == (2, 3) + geometry.shape and ATy.shape == (2, 3) + volume.shape
    for b in range(2):
        for c in range(3):
            # Each item runs the same per-thread code whatever the batch: bitwise equal.
            torch.testing.assert_close(Ax[b, c], gpu(x[b, c]), rtol=0, atol=0)
            torch.testing.assert_close(ATy[b, c], gpu.T(y[b, c]), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("views_per_chunk", [1, 5, "4 KiB"])
def test_cuda3d_adjoint_in_chunks_equals_one_chunk(views_per_chunk, dtype, monkeypatch):
    """A small ray-table budget splits the views into chunks (5 of 12: a partial last chunk; 4 KiB: less
    than one view, so one view per chunk); every voxel still sums the views in order: bitwise equal."""
    volume, geometry = CASES_3D["cone_flat"]
    _, gpu = _pair(volume, geometry)
    y = torch.rand((2,) + geometry.shape, device="cuda", dtype=torch.float64).to(dtype)
    monkeypatch.delenv(TABLE_BYTES_ENV, raising=False)
    one_chunk = gpu.T(y)
    budget = 4096 if views_per_chunk == "4 KiB" else views_per_chunk * _view_table_bytes(geometry, dtype)
    monkeypatch.setenv(TABLE_BYTES_ENV, str(budget))
    chunked = gpu.T(y)
    assert torch.equal(chunked, one_chunk)
    monkeypatch.setenv(TABLE_BYTES_ENV, str(10**12))  # a budget above the whole table: one chunk again
    assert torch.equal(gpu.T(y), one_chunk)


@pytest.mark.parametrize("value", ["0", "-5", "lots", "12kB"])
def test_cuda3d_bad_table_budget_is_a_clear_error(value, monkeypatch):
    volume, geometry = CASES_3D["parallel"]
    frames = _frames_3d(volume, geometry).cuda()
    y = torch.rand((1,) + geometry.shape, device="cuda")
    monkeypatch.setenv(TABLE_BYTES_ENV, value)
    with pytest.raises(RuntimeError, match=TABLE_BYTES_ENV):
        torch.ops.known_ops.joseph3d_adjoint(y, frames, *volume.shape)


def test_cuda3d_non_contiguous_inputs_equal_contiguous():
    volume, geometry = CASES_3D["offset_anisotropic"]
    _, gpu = _pair(volume, geometry)
    nz, ny, nx = volume.shape
    n_views, n_rows, n_cols = geometry.shape
    x = torch.rand(2, nx, ny, nz, device="cuda").permute(0, 3, 2, 1)
    y = torch.rand(n_views, n_rows, 2 * n_cols, device="cuda")[..., ::2]
    assert x.shape == (2,) + volume.shape and y.shape == geometry.shape
    assert not x.is_contiguous() and not y.is_contiguous()
    torch.testing.assert_close(gpu(x), gpu(x.contiguous()), rtol=0, atol=0)
    torch.testing.assert_close(gpu.T(y), gpu.T(y.contiguous()), rtol=0, atol=0)


def test_cuda3d_is_deterministic():
    volume, geometry = CASES_3D["helical"]
    _, gpu = _pair(volume, geometry)
    x = torch.rand((3,) + volume.shape, device="cuda")
    y = torch.rand((3,) + geometry.shape, device="cuda")
    first_forward, first_adjoint = gpu(x), gpu.T(y)
    for _ in range(3):
        assert torch.equal(gpu(x), first_forward)
        assert torch.equal(gpu.T(y), first_adjoint)


def test_cuda3d_empty_inputs_match_the_cpu_ops():
    volume, geometry = CASES_3D["cone_flat"]
    frames = _frames_3d(volume, geometry)
    n_rows, n_cols = geometry.det_shape
    ops = torch.ops.known_ops
    no_batch = ops.joseph3d_forward(torch.empty((0,) + volume.shape, device="cuda"), frames.cuda(), n_rows, n_cols)
    assert no_batch.shape == (0,) + geometry.shape and no_batch.is_cuda
    no_batch = ops.joseph3d_adjoint(torch.empty((0,) + geometry.shape, device="cuda"), frames.cuda(), *volume.shape)
    assert no_batch.shape == (0,) + volume.shape and no_batch.is_cuda
    no_views = torch.empty((2, 0, n_rows, n_cols), dtype=torch.float64)
    expected = ops.joseph3d_adjoint(no_views, frames[:0], *volume.shape)
    actual = ops.joseph3d_adjoint(no_views.cuda(), frames[:0].cuda(), *volume.shape)
    assert actual.shape == expected.shape == (2,) + volume.shape
    assert torch.count_nonzero(actual) == 0 and torch.count_nonzero(expected) == 0


def test_cuda3d_runs_without_host_synchronisation():
    volume, geometry = CASES_3D["cone_curved"]
    _, gpu = _pair(volume, geometry)
    x = torch.rand((2,) + volume.shape, device="cuda", requires_grad=True)
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        back = gpu.T(gpu(x))
        back.sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    assert x.grad is not None


def test_cuda3d_runs_on_the_current_stream():
    volume, geometry = CASES_3D["cone_flat"]
    cpu, gpu = _pair(volume, geometry)
    x = torch.rand((4,) + volume.shape, dtype=torch.float64)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        x_gpu = x.to("cuda", non_blocking=False)
        projections = gpu(x_gpu * 2.0)
        back = gpu.T(projections)
    side.synchronize()
    torch.testing.assert_close(projections.cpu(), cpu(2.0 * x), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(back.cpu(), cpu.T(cpu(2.0 * x)), rtol=1e-10, atol=1e-10)


def test_cuda3d_opcheck():
    volume = ko.Volume((3, 4, 5))
    geometry = ko.ConeBeam3D([0.0, 1.0, 2.0], 20.0, 15.0, (3, 6), detector="curved")
    frames = _frames_3d(volume, geometry).cuda()
    for dtype in DTYPES:
        vol = torch.randn((2,) + volume.shape, device="cuda", dtype=dtype, requires_grad=True)
        proj = torch.randn((2,) + geometry.shape, device="cuda", dtype=dtype, requires_grad=True)
        torch.library.opcheck(torch.ops.known_ops.joseph3d_forward, (vol, frames, 3, 6))
        torch.library.opcheck(torch.ops.known_ops.joseph3d_adjoint, (proj, frames, 3, 4, 5))
        torch.library.opcheck(torch.ops.known_ops.joseph3d_adjoint_gather, (proj, frames, 3, 4, 5))


# --- The voxel-driven pair (model="voxel") ---------------------------------------------------------

WEIGHTINGS = ["line", "fdk"]


def _voxel_cases():
    """2D and 3D cases for the voxel-driven kernels, with more views than one shared-memory group (32)
    and a view count that is not a multiple of it."""
    cases = {f"2d_{family}": (VOLUME, geometry) for family, geometry in GEOMETRIES.items()}
    cases.update({f"3d_{family}": CASES_3D[family] for family in ("parallel", "cone_curved", "offset_anisotropic")})
    cases["3d_cone_flat_45_views"] = (
        ko.Volume((7, 12, 10), spacing=(1.2, 0.9, 1.0), offset=(0.4, -0.3, 0.6)),
        ko.ConeBeam3D(ko.uniform_angles(45, 2 * math.pi, start=0.05), 40.0, 25.0, (11, 18), (1.5, 1.3), det_offset=(0.5, -0.7)),
    )
    return cases


VOXEL_CASES = _voxel_cases()


def _voxel_pair(case: str, weighting: str = "line"):
    volume, geometry = VOXEL_CASES[case]
    cpu = ko.RayTransform(volume, geometry, model="voxel", weighting=weighting)
    return volume, cpu, ko.RayTransform(volume, geometry, model="voxel", weighting=weighting).to("cuda")


@pytest.mark.parametrize("weighting", WEIGHTINGS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", list(VOXEL_CASES))
def test_cuda_voxel_agrees_with_cpu(case, dtype, weighting):
    volume, cpu, gpu = _voxel_pair(case, weighting)
    generator = torch.Generator().manual_seed(5)
    # a batch of 6: one full and one partial tile of the back-projection's 4 volumes per pass
    x = torch.rand((6,) + volume.shape, generator=generator, dtype=torch.float64).to(dtype)
    y = torch.rand((6,) + cpu.range_shape, generator=generator, dtype=torch.float64).to(dtype)
    forward, adjoint = gpu(x.cuda()), gpu.T(y.cuda())
    assert forward.device.type == "cuda" and forward.dtype == dtype and forward.shape == (6,) + cpu.range_shape
    assert adjoint.device.type == "cuda" and adjoint.dtype == dtype and adjoint.shape == (6,) + volume.shape
    tolerance = TOLERANCE_3D[dtype]
    forward_error = relative_error(forward.cpu(), cpu(x))
    adjoint_error = relative_error(adjoint.cpu(), cpu.T(y))
    assert forward_error <= tolerance, f"forward: CUDA vs CPU relative error {forward_error:.2e}"
    assert adjoint_error <= tolerance, f"adjoint: CUDA vs CPU relative error {adjoint_error:.2e}"
    for b in (0, 5):  # each batch item on its own, on the GPU: the batched pass serves every item alike
        assert relative_error(forward[b], gpu(x[b].cuda())) <= tolerance
        torch.testing.assert_close(adjoint[b], gpu.T(y[b].cuda()), rtol=0, atol=0)


@pytest.mark.parametrize("weighting", WEIGHTINGS)
@pytest.mark.parametrize("case", list(VOXEL_CASES))
def test_cuda_voxel_adjoint_test_in_float64(case, weighting):
    volume, _, gpu = _voxel_pair(case, weighting)
    generator = torch.Generator(device="cuda").manual_seed(2)
    x = torch.randn((2,) + volume.shape, generator=generator, device="cuda", dtype=torch.float64)
    y = torch.randn((2,) + gpu.range_shape, generator=generator, device="cuda", dtype=torch.float64)
    assert adjoint_mismatch(gpu, x, y) <= 1e-6


@pytest.mark.parametrize("dims", [2, 3])
def test_cuda_voxel_gradcheck(dims):
    if dims == 2:
        volume = ko.Volume((9, 11), spacing=(0.8, 1.1), offset=(0.3, -0.4))
        geometry = ko.FanBeam2D([0.0, math.pi / 4, 2.0], 30.0, 20.0, 13, 1.5, detector="curved")
    else:
        volume = ko.Volume((3, 4, 5))
        geometry = ko.ConeBeam3D([0.0, 1.0, 2.0], 20.0, 15.0, (4, 6), detector="curved")
    A = ko.RayTransform(volume, geometry, model="voxel").to("cuda")
    x = torch.randn((2,) + volume.shape, device="cuda", dtype=torch.float64, requires_grad=True)
    y = torch.randn((2,) + geometry.shape, device="cuda", dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(A, (x,))
    assert torch.autograd.gradcheck(A.T, (y,))


@pytest.mark.parametrize("case", ["2d_fan_flat", "3d_cone_curved"])
def test_cuda_voxel_back_projection_is_deterministic(case):
    """The back-projection gathers without atomics: bitwise the same every run (the forward splats with
    atomic adds, so only its value up to rounding is checked)."""
    volume, _, gpu = _voxel_pair(case)
    x = torch.rand((3,) + volume.shape, device="cuda")
    y = torch.rand((3,) + gpu.range_shape, device="cuda")
    first_adjoint, first_forward = gpu.T(y), gpu(x)
    for _ in range(3):
        assert torch.equal(gpu.T(y), first_adjoint)
        torch.testing.assert_close(gpu(x), first_forward, rtol=1e-5, atol=1e-6)


def test_cuda_voxel_non_contiguous_inputs_and_no_host_synchronisation():
    volume, _, gpu = _voxel_pair("3d_cone_flat_45_views")
    nz, ny, nx = volume.shape
    x = torch.rand(2, nz, nx, ny, device="cuda").transpose(-1, -2)
    assert not x.is_contiguous()
    torch.testing.assert_close(gpu(x), gpu(x.contiguous()), rtol=1e-5, atol=1e-6)
    x = x.contiguous().requires_grad_()
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        gpu.T(gpu(x)).sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    assert x.grad is not None


@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_cuda_voxel_opcheck(weighting):
    ops = torch.ops.known_ops
    A2 = ko.RayTransform(ko.Volume((5, 6)), ko.FanBeam2D([0.0, 1.0, 2.0], 30.0, 20.0, 9), model="voxel",
                         weighting=weighting).to("cuda")
    volume3 = ko.Volume((3, 4, 5))
    A3 = ko.RayTransform(volume3, ko.ConeBeam3D([0.0, 1.0, 2.0], 20.0, 15.0, (4, 6), detector="curved"), model="voxel",
                         weighting=weighting).to("cuda")
    for dtype in DTYPES:
        views = A2._views if dtype == torch.float64 else A2._views_f32
        image = torch.randn(2, 5, 6, device="cuda", dtype=dtype, requires_grad=True)
        sino = torch.randn(2, 3, 9, device="cuda", dtype=dtype, requires_grad=True)
        torch.library.opcheck(ops.voxel2d_forward, (image, views, 9, [1.0, 1.0], A2._fdk))
        torch.library.opcheck(ops.voxel2d_adjoint, (sino, views, 5, 6, [1.0, 1.0], A2._fdk))
        vol = torch.randn(2, 3, 4, 5, device="cuda", dtype=dtype, requires_grad=True)
        proj = torch.randn(2, 3, 4, 6, device="cuda", dtype=dtype, requires_grad=True)
        torch.library.opcheck(ops.voxel3d_forward, (vol, A3._frames, 4, 6, A3._fdk))
        torch.library.opcheck(ops.voxel3d_adjoint, (proj, A3._frames, 3, 4, 5, A3._fdk))


def test_cuda_fbp_and_fdk_agree_with_the_cpu():
    import phantoms
    import recon

    volume = ko.Volume((64, 64))
    geometry = ko.FanBeam2D(ko.uniform_angles(120, 2 * math.pi), 200.0, 100.0, 140, 1.0)
    y = phantoms.shepp_logan_projections(geometry, volume=volume)
    torch.testing.assert_close(recon.fbp(y.cuda(), volume, geometry).cpu(), recon.fbp(y, volume, geometry),
                               rtol=1e-4, atol=1e-5)
    volume3 = ko.Volume((16, 24, 24), 2.0)
    cone = ko.ConeBeam3D(ko.uniform_angles(40, 2 * math.pi), 150.0, 100.0, (20, 40), 2.0)
    y3 = torch.rand(cone.shape, dtype=torch.float32)
    torch.testing.assert_close(recon.fdk(y3.cuda(), volume3, cone).cpu(), recon.fdk(y3, volume3, cone),
                               rtol=1e-4, atol=1e-5)


def test_cuda_voxel_tensor_fed_to_the_cpu_op_is_a_clear_error():
    A = ko.RayTransform(VOLUME, GEOMETRIES["parallel"], model="voxel")
    with pytest.raises(ValueError, match=r"x is on cuda:0 .* tables are on cpu"):
        A(torch.zeros(VOLUME.shape, device="cuda"))
