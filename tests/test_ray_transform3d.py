"""3D RayTransform: matched adjoint, gather = scatter, gradients, registered ops, torch.compile, batching,
determinism, view subsets, consistency with the 2D operators, physics sanity."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import known_ops as ko
from conftest import (
    GEOMETRY_KINDS_3D,
    SPECIAL_ANGLES,
    adjoint_mismatch,
    assert_batch_dims_give_per_item_results,
    assert_gradients_are_normal_operators,
    random_geometry_3d,
    random_volume_3d,
    relative_error,
)

ADJOINT_SEEDS = range(12)
GATHER_SEEDS = range(6)
ops = torch.ops.known_ops


def _small_operators():
    """One tiny operator per 3D geometry family (odd, anisotropic, off-centre grid; detector offsets)."""
    volume = ko.Volume((5, 6, 7), spacing=(0.9, 1.1, 0.8), offset=(0.2, -0.3, 0.4))
    angles = [0.0, math.pi / 4, 2.0]
    rng = np.random.default_rng(7)
    geometries = {
        "parallel": ko.ParallelBeam3D(angles, (6, 9), (1.0, 1.1), det_offset=(0.3, -0.2)),
        "cone_flat": ko.ConeBeam3D(angles, 30.0, 20.0, (6, 9), (1.6, 1.7), det_offset=(-0.5, 0.4)),
        "cone_curved": ko.ConeBeam3D(angles, 30.0, 20.0, (6, 9), (1.6, 1.5), det_offset=(0.5, 0.5), detector="curved"),
        "helical": ko.ConeBeam3D(angles, 30.0, 20.0, (4, 9), 1.6, pitch=6.0, detector="curved"),
        "cone_vectors": random_geometry_3d(rng, volume, "cone_vectors"),
    }
    return {name: ko.RayTransform(volume, geo) for name, geo in geometries.items()}


SMALL_OPERATORS = _small_operators()
FAMILIES = list(SMALL_OPERATORS)


def _random_pair(A: ko.RayTransform, seed: int = 0, lead: tuple[int, ...] = (), dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(lead + A.domain_shape, generator=generator, dtype=dtype)
    y = torch.randn(lead + A.range_shape, generator=generator, dtype=dtype)
    return x, y


def test_small_operators_see_the_volume_in_every_view():
    """Guard for the tests below: every view of every small operator has rays through the volume."""
    for name, A in SMALL_OPERATORS.items():
        hits = torch.count_nonzero(A(torch.ones(A.domain_shape, dtype=torch.float64)), dim=(-2, -1))
        assert torch.all(hits > 0), (name, hits)


def _assert_gather_equals_scatter(A: ko.RayTransform, y: torch.Tensor) -> None:
    scatter = ops.joseph3d_adjoint(y[None], A._frames, *A.domain_shape)
    gather = ops.joseph3d_adjoint_gather(y[None], A._frames, *A.domain_shape)
    assert relative_error(gather, scatter) <= 1e-12, A.geometry


# --- (a) the adjoint test over random geometries ------------------------------------------------------


@pytest.mark.parametrize("seed", ADJOINT_SEEDS)
@pytest.mark.parametrize("kind", GEOMETRY_KINDS_3D)
def test_adjoint_matches_over_random_geometries(kind, seed):
    rng = np.random.default_rng([seed, GEOMETRY_KINDS_3D.index(kind)])
    volume = random_volume_3d(rng)
    geometry = random_geometry_3d(rng, volume, kind)
    A = ko.RayTransform(volume, geometry)
    x, y = _random_pair(A, seed)
    if torch.count_nonzero(A(x)) == 0:  # the detector misses the volume: then A.T must vanish too
        assert torch.count_nonzero(A.T(y)) == 0, (volume, geometry)
        return
    assert adjoint_mismatch(A, x, y) <= 1e-6, (volume, geometry)


def test_random_geometries_mostly_see_the_volume():
    """Guard for the random adjoint test: most random geometries project something (the test is not vacuous)."""
    seen = 0
    for kind in GEOMETRY_KINDS_3D:
        for seed in ADJOINT_SEEDS:
            rng = np.random.default_rng([seed, GEOMETRY_KINDS_3D.index(kind)])
            volume = random_volume_3d(rng)
            A = ko.RayTransform(volume, random_geometry_3d(rng, volume, kind))
            seen += bool(torch.count_nonzero(A(torch.ones(volume.shape, dtype=torch.float64))))
    assert seen >= 0.8 * len(GEOMETRY_KINDS_3D) * len(ADJOINT_SEEDS)


@pytest.mark.parametrize("angle", SPECIAL_ANGLES)
@pytest.mark.parametrize("family", ["parallel", "cone_flat", "cone_curved", "helical"])
def test_adjoint_at_grid_aligned_angles(family, angle):
    """Rays exactly along rows, columns or diagonals on a cubic grid (ties of the major axis, samples on
    voxel edges)."""
    volume = ko.Volume((8, 8, 8))
    if family == "parallel":
        geometry = ko.ParallelBeam3D([angle], (8, 12), 1.0)
    else:
        detector = "flat" if family == "cone_flat" else "curved"
        pitch = 5.0 if family == "helical" else 0.0
        geometry = ko.ConeBeam3D([angle, angle + 0.5], 20.0, 10.0, (10, 12), 1.5, detector=detector, pitch=pitch)
    A = ko.RayTransform(volume, geometry)
    x, y = _random_pair(A, 3)
    assert adjoint_mismatch(A, x, y) <= 1e-6
    _assert_gather_equals_scatter(A, y)


# Directions with two or three equal components: ties of the major axis between x, y and z.
TIE_DIRECTIONS = [(0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1), (1, 1, 1), (1, -1, 1), (-1, 1, -1)]


@pytest.mark.parametrize("direction", TIE_DIRECTIONS, ids=[str(d) for d in TIE_DIRECTIONS])
def test_adjoint_for_rays_along_axes_and_diagonals(direction):
    volume = ko.Volume((7, 8, 9))
    r = np.asarray(direction, dtype=np.float64)
    helper = np.array([1.0, 0.0, 0.0]) if abs(r[0]) < max(abs(r[1]), abs(r[2])) else np.array([0.0, 1.0, 0.0])
    u = np.cross(r, helper)
    u /= np.linalg.norm(u)
    v = np.cross(r, u) / np.linalg.norm(r)
    parallel = ko.ParallelBeam3D.from_vectors(np.concatenate([r, [0.2, -0.1, 0.3], 0.7 * u, 0.9 * v])[None], (17, 19))
    # A cone whose central ray runs along the same direction (its other rays are near-ties).
    source = -30.0 * r / np.linalg.norm(r)
    cone = ko.ConeBeam3D.from_vectors(np.concatenate([source, -source, 1.5 * u, 1.5 * v])[None], (17, 19))
    for geometry in (parallel, cone):
        A = ko.RayTransform(volume, geometry)
        x, y = _random_pair(A, 5)
        assert adjoint_mismatch(A, x, y) <= 1e-6, geometry
        _assert_gather_equals_scatter(A, y)


def test_adjoint_with_batch_dims_and_in_float32():
    A = SMALL_OPERATORS["cone_curved"]
    x, y = _random_pair(A, 0, lead=(2, 3))
    assert adjoint_mismatch(A, x, y) <= 1e-6
    assert adjoint_mismatch(A, x.float(), y.float()) <= 1e-5


# --- (b) the voxel-driven adjoint (the CUDA algorithm) equals the scatter adjoint ------------------------


@pytest.mark.parametrize("seed", GATHER_SEEDS)
@pytest.mark.parametrize("kind", GEOMETRY_KINDS_3D)
def test_gather_adjoint_equals_scatter_adjoint(kind, seed):
    rng = np.random.default_rng([seed, 100 + GEOMETRY_KINDS_3D.index(kind)])
    volume = random_volume_3d(rng)
    A = ko.RayTransform(volume, random_geometry_3d(rng, volume, kind))
    generator = torch.Generator().manual_seed(seed)
    proj = torch.randn((2,) + A.range_shape, generator=generator, dtype=torch.float64)
    # Rounding differences scale with |proj| times the largest sample weight (mm per major step, at most
    # the voxel diagonal); this bound also covers detectors that miss the volume (both adjoints zero).
    scale = float(torch.linalg.vector_norm(proj)) * math.sqrt(sum(s * s for s in volume.spacing))
    for dtype, tolerance in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        scatter = ops.joseph3d_adjoint(proj.to(dtype), A._frames, *volume.shape)
        gather = ops.joseph3d_adjoint_gather(proj.to(dtype), A._frames, *volume.shape)
        assert gather.dtype == dtype and gather.shape == (2,) + volume.shape
        difference = float(torch.linalg.vector_norm((gather - scatter).double()))
        assert difference <= tolerance * scale, (dtype, volume, A.geometry)


@pytest.mark.parametrize("detector", ["flat", "curved"])
def test_gather_adjoint_equals_scatter_adjoint_on_a_larger_problem(detector):
    volume = ko.Volume((20, 24, 22), spacing=(1.2, 1.0, 1.1), offset=(1.0, -2.0, 0.5))
    geometry = ko.ConeBeam3D(
        ko.uniform_angles(12, 4 * math.pi, start=0.1), 60.0, 40.0, (16, 40), (1.8, 1.6), det_offset=(2.0, -3.0),
        detector=detector, pitch=10.0,
    )
    A = ko.RayTransform(volume, geometry)
    proj = torch.rand((1,) + geometry.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    scatter = ops.joseph3d_adjoint(proj, A._frames, *volume.shape)
    gather = ops.joseph3d_adjoint_gather(proj, A._frames, *volume.shape)
    assert relative_error(gather, scatter) <= 1e-12
    assert torch.count_nonzero(scatter) > 0.5 * scatter.numel()


# --- (c) gradients ------------------------------------------------------------------------------------


def _tiny(family: str) -> ko.RayTransform:
    """A tiny version of a small operator (gradgradcheck builds dense Jacobians)."""
    volume = ko.Volume((3, 4, 5), spacing=(0.9, 1.1, 0.8), offset=(0.2, -0.3, 0.4))
    angles = [0.3, 2.0]
    geometry = {
        "parallel": lambda: ko.ParallelBeam3D(angles, (3, 5), (1.2, 1.3), det_offset=(0.1, -0.2)),
        "cone_flat": lambda: ko.ConeBeam3D(angles, 20.0, 15.0, (3, 5), (2.0, 2.2), det_offset=(-0.3, 0.4)),
        "cone_curved": lambda: ko.ConeBeam3D(angles, 20.0, 15.0, (3, 5), 2.0, det_offset=0.3, detector="curved"),
        "helical": lambda: ko.ConeBeam3D(angles, 20.0, 15.0, (3, 5), 2.0, pitch=4.0, detector="flat"),
        "cone_vectors": lambda: ko.ConeBeam3D.from_vectors(
            SMALL_OPERATORS["cone_vectors"].geometry.to_vectors()[:2], (3, 5)
        ),
    }[family]()
    return ko.RayTransform(volume, geometry)


@pytest.mark.parametrize("family", FAMILIES)
def test_gradcheck_and_gradgradcheck(family):
    A = _tiny(family)
    x, y = _random_pair(A, 0)
    assert torch.count_nonzero(A(x)) > 0
    x.requires_grad_()
    y.requires_grad_()
    assert torch.autograd.gradcheck(A, (x,))
    assert torch.autograd.gradcheck(A.T, (y,))
    assert torch.autograd.gradgradcheck(A, (x,))
    assert torch.autograd.gradgradcheck(A.T, (y,))


def test_gradcheck_with_batch_dims():
    A = _tiny("cone_flat")
    x = torch.randn((2,) + A.domain_shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: A.T(A(t)), (x,))


def test_gradcheck_of_the_gather_op():
    A = _tiny("cone_curved")
    y = torch.randn((1,) + A.range_shape, dtype=torch.float64, requires_grad=True)
    gather = lambda p: ops.joseph3d_adjoint_gather(p, A._frames, *A.domain_shape)  # noqa: E731
    assert torch.autograd.gradcheck(gather, (y,))
    assert torch.autograd.gradgradcheck(gather, (y,))


@pytest.mark.parametrize("family", FAMILIES)
def test_backward_of_squared_norm_is_twice_normal_operator(family):
    assert_gradients_are_normal_operators(SMALL_OPERATORS[family])


# --- (d) opcheck on the registered ops ----------------------------------------------------------------


OP_NAMES_3D = ["joseph3d_forward", "joseph3d_adjoint", "joseph3d_adjoint_gather"]


def _opcheck_samples(dtype: torch.dtype):
    A = SMALL_OPERATORS["cone_curved"]
    frames = A._frames  # float64 for every data dtype
    nz, ny, nx = A.domain_shape
    n_rows, n_cols = A.geometry.det_shape
    generator = torch.Generator().manual_seed(0)
    volume = torch.randn((2, nz, ny, nx), generator=generator).to(dtype).requires_grad_()
    proj = torch.randn((2,) + A.range_shape, generator=generator).to(dtype).requires_grad_()
    return {
        "joseph3d_forward": (volume, frames, n_rows, n_cols),
        "joseph3d_adjoint": (proj, frames, nz, ny, nx),
        "joseph3d_adjoint_gather": (proj, frames, nz, ny, nx),
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("op_name", OP_NAMES_3D)
def test_opcheck(op_name, dtype):
    args = _opcheck_samples(dtype)[op_name]
    op = getattr(ops, op_name)
    torch.library.opcheck(op, args)
    # Without requires_grad as well (the no-autograd path of the dispatcher).
    torch.library.opcheck(op, tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args))


def test_ops_run_on_meta_tensors_with_the_right_shapes():
    A = SMALL_OPERATORS["parallel"]
    frames = A._frames.to("meta")
    nz, ny, nx = A.domain_shape
    proj = ops.joseph3d_forward(torch.empty(4, nz, ny, nx, device="meta"), frames, *A.geometry.det_shape)
    assert proj.shape == (4,) + A.range_shape and proj.device.type == "meta"
    for op in (ops.joseph3d_adjoint, ops.joseph3d_adjoint_gather):
        volume = op(proj, frames, nz, ny, nx)
        assert volume.shape == (4, nz, ny, nx) and volume.dtype == torch.float32 and volume.device.type == "meta"


def test_frames_of_the_registered_op_match_the_operator():
    A = SMALL_OPERATORS["cone_flat"]
    volume = A.volume
    frames = ops.joseph3d_frames(
        torch.from_numpy(A.geometry.to_vectors()), A.geometry._kind, *A.geometry.det_shape, *volume.shape,
        list(volume.spacing) + list(volume.offset),
    )
    assert frames.dtype == torch.float64 and frames.shape == (A.geometry.n_views, 44)
    assert torch.equal(frames, A._frames)


# --- (e) torch.compile ---------------------------------------------------------------------------------


class _NormalOperator(torch.nn.Module):
    """x -> A.T(A(x)) - x: a module that uses both projectors (on a subset of the views when given)."""

    def __init__(self, A: ko.RayTransform, views=None):
        super().__init__()
        self.A = A
        self.views = views

    def forward(self, x):
        return self.A.T(self.A(x, views=self.views), views=self.views) - x


def _compiled_matches_eager(module: _NormalOperator) -> None:
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True)
    x = torch.rand((2,) + module.A.domain_shape, generator=torch.Generator().manual_seed(0), requires_grad=True)
    out = compiled(x)
    expected = module(x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    (expected_grad,) = torch.autograd.grad(module(x).square().sum(), x)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", ["cone_flat", "cone_curved", "parallel"])
def test_torch_compile_fullgraph_matches_eager(family):
    _compiled_matches_eager(_NormalOperator(SMALL_OPERATORS[family]))


def test_torch_compile_fullgraph_with_a_view_subset():
    """Ordered subsets inside a compiled training step (the use case named in RayTransform's docstring)."""
    _compiled_matches_eager(_NormalOperator(SMALL_OPERATORS["cone_flat"], views=[2, 0]))


# --- (f) leading dims, layouts, dtypes -----------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_and_channel_dims_equal_per_item_results(family):
    assert_batch_dims_give_per_item_results(SMALL_OPERATORS[family], adjoint_atol=1e-14)


def test_empty_batch_gives_empty_output():
    A = SMALL_OPERATORS["cone_flat"]
    assert A(torch.zeros((0,) + A.domain_shape)).shape == (0,) + A.range_shape
    assert A.T(torch.zeros((2, 0) + A.range_shape)).shape == (2, 0) + A.domain_shape


@pytest.mark.parametrize("family", FAMILIES)
def test_non_contiguous_inputs_equal_contiguous(family):
    A = SMALL_OPERATORS[family]
    nz, ny, nx = A.domain_shape
    n_views, n_rows, n_cols = A.range_shape
    transposed = torch.rand(3, nx, ny, nz, dtype=torch.float64).permute(0, 3, 2, 1)
    sliced = torch.rand(2 * nz, ny, 3 * nx, dtype=torch.float64)[::2, :, 1::3]
    channels_last = torch.rand(2, nz, ny, nx, 3, dtype=torch.float64).permute(0, 4, 1, 2, 3)
    for x in (transposed, sliced, channels_last):
        assert not x.is_contiguous()
        torch.testing.assert_close(A(x), A(x.contiguous()), rtol=1e-13, atol=0)
    expanded = torch.rand(n_views, n_rows, n_cols, dtype=torch.float64).expand(4, n_views, n_rows, n_cols)
    proj_sliced = torch.rand(n_views, n_rows, 2 * n_cols, dtype=torch.float64)[:, :, ::2]
    proj_transposed = torch.rand(n_cols, n_rows, n_views, dtype=torch.float64).permute(2, 1, 0)
    for y in (expanded, proj_sliced, proj_transposed):
        assert not y.is_contiguous()
        torch.testing.assert_close(A.T(y), A.T(y.contiguous()), rtol=1e-13, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_float32_agrees_with_float64(family):
    A = SMALL_OPERATORS[family]
    x = torch.rand((2,) + A.domain_shape, dtype=torch.float64)
    y = torch.rand((2,) + A.range_shape, dtype=torch.float64)
    Ax32, ATy32 = A(x.float()), A.T(y.float())
    assert Ax32.dtype == torch.float32 and ATy32.dtype == torch.float32
    assert relative_error(Ax32, A(x)) <= 1e-5
    assert relative_error(ATy32, A.T(y)) <= 1e-5
    gather32 = ops.joseph3d_adjoint_gather(y.float(), A._frames, *A.domain_shape)
    assert relative_error(gather32, A.T(y)) <= 1e-5


def test_module_dtype_casts_keep_the_geometry_exact():
    """`model.float()` / `.half()` on a network holding A must not round A's frames."""
    volume = ko.Volume((24, 24, 24))
    geometry = ko.ConeBeam3D(ko.uniform_angles(6, 2 * math.pi), 200.0, 100.0, (20, 30), 1.7, detector="curved")
    x = torch.rand(volume.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = ko.RayTransform(volume, geometry)(x)
    for cast in ("float", "half", "double"):
        A = getattr(ko.RayTransform(volume, geometry), cast)()
        assert A._frames.dtype == torch.float64
        assert relative_error(A(x), expected) <= 1e-14, cast
    assert relative_error(ko.RayTransform(volume, geometry).half()(x.float()), expected) <= 1e-5


def test_adjoint_module_is_consistent():
    A = SMALL_OPERATORS["cone_curved"]
    assert A.T.T is A
    assert A.T is A.T
    assert list(A.parameters()) == [] and len(A.state_dict()) == 0
    assert "joseph" in repr(A) and "adjoint" in repr(A.T) and "ConeBeam3D" in repr(A)
    assert A.domain_shape == (5, 6, 7) and A.range_shape == (3, 6, 9)


# --- (g) determinism ------------------------------------------------------------------------------------


def _determinism_operator(detector: str) -> ko.RayTransform:
    volume = ko.Volume((24, 28, 26), spacing=(1.0, 0.9, 1.1))
    geometry = ko.ConeBeam3D(ko.uniform_angles(16, 2 * math.pi), 80.0, 50.0, (20, 36), 1.6, detector=detector)
    return ko.RayTransform(volume, geometry)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("detector", ["flat", "curved"])
def test_same_input_gives_bitwise_identical_output(detector, batch):
    A = _determinism_operator(detector)
    generator = torch.Generator().manual_seed(batch)
    x = torch.rand((batch,) + A.domain_shape, generator=generator)
    y = torch.rand((batch,) + A.range_shape, generator=generator)
    first_forward, first_adjoint = A(x), A.T(y)
    first_gather = ops.joseph3d_adjoint_gather(y, A._frames, *A.domain_shape)
    for _ in range(3):
        assert torch.equal(A(x), first_forward)
        assert torch.equal(A.T(y), first_adjoint)
        assert torch.equal(ops.joseph3d_adjoint_gather(y, A._frames, *A.domain_shape), first_gather)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_output_does_not_depend_on_the_thread_count(dtype, batch):
    A = _determinism_operator("curved")
    generator = torch.Generator().manual_seed(0)
    x = torch.rand((batch,) + A.domain_shape, generator=generator, dtype=dtype)
    y = torch.rand((batch,) + A.range_shape, generator=generator, dtype=dtype)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = (A(x), A.T(y), ops.joseph3d_adjoint_gather(y, A._frames, *A.domain_shape))
        torch.set_num_threads(2)
        double = (A(x), A.T(y), ops.joseph3d_adjoint_gather(y, A._frames, *A.domain_shape))
    finally:
        torch.set_num_threads(threads)
    for name, one, two in zip(("forward", "adjoint", "gather"), single, double):
        assert torch.equal(one, two), name


# --- (v) view subsets -------------------------------------------------------------------------------------


def _views_operator() -> ko.RayTransform:
    volume = ko.Volume((6, 7, 8), spacing=(1.1, 0.9, 1.0), offset=(0.3, 0.0, -0.2))
    geometry = ko.ConeBeam3D(ko.uniform_angles(7, 2 * math.pi), 30.0, 20.0, (5, 9), 1.8, detector="curved", pitch=4.0)
    return ko.RayTransform(volume, geometry)


SUBSETS = {
    "list": ([4, 0, 2], [4, 0, 2]),
    "negative": ([-1, -7, 3], [6, 0, 3]),
    "repeated": ([2, 2, 5], [2, 2, 5]),
    "single": ([3], [3]),
    "numpy": (np.array([5, 1], dtype=np.int32), [5, 1]),
    "tensor": (torch.tensor([1, 6, 0]), [1, 6, 0]),
    "range": (range(1, 7, 2), [1, 3, 5]),
    "slice": (slice(None, None, 3), [0, 3, 6]),
    "negative-slice": (slice(-2, None), [5, 6]),
    "reversed-slice": (slice(None, None, -1), [6, 5, 4, 3, 2, 1, 0]),
    "tuple": ((0, 6), [0, 6]),
}


@pytest.mark.parametrize("name", list(SUBSETS))
def test_forward_of_a_view_subset_equals_selected_views(name):
    views, indices = SUBSETS[name]
    A = _views_operator()
    x = torch.rand((2,) + A.domain_shape, dtype=torch.float64)
    full = A(x)
    subset = A(x, views=views)
    assert subset.shape == (2, len(indices)) + A.range_shape[1:]
    assert torch.equal(subset, full[:, indices])
    assert torch.equal(A(x.float(), views=views), A(x.float())[:, indices])


@pytest.mark.parametrize("name", list(SUBSETS))
def test_adjoint_of_a_view_subset_equals_the_adjoint_of_zero_filled_projections(name):
    views, indices = SUBSETS[name]
    A = _views_operator()
    y_sub = torch.rand((2, len(indices)) + A.range_shape[1:], dtype=torch.float64)
    y_full = torch.zeros((2,) + A.range_shape, dtype=torch.float64)
    y_full.index_add_(1, torch.tensor(indices), y_sub)  # repeated views add up
    expected = A.T(y_full)
    result = A.T(y_sub, views=views)
    assert result.shape == (2,) + A.domain_shape
    torch.testing.assert_close(result, expected, rtol=1e-12, atol=1e-13)
    gather = ops.joseph3d_adjoint_gather(y_sub, A._frames[torch.tensor(indices)], *A.domain_shape)
    torch.testing.assert_close(gather, expected, rtol=1e-12, atol=1e-13)


def test_subset_adjoint_pair_and_autograd():
    A = _views_operator()
    views = [5, -2, 1]
    x = torch.randn(A.domain_shape, dtype=torch.float64, requires_grad=True)
    y = torch.randn((3,) + A.range_shape[1:], dtype=torch.float64, requires_grad=True)
    Ax, ATy = A(x, views=views), A.T(y, views=views)
    with torch.no_grad():
        mismatch = abs(float(torch.sum(Ax * y) - torch.sum(x * ATy))) / float(Ax.norm() * y.norm())
    assert mismatch <= 1e-12
    # The backward of the subset forward is the subset adjoint and vice versa.
    (grad_x,) = torch.autograd.grad(torch.sum(Ax * y.detach()), x)
    torch.testing.assert_close(grad_x, A.T(y.detach(), views=views), rtol=1e-12, atol=1e-13)
    (grad_y,) = torch.autograd.grad(torch.sum(ATy * x.detach()), y)
    torch.testing.assert_close(grad_y, A(x.detach(), views=views), rtol=1e-12, atol=1e-13)
    small = _tiny("helical")
    xs = torch.randn(small.domain_shape, dtype=torch.float64, requires_grad=True)
    ys = torch.randn((1,) + small.range_shape[1:], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: small(t, views=[-1]), (xs,))
    assert torch.autograd.gradcheck(lambda t: small.T(t, views=[1]), (ys,))
    assert torch.autograd.gradgradcheck(lambda t: small(t, views=[1]), (xs,))


@pytest.mark.parametrize(
    "views, error, message",
    [
        ([7], ValueError, r"views must index the geometry's 7 views"),
        ([-8], ValueError, r"views must index the geometry's 7 views"),
        ([0, 100], ValueError, r"views must index"),
        ([], ValueError, "views must not be empty"),
        (range(0), ValueError, "views must not be empty"),
        (slice(3, 3), ValueError, "views must not be empty"),
        (torch.tensor([], dtype=torch.int64), ValueError, "views must not be empty"),
        ([[0, 1]], ValueError, "views must be one-dimensional"),
        (torch.tensor([[0, 1]]), ValueError, "views must be one-dimensional"),
        ([0.0, 1.0], TypeError, "views must be integer view indices"),
        (["a"], TypeError, "views must be integer view indices"),
        (torch.tensor([0.0]), TypeError, "views must hold integer view indices"),
        (torch.tensor([True]), TypeError, "views must hold integer view indices"),
        ("01", TypeError, "views must be integer view indices"),
    ],
    ids=[
        "too-large", "too-negative", "one-bad", "empty-list", "empty-range", "empty-slice", "empty-tensor",
        "2d-list", "2d-tensor", "float-list", "str-list", "float-tensor", "bool-tensor", "str",
    ],
)
def test_bad_view_indices(views, error, message):
    A = _views_operator()
    x = torch.zeros(A.domain_shape)
    with pytest.raises(error, match=message):
        A(x, views=views)
    with pytest.raises(error, match=message):
        A.T(torch.zeros((1,) + A.range_shape[1:]), views=views)


def test_subset_adjoint_checks_the_number_of_views():
    A = _views_operator()
    with pytest.raises(ValueError, match=r"y must have shape \(\.\.\., 2, 5, 9\)"):
        A.T(torch.zeros(A.range_shape), views=[0, 1])


# --- (w) consistency with the 2D operators ------------------------------------------------------------


FAN_CASES = [("flat", 0.0), ("flat", 2.3), ("curved", 0.0), ("curved", -1.7)]


@pytest.mark.parametrize("detector, u_offset", FAN_CASES, ids=[f"{d}-{o}" for d, o in FAN_CASES])
def test_one_slice_cone_beam_equals_the_fan_beam(detector, u_offset):
    """det_shape = (1, n) and nz = 1: the central detector row sees the z = 0 plane like a 2D fan beam."""
    angles = np.array([0.0, 0.4, math.pi / 2, 2.5, math.pi, 4.0, -1.1])
    ny, nx, (sy, sx), (oy, ox) = 9, 12, (0.9, 1.2), (0.4, -0.7)
    image = ko.Volume((ny, nx), spacing=(sy, sx), offset=(oy, ox))
    volume = ko.Volume((1, ny, nx), spacing=(1.7, sy, sx), offset=(0.0, oy, ox))
    fan = ko.FanBeam2D(angles, 40.0, 25.0, 23, 1.3, det_offset=u_offset, detector=detector)
    cone = ko.ConeBeam3D(angles, 40.0, 25.0, (1, 23), (2.0, 1.3), det_offset=(0.0, u_offset), detector=detector)
    A2, A3 = ko.RayTransform(image, fan), ko.RayTransform(volume, cone)
    x = torch.rand((2, ny, nx), dtype=torch.float64)
    y = torch.rand((2,) + fan.shape, dtype=torch.float64)
    torch.testing.assert_close(A3(x[:, None])[:, :, 0, :], A2(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(A3.T(y[:, :, None, :])[:, 0], A2.T(y), rtol=1e-12, atol=1e-12)


def test_one_slice_parallel_beam_equals_the_2d_parallel_beam():
    angles = np.array(list(SPECIAL_ANGLES) + [0.3, 2.2, -2.9])
    ny, nx, (sy, sx), (oy, ox) = 10, 7, (1.1, 0.8), (-0.5, 0.6)
    image = ko.Volume((ny, nx), spacing=(sy, sx), offset=(oy, ox))
    volume = ko.Volume((1, ny, nx), spacing=(0.6, sy, sx), offset=(2.0, oy, ox))
    parallel2d = ko.ParallelBeam2D(angles, 15, 0.9, det_offset=0.35)
    parallel3d = ko.ParallelBeam3D(angles, (1, 15), (3.0, 0.9), det_offset=(2.0, 0.35))  # the row at z = oz
    A2, A3 = ko.RayTransform(image, parallel2d), ko.RayTransform(volume, parallel3d)
    x = torch.rand((3, ny, nx), dtype=torch.float64)
    y = torch.rand((3,) + parallel2d.shape, dtype=torch.float64)
    torch.testing.assert_close(A3(x[:, None])[:, :, 0, :], A2(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(A3.T(y[:, :, None, :])[:, 0], A2.T(y), rtol=1e-12, atol=1e-12)


def test_each_parallel_row_is_the_2d_projection_of_its_slice():
    """Rows spaced sz and centred on the slices: row k of ParallelBeam3D is the 2D projection of slice k."""
    angles = np.array([0.0, 0.5, math.pi / 4, 1.9, math.pi / 2, 3.0])
    (nz, ny, nx), (sz, sy, sx), (oz, oy, ox) = (5, 8, 11), (1.3, 0.9, 1.1), (-0.8, 0.5, 0.2)
    volume = ko.Volume((nz, ny, nx), spacing=(sz, sy, sx), offset=(oz, oy, ox))
    image = ko.Volume((ny, nx), spacing=(sy, sx), offset=(oy, ox))
    A3 = ko.RayTransform(volume, ko.ParallelBeam3D(angles, (nz, 17), (sz, 0.8), det_offset=(oz, -0.3)))
    A2 = ko.RayTransform(image, ko.ParallelBeam2D(angles, 17, 0.8, det_offset=-0.3))
    x = torch.rand((2,) + volume.shape, dtype=torch.float64)
    projected = A3(x)  # (2, views, nz, 17)
    torch.testing.assert_close(projected.transpose(1, 2), A2(x), rtol=1e-12, atol=1e-12)
    y = torch.rand((2,) + A3.range_shape, dtype=torch.float64)
    torch.testing.assert_close(A3.T(y), A2.T(y.transpose(1, 2)), rtol=1e-12, atol=1e-12)


# --- (i) physics sanity -------------------------------------------------------------------------------


def test_parallel_projections_along_the_axes_are_sums_times_the_voxel_size():
    (nz, ny, nx), (sz, sy, sx), (oz, oy, ox) = (5, 7, 6), (1.3, 0.6, 0.9), (0.4, -1.0, 0.7)
    volume = ko.Volume((nz, ny, nx), spacing=(sz, sy, sx), offset=(oz, oy, ox))
    x = torch.rand((2,) + volume.shape, dtype=torch.float64)
    along_z = ko.ParallelBeam3D.from_vectors([[0, 0, 1, ox, oy, 5.0, sx, 0, 0, 0, sy, 0]], (ny, nx))
    torch.testing.assert_close(ko.RayTransform(volume, along_z)(x)[:, 0], sz * x.sum(dim=1), rtol=1e-12, atol=1e-12)
    # Angle 0: rays along -y, columns along x, rows along z.
    along_y = ko.ParallelBeam3D([0.0], (nz, nx), (sz, sx), det_offset=(oz, ox))
    torch.testing.assert_close(ko.RayTransform(volume, along_y)(x)[:, 0], sy * x.sum(dim=2), rtol=1e-12, atol=1e-12)
    # Angle pi/2: rays along +x, columns along y.
    along_x = ko.ParallelBeam3D([math.pi / 2], (nz, ny), (sz, sy), det_offset=(oz, oy))
    torch.testing.assert_close(ko.RayTransform(volume, along_x)(x)[:, 0], sx * x.sum(dim=3), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "direction", [(0.3, -0.8, 0.5), (-0.9, 0.2, 0.3), (0.4, 0.5, -1.1), (1.0, 1.0, 0.2)], ids=["y", "x", "z", "xy"]
)
def test_parallel_views_conserve_mass_for_oblique_rays(direction):
    """A detector whose pixels step exactly one voxel along each minor axis (it lies in the minor plane):
    the bilinear weights of each voxel sum to one over the detector, so sum(y) |r_m| s_b s_c = sum(x) sx sy sz
    (|r_m| the major component of the unit ray direction), exactly."""
    volume = ko.Volume((6, 9, 8), spacing=(1.2, 0.8, 1.0), offset=(0.5, -0.3, 0.9))
    sz, sy, sx = volume.spacing
    r = np.asarray(direction) / np.linalg.norm(direction)
    index_direction = np.abs(r[::-1] / np.array(volume.spacing))  # (z, y, x) in index units
    major = 2 - int(np.argmax(index_direction[::-1]))  # ties to the later axis (x before y before z)
    minor = [a for a in range(3) if a != major]
    world_axis = {0: np.array([0.0, 0.0, 1.0]), 1: np.array([0.0, 1.0, 0.0]), 2: np.array([1.0, 0.0, 0.0])}
    u = world_axis[minor[1]] * volume.spacing[minor[1]]
    v = world_axis[minor[0]] * volume.spacing[minor[0]]
    n_det = 64  # covers the volume's shadow: the sums below would fall short otherwise
    centre = np.array([volume.offset[2], volume.offset[1], volume.offset[0]]) + np.array([0.31, -0.27, 0.13])
    geometry = ko.ParallelBeam3D.from_vectors(np.concatenate([r, centre, u, v])[None], (n_det, n_det))
    x = torch.rand((3,) + volume.shape, dtype=torch.float64)
    y = ko.RayTransform(volume, geometry)(x)
    assert torch.count_nonzero(y[..., 0, :]) == 0 and torch.count_nonzero(y[..., -1]) == 0  # edges see nothing
    factor = abs(r[2 - major]) * volume.spacing[minor[0]] * volume.spacing[minor[1]]
    mass = x.sum(dim=(-3, -2, -1)) * sx * sy * sz
    torch.testing.assert_close(y.sum(dim=(-3, -2, -1)) * factor, mass, rtol=1e-12, atol=0)


def _box_chords_3d(bounds, origin: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Length (mm) of each line inside the box ((zlo, zhi), (ylo, yhi), (xlo, xhi)) (slab method)."""
    direction = direction / np.linalg.norm(direction, axis=-1, keepdims=True)
    t_enter = np.full(origin.shape[:-1], -np.inf)
    t_exit = np.full(origin.shape[:-1], np.inf)
    for axis, (lo, hi) in zip((2, 1, 0), bounds):  # bounds in (z, y, x) order, world axes (x, y, z)
        o, d = origin[..., axis], direction[..., axis]
        with np.errstate(divide="ignore", invalid="ignore"):
            t0, t1 = (lo - o) / d, (hi - o) / d
        parallel = d == 0
        inside = (o > lo) & (o < hi)
        t0 = np.where(parallel, np.where(inside, -np.inf, np.inf), t0)
        t1 = np.where(parallel, np.where(inside, np.inf, -np.inf), t1)
        t_enter = np.maximum(t_enter, np.minimum(t0, t1))
        t_exit = np.minimum(t_exit, np.maximum(t0, t1))
    return np.maximum(t_exit - t_enter, 0.0)


def _crosses_between_centre_planes(volume: ko.Volume, origin: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Lines that enter and leave through the two faces across their major axis (index units), between the
    first and last voxel-centre planes of both minor axes: there every Joseph sample has full weight."""
    spacing = np.array(volume.spacing)[::-1]  # (sx, sy, sz), world axis order
    bounds = np.array(volume.bounds)[::-1]  # ((xlo, xhi), (ylo, yhi), (zlo, zhi))
    index_speed = np.abs(direction) / spacing
    major = np.where(
        (index_speed[..., 0] >= index_speed[..., 1]) & (index_speed[..., 0] >= index_speed[..., 2]),
        0, np.where(index_speed[..., 1] >= index_speed[..., 2], 1, 2),
    )  # ties to x, then y (the kernel's rule)
    result = np.zeros(origin.shape[:-1], dtype=bool)
    for m in range(3):
        selected = (major == m) & (direction[..., m] != 0)
        minors = [a for a in range(3) if a != m]
        for face in bounds[m]:
            with np.errstate(divide="ignore", invalid="ignore"):
                t = (face - origin[..., m]) / direction[..., m]
            for a in minors:
                hit = origin[..., a] + t * direction[..., a]
                selected &= (hit >= bounds[a][0] + spacing[a] / 2) & (hit <= bounds[a][1] - spacing[a] / 2)
        result |= selected
    return result


@pytest.mark.parametrize(
    "geometry",
    [
        ko.ParallelBeam3D(ko.uniform_angles(8, math.pi, start=0.05), (24, 40), (0.7, 0.8), det_offset=(0.4, 0.3)),
        ko.ParallelBeam3D.from_vectors(  # r = (0.25, -0.9, 0.2); u, v perpendicular to r, skewed
            [[0.25, -0.9, 0.2, 0.2, 0.1, 0.0, 0.6, 0.2, 0.15, -0.2, 0.0, 0.25]], (40, 40)
        ),
        ko.ConeBeam3D(ko.uniform_angles(6, 2 * math.pi, start=0.1), 60.0, 30.0, (30, 40), 1.0, det_offset=(1.0, -0.5)),
        ko.ConeBeam3D(ko.uniform_angles(6, 2 * math.pi, start=0.1), 60.0, 30.0, (30, 40), 1.0, detector="curved"),
        ko.ConeBeam3D(ko.uniform_angles(6, 4 * math.pi, start=0.1), 60.0, 30.0, (30, 40), 1.0, pitch=8.0),
    ],
    ids=["parallel", "parallel-oblique", "cone-flat", "cone-curved", "helical"],
)
def test_projection_of_a_constant_volume_is_the_chord_length(geometry):
    volume = ko.Volume((12, 16, 14), spacing=(1.1, 0.9, 1.0), offset=(0.5, -0.7, 0.3))
    A = ko.RayTransform(volume, geometry)
    projection = A(torch.ones(volume.shape, dtype=torch.float64)).numpy()
    rays = geometry.rays().numpy()
    origin, direction = rays[..., 0:3], rays[..., 3:6]
    chords = _box_chords_3d(volume.bounds, origin, direction)
    full = _crosses_between_centre_planes(volume, origin, direction)
    assert full.sum() > 0.1 * full.size  # the test must look at many rays
    np.testing.assert_allclose(projection[full], chords[full], rtol=1e-12)
    # Lines that pass more than a voxel's diagonal away from the box see nothing.
    margin = math.sqrt(sum(s * s for s in volume.spacing))
    grown_bounds = tuple((lo - margin, hi + margin) for lo, hi in volume.bounds)
    outside = _box_chords_3d(grown_bounds, origin, direction) == 0
    assert outside.sum() > 0
    assert np.all(projection[outside] == 0)
    # Everywhere else the projection lies between 0 and the chord of the grown box.
    assert np.all(projection >= -1e-12) and np.all(projection <= _box_chords_3d(grown_bounds, origin, direction) + 1e-9)
