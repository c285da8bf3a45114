"""A pure-PyTorch ray transform built on ``grid_sample``: the benchmark's baseline.

For parallel beams this is the classic "rotate the image and sum its rows": every
ray is sampled at ``n_samples`` equally spaced points (bilinear interpolation,
zero outside the image) and the samples are summed times the step length. The
same code handles fan beams, since every ray is handled as a line: its samples
are centred on the ray's point closest to the isocentre and span the image width,
so objects inside the image's inscribed circle are fully covered (the corners are
clipped, as in rotate-and-sum).

The adjoint is the exact transpose of that forward: the gradient of
``grid_sample`` with respect to its input (``aten.grid_sampler_2d_backward``),
summed over the views. Only public torch operators are used; the views are
processed in chunks so that the intermediate stays below ``max_elements``.

``GridSampleConeProjector`` is the same baseline for 3D cone beams (trilinear
``grid_sample`` on a 5D input, ``aten.grid_sampler_3d_backward`` for the adjoint):
``nx`` samples per ray, centred on the ray's point closest to the isocentre, so
objects inside the volume's inscribed sphere are fully covered. Its sampling
grids (views x samples x rows x cols x 3) would not fit in memory, so each call
builds them chunk by chunk from the rays' centres and directions: that is part
of the timed work.
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["GridSampleProjector", "GridSampleConeProjector"]

_BILINEAR, _ZEROS = 0, 0  # grid_sampler's enums for mode="bilinear", padding_mode="zeros"


class GridSampleProjector:
    """Forward ``(B, ny, nx) -> (B, n_views, n_det)`` and its exact adjoint, both batched.

    ``vectors`` is the geometry in ASTRA's ``parallel_vec`` (``fan=False``) or
    ``fanflat_vec`` (``fan=True``) layout, as returned by ``geometry.to_vectors()``.
    """

    def __init__(self, shape, spacing, vectors: np.ndarray, det_count: int, fan: bool, *,
                 device="cpu", dtype=torch.float32, max_elements: int = 2**26, batch: int = 1):
        ny, nx = shape
        sy, sx = spacing
        self.shape = (ny, nx)
        self.n_views = vectors.shape[0]
        self.det_count = det_count
        self.n_samples = nx  # one sample per image column, like Joseph on a square image
        self.step = sx  # mm between samples, so sum * step is a line integral
        v = torch.as_tensor(vectors, dtype=torch.float64)
        col = torch.arange(det_count, dtype=torch.float64) - (det_count - 1) / 2
        # A point on every ray (the detector bin centre) and the ray direction, (n_views, det_count, 2).
        bins = v[:, None, 2:4] + col[None, :, None] * v[:, None, 4:6]
        direction = (bins - v[:, None, 0:2]) if fan else v[:, None, 0:2].expand_as(bins)
        direction = direction / direction.norm(dim=-1, keepdim=True)
        centre = bins - (bins * direction).sum(-1, keepdim=True) * direction
        s = (torch.arange(self.n_samples, dtype=torch.float64) - (self.n_samples - 1) / 2) * self.step
        points = centre[:, None] + s[None, :, None, None] * direction[:, None]  # (views, samples, det, 2)
        # grid_sample's normalised coordinates (align_corners=False): -1 and 1 are the image's outer edges.
        grid = torch.stack((points[..., 0] / (nx * sx / 2), points[..., 1] / (ny * sy / 2)), dim=-1)
        per_view = batch * self.n_samples * det_count
        self.chunk = max(1, min(self.n_views, max_elements // per_view))
        self.grids = [g.to(device=device, dtype=dtype).contiguous() for g in grid.split(self.chunk)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, ny, nx) -> (B, n_views, det_count)."""
        b = x.shape[0]
        out = []
        for grid in self.grids:
            # The batch rides in the channel dimension, so one grid serves every image.
            image = x.unsqueeze(0).expand(grid.shape[0], b, *self.shape)
            samples = torch.nn.functional.grid_sample(image, grid, mode="bilinear", padding_mode="zeros",
                                                      align_corners=False)  # (views, B, samples, det)
            out.append(samples.sum(dim=2).transpose(0, 1))
        return torch.cat(out, dim=1).mul_(self.step)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``y``: (B, n_views, det_count) -> (B, ny, nx), the exact transpose of :meth:`forward`."""
        b = y.shape[0]
        x = torch.zeros((b, *self.shape), dtype=y.dtype, device=y.device)
        start = 0
        for grid in self.grids:
            nv = grid.shape[0]
            g = (y[:, start:start + nv] * self.step).transpose(0, 1)  # (views, B, det)
            g = g.unsqueeze(2).expand(nv, b, self.n_samples, self.det_count)
            shape_only = x.new_empty(()).expand(nv, b, *self.shape)  # the input's values are not needed
            grad_input, _ = torch.ops.aten.grid_sampler_2d_backward(
                g, shape_only, grid, _BILINEAR, _ZEROS, False, [True, False])
            x += grad_input.sum(dim=0)
            start += nv
        return x


class GridSampleConeProjector:
    """Forward ``(B, nz, ny, nx) -> (B, n_views, rows, cols)`` and its exact adjoint, for cone beams.

    ``vectors`` is the geometry in ASTRA's ``cone_vec`` layout (source, detector centre, column
    step u, row step v), as returned by ``ConeBeam3D.to_vectors()``; ``det_shape = (rows, cols)``.
    """

    def __init__(self, shape, spacing, vectors: np.ndarray, det_shape, *, device="cpu", dtype=torch.float32,
                 max_elements: int = 2**26, batch: int = 1):
        nz, ny, nx = shape
        sz, sy, sx = spacing
        rows, cols = det_shape
        self.shape = (nz, ny, nx)
        self.n_views = vectors.shape[0]
        self.det_shape = (rows, cols)
        self.n_samples = nx  # one sample per volume column along the ray, like Joseph on a cube
        self.step = sx  # mm between samples
        v = torch.as_tensor(vectors, dtype=torch.float64)
        src, det, u, w = v[:, 0:3], v[:, 3:6], v[:, 6:9], v[:, 9:12]
        col = torch.arange(cols, dtype=torch.float64) - (cols - 1) / 2
        row = torch.arange(rows, dtype=torch.float64) - (rows - 1) / 2
        pixels = (det[:, None, None] + row[None, :, None, None] * w[:, None, None]
                  + col[None, None, :, None] * u[:, None, None])  # (views, rows, cols, 3)
        direction = pixels - src[:, None, None]
        direction = direction / direction.norm(dim=-1, keepdim=True)
        centre = pixels - (pixels * direction).sum(-1, keepdim=True) * direction
        # grid_sample's normalised coordinates (align_corners=False): -1 and 1 are the volume's outer faces;
        # the grid's last dimension is (x, y, z), and so are the geometry vectors'.
        half = torch.tensor([nx * sx / 2, ny * sy / 2, nz * sz / 2], dtype=torch.float64)
        self.centre = (centre / half).to(device=device, dtype=dtype)
        self.direction = (direction / half).to(device=device, dtype=dtype)
        self.offsets = ((torch.arange(self.n_samples, dtype=torch.float64) - (self.n_samples - 1) / 2)
                        * self.step).to(device=device, dtype=dtype)
        per_view = batch * self.n_samples * rows * cols
        self.chunk = max(1, min(self.n_views, max_elements // per_view))
        self.n_chunks = math.ceil(self.n_views / self.chunk)

    def _grid(self, start: int, stop: int) -> torch.Tensor:
        """Sampling points of views [start, stop): (views, samples, rows, cols, 3)."""
        c, d = self.centre[start:stop, None], self.direction[start:stop, None]
        return torch.addcmul(c, self.offsets[None, :, None, None, None], d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, nz, ny, nx) -> (B, n_views, rows, cols)."""
        b = x.shape[0]
        out = []
        for start in range(0, self.n_views, self.chunk):
            grid = self._grid(start, min(start + self.chunk, self.n_views))
            volume = x.unsqueeze(0).expand(grid.shape[0], b, *self.shape)  # the batch rides in the channels
            samples = torch.nn.functional.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros",
                                                      align_corners=False)  # (views, B, samples, rows, cols)
            out.append(samples.sum(dim=2).transpose(0, 1))
        return torch.cat(out, dim=1).mul_(self.step)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``y``: (B, n_views, rows, cols) -> (B, nz, ny, nx), the exact transpose of :meth:`forward`."""
        b = y.shape[0]
        x = torch.zeros((b, *self.shape), dtype=y.dtype, device=y.device)
        for start in range(0, self.n_views, self.chunk):
            stop = min(start + self.chunk, self.n_views)
            nv = stop - start
            grid = self._grid(start, stop)
            g = (y[:, start:stop] * self.step).transpose(0, 1)  # (views, B, rows, cols)
            g = g.unsqueeze(2).expand(nv, b, self.n_samples, *self.det_shape)
            shape_only = x.new_empty(()).expand(nv, b, *self.shape)  # the input's values are not needed
            grad_input, _ = torch.ops.aten.grid_sampler_3d_backward(
                g, shape_only, grid, _BILINEAR, _ZEROS, False, [True, False])
            x += grad_input.sum(dim=0)
        return x


def _adjoint_mismatch(proj, batch: int = 2, seed: int = 0) -> float:
    """Relative dot-product mismatch |<Ax, y> - <x, A^T y>| / (|Ax| |y|) (a self-check)."""
    gen = torch.Generator().manual_seed(seed)
    cone = isinstance(proj, GridSampleConeProjector)
    dtype, device = (proj.centre.dtype, proj.centre.device) if cone else (proj.grids[0].dtype, proj.grids[0].device)
    det = proj.det_shape if cone else (proj.det_count,)
    x = torch.rand((batch, *proj.shape), generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    y = torch.rand((batch, proj.n_views, *det), generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    ax = proj.forward(x)
    aty = proj.adjoint(y)
    lhs = float((ax.double() * y.double()).sum())
    rhs = float((x.double() * aty.double()).sum())
    return abs(lhs - rhs) / (float(ax.double().norm()) * float(y.double().norm()) + math.ulp(1.0))
