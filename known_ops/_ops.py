"""The only module that touches the compiled extension ``known_ops._C``.

It loads the extension (with a clear message when it is missing or stale),
and registers, for every custom operator, its derivatives (the backward of a
projector is its exact adjoint and vice versa, so double backward works; its
forward-mode derivative is itself), its batching rule for ``torch.vmap``, its
fake kernel (shapes only, for ``torch.compile`` and meta tensors) and its
autocast policy; and the op ``known_ops::view_indices`` that checks view
indices given as a tensor, in eager and in compiled code alike.
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.autograd.forward_ad as _forward_ad
from torch._functorch.utils import enable_single_level_autograd_function
from torch.autograd.function import _SingleLevelFunction

from ._fingerprint import source_fingerprint

_PACKAGE_DIR = Path(__file__).resolve().parent
_CSRC = _PACKAGE_DIR.parent / "csrc"
_BUILD_HINT = (
    "Build it from the repository root with `make build` "
    "(or `pip install --no-build-isolation -e .` in an environment with torch)."
)


def _source_fingerprint(with_cuda: bool) -> str | None:
    """Hash of csrc/ as setup.py computes it; None when the sources are not beside the package."""
    return source_fingerprint(_CSRC, with_cuda) if _CSRC.is_dir() else None


def _load_extension() -> None:
    try:
        from . import _build_info
    except ImportError:
        raise ImportError(f"known_ops: the compiled extension known_ops._C has not been built. {_BUILD_HINT}") from None
    if _build_info.TORCH_VERSION != torch.__version__:
        raise ImportError(
            f"known_ops: the compiled extension was built against torch {_build_info.TORCH_VERSION}, "
            f"but torch {torch.__version__} is installed. Rebuild it. {_BUILD_HINT}"
        )
    current = _source_fingerprint(_build_info.WITH_CUDA)
    if current is not None and current != _build_info.SOURCE_FINGERPRINT:
        raise ImportError(f"known_ops: the compiled extension is stale (csrc/ changed since it was built). {_BUILD_HINT}")
    try:
        from . import _C  # noqa: F401  (registers the operators)
    except ImportError as err:
        raise ImportError(f"known_ops: could not load the compiled extension known_ops._C ({err}). {_BUILD_HINT}") from None


_load_extension()
WITH_CUDA: bool = __import__(f"{__package__}._build_info", fromlist=["WITH_CUDA"]).WITH_CUDA

_ops = torch.ops.known_ops

# Geometry kinds, as enumerated in csrc/joseph2d.h.
PARALLEL, FAN_FLAT, FAN_CURVED = 0, 1, 2


def tables_2d(vectors: torch.Tensor, kind: int, n_det: int, shape: tuple[int, int], spacing_offset: list[float]):
    """Ray table (n_views, n_det, 4) and view table (n_views, 8), float64 on the CPU."""
    return _ops.joseph2d_tables(vectors, kind, n_det, shape[0], shape[1], spacing_offset)


def rays_2d(vectors: torch.Tensor, kind: int, n_det: int) -> torch.Tensor:
    """(n_views, n_det, 4): origin (x, y) and direction (x, y) of every ray, in mm."""
    return _ops.geometry2d_rays(vectors, kind, n_det)


def joseph2d_forward(image: torch.Tensor, rays: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
    """(batch, ny, nx) -> (batch, n_views, n_det)."""
    return _ops.joseph2d_forward(image, rays, views)


def joseph2d_adjoint(sino: torch.Tensor, rays: torch.Tensor, views: torch.Tensor, ny: int, nx: int) -> torch.Tensor:
    """(batch, n_views, n_det) -> (batch, ny, nx), the exact transpose of joseph2d_forward."""
    return _ops.joseph2d_adjoint(sino, rays, views, ny, nx)


def joseph2d_adjoint_gather(sino, rays, views, ny: int, nx: int) -> torch.Tensor:
    """The pixel-driven formulation of joseph2d_adjoint (the CUDA algorithm, also on the CPU)."""
    return _ops.joseph2d_adjoint_gather(sino, rays, views, ny, nx)


def frames_3d(vectors: torch.Tensor, kind: int, det_shape, shape, spacing_offset: list[float]) -> torch.Tensor:
    """Per-view frames (n_views, 44), float64 on the CPU (csrc/joseph3d.h, frame3)."""
    n_rows, n_cols = det_shape
    nz, ny, nx = shape
    return _ops.joseph3d_frames(vectors, kind, n_rows, n_cols, nz, ny, nx, spacing_offset)


def joseph3d_forward(volume: torch.Tensor, frames: torch.Tensor, n_rows: int, n_cols: int) -> torch.Tensor:
    """(batch, nz, ny, nx) -> (batch, n_views, n_rows, n_cols)."""
    return _ops.joseph3d_forward(volume, frames, n_rows, n_cols)


def joseph3d_adjoint(proj: torch.Tensor, frames: torch.Tensor, nz: int, ny: int, nx: int) -> torch.Tensor:
    """(batch, n_views, n_rows, n_cols) -> (batch, nz, ny, nx), the exact transpose of joseph3d_forward."""
    return _ops.joseph3d_adjoint(proj, frames, nz, ny, nx)


def joseph3d_adjoint_gather(proj, frames, nz: int, ny: int, nx: int) -> torch.Tensor:
    """The voxel-driven formulation of joseph3d_adjoint (the CUDA algorithm, also on the CPU)."""
    return _ops.joseph3d_adjoint_gather(proj, frames, nz, ny, nx)


def voxel2d_forward(image, views, n_det: int, spacing, fdk=None) -> torch.Tensor:
    """Voxel-driven pair, 2D: (batch, ny, nx) -> (batch, n_views, n_det); views: the Joseph view table;
    fdk: per-view constants of the FDK weighting (None: the line-integral weighting)."""
    return _ops.voxel2d_forward(image, views, n_det, spacing, fdk)


def voxel2d_adjoint(sino, views, ny: int, nx: int, spacing, fdk=None) -> torch.Tensor:
    """Its exact transpose: the interpolating back-projection, (batch, n_views, n_det) -> (batch, ny, nx)."""
    return _ops.voxel2d_adjoint(sino, views, ny, nx, spacing, fdk)


def voxel3d_forward(volume, frames, n_rows: int, n_cols: int, fdk=None) -> torch.Tensor:
    """Voxel-driven pair, 3D: (batch, nz, ny, nx) -> (batch, n_views, n_rows, n_cols)."""
    return _ops.voxel3d_forward(volume, frames, n_rows, n_cols, fdk)


def voxel3d_adjoint(proj, frames, nz: int, ny: int, nx: int, fdk=None) -> torch.Tensor:
    """Its exact transpose: the interpolating back-projection."""
    return _ops.voxel3d_adjoint(proj, frames, nz, ny, nx, fdk)


def view_indices(views: torch.Tensor, n_views: int) -> torch.Tensor:
    """The integer tensor `views` of view indices as int64 indices in [0, n_views) on its own device
    (negative ones count from the end); a ValueError when one lies outside [-n_views, n_views).
    Reads the extremes back to the host (on CUDA a synchronisation)."""
    lo, hi = int(views.min()), int(views.max())
    if lo < -n_views or hi >= n_views:
        bad = lo if lo < -n_views else hi
        raise ValueError(f"views must index the geometry's {n_views} views (in [-{n_views}, {n_views - 1}]), got {bad}")
    return torch.remainder(views.to(torch.int64), n_views)


@torch.library.custom_op("known_ops::view_indices", mutates_args=())
def view_indices_op(views: torch.Tensor, n_views: int) -> torch.Tensor:
    """view_indices as a registered op, for compiled code: torch.compile and torch.export keep it in
    the graph as one opaque call, so the indices are checked when the graph runs (the same
    ValueError as in eager mode) instead of being wrapped into range."""
    return view_indices(views, n_views)


@view_indices_op.register_fake
def _(views, n_views):
    return torch.empty_like(views, dtype=torch.int64)


def _parallel_threads_used(n: int) -> int:
    """Build diagnostic: on how many threads at::parallel_for, inside the extension, ran n items
    (grain 1); 1 whatever torch.set_num_threads says when it was built without torch's parallel
    backend (setup.py, openmp_flags)."""
    return _ops._parallel_threads_used(n)


# --- fake kernels: output shapes only ------------------------------------------------------------


@torch.library.register_fake("known_ops::joseph2d_forward")
def _(image, rays, views):
    return image.new_empty((image.shape[0], rays.shape[0], rays.shape[1]))


def _fake_image_2d(sino, tables, ny, nx, *rest):
    return sino.new_empty((sino.shape[0], ny, nx))


def _fake_projections_3d(volume, frames, n_rows, n_cols):
    return volume.new_empty((volume.shape[0], frames.shape[0], n_rows, n_cols))


def _fake_volume_3d(proj, frames, nz, ny, nx):
    return proj.new_empty((proj.shape[0], nz, ny, nx))


torch.library.register_fake("known_ops::joseph3d_forward")(_fake_projections_3d)
for _name in ("joseph3d_adjoint", "joseph3d_adjoint_gather"):
    torch.library.register_fake(f"known_ops::{_name}")(_fake_volume_3d)


@torch.library.register_fake("known_ops::joseph2d_adjoint")
def _(sino, rays, views, ny, nx):
    return _fake_image_2d(sino, rays, ny, nx)


@torch.library.register_fake("known_ops::joseph2d_adjoint_gather")
def _(sino, rays, views, ny, nx):
    return _fake_image_2d(sino, rays, ny, nx)


@torch.library.register_fake("known_ops::voxel2d_forward")
def _(image, views, n_det, spacing, fdk_weights):
    return image.new_empty((image.shape[0], views.shape[0], n_det))


@torch.library.register_fake("known_ops::voxel2d_adjoint")
def _(sino, views, ny, nx, spacing, fdk_weights):
    return _fake_image_2d(sino, views, ny, nx)


@torch.library.register_fake("known_ops::voxel3d_forward")
def _(volume, frames, n_rows, n_cols, fdk_weights):
    return _fake_projections_3d(volume, frames, n_rows, n_cols)


@torch.library.register_fake("known_ops::voxel3d_adjoint")
def _(proj, frames, nz, ny, nx, fdk_weights):
    return _fake_volume_3d(proj, frames, nz, ny, nx)


# --- autograd and torch.func: linear in the data, the transpose is the other op of the pair ----------
#
# Every projector op(x, *tables) is linear in its data x: its derivative in a direction v is
# op(v, *tables) (forward mode: torch.func.jvp/jacfwd, forward_ad dual tensors), and its
# vector-Jacobian product is the other op of the pair applied to the output's gradient (reverse
# mode: backward, torch.func.grad/vjp/jacrev). Both are calls of registered ops again, so
# derivatives of any order work (double backward: the backward of A is A.T and vice versa).
#
# The mechanism: each op gets an autograd.Function with forward, setup_context, backward and jvp,
# applied by the op's own kernel at the Autograd dispatch key. It is a "single-level" Function
# (torch.autograd.function._SingleLevelFunction, applied under
# enable_single_level_autograd_function when a torch.func transform is active), the kind that
# torch.func builds for itself at each level of its transforms: when the dispatcher reaches the
# Autograd key under a transform, the transform's level has already been entered, and the
# Function just records a node there, like the built-in ops' autograd kernels. (What
# torch.library.register_autograd registered before is an old-style Function, forward(ctx, ...)
# without setup_context or jvp: torch.func.grad/jacrev refused it ("must override the
# setup_context staticmethod"), and its kernel bypassed it unless an input required grad, so
# forward-mode AD silently gave zero tangents; PyTorch's pull request 184974 proposes the same
# single-level Function for register_autograd.) torch.vmap goes through the batching rule
# registered with torch.library.register_vmap below, which folds the vmapped dim into the op's
# own batch dim: one call of the op, not the per-item fallback loop.

# For each op: its transpose, and that transpose's arguments after the data, from the shape of
# the op's data and the op's own arguments after the data.
_TRANSPOSES = {
    "joseph2d_forward": ("joseph2d_adjoint", lambda s, rays, views: (rays, views, s[1], s[2])),
    "joseph2d_adjoint": ("joseph2d_forward", lambda s, rays, views, ny, nx: (rays, views)),
    "joseph2d_adjoint_gather": ("joseph2d_forward", lambda s, rays, views, ny, nx: (rays, views)),
    "joseph3d_forward": ("joseph3d_adjoint", lambda s, frames, n_rows, n_cols: (frames, s[1], s[2], s[3])),
    "joseph3d_adjoint": ("joseph3d_forward", lambda s, frames, nz, ny, nx: (frames, s[2], s[3])),
    "joseph3d_adjoint_gather": ("joseph3d_forward", lambda s, frames, nz, ny, nx: (frames, s[2], s[3])),
    "voxel2d_forward": ("voxel2d_adjoint", lambda s, views, n_det, spacing, fdk: (views, s[1], s[2], spacing, fdk)),
    "voxel2d_adjoint": ("voxel2d_forward", lambda s, views, ny, nx, spacing, fdk: (views, s[2], spacing, fdk)),
    "voxel3d_forward": ("voxel3d_adjoint",
                        lambda s, frames, n_rows, n_cols, fdk: (frames, s[1], s[2], s[3], fdk)),
    "voxel3d_adjoint": ("voxel3d_forward", lambda s, frames, nz, ny, nx, fdk: (frames, s[2], s[3], fdk)),
}


def _tables_not_differentiable(name: str, what: str) -> RuntimeError:
    return RuntimeError(
        f"known_ops::{name}: {what} of the geometry tables (the arguments after the data) are not supported; "
        "the projectors are differentiable in their data (first argument) only"
    )


def _batching_rule(name: str, op, info, in_dims, data, *tables):
    """torch.vmap of op: the vmapped dim of the data joins the op's own batch dim (dim 0)."""
    if any(isinstance(d, int) for d in in_dims[1:]):
        raise NotImplementedError(
            f"known_ops::{name}: torch.vmap over the geometry tables (the arguments after the data) is not "
            "supported; vmap over the data (first argument) only"
        )
    if in_dims[0] is None:
        return op(data, *tables), None
    data = data.movedim(in_dims[0], 0)
    n, batch = data.shape[0], data.shape[1]
    out = op(data.reshape((n * batch,) + tuple(data.shape[2:])), *tables)
    return out.reshape((n, batch) + tuple(out.shape[1:])), 0


