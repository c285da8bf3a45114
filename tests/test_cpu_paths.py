"""The CPU kernels have several code paths that must compute the same operator:
single images (SIMD along each ray) and batches (groups of 8 float / 4 double images
sharing each ray's arithmetic, the last group partly empty), and the AVX2 and the
portable builds of the inner loops (KNOWN_OPS_SIMD=0, read once per process), for Joseph's
pair and the voxel-driven pair."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import known_ops as ko
from conftest import adjoint_mismatch, relative_error

REPO = Path(__file__).resolve().parents[1]


def _operators():
    volume = ko.Volume((23, 31), spacing=(0.9, 1.2), offset=(1.5, -2.0))
    yield "parallel", ko.RayTransform(volume, ko.ParallelBeam2D(ko.uniform_angles(13, math.pi, 0.1), 41, 0.8, 0.6))
    yield "fan_flat", ko.RayTransform(volume, ko.FanBeam2D(ko.uniform_angles(17, 2 * math.pi), 90.0, 60.0, 37, 1.7))
    yield "fan_curved", ko.RayTransform(
        volume, ko.FanBeam2D(ko.uniform_angles(11, 2 * math.pi), 90.0, 60.0, 37, 1.7, 2.0, detector="curved")
    )
    # The voxel-driven pair: rows of voxels vectorised (31 and 11 columns: a partly filled last SIMD
    # group), both weightings, flat and curved detectors.
    fan_curved = ko.FanBeam2D(ko.uniform_angles(11, 2 * math.pi), 90.0, 60.0, 37, 1.7, 2.0, detector="curved")
    yield "voxel_parallel", ko.RayTransform(
        volume, ko.ParallelBeam2D(ko.uniform_angles(13, math.pi, 0.1), 41, 0.8, 0.6), model="voxel"
    )
    yield "voxel_fan_curved_fdk", ko.RayTransform(volume, fan_curved, model="voxel", weighting="fdk")
    volume_3d = ko.Volume((5, 9, 11), spacing=(1.1, 0.9, 1.2), offset=(0.4, -0.6, 0.8))
    for detector, weighting in (("flat", "fdk"), ("curved", "line")):
        cone = ko.ConeBeam3D(ko.uniform_angles(7, 2 * math.pi), 60.0, 40.0, (9, 17), 1.3, (0.5, -0.7), detector=detector)
        yield f"voxel_cone_{detector}_{weighting}", ko.RayTransform(volume_3d, cone, model="voxel", weighting=weighting)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [2, 5, 9, 17])
def test_batched_paths_equal_single_images(batch, dtype):
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    for name, A in _operators():
        x = torch.rand(batch, *A.domain_shape, dtype=dtype)
        y = torch.rand(batch, *A.range_shape, dtype=dtype)
        forward, adjoint = A(x), A.T(y)
        for b in range(batch):
            assert relative_error(forward[b], A(x[b])) <= tolerance, (name, b)
            assert relative_error(adjoint[b], A.T(y[b])) <= tolerance, (name, b)
        if dtype == torch.float64:
            assert adjoint_mismatch(A, x, y) <= 1e-12, name


_SCRIPT = """
import math, sys, torch
sys.path.insert(0, {tests!r})
from test_cpu_paths import _operators
torch.manual_seed(0)
out = {{}}
for name, A in _operators():
    for dtype in (torch.float32, torch.float64):
        for batch in (1, 6):
            x = torch.rand(batch, *A.domain_shape, dtype=dtype)
            y = torch.rand(batch, *A.range_shape, dtype=dtype)
            out[f"{{name}}/{{dtype}}/{{batch}}"] = (A(x), A.T(y))
torch.save(out, sys.argv[1])
"""


def _run_with(env_simd: str, path: Path) -> dict:
    env = dict(os.environ, KNOWN_OPS_SIMD=env_simd)
    script = _SCRIPT.format(tests=str(REPO / "tests"))
    subprocess.run([sys.executable, "-c", script, str(path)], check=True, env=env, cwd=REPO)
    return torch.load(path)


def test_portable_and_simd_builds_agree(tmp_path):
    simd = _run_with("1", tmp_path / "simd.pt")
    portable = _run_with("0", tmp_path / "portable.pt")
    assert simd.keys() == portable.keys()
    for key in simd:
        tolerance = 1e-5 if "float32" in key else 1e-12
        for a, b in zip(simd[key], portable[key]):
            assert relative_error(a, b) <= tolerance, key
    # Each build is deterministic on its own.
    again = _run_with("0", tmp_path / "portable_again.pt")
    for key in portable:
        for a, b in zip(portable[key], again[key]):
            assert torch.equal(a, b), key
