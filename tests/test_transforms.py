"""PyTorch's transforms of the projectors, checked against the dense matrix of tiny operators.

The operators are linear, so every transform has an exact answer in terms of the matrix M of the
operator (built column by column with the operator): forward mode (torch.func.jvp, jacfwd,
torch.autograd.forward_ad dual tensors) gives M v, reverse mode (grad, vjp, jacrev) M^T w,
torch.vmap applies M to every item, and the Hessian of 0.5 |M x - b|^2 is M^T M. Also: the raw
registered ops under the same transforms, torch.compile of the transforms, view indices checked in
compiled code, TorchScript refused with a pointer to torch.compile / torch.export, torch.export.
"""
from __future__ import annotations

import functools
import io
import math

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import grad, hessian, jacfwd, jacrev, jvp, vjp, vmap

import known_ops as ko

FAN = ko.FanBeam2D(ko.uniform_angles(4, 2 * math.pi), 40.0, 20.0, 7, det_offset=0.3)
CONE = ko.ConeBeam3D(ko.uniform_angles(3, 2 * math.pi), 40.0, 20.0, (3, 6), det_offset=(0.2, -0.1))
OPERATORS = {}
for _model, _weighting in (("joseph", "line"), ("voxel", "line"), ("voxel", "fdk")):
    OPERATORS[f"2d-{_model}-{_weighting}"] = ko.RayTransform(ko.Volume((5, 6), spacing=(1.1, 0.9)), FAN,
                                                             model=_model, weighting=_weighting)
    OPERATORS[f"3d-{_model}-{_weighting}"] = ko.RayTransform(ko.Volume((3, 4, 5)), CONE, model=_model,
                                                             weighting=_weighting)
CASES = [(name, direction) for name in OPERATORS for direction in ("A", "A.T")]
IDS = [f"{name}-{direction}" for name, direction in CASES]


def _operator(name: str, direction: str) -> ko.LinearOperator:
    return OPERATORS[name] if direction == "A" else OPERATORS[name].T


@functools.cache
def _dense(name: str, direction: str) -> torch.Tensor:
    """The matrix of the operator (float64), one column per unit vector of its domain."""
    op = _operator(name, direction)
    n = math.prod(op.domain_shape)
    columns = [op(e.reshape(op.domain_shape)).reshape(-1) for e in torch.eye(n, dtype=torch.float64)]
    return torch.stack(columns, dim=1)


def _samples(op, seed: int, batch: tuple[int, ...] = ()):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch + tuple(op.domain_shape), generator=generator, dtype=torch.float64)
    v = torch.randn(batch + tuple(op.domain_shape), generator=generator, dtype=torch.float64)
    w = torch.randn(batch + tuple(op.range_shape), generator=generator, dtype=torch.float64)
    return x, v, w


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual.reshape(expected.shape), expected, rtol=1e-10, atol=1e-12)


@pytest.fixture(autouse=True)
def _no_vmap_fallback():
    """vmap must use the ops' batching rule: the per-item fallback loop raises instead of running."""
    previous = torch._C._functorch._is_vmap_fallback_enabled()
    torch._C._functorch._set_vmap_fallback_enabled(False)
    yield
    torch._C._functorch._set_vmap_fallback_enabled(previous)


@pytest.mark.parametrize("name", OPERATORS)
def test_the_dense_matrices_are_transposes_of_each_other(name):
    assert _dense(name, "A").abs().max() > 0
    torch.testing.assert_close(_dense(name, "A.T"), _dense(name, "A").T, rtol=1e-12, atol=1e-13)


# --- forward mode ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "direction"), CASES, ids=IDS)
def test_forward_mode_gives_the_matrix_times_the_tangent(name, direction):
    op, M = _operator(name, direction), _dense(name, direction)
    x, v, _ = _samples(op, 1)
    out, tangent = jvp(op, (x,), (v,))
    _close(out, M @ x.reshape(-1))
    _close(tangent, M @ v.reshape(-1))
    _close(jacfwd(op)(x), M)
    with fwAD.dual_level():
        dual = op(fwAD.make_dual(x, v))
        primal, tangent = fwAD.unpack_dual(dual)
        assert tangent is not None
        _close(primal, M @ x.reshape(-1))
        _close(tangent, M @ v.reshape(-1))