def _linear_function(name: str) -> type[_SingleLevelFunction]:
    """The autograd.Function of the op `name`: its backward is the transpose op, its jvp the op itself."""
    op = getattr(_ops, name).default
    transpose_name, transpose_args = _TRANSPOSES[name]
    transpose = getattr(_ops, transpose_name).default

    def restore_tables(ctx):
        saved = iter(ctx.saved_tensors)
        return tuple(next(saved) if is_tensor else t for t, is_tensor in zip(ctx.tables, ctx.tensor_at))

    class LinearOp(_SingleLevelFunction):
        # The first argument, `modes`, is None, or under torch.func transforms the caller's grad
        # modes (backward, forward): apply() turns both off for the forward, but the transforms of
        # the levels below this one, to which the op's call below goes on, must still see them.
        @staticmethod
        def forward(modes, data, *tables):
            if modes is None:
                with torch._C._AutoDispatchBelowAutograd():
                    return op(data, *tables)
            with torch.set_grad_enabled(modes[0]), _forward_ad._set_fwd_grad_enabled(modes[1]):
                with torch._C._AutoDispatchBelowAutograd():
                    return op(data, *tables)

        @staticmethod
        def setup_context(ctx, inputs, output):
            _, data, *tables = inputs
            ctx.data_shape = tuple(data.shape)
            ctx.tensor_at = tuple(isinstance(t, torch.Tensor) for t in tables)
            tensors = [t for t in tables if isinstance(t, torch.Tensor)]
            ctx.tables = tuple(None if isinstance(t, torch.Tensor) else t for t in tables)
            ctx.save_for_backward(*tensors)
            ctx.save_for_forward(*tensors)
            ctx.set_materialize_grads(False)  # None, not zeros, for the tables' tangents

        @staticmethod
        def backward(ctx, grad):
            if any(ctx.needs_input_grad[2:]):
                raise _tables_not_differentiable(name, "gradients")
            tables = restore_tables(ctx)
            if grad is None:
                return (None,) * (2 + len(tables))
            return (None, transpose(grad, *transpose_args(ctx.data_shape, *tables))) + (None,) * len(tables)

        @staticmethod
        def jvp(ctx, _, tangent, *table_tangents):
            if any(t is not None for t in table_tangents):
                raise _tables_not_differentiable(name, "forward-mode derivatives")
            return op(tangent, *restore_tables(ctx))

    LinearOp.__name__ = LinearOp.__qualname__ = f"known_ops_{name}"
    LinearOp._backward_cls.__name__ = LinearOp._backward_cls.__qualname__ = f"known_ops_{name}Backward"  # grad_fn
    return LinearOp


