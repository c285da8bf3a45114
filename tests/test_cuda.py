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
