"""The only module that touches the compiled extension ``known_ops._C``.

It loads the extension (with a clear message when it is missing or stale),
and registers, for every custom operator, its autograd formula (the backward
of a projector is its exact adjoint and vice versa, so double backward works)
and its fake kernel (shapes only, for ``torch.compile`` and meta tensors).
"""
from __future__ import annotations

from pathlib import Path

import torch

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


# --- autograd: each projector's backward is the other one ----------------------------------------


def _save_tables(ctx, inputs, output):
    ctx.rays, ctx.views = inputs[1], inputs[2]


def _forward_backward(ctx, grad):
    ny, nx = ctx.image_shape
    return _ops.joseph2d_adjoint(grad, ctx.rays, ctx.views, ny, nx), None, None


def _forward_setup(ctx, inputs, output):
    _save_tables(ctx, inputs, output)
    ctx.image_shape = (inputs[0].shape[1], inputs[0].shape[2])


def _adjoint_backward(ctx, grad):
    return _ops.joseph2d_forward(grad, ctx.rays, ctx.views), None, None, None, None


torch.library.register_autograd("known_ops::joseph2d_forward", _forward_backward, setup_context=_forward_setup)
torch.library.register_autograd("known_ops::joseph2d_adjoint", _adjoint_backward, setup_context=_save_tables)
torch.library.register_autograd("known_ops::joseph2d_adjoint_gather", _adjoint_backward, setup_context=_save_tables)


def _forward3d_setup(ctx, inputs, output):
    ctx.frames = inputs[1]
    ctx.volume_shape = tuple(inputs[0].shape[1:])


def _forward3d_backward(ctx, grad):
    return _ops.joseph3d_adjoint(grad, ctx.frames, *ctx.volume_shape), None, None, None


def _adjoint3d_setup(ctx, inputs, output):
    ctx.frames = inputs[1]
    ctx.det_shape = (inputs[0].shape[2], inputs[0].shape[3])


def _adjoint3d_backward(ctx, grad):
    return _ops.joseph3d_forward(grad, ctx.frames, *ctx.det_shape), None, None, None, None


torch.library.register_autograd("known_ops::joseph3d_forward", _forward3d_backward, setup_context=_forward3d_setup)
torch.library.register_autograd("known_ops::joseph3d_adjoint", _adjoint3d_backward, setup_context=_adjoint3d_setup)
torch.library.register_autograd(
    "known_ops::joseph3d_adjoint_gather", _adjoint3d_backward, setup_context=_adjoint3d_setup
)


def _voxel2d_forward_setup(ctx, inputs, output):
    ctx.views, ctx.spacing, ctx.fdk = inputs[1], inputs[3], inputs[4]
    ctx.image_shape = (inputs[0].shape[1], inputs[0].shape[2])


def _voxel2d_forward_backward(ctx, grad):
    return _ops.voxel2d_adjoint(grad, ctx.views, *ctx.image_shape, ctx.spacing, ctx.fdk), None, None, None, None


def _voxel2d_adjoint_setup(ctx, inputs, output):
    ctx.views, ctx.spacing, ctx.fdk = inputs[1], inputs[4], inputs[5]
    ctx.n_det = inputs[0].shape[2]


def _voxel2d_adjoint_backward(ctx, grad):
    return _ops.voxel2d_forward(grad, ctx.views, ctx.n_det, ctx.spacing, ctx.fdk), None, None, None, None, None


def _voxel3d_forward_setup(ctx, inputs, output):
    ctx.frames, ctx.fdk = inputs[1], inputs[4]
    ctx.volume_shape = tuple(inputs[0].shape[1:])


def _voxel3d_forward_backward(ctx, grad):
    return _ops.voxel3d_adjoint(grad, ctx.frames, *ctx.volume_shape, ctx.fdk), None, None, None, None


def _voxel3d_adjoint_setup(ctx, inputs, output):
    ctx.frames, ctx.fdk = inputs[1], inputs[5]
    ctx.det_shape = (inputs[0].shape[2], inputs[0].shape[3])


def _voxel3d_adjoint_backward(ctx, grad):
    return _ops.voxel3d_forward(grad, ctx.frames, *ctx.det_shape, ctx.fdk), None, None, None, None, None


torch.library.register_autograd("known_ops::voxel2d_forward", _voxel2d_forward_backward, setup_context=_voxel2d_forward_setup)
torch.library.register_autograd("known_ops::voxel2d_adjoint", _voxel2d_adjoint_backward, setup_context=_voxel2d_adjoint_setup)
torch.library.register_autograd("known_ops::voxel3d_forward", _voxel3d_forward_backward, setup_context=_voxel3d_forward_setup)
torch.library.register_autograd("known_ops::voxel3d_adjoint", _voxel3d_adjoint_backward, setup_context=_voxel3d_adjoint_setup)


# --- autocast: the ops run in float32 inside autocast regions (known_ops/_dtypes.py) ---------------

_OPS = ("joseph2d_forward", "joseph2d_adjoint", "joseph2d_adjoint_gather", "joseph3d_forward", "joseph3d_adjoint",
        "joseph3d_adjoint_gather", "voxel2d_forward", "voxel2d_adjoint", "voxel3d_forward", "voxel3d_adjoint")
for _name in _OPS:
    for _device_type in ("cpu", "cuda"):
        # float16/bfloat16 operands become float32; float64 ones (the geometry tables) stay as they are.
        torch.library.register_autocast(f"known_ops::{_name}", _device_type, torch.float32)
