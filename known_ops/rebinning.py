"""Ray-by-ray rebinning between parallel-beam and fan-beam sinograms, as linear operators.

Every ray of the *target* geometry is a line, written in the parallel convention as
``(theta, s)``: parallel view ``t`` has detector coordinate ``x cos t + y sin t`` and ray direction
``(sin t, -cos t)``, so the line is ``{p : p . (cos theta, sin theta) = s}``. The same line is also
``(theta + pi, -s)`` (traversed the other way; a line integral does not depend on the direction).

- A fan ray with source angle ``beta`` (source at ``D_so (sin beta, -cos beta)``) and fan angle
  ``phi`` (measured from the central ray, positive towards the detector axis ``u``, i.e. towards
  increasing bin index) lies on the line ``theta = beta - phi``, ``s = D_so sin(phi)``.
  Flat detector: ``phi = atan(p / D_sd)``; curved: ``phi = p / D_sd``, with
  ``p = (c - (n - 1) / 2) det_spacing + det_offset`` and ``D_sd = D_so + D_od``.
- Conversely the line ``(theta, s)``, ``|s| < D_so``, meets the source circle at two points: the
  fan rays ``(beta, phi) = (theta + asin(s / D_so), asin(s / D_so))`` and
  ``(theta + pi - asin(s / D_so), -asin(s / D_so))``.

The source sinogram is interpolated bilinearly in (view, bin) index space at the line's position
(linear in the view angle and in the detector coordinate: mm for parallel and flat detectors, arc
length for curved ones). A full scan (the views span ``2 pi``; a parallel scan also over ``pi``) is
periodic in the view: between the last view and the first one the interpolation wraps around (for
a parallel half turn the first view comes back mirrored, ``p(t + pi, s) = p(t, -s)``). Both
directions of each line are tried, the target ray's own direction (``geometry.rays()``) first, and
the first one that the source covers is used. A target ray whose line the source does not cover
(detector position outside the hull of the bin centres ``[0, n - 1]``, view outside
``[0, n_views - 1]`` for a scan that is not a full turn, or ``|s| >= D_so`` for a fan source)
gets 0; ``op.covered`` marks the covered ones.

The operator is a sparse matrix with at most 4 non-zeros per target ray, kept as float64
index/weight tables built once at construction (non-persistent buffers that follow ``.to(device)``
and are never rounded by ``.float()`` / ``.half()``; the weights are cast to the data's dtype at
call time). ``op(x)`` gathers and ``op.T(y)`` is its exact transpose, computed as a gather too
(from the transposed table), so both are deterministic on the CPU and on CUDA. See
``docs/rebinning.md``.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ._dtypes import floating_input
from .filters import _KeepsFloat64
from .geometry import ConeBeam3D, FanBeam2D, ParallelBeam2D, ParallelBeam3D
from .linear import LinearOperator, check_trailing_shape

__all__ = ["FanToParallelRebinning", "ParallelToFanRebinning"]

# Positions (in index units) closer than this to an integer are snapped to it, and positions this
# close outside the hull of the samples still count as covered (rounding of the trigonometry).
_INDEX_TOL = 1e-9
# Tolerance (rad) on the span of a scan for "full turn" / "half turn", and relative tolerance on
# the equal spacing of the view angles.
_SPAN_TOL = 1e-6
_STEP_RTOL = 1e-6


# --- geometry checks ---------------------------------------------------------------------------------


def _check_geometry(geometry, name: str, expected: type) -> None:
    if isinstance(geometry, (ParallelBeam3D, ConeBeam3D)):
        raise TypeError(
            f"{name} must be a 2D {expected.__name__}; got a 3D {type(geometry).__name__} (rebinning is 2D only)"
        )
    if not isinstance(geometry, expected):
        raise TypeError(f"{name} must be a known_ops.{expected.__name__}, got {type(geometry).__name__}")


class _Scan:
    """The uniform circular scan of a source geometry: first angle, step, number of views and how
    the view index wraps ("full": period n_views; "half": parallel half turn, mirrored wrap;
    "none": no wrap)."""

    def __init__(self, geometry, name: str):
        angles = geometry.angles
        if angles is None:
            raise ValueError(
                f"{name} was built from vectors (its angles are None); the source of a rebinning must be a "
                f"circular scan built from equally spaced angles"
            )
        n = len(angles)
        if n < 2:
            raise ValueError(f"{name} must have at least 2 views (equally spaced angles) to interpolate between, got {n}")
        angles = np.asarray(angles, dtype=np.float64)
        step = (angles[-1] - angles[0]) / (n - 1)
        steps = np.diff(angles)
        if step == 0 or np.max(np.abs(steps - step)) > _STEP_RTOL * abs(step):
            raise ValueError(
                f"{name}: the view angles must be equally spaced and monotonic (relative tolerance {_STEP_RTOL:g}); "
                f"the angle steps range over [{steps.min():.6g}, {steps.max():.6g}] rad"
            )
        span = n * abs(step)
        if span > 2 * math.pi + _SPAN_TOL:
            raise ValueError(
                f"{name}: the scan covers {span:.6g} rad (n_views x angle step), more than a full turn (2 pi); "
                "views would repeat"
            )
        if abs(span - 2 * math.pi) <= _SPAN_TOL:
            mode = "full"
        elif isinstance(geometry, ParallelBeam2D) and abs(span - math.pi) <= _SPAN_TOL:
            mode = "half"
        else:
            mode = "none"
        self.start, self.step, self.n, self.span, self.mode = float(angles[0]), float(step), n, span, mode

    def positions(self, theta: np.ndarray):
        """Fractional view index of the angles ``theta`` (rad): (v, flip, ok). ``v`` is reduced to
        [0, n) (full/half) or [0, n - 1] (none); ``flip`` is True where a half turn's view is met
        mirrored (the line is (theta - pi, -s) in the scan); ``ok`` is False where a non-periodic
        scan does not cover the angle."""
        raw = (theta - self.start) / self.step
        flip = np.zeros(raw.shape, dtype=bool)
        if self.mode == "full":
            v = np.mod(raw, self.n)
            ok = np.ones(raw.shape, dtype=bool)
        elif self.mode == "half":
            turns = np.floor(raw / self.n)
            v = raw - turns * self.n
            flip = np.mod(turns, 2) == 1
            ok = np.ones(raw.shape, dtype=bool)
        else:
            period = 2 * math.pi / abs(self.step)
            v = np.mod(raw, period)
            v = np.where(v > period - _INDEX_TOL, v - period, v)
            ok = (v >= -_INDEX_TOL) & (v <= self.n - 1 + _INDEX_TOL)
            v = np.clip(v, 0.0, self.n - 1)
        v = _snap(v)
        if self.mode in ("full", "half"):
            wrapped = v >= self.n  # snapped up to n: the first view again
            v = np.where(wrapped, 0.0, v)
            if self.mode == "half":
                flip = flip ^ wrapped
        return v, flip, ok

    def neighbours(self, v: np.ndarray, flip: np.ndarray):
        """Lower and upper view (i0, i1), the weight w of i1 and whether each is mirrored."""
        if self.mode == "none":
            i0 = np.minimum(np.floor(v), self.n - 2).astype(np.int64)
            return i0, i0 + 1, v - i0, flip, flip
        i0 = np.floor(v).astype(np.int64)
        i0 = np.minimum(i0, self.n - 1)
        w = v - i0
        i1 = i0 + 1
        wraps = i1 == self.n
        i1 = np.where(wraps, 0, i1)
        flip1 = flip ^ wraps if self.mode == "half" else flip
        return i0, i1, w, flip, flip1


def _snap(x: np.ndarray) -> np.ndarray:
    nearest = np.round(x)
    return np.where(np.abs(x - nearest) <= _INDEX_TOL, nearest, x)


def _detector(det_position: np.ndarray, n_det: int):
    """Bilinear taps along the detector at fractional bin positions: (ok, j0, j1, weight of j1)."""
    u = _snap(det_position)
    ok = (u >= -_INDEX_TOL) & (u <= n_det - 1 + _INDEX_TOL)
    u = np.clip(u, 0.0, n_det - 1)
    j0 = np.minimum(np.floor(u), max(n_det - 2, 0)).astype(np.int64)
    j1 = np.minimum(j0 + 1, n_det - 1)
    return ok, j0, j1, u - j0


def _bin_centres(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64) - (n - 1) / 2


# --- sources: where a line lies in a source sinogram ------------------------------------------------


class _ParallelSource:
    def __init__(self, geometry: ParallelBeam2D, name: str):
        self.scan = _Scan(geometry, name)
        self.n_det = geometry.det_count
        self.spacing = float(geometry.det_spacing[0])
        self.offset = float(geometry.det_offset)

    def bin_position(self, s: np.ndarray) -> np.ndarray:
        return (s - self.offset) / self.spacing + (self.n_det - 1) / 2

    def taps(self, theta: np.ndarray, s: np.ndarray):
        """(ok, index (M, 4), weight (M, 4)) of the lines (theta, s)."""
        v, flip, ok = self.scan.positions(theta)
        i0, i1, w, flip0, flip1 = self.scan.neighbours(v, flip)
        ok0, j00, j01, a0 = _detector(self.bin_position(np.where(flip0, -s, s)), self.n_det)
        ok1, j10, j11, a1 = _detector(self.bin_position(np.where(flip1, -s, s)), self.n_det)
        ok = ok & ok0 & (ok1 | (w == 0))  # the upper view only matters when it has weight
        return (ok, *_four_taps(i0, i1, w, j00, j01, a0, j10, j11, a1, self.n_det))


class _FanSource:
    def __init__(self, geometry: FanBeam2D, name: str):
        self.scan = _Scan(geometry, name)
        self.n_det = geometry.det_count
        self.spacing = float(geometry.det_spacing[0])
        self.offset = float(geometry.det_offset)
        self.d_so = float(geometry.source_distance)
        self.d_sd = float(geometry.source_distance + geometry.detector_distance)
        self.curved = geometry.detector == "curved"

    def bin_position(self, phi: np.ndarray) -> np.ndarray:
        along = self.d_sd * (phi if self.curved else np.tan(phi))
        return (along - self.offset) / self.spacing + (self.n_det - 1) / 2

    def taps(self, theta: np.ndarray, s: np.ndarray):
        ratio = s / self.d_so
        inside = np.abs(ratio) < 1.0
        phi = np.arcsin(np.clip(ratio, -1.0, 1.0))
        v, flip, ok = self.scan.positions(theta + phi)
        i0, i1, w, _, _ = self.scan.neighbours(v, flip)
        ok_det, j0, j1, a = _detector(self.bin_position(phi), self.n_det)
        return (inside & ok & ok_det, *_four_taps(i0, i1, w, j0, j1, a, j0, j1, a, self.n_det))


def _four_taps(i0, i1, w, j00, j01, a0, j10, j11, a1, n_det):
    index = np.stack([i0 * n_det + j00, i0 * n_det + j01, i1 * n_det + j10, i1 * n_det + j11], axis=-1)
    weight = np.stack([(1 - w) * (1 - a0), (1 - w) * a0, w * (1 - a1), w * a1], axis=-1)
    return index, weight


# --- target lines ----------------------------------------------------------------------------------------


def _target_lines(geometry) -> tuple[np.ndarray, np.ndarray]:
    """(theta, s) of every ray of ``geometry`` (n_views, det_count each), from ``geometry.rays()``:
    the direction (sin theta, -cos theta) is the ray's own direction."""
    rays = geometry.rays().numpy()
    origin, direction = rays[..., 0:2], rays[..., 2:4]
    theta = np.arctan2(direction[..., 0], -direction[..., 1])
    s = origin[..., 0] * np.cos(theta) + origin[..., 1] * np.sin(theta)
    return theta, s