# --- reverse mode ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "direction"), CASES, ids=IDS)
def test_reverse_mode_gives_the_transpose_times_the_cotangent(name, direction):
    op, M = _operator(name, direction), _dense(name, direction)
    x, _, w = _samples(op, 2)
    _close(grad(lambda t: (op(t) * w).sum())(x), M.T @ w.reshape(-1))
    out, pullback = vjp(op, x)
    _close(out, M @ x.reshape(-1))
    _close(pullback(w)[0], M.T @ w.reshape(-1))
    _close(jacrev(op)(x), M)


# --- vmap ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "direction"), CASES, ids=IDS)
def test_vmap_applies_the_matrix_to_every_item(name, direction):
    op, M = _operator(name, direction), _dense(name, direction)
    x, _, _ = _samples(op, 3, batch=(3, 2))  # vmapped dim 3, then a batch dim of the operator
    expected = (x.reshape(6, -1) @ M.T).reshape((3, 2) + tuple(op.range_shape))
    _close(vmap(op)(x), expected)
    _close(vmap(op, in_dims=1, out_dims=1)(x.transpose(0, 1)).transpose(0, 1), expected)
    _close(vmap(vmap(op))(x), expected)
    _close(vmap(lambda t: op(t), in_dims=(1,))(x), expected.transpose(0, 1))


# --- second order ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "direction"), CASES, ids=IDS)
def test_second_derivatives_of_the_least_squares_loss(name, direction):
    op, M = _operator(name, direction), _dense(name, direction)
    x, v, w = _samples(op, 4)

    def loss(t):
        return 0.5 * (op(t) - w).square().sum()

    normal = M.T @ M
    _close(hessian(loss)(x), normal)
    _close(jacrev(jacrev(loss))(x), normal)
    _close(jvp(grad(loss), (x,), (v,))[1], normal @ v.reshape(-1))
    # Per-item gradients: vmap of grad.
    xs, _, ws = _samples(op, 5, batch=(3,))
    per_item = vmap(grad(lambda t, b: 0.5 * (op(t) - b).square().sum()))(xs, ws)
    _close(per_item, (xs.reshape(3, -1) @ normal.T - ws.reshape(3, -1) @ M))
    # The Hessian of the linear map itself is zero (exactly).
    assert not hessian(op)(x).any()


