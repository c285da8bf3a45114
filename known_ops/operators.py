"""RayTransform: the forward projector A and its exact adjoint A.T as torch modules."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from . import _ops
from .geometry import FanBeam2D, ParallelBeam2D, Volume, _Geometry2D

__all__ = ["RayTransform"]

_MODELS = ("joseph",)


def _check_floating(t, name: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name} must be float32 or float64, got {t.dtype}")


def _check_source_outside(volume: Volume, geometry: FanBeam2D) -> None:
    """Fan rays are lines through the source; the image (grown by one pixel) must lie in front of it.

    Precisely: in every view the grown image must lie strictly on one side of the
    line through the source parallel to the detector, so that each point of it
    projects to a finite detector position, continuously (the back-projection
    finds the rays through a pixel by projecting the pixel's neighbourhood).
    This excludes a source inside or beside the image.
    """
    vectors = geometry.to_vectors()
    source, step = vectors[:, 0:2], vectors[:, 4:6]
    (ylo, yhi), (xlo, xhi) = volume.bounds
    sy, sx = volume.spacing
    corners = np.array([[x, y] for x in (xlo - sx, xhi + sx) for y in (ylo - sy, yhi + sy)])  # (4, 2)
    rel = corners[None, :, :] - source[:, None, :]  # (views, 4, 2)
    # Signed distance of each corner from the line through the source along u.
    side = (rel[..., 0] * step[:, None, 1] - rel[..., 1] * step[:, None, 0]) / np.hypot(step[:, 0], step[:, 1])[:, None]
    bad = ~(np.all(side > 0, axis=1) | np.all(side < 0, axis=1))
    if np.any(bad):
        k = int(np.argmax(bad))
        raise ValueError(
            f"geometry: the source of view {k} at ({source[k, 0]:.4g}, {source[k, 1]:.4g}) mm lies inside the volume "
            f"or level with it (x in [{xlo:.4g}, {xhi:.4g}], y in [{ylo:.4g}, {yhi:.4g}] mm, plus one pixel), but "
            "every pixel must lie in front of the source; increase source_distance or shrink the volume"
        )


class RayTransform(nn.Module):
    """The ray transform ``A`` from ``volume`` to ``geometry``'s projections, as a module.

    ``A(x)`` maps ``(..., ny, nx)`` to ``(..., n_views, det_count)`` line integrals
    (value x mm); ``A.T`` is its exact adjoint (``A.T.T is A``). Leading
    dimensions are batch/channel dimensions. Gradients flow both ways: the
    backward of ``A`` is ``A.T`` and vice versa. Move the operator to the data's
    device with ``A.to(device)``.

    ``model="joseph"``: Joseph's method (linear interpolation across the ray's
    major axis, one sample per column or row) with its exact transpose.
    """

    _TABLES = ("_rays", "_views", "_rays_f32", "_views_f32")

    def __init__(self, volume: Volume, geometry, model: str = "joseph"):
        super().__init__()
        if not isinstance(volume, Volume):
            raise TypeError(f"volume must be a known_ops.Volume, got {type(volume).__name__}")
        if not isinstance(geometry, (ParallelBeam2D, FanBeam2D)):
            raise TypeError(f"geometry must be a ParallelBeam2D or FanBeam2D, got {type(geometry).__name__}")
        if volume.ndim != geometry.ndim:
            raise ValueError(f"volume is {volume.ndim}D but geometry is {geometry.ndim}D")
        if model not in _MODELS:
            raise ValueError(f"model must be one of {_MODELS}, got {model!r}")
        if isinstance(geometry, FanBeam2D):
            _check_source_outside(volume, geometry)
        self.volume = volume
        self.geometry = geometry
        self.model = model
        sy, sx = volume.spacing
        oy, ox = volume.offset
        rays, views = _ops.tables_2d(
            torch.from_numpy(geometry.to_vectors()), geometry._kind, geometry.det_count, volume.shape, [sy, sx, oy, ox]
        )
        # The tables in float64 and, computed once here rather than at every call, in float32.
        self.register_buffer("_rays", rays, persistent=False)
        self.register_buffer("_views", views, persistent=False)
        self.register_buffer("_rays_f32", rays.float(), persistent=False)
        self.register_buffer("_views_f32", views.float(), persistent=False)
        self.__dict__["_adjoint"] = _Adjoint(self)  # not a submodule: A and A.T share one set of tables

    @property
    def T(self) -> "_Adjoint":
        return self.__dict__["_adjoint"]

    def _apply(self, fn, recurse=True):
        # Module casts (A.float(), model.half(), model.to(dtype)) must not round
        # the geometry: each table keeps its dtype and only follows device moves.
        tables = {name: getattr(self, name) for name in self._TABLES}
        super()._apply(fn, recurse)
        for name, table in tables.items():
            setattr(self, name, table.to(getattr(self, name).device))
        return self

    @property
    def domain_shape(self) -> tuple[int, ...]:
        return self.volume.shape

    @property
    def range_shape(self) -> tuple[int, ...]:
        return self.geometry.shape

    def _tables(self, data: torch.Tensor, name: str):
        if data.device != self._rays.device:
            raise ValueError(
                f"{name} is on {data.device} but the operator's geometry tables are on {self._rays.device}; "
                f"move the operator with .to({str(data.device)!r})"
            )
        if data.dtype == torch.float32:
            return self._rays_f32, self._views_f32
        return self._rays, self._views

    def _check_trailing(self, t: torch.Tensor, name: str, expected: tuple[int, ...], what: str) -> None:
        _check_floating(t, name)
        if t.dim() < len(expected) or tuple(t.shape[-len(expected):]) != tuple(expected):
            raise ValueError(f"{name} must have shape (..., {', '.join(map(str, expected))}) ({what}), got {tuple(t.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_trailing(x, "x", self.domain_shape, "the volume's shape")
        rays, views = self._tables(x, "x")
        lead = x.shape[: x.dim() - 2]
        y = _ops.joseph2d_forward(x.reshape((-1,) + tuple(self.domain_shape)), rays, views)
        return y.reshape(lead + tuple(self.range_shape))

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self._check_trailing(y, "y", self.range_shape, "(n_views, det_count)")
        rays, views = self._tables(y, "y")
        lead = y.shape[: y.dim() - 2]
        ny, nx = self.domain_shape
        x = _ops.joseph2d_adjoint(y.reshape((-1,) + tuple(self.range_shape)), rays, views, ny, nx)
        return x.reshape(lead + tuple(self.domain_shape))

    def extra_repr(self) -> str:
        return f"volume={self.volume!r},\ngeometry={self.geometry!r},\nmodel={self.model!r}"


class _Adjoint(nn.Module):
    """``A.T``: the exact adjoint (back-projection) of a RayTransform, sharing its tables."""

    def __init__(self, forward_op: RayTransform):
        super().__init__()
        self.__dict__["_forward_op"] = forward_op  # plain reference, so A and A.T do not own each other

    @property
    def T(self) -> RayTransform:
        return self.__dict__["_forward_op"]

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.T.adjoint(y)

    def extra_repr(self) -> str:
        return f"adjoint of RayTransform(volume={self.T.volume!r}, geometry={self.T.geometry!r})"