def _ell_table(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_rows: int, n_cols: int):
    """A padded row-wise (ELL) table of the sparse matrix given by COO triples: (index, weight),
    each (K, n_rows), K the largest number of entries in a row; padding points at column n_cols
    (a zero appended to the input) with weight 0. Entries of a row are in increasing column order."""
    order = np.lexsort((cols, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    counts = np.bincount(rows, minlength=n_rows)
    k = int(counts.max()) if rows.size else 0
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(rows.size) - starts[rows]
    index = np.full((k, n_rows), n_cols, dtype=np.int64)
    weight = np.zeros((k, n_rows), dtype=np.float64)
    index[rank, rows] = cols
    weight[rank, rows] = vals
    return index, weight


class _ApplyTable(torch.autograd.Function):
    """``op``'s matrix (``transpose=False``) or its transpose applied to the last dim of ``x``; the
    backward of one is the other, so gradients of any order are exact and use gathers only. Forward
    mode applies the same matrix to the tangent; ``torch.func`` transforms (``jvp``, ``grad``,
    ``jacrev``, ``vmap``) work through ``setup_context`` and the generated batching rule."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, op, transpose):
        return op._gather(x, transpose)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, ctx.op, ctx.transpose = inputs

    @staticmethod
    def backward(ctx, grad):
        return _ApplyTable.apply(grad, ctx.op, not ctx.transpose), None, None

    @staticmethod
    def jvp(ctx, tangent, _op, _transpose):
        return _ApplyTable.apply(tangent, ctx.op, ctx.transpose)


class _Rebinning2D(_KeepsFloat64, LinearOperator):
    """Rebinning from ``source_geometry`` (a uniform circular ParallelBeam2D or FanBeam2D scan) to the
    rays of ``target_geometry`` (any ParallelBeam2D or FanBeam2D); see the module docstring."""

    _FLOAT64_BUFFERS = ("_forward_weight", "_adjoint_weight")

    def __init__(self, source_geometry, source_name: str, target_geometry, target_name: str):
        super().__init__()
        source = (_ParallelSource if isinstance(source_geometry, ParallelBeam2D) else _FanSource)(
            source_geometry, source_name
        )
        self.source_geometry = source_geometry
        self.target_geometry = target_geometry
        self.domain_shape = tuple(source_geometry.shape)
        self.range_shape = tuple(target_geometry.shape)
        n_src, n_tgt = math.prod(self.domain_shape), math.prod(self.range_shape)

        theta, s = (a.reshape(-1) for a in _target_lines(target_geometry))
        ok, index, weight = source.taps(theta, s)
        ok_b, index_b, weight_b = source.taps(theta + math.pi, -s)  # the same line, the other way
        use_b = ~ok & ok_b
        index = np.where(use_b[:, None], index_b, index)
        weight = np.where(use_b[:, None], weight_b, weight)
        covered = ok | ok_b

        # COO triples of the covered rays, duplicates (a one-bin detector) merged, zeros dropped.
        rows = np.repeat(np.arange(n_tgt, dtype=np.int64), 4)
        keep = np.repeat(covered, 4) & (weight.reshape(-1) != 0)
        rows, cols, vals = rows[keep], index.reshape(-1)[keep], weight.reshape(-1)[keep]
        keys, inverse = np.unique(rows * n_src + cols, return_inverse=True)
        vals = np.bincount(inverse.reshape(-1), weights=vals, minlength=keys.size)
        rows, cols = keys // n_src, keys % n_src

        forward_index, forward_weight = _ell_table(rows, cols, vals, n_tgt, n_src)
        adjoint_index, adjoint_weight = _ell_table(cols, rows, vals, n_src, n_tgt)
        self.register_buffer("_forward_index", torch.from_numpy(forward_index), persistent=False)
        self.register_buffer("_forward_weight", torch.from_numpy(forward_weight), persistent=False)
        self.register_buffer("_adjoint_index", torch.from_numpy(adjoint_index), persistent=False)
        self.register_buffer("_adjoint_weight", torch.from_numpy(adjoint_weight), persistent=False)
        self.register_buffer("covered", torch.from_numpy(covered.reshape(self.range_shape)), persistent=False)

    # --- application ---------------------------------------------------------------------------------

    def _gather(self, x: torch.Tensor, transpose: bool) -> torch.Tensor:
        """The table applied to the last dim of ``x``: ``out[..., r] = sum_k w[k, r] x[..., i[k, r]]``,
        the k summed in order (deterministic)."""
        if transpose:
            index, weight, n_out = self._adjoint_index, self._adjoint_weight, math.prod(self.domain_shape)
        else:
            index, weight, n_out = self._forward_index, self._forward_weight, math.prod(self.range_shape)
        if index.shape[0] == 0:
            return x.new_zeros(x.shape[:-1] + (n_out,))
        padded = torch.nn.functional.pad(x, (0, 1))  # column n_in: the zero that padding entries point at
        weight = weight.to(x.dtype)
        out = padded.index_select(-1, index[0]) * weight[0]
        for k in range(1, index.shape[0]):
            out = torch.addcmul(out, padded.index_select(-1, index[k]), weight[k])
        return out

    def _run(self, t, name, in_shape, out_shape, what, transpose):
        t = floating_input(t, name)
        check_trailing_shape(t, name, in_shape, what)
        device = self._forward_index.device
        if t.device != device:
            raise ValueError(
                f"{name} is on {t.device} but the operator's tables are on {device}; move the operator with .to(device)"
            )
        lead = t.shape[: t.dim() - 2]
        flat = t.reshape(lead + (math.prod(in_shape),))
        return _ApplyTable.apply(flat, self, transpose).reshape(lead + tuple(out_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rebin a source sinogram ``(..., n_views, det_count)`` to the target geometry."""
        return self._run(x, "x", self.domain_shape, self.range_shape, "the source sinogram (n_views, det_count)", False)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """The exact transpose: scatter each target ray's value back with the same weights."""
        return self._run(y, "y", self.range_shape, self.domain_shape, "the target sinogram (n_views, det_count)", True)

    # --- inspection ----------------------------------------------------------------------------------

    def to_sparse(self) -> torch.Tensor:
        """The matrix, ``prod(range_shape) x prod(domain_shape)``, as a float64 sparse COO tensor on the CPU."""
        index, weight = self._forward_index.cpu(), self._forward_weight.cpu()
        n_src = math.prod(self.domain_shape)
        rows = torch.arange(index.shape[1]).expand_as(index)
        real = index < n_src
        return torch.sparse_coo_tensor(
            torch.stack([rows[real], index[real]]), weight[real], (math.prod(self.range_shape), n_src),
            check_invariants=True,
        ).coalesce()

    def extra_repr(self) -> str:
        covered = int(self.covered.sum())
        return (
            f"source={self.source_geometry!r},\ntarget={self.target_geometry!r},\n"
            f"covered rays: {covered} of {self.covered.numel()}"
        )


class FanToParallelRebinning(_Rebinning2D):
    """Rebin a fan-beam sinogram to a parallel-beam one, ray by ray (bilinear interpolation).

    ``op = FanToParallelRebinning(fan_geometry, parallel_geometry)`` maps ``(..., *fan_geometry.shape)``
    to ``(..., *parallel_geometry.shape)``; ``op.T`` is its exact transpose (not the inverse
    rebinning). ``fan_geometry``: a ``FanBeam2D`` (flat or curved, any ``det_offset``) built from
    equally spaced angles spanning a full turn (periodic) or less (a short scan). ``parallel_geometry``:
    any ``ParallelBeam2D``. Parallel rays whose line the fan scan does not cover are 0; ``op.covered``
    (bool, ``parallel_geometry.shape``) marks the others. See ``docs/rebinning.md``.
    """

    def __init__(self, fan_geometry: FanBeam2D, parallel_geometry: ParallelBeam2D):
        _check_geometry(fan_geometry, "fan_geometry", FanBeam2D)
        _check_geometry(parallel_geometry, "parallel_geometry", ParallelBeam2D)
        super().__init__(fan_geometry, "fan_geometry", parallel_geometry, "parallel_geometry")

    @property
    def fan_geometry(self) -> FanBeam2D:
        return self.source_geometry

    @property
    def parallel_geometry(self) -> ParallelBeam2D:
        return self.target_geometry


class ParallelToFanRebinning(_Rebinning2D):
    """Rebin a parallel-beam sinogram to a fan-beam one, ray by ray (bilinear interpolation).

    ``op = ParallelToFanRebinning(parallel_geometry, fan_geometry)`` maps
    ``(..., *parallel_geometry.shape)`` to ``(..., *fan_geometry.shape)``; ``op.T`` is its exact
    transpose. ``parallel_geometry``: a ``ParallelBeam2D`` built from equally spaced angles; over a
    half turn (``pi``) or a full turn it is periodic in the view (a half turn wraps around mirrored,
    so it serves a fan scan over ``2 pi``), over another range it covers only its own views.
    ``fan_geometry``: any ``FanBeam2D`` (flat or curved). Fan rays whose line the parallel scan does
    not cover are 0; ``op.covered`` (bool, ``fan_geometry.shape``) marks the others.
    """

    def __init__(self, parallel_geometry: ParallelBeam2D, fan_geometry: FanBeam2D):
        _check_geometry(parallel_geometry, "parallel_geometry", ParallelBeam2D)
        _check_geometry(fan_geometry, "fan_geometry", FanBeam2D)
        super().__init__(parallel_geometry, "parallel_geometry", fan_geometry, "fan_geometry")

    @property
    def fan_geometry(self) -> FanBeam2D:
        return self.target_geometry

    @property
    def parallel_geometry(self) -> ParallelBeam2D:
        return self.source_geometry
