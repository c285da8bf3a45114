"""The CPU kernels run on torch's threads (the extension is built with torch's parallel backend,
setup.py) and give bitwise the same results for any thread count (torch.set_num_threads)."""
from __future__ import annotations

import contextlib
import math
import os

import pytest
import torch

import known_ops as ko
from known_ops import _ops


@contextlib.contextmanager
def num_threads(n: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# One more thread than CPUs: an OpenMP runtime other than torch's (two runtimes in the process)
# would run the extension's loops on its own default team, one thread per CPU, and fail this.
@pytest.mark.parametrize("threads", sorted({1, 2, 3, _cpus() + 1}))
def test_parallel_for_runs_on_torch_threads(threads):
    """Fails for a serial build of the extension (every item on thread 0)."""
    with num_threads(threads):
        for _ in range(3):
            assert _ops._parallel_threads_used(64 * threads) == threads


THREAD_COUNTS = (2, 3, 4, 8)


def _operators():
    """(name, operator) pairs covering every CPU loop, at sizes that split unevenly."""
    image = ko.Volume((37, 29), spacing=(0.9, 1.1), offset=(0.7, -0.4))
    parallel = ko.ParallelBeam2D(ko.uniform_angles(23, math.pi, 0.05), 41, 1.1, 0.3)
    fan = ko.FanBeam2D(ko.uniform_angles(19, 2 * math.pi), 90.0, 60.0, 43, 1.6, detector="curved")
    yield "joseph2d_parallel", ko.RayTransform(image, parallel)
    yield "joseph2d_fan", ko.RayTransform(image, fan)
    yield "voxel2d_line", ko.RayTransform(image, parallel, model="voxel")
    yield "voxel2d_fdk", ko.RayTransform(image, fan, model="voxel", weighting="fdk")
    # 37 slices: 8 adjoint slabs, the last one partly filled
    volume = ko.Volume((37, 9, 11), spacing=(0.8, 1.0, 1.2), offset=(0.5, -0.3, 0.2))
    cone = ko.ConeBeam3D(ko.uniform_angles(7, 2 * math.pi), 80.0, 50.0, (31, 15), 1.7, (0.4, -0.6))
    curved = ko.ConeBeam3D(ko.uniform_angles(6, 2 * math.pi), 80.0, 50.0, (31, 15), 1.7, detector="curved")
    yield "joseph3d_cone", ko.RayTransform(volume, cone)
    yield "joseph3d_curved", ko.RayTransform(volume, curved)
    yield "joseph3d_parallel", ko.RayTransform(volume, ko.ParallelBeam3D(ko.uniform_angles(7, math.pi), (29, 17), 0.9))
    yield "voxel3d_line", ko.RayTransform(volume, curved, model="voxel")
    yield "voxel3d_fdk", ko.RayTransform(volume, cone, model="voxel", weighting="fdk")


def _results(A, x, y) -> dict[str, torch.Tensor]:
    """The forward, the adjoint and, for Joseph's pair, the gather form of the adjoint."""
    out = {"forward": A(x), "adjoint": A.T(y)}
    if A.model == "joseph" and A.volume.ndim == 2:
        rays, views = A._rays.to(y.dtype), A._views.to(y.dtype)
        out["adjoint_gather"] = _ops.joseph2d_adjoint_gather(y, rays, views, *A.domain_shape)
    elif A.model == "joseph":
        out["adjoint_gather"] = _ops.joseph3d_adjoint_gather(y, A._frames, *A.domain_shape)
    return out


@pytest.mark.parametrize("batch", [1, 5])  # 5: image groups of 8 (float) or 4 (double) partly filled
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_bitwise_the_same_for_any_thread_count(dtype, batch):
    generator = torch.Generator().manual_seed(batch)
    for name, A in _operators():
        x = torch.rand((batch,) + A.domain_shape, generator=generator, dtype=dtype)
        y = torch.rand((batch,) + A.range_shape, generator=generator, dtype=dtype)
        with num_threads(1):
            expected = _results(A, x, y)
        for threads in THREAD_COUNTS:
            with num_threads(threads):
                results = _results(A, x, y)
            for op, result in results.items():
                assert torch.equal(result, expected[op]), (name, op, threads)