@pytest.mark.parametrize("name", ["2d-joseph-line", "3d-voxel-fdk"])
def test_gradcheck_with_forward_mode_and_batched_gradients(name):
    A = OPERATORS[name]
    for op in (A, A.T):
        x = torch.randn((2,) + tuple(op.domain_shape), dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(op, (x,), check_forward_ad=True, check_batched_grad=True,
                                        check_batched_forward_grad=True, fast_mode=True)
        assert torch.autograd.gradgradcheck(op, (x,), check_fwd_over_rev=True, check_batched_grad=True,
                                            fast_mode=True)


@pytest.mark.parametrize("direction", ["A", "A.T"])
def test_double_backward_is_the_other_projector(direction):
    op = _operator("3d-voxel-fdk", direction)
    x, v, _ = _samples(op, 6)
    x.requires_grad_()
    (g,) = torch.autograd.grad(0.5 * op(x).square().sum(), x, create_graph=True)  # op.T op x
    assert [type(f).__name__ for f, _ in g.grad_fn.next_functions] == [
        "known_ops_voxel3d_" + ("adjoint" if direction == "A" else "forward") + "Backward"]
    (hv,) = torch.autograd.grad(g, x, grad_outputs=v)  # (op.T op) v
    torch.testing.assert_close(hv, op.T(op(v)), rtol=1e-12, atol=1e-12)


# --- views, raw ops, autocast, inference --------------------------------------------------------------


@pytest.mark.parametrize("name", ["2d-voxel-fdk", "3d-joseph-line"])
def test_transforms_of_a_view_subset_are_the_rows_of_those_views(name):
    A, M = OPERATORS[name], _dense(name, "A")
    idx = [2, 0] if A.volume.ndim == 2 else [-1, 1]
    rows = M.reshape(tuple(A.range_shape) + (-1,))[idx].reshape(-1, M.shape[1])
    x, v, _ = _samples(A, 7)
    _close(jvp(lambda t: A(t, views=idx), (x,), (v,))[1], rows @ v.reshape(-1))
    _close(jacrev(lambda t: A(t, views=torch.tensor(idx)))(x), rows)
    y = torch.randn((len(idx),) + tuple(A.range_shape[1:]), dtype=torch.float64)
    _close(jacfwd(lambda s: A.T(s, views=idx))(y), rows.T)


def _raw_calls():
    """(op, data, tables) for every registered projector, from the tiny operators' tables."""
    ops = torch.ops.known_ops
    j2, v2, j3, v3 = (OPERATORS[k] for k in ("2d-joseph-line", "2d-voxel-fdk", "3d-joseph-line", "3d-voxel-fdk"))
    ny, nx = j2.domain_shape
    nz, my, mx = j3.domain_shape
    rows, cols = CONE.det_shape
    spacing = list(v2.volume.spacing)
    image, sino = torch.rand(2, ny, nx, dtype=torch.float64), torch.rand((2,) + FAN.shape, dtype=torch.float64)
    volume, proj = torch.rand(2, nz, my, mx, dtype=torch.float64), torch.rand((2,) + CONE.shape, dtype=torch.float64)
    return {
        "joseph2d_forward": (ops.joseph2d_forward, image, (j2._rays, j2._views)),
        "joseph2d_adjoint": (ops.joseph2d_adjoint, sino, (j2._rays, j2._views, ny, nx)),
        "joseph2d_adjoint_gather": (ops.joseph2d_adjoint_gather, sino, (j2._rays, j2._views, ny, nx)),
        "joseph3d_forward": (ops.joseph3d_forward, volume, (j3._frames, rows, cols)),
        "joseph3d_adjoint": (ops.joseph3d_adjoint, proj, (j3._frames, nz, my, mx)),
        "joseph3d_adjoint_gather": (ops.joseph3d_adjoint_gather, proj, (j3._frames, nz, my, mx)),
        "voxel2d_forward": (ops.voxel2d_forward, image, (v2._views, FAN.det_count, spacing, v2._fdk)),
        "voxel2d_adjoint": (ops.voxel2d_adjoint, sino, (v2._views, ny, nx, spacing, v2._fdk)),
        "voxel3d_forward": (ops.voxel3d_forward, volume, (v3._frames, rows, cols, v3._fdk)),
        "voxel3d_adjoint": (ops.voxel3d_adjoint, proj, (v3._frames, nz, my, mx, v3._fdk)),
    }


RAW_OPS = list(_raw_calls())


@pytest.mark.parametrize("op_name", RAW_OPS)
def test_registered_ops_under_transforms(op_name):
    op, data, tables = _raw_calls()[op_name]
    v, w = torch.rand_like(data), torch.rand_like(op(data, *tables))

    def f(t):
        return op(t, *tables)

    _close(jvp(f, (data,), (v,))[1], f(v))
    with fwAD.dual_level():
        _close(fwAD.unpack_dual(f(fwAD.make_dual(data, v))).tangent, f(v))
    (pulled,) = vjp(f, data)[1](w)
    torch.testing.assert_close((pulled * v).sum(), (w * f(v)).sum(), rtol=1e-12, atol=0)  # <A^T w, v> = <w, A v>
    _close(vmap(f)(torch.stack([data, v])), torch.stack([f(data), f(v)]))


def test_the_geometry_tables_are_not_differentiable():
    op, data, (rays, views) = _raw_calls()["joseph2d_forward"]
    with pytest.raises(RuntimeError, match="gradients of the geometry tables"):
        op(data, rays.clone().requires_grad_(), views).sum().backward()
    with pytest.raises(RuntimeError, match="forward-mode derivatives of the geometry tables"):
        jvp(lambda r: op(data, r, views), (rays,), (torch.ones_like(rays),))
    with pytest.raises(NotImplementedError, match="vmap over the geometry tables"):
        vmap(lambda r: op(data, r, views))(torch.stack([rays, rays]))


def test_forward_mode_under_autocast_runs_in_float32():
    A = OPERATORS["2d-joseph-line"]
    x, v = torch.rand((2,) + A.domain_shape).bfloat16(), torch.rand((2,) + A.domain_shape).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, tangent = jvp(A, (x,), (v,))
    assert out.dtype == tangent.dtype == torch.float32
    torch.testing.assert_close(tangent, A(v.float()))


def test_a_plain_call_records_no_graph():
    A = OPERATORS["3d-voxel-line"]
    x = torch.rand(A.domain_shape)
    assert A(x).grad_fn is None
    y = A(x.requires_grad_())  # the op's node, under the reshape to the leading dims
    assert [type(f).__name__ for f, _ in y.grad_fn.next_functions] == ["known_ops_voxel3d_forwardBackward"]


# --- torch.compile ---------------------------------------------------------------------------------


def test_transforms_compile_with_fullgraph():
    torch._dynamo.reset()
    A = OPERATORS["2d-voxel-line"]
    x, v, w = _samples(A, 8)

    def transforms(x, v, w):
        with fwAD.dual_level():
            dual_tangent = fwAD.unpack_dual(A(fwAD.make_dual(x, v))).tangent
        return (jvp(A, (x,), (v,))[1], dual_tangent, grad(lambda t: (A(t) * w).sum())(x), jacrev(A)(x),
                jacfwd(A.T)(w), vmap(lambda t: A(t))(torch.stack([x, v])))

    compiled = torch.compile(transforms, backend="aot_eager", fullgraph=True)
    for got, expected in zip(compiled(x, v, w), transforms(x, v, w)):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_compiled_forward_and_backward_match_eager():
    torch._dynamo.reset()
    A = OPERATORS["3d-joseph-line"]
    module = torch.nn.Sequential(torch.nn.Conv3d(1, 1, 3, padding=1), torch.nn.Flatten(0, 1))
    x = torch.rand((2, 1) + A.domain_shape)

    def loss(x):
        return A.T(A(module(x)) - 1.0).square().mean()

    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    expected = torch.autograd.grad(loss(x), module[0].weight)[0]
    got = torch.autograd.grad(compiled(x), module[0].weight)[0]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


# --- view indices in compiled code -------------------------------------------------------------------


@pytest.mark.parametrize("bad", [[12], [-13], [0, 12]], ids=["12", "-13", "0,12"])
def test_compiled_calls_check_view_indices(bad):
    torch._dynamo.reset()
    A = ko.RayTransform(ko.Volume((5, 6)), ko.ParallelBeam2D(ko.uniform_angles(12), 7))
    x, y = torch.rand(5, 6), torch.rand(len(bad), 7)
    forward = torch.compile(lambda x, v: A(x, views=v), backend="aot_eager", fullgraph=True)
    adjoint = torch.compile(lambda y, v: A.T(y, views=v), backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(forward(x, torch.tensor([11, -12])), A(x)[[11, 0]])
    for call in (lambda: forward(x, torch.tensor(bad)), lambda: adjoint(y, torch.tensor(bad)),
                 lambda: A(x, views=torch.tensor(bad))):
        with pytest.raises(ValueError, match=r"views must index the geometry's 12 views \(in \[-12, 11\]\)"):
            call()


def test_compiled_calls_check_view_indices_with_inductor():
    torch._dynamo.reset()
    A = ko.RayTransform(ko.Volume((4, 4)), ko.ParallelBeam2D(ko.uniform_angles(3), 5))
    x = torch.rand(4, 4)
    compiled = torch.compile(lambda x, v: A(x, views=v), fullgraph=True)
    torch.testing.assert_close(compiled(x, torch.tensor([2, -3])), A(x)[[2, 0]])
    with pytest.raises(ValueError, match="views must index the geometry's 3 views"):
        compiled(x, torch.tensor([0, 3]))  # the same shape: no second compilation


def test_the_view_index_op_passes_opcheck():
    torch.library.opcheck(torch.ops.known_ops.view_indices, (torch.tensor([0, -1, 3]), 4))
    torch.library.opcheck(torch.ops.known_ops.view_indices, (torch.tensor([2], dtype=torch.int32), 3))


# --- TorchScript and torch.export ----------------------------------------------------------------------


class _Model(torch.nn.Module):
    """A small network around A and A.T (and a subset of views)."""

    def __init__(self, A):
        super().__init__()
        self.A = A
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, y):
        x = self.conv(self.A.T(y))
        return x + self.A.T(self.A(x, views=[1, 3]), views=[1, 3])


class _AdjointOnly(torch.nn.Module):
    def __init__(self, A):
        super().__init__()
        self.back = A.T

    def forward(self, y):
        return self.back(y)


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")
def test_torchscript_is_refused_with_a_pointer_to_compile_and_export():
    A = ko.RayTransform(ko.Volume((6, 5)), ko.ParallelBeam2D(ko.uniform_angles(4), 7))
    message = r"does not support TorchScript \(torch.jit.{}.*torch\.compile.*torch\.export\.export"
    for model in (_Model(A), _AdjointOnly(A), A, A.T):
        with pytest.raises(RuntimeError, match=message.format("script")):
            torch.jit.script(model)
    with pytest.raises(RuntimeError, match=message.format("trace")):
        torch.jit.trace(_Model(A), torch.rand(2, 1, 4, 7))


def test_torch_export_of_a_model_holding_the_operator():
    A = ko.RayTransform(ko.Volume((6, 5)), ko.ParallelBeam2D(ko.uniform_angles(4), 7))
    model = _Model(A)
    y = torch.rand(2, 1, 4, 7)
    program = torch.export.export(model, (y,), dynamic_shapes={"y": {0: torch.export.Dim("batch")}})
    for batch in (2, 3):
        y = torch.rand(batch, 1, 4, 7)
        torch.testing.assert_close(program.module()(y), model(y), rtol=0, atol=0)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    torch.testing.assert_close(torch.export.load(buffer).module()(y), model(y), rtol=0, atol=0)


class _Subset(torch.nn.Module):
    def __init__(self, A):
        super().__init__()
        self.A = A

    def forward(self, x, views):
        return self.A(x, views=views)


def test_torch_export_checks_view_indices_given_as_an_input():
    A = ko.RayTransform(ko.Volume((6, 5)), ko.ParallelBeam2D(ko.uniform_angles(4), 7))
    x = torch.rand(2, 6, 5)
    program = torch.export.export(_Subset(A), (x, torch.tensor([1, 3])))
    torch.testing.assert_close(program.module()(x, torch.tensor([2, -1])), A(x)[:, [2, 3]], rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"views must index the geometry's 4 views \(in \[-4, 3\]\), got 4"):
        program.module()(x, torch.tensor([0, 4]))


def test_compiled_vmap_of_the_module_itself():
    """functorch's vmap calls repr() of the module it maps; the description is built at construction."""
    A = ko.RayTransform(ko.Volume((8, 8)), ko.ParallelBeam2D(ko.uniform_angles(4), 11))
    x = torch.rand(3, 8, 8, dtype=torch.float64)
    compiled = torch.compile(torch.func.vmap(A), backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), A(x))
