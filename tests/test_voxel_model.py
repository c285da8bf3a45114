"""The voxel-driven pair, RayTransform(model="voxel"): exact adjoint over random 2D and 3D
geometries, gradients, registered ops, determinism, and the physics (its forward approximates
line integrals as well as Joseph's method does)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import known_ops as ko
import phantoms
from conftest import (
    GEOMETRY_KINDS,
    GEOMETRY_KINDS_3D,
    adjoint_mismatch,
    random_geometry,
    random_geometry_3d,
    random_volume,
    random_volume_3d,
    relative_error,
)


@pytest.mark.parametrize("kind", GEOMETRY_KINDS)
@pytest.mark.parametrize("seed", range(8))
def test_adjoint_2d(kind, seed):
    rng = np.random.default_rng(seed)
    vol = random_volume(rng)
    A = ko.RayTransform(vol, random_geometry(rng, vol, kind), model="voxel")
    x = torch.randn((2,) + A.domain_shape, dtype=torch.float64)
    y = torch.randn((2,) + A.range_shape, dtype=torch.float64)
    assert adjoint_mismatch(A, x, y) <= 1e-6


@pytest.mark.parametrize("kind", GEOMETRY_KINDS_3D)
@pytest.mark.parametrize("seed", range(4))
def test_adjoint_3d(kind, seed):
    rng = np.random.default_rng(100 + seed)
    vol = random_volume_3d(rng)
    A = ko.RayTransform(vol, random_geometry_3d(rng, vol, kind), model="voxel")
    x = torch.randn((2,) + A.domain_shape, dtype=torch.float64)
    y = torch.randn((2,) + A.range_shape, dtype=torch.float64)
    assert adjoint_mismatch(A, x, y) <= 1e-6


SMALL = [
    (ko.Volume((5, 6), (0.9, 1.1)), ko.FanBeam2D(ko.uniform_angles(3, 2 * math.pi), 40.0, 30.0, 9, 1.5, 0.3)),
    (ko.Volume((3, 4, 5)), ko.ConeBeam3D(ko.uniform_angles(3, 2 * math.pi), 40.0, 30.0, (4, 6), 1.5, detector="curved")),
]


@pytest.mark.parametrize("vol, geo", SMALL, ids=["fan", "cone-curved"])
def test_gradcheck_and_gradgradcheck(vol, geo):
    A = ko.RayTransform(vol, geo, model="voxel")
    x = torch.randn((1,) + A.domain_shape, dtype=torch.float64, requires_grad=True)
    y = torch.randn((1,) + A.range_shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(A, (x,))
    assert torch.autograd.gradcheck(A.T, (y,))
    assert torch.autograd.gradgradcheck(A, (x,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weighting", ["line", "fdk"])
def test_opcheck(dtype, weighting):
    ops = torch.ops.known_ops
    vol2, geo2 = SMALL[0]
    A2 = ko.RayTransform(vol2, geo2, model="voxel", weighting=weighting)
    views = A2._views if dtype == torch.float64 else A2._views_f32
    spacing = list(vol2.spacing)
    torch.library.opcheck(ops.voxel2d_forward, (torch.randn(2, 5, 6, dtype=dtype), views, 9, spacing, A2._fdk))
    torch.library.opcheck(ops.voxel2d_adjoint, (torch.randn(2, 3, 9, dtype=dtype), views, 5, 6, spacing, A2._fdk))
    vol3, geo3 = SMALL[1]
    A3 = ko.RayTransform(vol3, geo3, model="voxel", weighting=weighting)
    torch.library.opcheck(ops.voxel3d_forward, (torch.randn(2, 3, 4, 5, dtype=dtype), A3._frames, 4, 6, A3._fdk))
    torch.library.opcheck(ops.voxel3d_adjoint, (torch.randn(2, 3, 4, 6, dtype=dtype), A3._frames, 3, 4, 5, A3._fdk))


@pytest.mark.parametrize("kind", ["parallel", "fan_flat", "fan_curved"])
def test_fdk_weighting_adjoint_and_weights(kind):
    """The FDK-weighted pair is matched too, and its back-projection of ones at a voxel is
    sum_views D_so D_sd / L^2 (interpolating a constant gives the constant)."""
    rng = np.random.default_rng(7)
    vol = random_volume(rng)
    geo = random_geometry(rng, vol, kind)
    A = ko.RayTransform(vol, geo, model="voxel", weighting="fdk")
    x = torch.randn((2,) + A.domain_shape, dtype=torch.float64)
    y = torch.randn((2,) + A.range_shape, dtype=torch.float64)
    assert adjoint_mismatch(A, x, y) <= 1e-6
    if kind == "parallel":
        # Weight 1: the back-projection of ones is the number of views whose detector sees the pixel.
        bp = A.T(torch.ones(A.range_shape, dtype=torch.float64))
        assert float(bp.max()) <= geo.n_views + 1e-9


@pytest.mark.parametrize("vol, geo", SMALL, ids=["fan", "cone-curved"])
def test_bitwise_the_same_for_any_thread_count(vol, geo):
    A = ko.RayTransform(vol, geo, model="voxel")
    x = torch.rand((3,) + A.domain_shape)
    y = torch.rand((3,) + A.range_shape)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = (A(x), A.T(y))
        torch.set_num_threads(max(2, threads))
        many = (A(x), A.T(y))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], many[0]) and torch.equal(one[1], many[1])


def test_float32_matches_float64_and_view_subsets_work():
    vol, geo = SMALL[1]
    A = ko.RayTransform(vol, geo, model="voxel")
    x = torch.rand((2,) + A.domain_shape, dtype=torch.float64)
    assert relative_error(A(x.float()).double(), A(x)) < 1e-5
    assert torch.allclose(A(x, views=[2, 0]), A(x)[..., [2, 0], :, :])


# Relative L2 error against the exact line integrals (Shepp-Logan, modified), measured here:
# 2D 256^2 at 1 mm: parallel 1.41 %, flat fan 1.40 %, curved fan 1.55 % (Joseph: 1.31, 1.24, 1.36 %);
# 3D 64^3 at 2 mm, flat cone: 7.80 % (Joseph 7.61 %).  Bounds as for Joseph's method (2.5 h/R in
# 2D, 3.6 h/R in 3D; tests/test_analytic*.py).
@pytest.mark.parametrize(
    "geo",
    [
        ko.ParallelBeam2D(ko.uniform_angles(90, math.pi), 367, 1.0),
        ko.FanBeam2D(ko.uniform_angles(90, 2 * math.pi), 500.0, 500.0, 400, 2.0),
        ko.FanBeam2D(ko.uniform_angles(90, 2 * math.pi), 500.0, 500.0, 400, 2.0, detector="curved"),
    ],
    ids=["parallel", "fan-flat", "fan-curved"],
)
def test_forward_approximates_line_integrals_2d(geo):
    vol = ko.Volume((256, 256), 1.0)
    x = phantoms.shepp_logan(vol, dtype=torch.float64)
    exact = phantoms.shepp_logan_projections(geo, dtype=torch.float64)
    assert relative_error(ko.RayTransform(vol, geo, model="voxel")(x), exact) < 2.5 * 1.0 / 128


def test_forward_approximates_line_integrals_3d():
    vol = ko.Volume((64, 64, 64), 2.0)
    geo = ko.ConeBeam3D(ko.uniform_angles(24, 2 * math.pi), 400.0, 400.0, (64, 96), 4.0)
    x = phantoms.shepp_logan_3d(vol, dtype=torch.float64, scale=64.0)
    exact = phantoms.shepp_logan_3d_projections(geo, scale=64.0, dtype=torch.float64)
    assert relative_error(ko.RayTransform(vol, geo, model="voxel")(x), exact) < 3.6 * 2.0 / 64
