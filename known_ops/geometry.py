"""Image grids and projection geometries.

All objects are immutable, validated at construction and printable. Every
projection geometry is stored as per-view vectors in ASTRA's layout
(``parallel_vec`` / ``fanflat_vec``), so circular scans and arbitrary
trajectories share one representation; see ``docs/conventions.md``.
"""
from __future__ import annotations

import math
import numbers
from typing import Sequence

import numpy as np

__all__ = ["Volume", "ParallelBeam2D", "FanBeam2D", "uniform_angles"]


# --- validation helpers ------------------------------------------------------------------------


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


def _finite_float(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _positive_float(value, name: str) -> float:
    value = _finite_float(value, name)
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def _per_axis(value, n: int, name: str, check) -> tuple[float, ...]:
    """A scalar (same for every axis) or a sequence of n values, each passed through check."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return tuple(check(value, name) for _ in range(n))
    try:
        items = list(value)
    except TypeError:
        raise TypeError(f"{name} must be a number or a sequence of {n} numbers, got {value!r}") from None
    if len(items) != n:
        raise ValueError(f"{name} must have {n} entries (one per axis of the volume), got {len(items)}")
    return tuple(check(v, f"{name}[{k}]") for k, v in enumerate(items))


def _float_array(values, name: str, ndim: int) -> np.ndarray:
    """A read-only float64 copy of `values`, checked for dimensionality, emptiness and finiteness."""
    if hasattr(values, "detach"):  # torch tensor
        values = values.detach().cpu().numpy()
    try:
        arr = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an array of real numbers") from None
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} must not be empty (at least one view is needed)")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must contain only finite values")
    arr.flags.writeable = False
    return arr


def uniform_angles(n: int, range: float = math.pi, start: float = 0.0) -> np.ndarray:
    """``n`` equally spaced angles ``start + k * range / n`` (radians), endpoint excluded."""
    n = _positive_int(n, "n")
    angular_range = _finite_float(range, "range")
    if angular_range == 0:
        raise ValueError("range must be non-zero")
    start = _finite_float(start, "start")
    return start + np.arange(n, dtype=np.float64) * (angular_range / n)


class _Frozen:
    """Attributes are set once, in __init__; afterwards the object cannot change."""

    __slots__ = ()

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is immutable; build a new one instead")

    def _set(self, name, value):
        object.__setattr__(self, name, value)


# --- image grid --------------------------------------------------------------------------------


class Volume(_Frozen):
    """A regular grid of voxels (pixels in 2D), in mm.

    ``shape`` is ``(ny, nx)`` or ``(nz, ny, nx)``; ``spacing`` and ``offset`` are a
    scalar or one value per axis, in the same (array) order as ``shape``. The
    centre of voxel ``(k, i, j)`` is ``x = (j - (nx-1)/2) sx + ox``,
    ``y = (i - (ny-1)/2) sy + oy``, ``z = (k - (nz-1)/2) sz + oz``.
    """

    __slots__ = ("shape", "spacing", "offset")

    def __init__(self, shape: Sequence[int], spacing=1.0, offset=0.0):
        try:
            dims = tuple(shape)
        except TypeError:
            raise TypeError(f"shape must be a sequence of 2 or 3 positive integers, got {shape!r}") from None
        if len(dims) not in (2, 3):
            raise ValueError(f"shape must have 2 (ny, nx) or 3 (nz, ny, nx) entries, got {len(dims)}")
        self._set("shape", tuple(_positive_int(n, f"shape[{k}]") for k, n in enumerate(dims)))
        self._set("spacing", _per_axis(spacing, len(dims), "spacing", _positive_float))
        self._set("offset", _per_axis(offset, len(dims), "offset", _finite_float))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def extent(self) -> tuple[float, ...]:
        """Physical size per axis (mm), array order."""
        return tuple(n * s for n, s in zip(self.shape, self.spacing))

    @property
    def bounds(self) -> tuple[tuple[float, float], ...]:
        """(min, max) of the grid's outer edges per axis (mm), array order."""
        return tuple((o - e / 2, o + e / 2) for o, e in zip(self.offset, self.extent))

    def coordinates(self, axis: int) -> np.ndarray:
        """Voxel-centre coordinates (mm) along ``axis`` (array order)."""
        n, s, o = self.shape[axis], self.spacing[axis], self.offset[axis]
        return (np.arange(n) - (n - 1) / 2) * s + o

    def __eq__(self, other):
        return isinstance(other, Volume) and (self.shape, self.spacing, self.offset) == (
            other.shape,
            other.spacing,
            other.offset,
        )

    def __hash__(self):
        return hash((self.shape, self.spacing, self.offset))

    def __repr__(self):
        return f"Volume(shape={self.shape}, spacing={self.spacing}, offset={self.offset})"


# --- projection geometries -----------------------------------------------------------------------


class _Geometry2D(_Frozen):
    """Per-view vectors (n_views, 6) plus detector size; the common part of 2D geometries."""

    __slots__ = ("_vectors", "det_count", "angles", "det_offset")
    ndim = 2
    _kind: int  # geometry kind understood by the kernels (known_ops._ops)

    def _init_vectors(self, vectors: np.ndarray, det_count: int, angles: np.ndarray | None, det_offset=None) -> None:
        self._set("_vectors", vectors)
        self._set("det_count", det_count)
        self._set("angles", angles)
        self._set("det_offset", det_offset)  # mm; None when built from vectors

    @property
    def n_views(self) -> int:
        return self._vectors.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of one projection stack: (n_views, det_count)."""
        return (self.n_views, self.det_count)

    def to_vectors(self) -> np.ndarray:
        """(n_views, 6) float64 array in ASTRA's vector layout (a copy)."""
        return np.array(self._vectors)

    @property
    def det_spacing(self) -> np.ndarray:
        """Detector pixel size (mm) per view: |u|."""
        return np.hypot(self._vectors[:, 4], self._vectors[:, 5])

    def rays(self):
        """(n_views, det_count, 4) float64 tensor: origin (x, y) and direction (x, y) of every ray (mm)."""
        import torch

        from . import _ops

        return _ops.rays_2d(torch.from_numpy(self.to_vectors()), self._kind, self.det_count)

    def __eq__(self, other):
        return (
            type(other) is type(self)
            and self.det_count == other.det_count
            and self._extra_key() == other._extra_key()
            and np.array_equal(self._vectors, other._vectors)
        )

    def __hash__(self):
        return hash((type(self), self.det_count, self._vectors.tobytes()))

    def _extra_key(self):
        return ()

    def _offset_repr(self) -> str:
        return f", det_offset={self.det_offset:g} mm" if self.det_offset else ""

    def _angles_repr(self) -> str:
        if self.angles is None:
            return f"{self.n_views} views from vectors"
        a = self.angles
        return f"{len(a)} angles in [{a.min():.4g}, {a.max():.4g}] rad"


def _validate_vectors(vectors, n_cols: int) -> np.ndarray:
    arr = _float_array(vectors, "vectors", 2)
    if arr.shape[1] != n_cols:
        raise ValueError(f"vectors must have shape (n_views, {n_cols}), got {arr.shape}")
    return arr


def _check_nonzero(norms: np.ndarray, name: str) -> None:
    if np.any(norms <= 0):
        raise ValueError(f"{name} must be a non-zero vector in every view")


class ParallelBeam2D(_Geometry2D):
    """2D parallel-beam geometry.

    Circular scan: view ``t`` has ray direction ``r = (sin t, -cos t)``, detector
    centre ``d = det_offset * (cos t, sin t)`` and pixel step
    ``u = det_spacing * (cos t, sin t)``, so a point ``(x, y)`` projects to the
    detector coordinate ``x cos t + y sin t`` (mm). ``det_offset`` shifts the
    detector along ``u`` (mm).
    """

    __slots__ = ()
    _kind = 0

    def __init__(self, angles, det_count: int, det_spacing: float = 1.0, det_offset: float = 0.0):
        theta = _float_array(angles, "angles", 1)
        det_count = _positive_int(det_count, "det_count")
        du = _positive_float(det_spacing, "det_spacing")
        offset = _finite_float(det_offset, "det_offset")
        c, s = np.cos(theta), np.sin(theta)
        vectors = np.stack([s, -c, offset * c, offset * s, du * c, du * s], axis=1)
        vectors.flags.writeable = False
        theta.flags.writeable = False
        self._init_vectors(vectors, det_count, theta, offset)

    @classmethod
    def from_vectors(cls, vectors, det_count: int) -> "ParallelBeam2D":
        """From an (n_views, 6) array in ASTRA's ``parallel_vec`` layout: ray, detector centre, pixel step."""
        arr = _validate_vectors(vectors, 6)
        det_count = _positive_int(det_count, "det_count")
        _check_nonzero(np.hypot(arr[:, 0], arr[:, 1]), "the ray direction (vectors[:, 0:2])")
        _check_nonzero(np.hypot(arr[:, 4], arr[:, 5]), "the detector pixel step (vectors[:, 4:6])")
        if np.any(np.abs(arr[:, 0] * arr[:, 5] - arr[:, 1] * arr[:, 4]) <= 1e-12 * np.hypot(arr[:, 4], arr[:, 5])):
            raise ValueError("vectors: the detector (u) must not be parallel to the rays in any view")
        geo = cls.__new__(cls)
        geo._init_vectors(arr, det_count, None)
        return geo

    def __repr__(self):
        du = self.det_spacing
        return (
            f"ParallelBeam2D({self._angles_repr()}, det_count={self.det_count}, "
            f"det_spacing={du.mean():.4g} mm{self._offset_repr()})"
        )


class FanBeam2D(_Geometry2D):
    """2D fan-beam geometry with a flat or curved (equiangular) detector.

    Circular scan: source ``s = D_so (sin t, -cos t)``, detector centre
    ``d = D_od (-sin t, cos t)``, pixel step ``u = det_spacing (cos t, sin t)``,
    where ``D_so = source_distance`` (source to isocentre) and
    ``D_od = detector_distance`` (isocentre to detector, ASTRA's ``origin_det``).
    A curved detector is an arc of radius ``D_so + D_od`` centred on the source;
    its ``det_spacing`` is the arc length of a pixel. ``det_offset`` (mm) moves
    the detector along itself (along ``u``, or along the arc).
    """

    __slots__ = ("detector", "source_distance", "detector_distance")

    def __init__(
        self,
        angles,
        source_distance: float,
        detector_distance: float,
        det_count: int,
        det_spacing: float = 1.0,
        det_offset: float = 0.0,
        detector: str = "flat",
    ):
        theta = _float_array(angles, "angles", 1)
        d_so = _positive_float(source_distance, "source_distance")
        d_od = _finite_float(detector_distance, "detector_distance")
        if d_so + d_od <= 0:
            raise ValueError(
                f"source_distance + detector_distance must be positive (the detector lies beyond the source), "
                f"got {d_so} + {d_od}"
            )
        det_count = _positive_int(det_count, "det_count")
        du = _positive_float(det_spacing, "det_spacing")
        offset = _finite_float(det_offset, "det_offset")
        detector = _detector_kind(detector)
        c, s = np.cos(theta), np.sin(theta)
        source = np.stack([d_so * s, -d_so * c], axis=1)
        centre = np.stack([-d_od * s, d_od * c], axis=1)
        tangent = np.stack([c, s], axis=1)  # unit vector along the detector
        if detector == "flat":
            centre = centre + offset * tangent
        else:
            # Rotate the detector centre about the source by the arc angle offset / (D_so + D_od).
            phi = offset / (d_so + d_od)
            axis = (centre - source) / (d_so + d_od)  # unit, source -> detector
            centre = source + (d_so + d_od) * (np.cos(phi) * axis + np.sin(phi) * tangent)
            tangent = np.cos(phi) * tangent - np.sin(phi) * axis
        vectors = np.concatenate([source, centre, du * tangent], axis=1)
        vectors.flags.writeable = False
        theta.flags.writeable = False
        self._init_vectors(vectors, det_count, theta, offset)
        self._set("detector", detector)
        self._set("source_distance", d_so)
        self._set("detector_distance", d_od)

    @classmethod
    def from_vectors(cls, vectors, det_count: int, detector: str = "flat") -> "FanBeam2D":
        """From an (n_views, 6) array in ASTRA's ``fanflat_vec`` layout: source, detector centre, pixel step.

        With ``detector="curved"`` the same layout describes an arc centred on the
        source through the detector centre, ``u`` being the tangent step (arc
        length per pixel); ASTRA has no curved fan type.
        """
        arr = _validate_vectors(vectors, 6)
        det_count = _positive_int(det_count, "det_count")
        detector = _detector_kind(detector)
        source, centre, step = arr[:, 0:2], arr[:, 2:4], arr[:, 4:6]
        axis = centre - source
        axis_len = np.hypot(axis[:, 0], axis[:, 1])
        step_len = np.hypot(step[:, 0], step[:, 1])
        _check_nonzero(axis_len, "the source-to-detector vector (vectors[:, 2:4] - vectors[:, 0:2])")
        _check_nonzero(step_len, "the detector pixel step (vectors[:, 4:6])")
        cosine = np.abs(axis[:, 0] * step[:, 0] + axis[:, 1] * step[:, 1]) / (axis_len * step_len)
        if detector == "curved" and np.any(cosine > 1e-9):
            raise ValueError("vectors: for a curved detector u must be perpendicular to (d - s) in every view")
        if detector == "flat" and np.any(cosine >= 1 - 1e-12):
            raise ValueError("vectors: the detector line must not pass through the source in any view")
        geo = cls.__new__(cls)
        geo._init_vectors(arr, det_count, None)
        geo._set("detector", detector)
        geo._set("source_distance", None)
        geo._set("detector_distance", None)
        return geo

    @property
    def _kind(self) -> int:  # type: ignore[override]
        return 1 if self.detector == "flat" else 2

    def _extra_key(self):
        return (self.detector,)

    def sources(self) -> np.ndarray:
        """(n_views, 2) source positions (mm)."""
        return np.array(self._vectors[:, 0:2])

    def __repr__(self):
        if self.source_distance is not None:
            dist = f"source_distance={self.source_distance:g}, detector_distance={self.detector_distance:g}, "
        else:
            dist = ""
        return (
            f"FanBeam2D({self._angles_repr()}, {dist}det_count={self.det_count}, "
            f"det_spacing={self.det_spacing.mean():.4g} mm{self._offset_repr()}, detector={self.detector!r})"
        )


def _detector_kind(detector) -> str:
    if detector not in ("flat", "curved"):
        raise ValueError(f"detector must be 'flat' or 'curved', got {detector!r}")
    return detector