def _autograd_kernel(function: type[_SingleLevelFunction], op):
    """The op's kernel at the Autograd key: through `function` when a derivative or a torch.func
    transform may need it, else straight to the backend kernel (the plain inference call)."""
    after_autograd = torch._C._after_autograd_keyset

    def kernel(keyset, *args):
        if torch._C._are_functorch_transforms_active():
            # The transform's level has already been entered (its wrapper tensors are the args):
            # record a node at this level, as functorch does for its own per-level Functions.
            modes = (torch.is_grad_enabled(), torch._C._is_fwd_grad_enabled())
            with enable_single_level_autograd_function():
                return function.apply(modes, *args)
        if (
            (torch.is_grad_enabled() and torch._C._any_requires_grad(*args))
            or _forward_ad._current_level >= 0  # dual tensors may be among the args
            or torch.compiler.is_compiling()  # when compiled code is traced (the dual level may be in the graph)
        ):
            return function.apply(None, *args)
        with torch._C._AutoDispatchBelowAutograd():
            return op.redispatch(keyset & after_autograd, *args)

    return kernel


_LIBRARY = torch.library.Library("known_ops", "IMPL")  # keeps the kernels below registered
_FUNCTIONS = {}
for _name in _TRANSPOSES:
    _op = getattr(_ops, _name).default
    _FUNCTIONS[_name] = _linear_function(_name)
    _LIBRARY.impl(_name, _autograd_kernel(_FUNCTIONS[_name], _op), "Autograd", with_keyset=True)
    torch.library.register_vmap(f"known_ops::{_name}", functools.partial(_batching_rule, _name, _op))


# --- autocast: the ops run in float32 inside autocast regions (known_ops/_dtypes.py) ---------------

_OPS = ("joseph2d_forward", "joseph2d_adjoint", "joseph2d_adjoint_gather", "joseph3d_forward", "joseph3d_adjoint",
        "joseph3d_adjoint_gather", "voxel2d_forward", "voxel2d_adjoint", "voxel3d_forward", "voxel3d_adjoint")
for _name in _OPS:
    for _device_type in ("cpu", "cuda"):
        # float16/bfloat16 operands become float32; float64 ones (the geometry tables) stay as they are.
        torch.library.register_autocast(f"known_ops::{_name}", _device_type, torch.float32)
