"""Image grids and projection geometries.

All objects are immutable, validated at construction and printable. Every
projection geometry is stored as per-view vectors in ASTRA's layout
(``parallel_vec`` / ``fanflat_vec`` in 2D, ``parallel3d_vec`` / ``cone_vec``
in 3D), so circular scans and arbitrary trajectories share one
representation; see ``docs/conventions.md``.
"""
from __future__ import annotations

import math
import numbers
from typing import Sequence

import numpy as np

__all__ = ["Volume", "ParallelBeam2D", "FanBeam2D", "ParallelBeam3D", "ConeBeam3D", "uniform_angles", "geometry_from_dict"]


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


# The range of lengths (mm) the projectors support. They square lengths (norms, cross products) and
# divide positions by spacings, in float64 (largest finite value 1.8e308): a length beyond
# MAX_LENGTH, or a spacing below MIN_LENGTH, would overflow into inf and NaN, i.e. silently wrong
# projections or indices out of range. Real scanners are nowhere near either bound.
MAX_LENGTH = 1e150
MIN_LENGTH = 1e-150


def _length(value, name: str) -> float:
    """A finite length in mm (an offset or distance; any sign) of magnitude at most MAX_LENGTH."""
    value = _finite_float(value, name)
    if abs(value) > MAX_LENGTH:
        raise ValueError(
            f"{name} must be at most {MAX_LENGTH:g} mm in magnitude, got {value:g}: the projectors square lengths, "
            "and the squares of larger ones overflow float64"
        )
    return value


def _positive_length(value, name: str) -> float:
    """A positive length in mm (a spacing or distance) in [MIN_LENGTH, MAX_LENGTH]."""
    value = _positive_float(value, name)
    if value > MAX_LENGTH:
        raise ValueError(
            f"{name} must be at most {MAX_LENGTH:g} mm, got {value:g}: the projectors square lengths, and the "
            "squares of larger ones overflow float64"
        )
    if value < MIN_LENGTH:
        raise ValueError(
            f"{name} must be at least {MIN_LENGTH:g} mm, got {value:g}: the projectors divide positions by it, and "
            "the quotients would overflow float64"
        )
    return value


def _check_reach(reach: float, name: str, what: str) -> None:
    """A derived length (how far something extends from the origin, mm) must stay within MAX_LENGTH."""
    if not reach <= MAX_LENGTH:  # also NaN
        raise ValueError(
            f"{name}: {what} reaches {reach:g} mm from the origin, beyond the {MAX_LENGTH:g} mm the projectors "
            "support (the squares of larger lengths overflow float64)"
        )


def _check_vector_range(arr: np.ndarray, name: str) -> None:
    """Every entry of per-view vectors (lengths in mm) within MAX_LENGTH."""
    big = np.abs(arr).max(axis=1)
    if np.any(big > MAX_LENGTH):
        k = int(np.argmax(big))
        raise ValueError(
            f"{name}: view {k} has an entry of {big[k]:g} mm, beyond the {MAX_LENGTH:g} mm the projectors support "
            "(the squares of larger lengths overflow float64)"
        )


def _per_axis(value, n: int, name: str, check, axes: str = "one per axis of the volume") -> tuple[float, ...]:
    """A scalar (same for every axis) or a sequence of n values, each passed through check."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return tuple(check(value, name) for _ in range(n))
    try:
        items = list(value)
    except TypeError:
        raise TypeError(f"{name} must be a number or a sequence of {n} numbers, got {value!r}") from None
    if len(items) != n:
        raise ValueError(f"{name} must have {n} entries ({axes}), got {len(items)}")
    return tuple(check(v, f"{name}[{k}]") for k, v in enumerate(items))


def _detector_pair(value, name: str, check) -> tuple[float, float]:
    """A 3D detector quantity: a scalar (rows and columns alike) or a pair (rows, cols)."""
    return _per_axis(value, 2, name, check, axes="rows, cols")


def _det_shape(value) -> tuple[int, int]:
    """(n_rows, n_cols) of a 3D detector, positive integers."""
    try:
        dims = tuple(value)
    except TypeError:
        raise TypeError(f"det_shape must be a pair (n_rows, n_cols) of positive integers, got {value!r}") from None
    if len(dims) != 2:
        raise ValueError(f"det_shape must have 2 entries (n_rows, n_cols), got {len(dims)}")
    return tuple(_positive_int(n, f"det_shape[{k}]") for k, n in enumerate(dims))


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


def _restore_frozen(cls, state: dict):
    """Unpickling of a _Frozen object: its slots are set directly (arrays read-only again)."""
    obj = cls.__new__(cls)
    for name, value in state.items():
        if isinstance(value, np.ndarray):
            value = np.array(value)
            value.flags.writeable = False
        object.__setattr__(obj, name, value)
    return obj


class _Frozen:
    """Attributes are set once, in __init__; afterwards the object cannot change.

    Being immutable, a copy or deep copy is the object itself; pickling stores the slot values
    (``_restore_frozen`` sets them back), so volumes and geometries travel to DataLoader workers
    and into whole-model saves."""

    __slots__ = ()

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is immutable; build a new one instead")

    def _set(self, name, value):
        object.__setattr__(self, name, value)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        names = [name for klass in type(self).__mro__ for name in getattr(klass, "__slots__", ())]
        return _restore_frozen, (type(self), {name: getattr(self, name) for name in names if hasattr(self, name)})


def _check_description(description, expected_type: str) -> dict:
    """A dict made by to_dict() of `expected_type`, or a ValueError that says what is wrong."""
    if not isinstance(description, dict):
        raise TypeError(f"description must be a dict (from {expected_type}.to_dict()), got {type(description).__name__}")
    if description.get("type") != expected_type:
        raise ValueError(f"description is of type {description.get('type')!r}, expected {expected_type!r}")
    return description


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
        self._set("spacing", _per_axis(spacing, len(dims), "spacing", _positive_length))
        self._set("offset", _per_axis(offset, len(dims), "offset", _length))
        for k, ((lo, hi), n) in enumerate(zip(self.bounds, self.shape)):
            _check_reach(max(abs(lo), abs(hi)), "shape and spacing", f"the volume (axis {k}, {n} voxels)")

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

    def to_dict(self) -> dict:
        """A JSON-serialisable description (exact: floats round-trip through JSON)."""
        return {"type": "Volume", "shape": list(self.shape), "spacing": list(self.spacing), "offset": list(self.offset)}

    @classmethod
    def from_dict(cls, description: dict) -> "Volume":
        """The volume that :meth:`to_dict` described."""
        d = _check_description(description, "Volume")
        return cls(d["shape"], spacing=d["spacing"], offset=d["offset"])


# --- projection geometries: common parts ---------------------------------------------------------


class _Geometry(_Frozen):
    """Per-view vectors in ASTRA's layout plus the detector size; the common part of every geometry."""

    __slots__ = ("_vectors", "angles", "det_offset")
    ndim: int
    _det_attr: str  # name of the detector-size attribute: det_count (2D) or det_shape (3D)
    _kind: int  # geometry kind understood by the kernels (known_ops._ops)

    def _init_vectors(self, vectors: np.ndarray, det_size, angles: np.ndarray | None, det_offset=None) -> None:
        if angles is not None:  # built by a constructor from checked parameters; a helix can still run away
            if not np.all(np.isfinite(vectors)):
                raise ValueError(
                    "geometry: the per-view vectors computed from the parameters are not finite (e.g. pitch times "
                    "angles overflows); use smaller values"
                )
            _check_vector_range(vectors, "geometry (from angles, distances, det_spacing, det_offset and pitch)")
        self._set("_vectors", vectors)
        self._set(self._det_attr, det_size)
        self._set("angles", angles)
        self._set("det_offset", det_offset)  # mm; None when built from vectors

    @property
    def n_views(self) -> int:
        return self._vectors.shape[0]

    def to_vectors(self) -> np.ndarray:
        """(n_views, 6) (2D) or (n_views, 12) (3D) float64 array in ASTRA's vector layout (a copy)."""
        return np.array(self._vectors)

    def __eq__(self, other):
        return (
            type(other) is type(self)
            and getattr(self, self._det_attr) == getattr(other, other._det_attr)
            and self._extra_key() == other._extra_key()
            and np.array_equal(self._vectors, other._vectors)
        )

    def __hash__(self):
        return hash((type(self), getattr(self, self._det_attr), self._vectors.tobytes()))

    def _extra_key(self):
        return ()

    def to_dict(self) -> dict:
        """A JSON-serialisable description that :func:`geometry_from_dict` turns back into an equal
        geometry (per-view vectors, detector size and the circular scan's parameters; exact, since
        floats round-trip through JSON)."""
        size = getattr(self, self._det_attr)
        offset = self.det_offset
        return {
            "type": type(self).__name__,
            self._det_attr: list(size) if isinstance(size, tuple) else size,
            "angles": None if self.angles is None else self.angles.tolist(),
            "det_offset": list(offset) if isinstance(offset, tuple) else offset,
            **self._extra_dict(),
            "vectors": self._vectors.tolist(),
        }

    def _extra_dict(self) -> dict:
        return {}

    @classmethod
    def from_dict(cls, description: dict):
        """The geometry that :meth:`to_dict` described (validated as ``from_vectors`` validates)."""
        d = _check_description(description, cls.__name__)
        extra = {"detector": d["detector"]} if "detector" in d else {}
        geo = cls.from_vectors(d["vectors"], d[cls._det_attr], **extra)
        angles = d.get("angles")
        if angles is not None:
            angles = _float_array(angles, "angles", 1)
            if len(angles) != geo.n_views:
                raise ValueError(f"description: {len(angles)} angles for {geo.n_views} views")
            angles.flags.writeable = False
        offset = d.get("det_offset")
        geo._set("angles", angles)
        geo._set("det_offset", tuple(offset) if isinstance(offset, list) else offset)
        for name in ("source_distance", "detector_distance", "pitch"):
            if name in d:
                geo._set(name, d[name])
        return geo

    def _offset_repr(self) -> str:
        offset = self.det_offset
        if offset is None or not np.any(offset):
            return ""
        text = f"{offset:g}" if np.ndim(offset) == 0 else "(" + ", ".join(f"{o:g}" for o in offset) + ")"
        return f", det_offset={text} mm"

    def _angles_repr(self) -> str:
        if self.angles is None:
            return f"{self.n_views} views from vectors"
        a = self.angles
        return f"{len(a)} angles in [{a.min():.4g}, {a.max():.4g}] rad"


class _PointSource:
    """Fan and cone beams: a point source per view (the first ``ndim`` numbers of each row of
    vectors) and a flat or curved detector. Mixed into a _Geometry subclass."""

    __slots__ = ()

    def _set_point_source(self, detector: str, source_distance, detector_distance) -> None:
        self._set("detector", detector)
        self._set("source_distance", source_distance)  # None when built from vectors
        self._set("detector_distance", detector_distance)
        if detector == "curved":
            self._check_arc()

    def _check_arc(self) -> None:
        """A curved detector's columns must lie within 90 degrees of its centre, seen from the
        source: a column beyond that would look away from the object, and its ray (a full line)
        would still cross it, backwards."""
        v = self._vectors
        if self.ndim == 2:
            radius, step, n_cols = _norm(v[:, 2:4] - v[:, 0:2]), _norm(v[:, 4:6]), self.det_count
        else:
            radius, step, n_cols = _cylinder_frame(v)[1], _norm(v[:, 6:9]), self.det_shape[1]
        half_angle = 0.5 * (n_cols - 1) * step / radius
        if np.any(half_angle >= math.pi / 2):
            k = int(np.argmax(half_angle))
            raise ValueError(
                f"det_spacing: the curved detector spans +-{math.degrees(half_angle[k]):.4g} degrees from its centre "
                f"(view {k}: {n_cols} columns of {step[k]:.4g} mm at radius {radius[k]:.4g} mm); it must stay within "
                "+-90 degrees"
            )

    @property
    def _kind(self) -> int:
        return 1 if self.detector == "flat" else 2

    def _extra_key(self):
        return (self.detector,)

    def _extra_dict(self) -> dict:
        extra = {"detector": self.detector, "source_distance": self.source_distance,
                 "detector_distance": self.detector_distance}
        if hasattr(self, "pitch"):
            extra["pitch"] = self.pitch
        return extra

    def sources(self) -> np.ndarray:
        """(n_views, 2) (2D) or (n_views, 3) (3D) source positions (mm)."""
        return np.array(self._vectors[:, 0 : self.ndim])

    def _distances_repr(self) -> str:
        if self.source_distance is None:
            return ""
        return f"source_distance={self.source_distance:g}, detector_distance={self.detector_distance:g}, "


def _validate_vectors(vectors, n_cols: int) -> np.ndarray:
    arr = _float_array(vectors, "vectors", 2)
    if arr.shape[1] != n_cols:
        raise ValueError(f"vectors must have shape (n_views, {n_cols}), got {arr.shape}")
    _check_vector_range(arr, "vectors")
    return arr


def _check_nonzero(norms: np.ndarray, name: str) -> None:
    if np.any(norms <= 0):
        raise ValueError(f"{name} must be a non-zero vector in every view")
    if np.any(norms < MIN_LENGTH):
        k = int(np.argmin(norms))
        raise ValueError(
            f"{name} must be a non-zero vector in every view, at least {MIN_LENGTH:g} mm long (view {k}: "
            f"{norms[k]:g} mm): the projectors divide by its length"
        )


def _check_detector_reach(det_count, spacing: float, offset: float, name: str) -> None:
    """The detector's outermost bin centre, (n - 1) / 2 bins from its centre plus the offset, within MAX_LENGTH."""
    _check_reach(0.5 * (det_count - 1) * spacing + abs(offset), name, f"the detector ({det_count} bins of {spacing:g} mm)")


def _detector_kind(detector) -> str:
    if detector not in ("flat", "curved"):
        raise ValueError(f"detector must be 'flat' or 'curved', got {detector!r}")
    return detector


def _source_detector_distances(source_distance, detector_distance) -> tuple[float, float]:
    """Validated (D_so, D_od): the source outside the isocentre, the detector beyond the source."""
    d_so = _positive_length(source_distance, "source_distance")
    d_od = _length(detector_distance, "detector_distance")
    if d_so + d_od <= 0:
        raise ValueError(
            f"source_distance + detector_distance must be positive (the detector lies beyond the source), "
            f"got {d_so} + {d_od}"
        )
    return d_so, d_od


def _parallel_vectors_2d(theta: np.ndarray, du: float, offset: float) -> np.ndarray:
    """Circular parallel beam, (n_views, 6): r = (sin t, -cos t), d = offset (cos t, sin t), u = du (cos t, sin t)."""
    c, s = np.cos(theta), np.sin(theta)
    return np.stack([s, -c, offset * c, offset * s, du * c, du * s], axis=1)


def _fan_vectors_2d(theta: np.ndarray, d_so: float, d_od: float, du: float, offset: float, detector: str) -> np.ndarray:
    """Circular fan beam, (n_views, 6): source, detector centre and pixel step (flat or curved, with offset)."""
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
    return np.concatenate([source, centre, du * tangent], axis=1)


# --- 2D geometries -------------------------------------------------------------------------------


class _Geometry2D(_Geometry):
    """Per-view vectors (n_views, 6) plus detector size; the common part of 2D geometries."""

    __slots__ = ("det_count",)
    ndim = 2
    _det_attr = "det_count"

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of one projection stack: (n_views, det_count)."""
        return (self.n_views, self.det_count)

    @property
    def det_spacing(self) -> np.ndarray:
        """Detector pixel size (mm) per view: |u|."""
        return np.hypot(self._vectors[:, 4], self._vectors[:, 5])

    def rays(self):
        """(n_views, det_count, 4) float64 tensor: origin (x, y) and direction (x, y) of every ray (mm)."""
        import torch

        from . import _ops
        from ._memory import check_fits, nbytes

        check_fits(nbytes(self.n_views, self.det_count, 4, dtype=8),
                   f"rays(): {self.n_views} views x {self.det_count} rays (det_count)", "use a smaller det_count")
        return _ops.rays_2d(torch.from_numpy(self.to_vectors()), self._kind, self.det_count)


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
        du = _positive_length(det_spacing, "det_spacing")
        offset = _length(det_offset, "det_offset")
        _check_detector_reach(det_count, du, offset, "det_count, det_spacing and det_offset")
        vectors = _parallel_vectors_2d(theta, du, offset)
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


class FanBeam2D(_PointSource, _Geometry2D):
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
        d_so, d_od = _source_detector_distances(source_distance, detector_distance)
        det_count = _positive_int(det_count, "det_count")
        du = _positive_length(det_spacing, "det_spacing")
        offset = _length(det_offset, "det_offset")
        detector = _detector_kind(detector)
        _check_detector_reach(det_count, du, offset, "det_count, det_spacing and det_offset")
        vectors = _fan_vectors_2d(theta, d_so, d_od, du, offset, detector)
        vectors.flags.writeable = False
        theta.flags.writeable = False
        self._init_vectors(vectors, det_count, theta, offset)
        self._set_point_source(detector, d_so, d_od)

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
        geo._set_point_source(detector, None, None)
        return geo

    def __repr__(self):
        return (
            f"FanBeam2D({self._angles_repr()}, {self._distances_repr()}det_count={self.det_count}, "
            f"det_spacing={self.det_spacing.mean():.4g} mm{self._offset_repr()}, detector={self.detector!r})"
        )


# --- 3D geometries -------------------------------------------------------------------------------


def _norm(a: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a, axis=-1)


def _hypot3(a: np.ndarray) -> np.ndarray:
    """Norms of the rows of an (n, 3) array without overflow in the squares."""
    return np.hypot(np.hypot(a[:, 0], a[:, 1]), a[:, 2])


def _index_offsets(n: int) -> np.ndarray:
    """k - (n-1)/2 for k = 0 ... n-1: a pixel's index relative to the detector centre."""
    return np.arange(n, dtype=np.float64) - (n - 1) / 2


def _lift_to_3d(vectors2d: np.ndarray, z_first, z_centre, dv: float) -> np.ndarray:
    """12-number rows (a, d, u, v) from the 6-number rows (a, d, u) of a circular 2D scan: the first
    vector gets the height z_first, the detector centre z_centre, u stays horizontal, v = (0, 0, dv)."""
    n = vectors2d.shape[0]
    zeros = np.zeros(n)
    first = np.broadcast_to(np.asarray(z_first, dtype=np.float64), (n,))
    centre = np.broadcast_to(np.asarray(z_centre, dtype=np.float64), (n,))
    a, d, u = vectors2d[:, 0:2], vectors2d[:, 2:4], vectors2d[:, 4:6]
    columns = [a[:, 0], a[:, 1], first, d[:, 0], d[:, 1], centre, u[:, 0], u[:, 1], zeros, zeros, zeros, np.full(n, dv)]
    vectors = np.stack(columns, axis=1)
    vectors.flags.writeable = False
    return vectors


def _split_3d(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The four (n_views, 3) parts of 12-number rows: (s or r, d, u, v)."""
    return vectors[:, 0:3], vectors[:, 3:6], vectors[:, 6:9], vectors[:, 9:12]


def _detector_normal(arr: np.ndarray) -> np.ndarray:
    """u x v per view, after checking that u and v are non-zero and not parallel."""
    _, _, u, v = _split_3d(arr)
    u_len, v_len = _norm(u), _norm(v)
    _check_nonzero(u_len, "the detector column step u (vectors[:, 6:9])")
    _check_nonzero(v_len, "the detector row step v (vectors[:, 9:12])")
    normal = np.cross(u, v)
    if np.any(_norm(normal) <= 1e-12 * u_len * v_len):
        raise ValueError("vectors: the detector steps u (vectors[:, 6:9]) and v (vectors[:, 9:12]) must not be parallel in any view")
    return normal


def _check_crosses_detector(direction: np.ndarray, normal: np.ndarray, message: str) -> None:
    """Raise ValueError(message) unless `direction` leaves the detector plane (normal `normal`) in every view."""
    # (unit vectors: the product of two lengths of up to MAX_LENGTH and a normal could overflow)
    along = np.abs(np.sum(_unit_rows(direction) * _unit_rows(normal), axis=1))
    if np.any(~(along > 1e-12)):
        raise ValueError(message)


def _unit_rows(a: np.ndarray) -> np.ndarray:
    """Each row divided by its norm (rows of zeros stay zero)."""
    norms = _norm(a)
    return a / np.where(norms > 0, norms, 1.0)[:, None]


def _cylinder_frame(vectors: np.ndarray):
    """Curved detector: (hv, R, e_c, e_u) per view, with h = d - s split into hv (along v) and
    hc = R e_c (across v), and e_u = u / |u|."""
    s, d, u, v = _split_3d(vectors)
    h = d - s
    e_v = v / _norm(v)[:, None]
    hv = np.sum(h * e_v, axis=1, keepdims=True) * e_v
    hc = h - hv
    radius = _norm(hc)
    return hv, radius, hc / np.where(radius > 0, radius, 1.0)[:, None], u / _norm(u)[:, None]


class _Geometry3D(_Geometry):
    """Per-view vectors (n_views, 12) plus detector shape (n_rows, n_cols); the common part of 3D geometries."""

    __slots__ = ("det_shape",)
    ndim = 3
    _det_attr = "det_shape"

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of one projection stack: (n_views, n_rows, n_cols)."""
        return (self.n_views, *self.det_shape)

    @property
    def det_spacing(self) -> np.ndarray:
        """(n_views, 2) detector pixel size (mm) per view, (rows, cols): (|v|, |u|)."""
        return np.stack([_norm(self._vectors[:, 9:12]), _norm(self._vectors[:, 6:9])], axis=1)

    def _flat_pixel_centres(self) -> np.ndarray:
        """(n_views, n_rows, n_cols, 3): d + (c - c0) u + (r - r0) v."""
        _, d, u, v = _split_3d(self._vectors)
        rows, cols = _index_offsets(self.det_shape[0]), _index_offsets(self.det_shape[1])
        return (
            d[:, None, None, :]
            + cols[None, None, :, None] * u[:, None, None, :]
            + rows[None, :, None, None] * v[:, None, None, :]
        )

    def _ray_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Origins and directions, each (n_views, n_rows, n_cols, 3) (or broadcastable to it)."""
        raise NotImplementedError

    def rays(self):
        """(n_views, n_rows, n_cols, 6) float64 tensor: origin (x, y, z) and direction (x, y, z) of the
        ray of every detector pixel (mm)."""
        import torch

        from ._memory import check_fits, nbytes

        # the result and, at most, the full arrays of origins, directions and pixel centres behind it
        check_fits(nbytes(self.n_views, *self.det_shape, 6 + 9, dtype=8),
                   f"rays(): {self.n_views} views x {self.det_shape[0]} x {self.det_shape[1]} rays (det_shape)",
                   "use a smaller det_shape")
        origin, direction = np.broadcast_arrays(*self._ray_arrays())
        return torch.from_numpy(np.concatenate([origin, direction], axis=-1))

    def _spacing_repr(self) -> str:
        dv, du = self.det_spacing.mean(axis=0)
        return f"det_shape={self.det_shape}, det_spacing=({dv:.4g}, {du:.4g}) mm{self._offset_repr()}"


class ParallelBeam3D(_Geometry3D):
    """3D parallel-beam geometry; detector ``det_shape = (n_rows, n_cols)``.

    Circular scan: view ``t`` has ray direction ``r = (sin t, -cos t, 0)``, detector
    centre ``d = u_offset (cos t, sin t, 0) + v_offset (0, 0, 1)``, column step
    ``u = du (cos t, sin t, 0)`` and row step ``v = (0, 0, dv)``, with
    ``det_spacing = (dv, du)`` and ``det_offset = (v_offset, u_offset)`` in mm
    (a scalar applies to rows and columns alike).
    """

    __slots__ = ()
    _kind = 0

    def __init__(self, angles, det_shape, det_spacing=1.0, det_offset=0.0):
        theta = _float_array(angles, "angles", 1)
        det_shape = _det_shape(det_shape)
        dv, du = _detector_pair(det_spacing, "det_spacing", _positive_length)
        v_offset, u_offset = _detector_pair(det_offset, "det_offset", _length)
        _check_detector_reach(det_shape[0], dv, v_offset, "det_shape, det_spacing and det_offset (rows)")
        _check_detector_reach(det_shape[1], du, u_offset, "det_shape, det_spacing and det_offset (columns)")
        vectors = _lift_to_3d(_parallel_vectors_2d(theta, du, u_offset), 0.0, v_offset, dv)
        theta.flags.writeable = False
        self._init_vectors(vectors, det_shape, theta, (v_offset, u_offset))

    @classmethod
    def from_vectors(cls, vectors, det_shape) -> "ParallelBeam3D":
        """From an (n_views, 12) array in ASTRA's ``parallel3d_vec`` layout: ray direction r, detector
        centre d, column step u, row step v."""
        arr = _validate_vectors(vectors, 12)
        det_shape = _det_shape(det_shape)
        _check_nonzero(_norm(arr[:, 0:3]), "the ray direction r (vectors[:, 0:3])")
        normal = _detector_normal(arr)
        _check_crosses_detector(
            arr[:, 0:3], normal, "vectors: the rays (r, vectors[:, 0:3]) must not be parallel to the detector plane in any view"
        )
        geo = cls.__new__(cls)
        geo._init_vectors(arr, det_shape, None)
        return geo

    def _ray_arrays(self):
        ray = self._vectors[:, None, None, 0:3]
        return self._flat_pixel_centres(), ray

    def __repr__(self):
        return f"ParallelBeam3D({self._angles_repr()}, {self._spacing_repr()})"


class ConeBeam3D(_PointSource, _Geometry3D):
    """3D cone-beam geometry with a flat or curved (cylindrical) detector; ``det_shape = (n_rows, n_cols)``.

    Circular scan: source ``s = (D_so sin t, -D_so cos t, z_t)``, detector centre
    ``d = (-D_od sin t, D_od cos t, z_t)``, column step ``u = du (cos t, sin t, 0)``,
    row step ``v = (0, 0, dv)``, with ``D_so = source_distance``,
    ``D_od = detector_distance`` (ASTRA's ``origin_det``), ``det_spacing = (dv, du)``.
    Helical scan: ``z_t = pitch (t - mean(angles)) / (2 pi)`` (``pitch`` in mm per
    turn; 0: circular). ``det_offset = (v_offset, u_offset)`` (mm) moves the detector
    along ``v`` and along ``u`` (flat) or around the cylinder (curved). A scalar
    spacing or offset applies to rows and columns alike.

    A curved detector is a cylinder of radius ``D_so + D_od`` whose axis passes
    through the source along ``v``; its columns are ``du`` mm of arc apart.
    """

    __slots__ = ("detector", "source_distance", "detector_distance", "pitch")

    def __init__(
        self,
        angles,
        source_distance: float,
        detector_distance: float,
        det_shape,
        det_spacing=1.0,
        det_offset=0.0,
        detector: str = "flat",
        pitch: float = 0.0,
    ):
        theta = _float_array(angles, "angles", 1)
        d_so, d_od = _source_detector_distances(source_distance, detector_distance)
        det_shape = _det_shape(det_shape)
        dv, du = _detector_pair(det_spacing, "det_spacing", _positive_length)
        v_offset, u_offset = _detector_pair(det_offset, "det_offset", _length)
        detector = _detector_kind(detector)
        pitch = _length(pitch, "pitch")
        _check_detector_reach(det_shape[0], dv, v_offset, "det_shape, det_spacing and det_offset (rows)")
        _check_detector_reach(det_shape[1], du, u_offset, "det_shape, det_spacing and det_offset (columns)")
        with np.errstate(over="ignore", invalid="ignore"):
            z = pitch * (theta - theta.mean()) / (2 * math.pi)
        _check_reach(float(np.max(np.abs(z))) if np.all(np.isfinite(z)) else math.inf, "pitch and angles",
                     "the helix")
        vectors = _lift_to_3d(_fan_vectors_2d(theta, d_so, d_od, du, u_offset, detector), z, z + v_offset, dv)
        theta.flags.writeable = False
        self._init_vectors(vectors, det_shape, theta, (v_offset, u_offset))
        self._set_point_source(detector, d_so, d_od)
        self._set("pitch", pitch)

    @classmethod
    def from_vectors(cls, vectors, det_shape, detector: str = "flat") -> "ConeBeam3D":
        """From an (n_views, 12) array in ASTRA's ``cone_vec`` layout: source s, detector centre d,
        column step u, row step v.

        With ``detector="curved"`` the same layout describes a cylinder whose axis
        passes through ``s`` along ``v``, through ``d``; ``u`` is the tangent step at
        ``d`` (arc length per column) and must be perpendicular to ``v`` and to the
        part of ``d - s`` across ``v``. ASTRA's ``cone_vec`` reads such rows as a flat detector.
        """
        arr = _validate_vectors(vectors, 12)
        det_shape = _det_shape(det_shape)
        detector = _detector_kind(detector)
        normal = _detector_normal(arr)
        s, d, u, v = _split_3d(arr)
        if detector == "flat":
            _check_crosses_detector(d - s, normal, "vectors: the source must not lie in the detector plane in any view")
        else:
            _, radius, e_c, e_u = _cylinder_frame(arr)
            _check_nonzero(radius, "for a curved detector, the part of (d - s) across v (the cylinder radius)")
            e_v = v / _norm(v)[:, None]
            if np.any(np.abs(np.sum(e_u * e_v, axis=1)) > 1e-9) or np.any(np.abs(np.sum(e_u * e_c, axis=1)) > 1e-9):
                raise ValueError(
                    "vectors: for a curved detector u must be perpendicular to v and to (d - s) minus its "
                    "component along v, in every view"
                )
        geo = cls.__new__(cls)
        geo._init_vectors(arr, det_shape, None)
        geo._set_point_source(detector, None, None)
        geo._set("pitch", None)
        return geo

    @classmethod
    def from_projection_matrices(cls, P, det_shape, det_spacing) -> "ConeBeam3D":
        """A flat-detector geometry from (n_views, 3, 4) projection matrices (array or tensor).

        ``P`` maps homogeneous world coordinates ``(x, y, z, 1)`` (mm) to homogeneous
        detector pixel indices ``(col, row, 1)`` up to scale, 0-based at pixel centres:
        ``col = (P[0] . X) / (P[2] . X)``, ``row = (P[1] . X) / (P[2] . X)``. The sign of
        each ``P`` is fixed so that the world origin lies in front of the source
        (``P[2, 3] > 0``), and the detector is placed where its pixels are
        ``det_spacing = (dv, du)`` mm apart (``P`` fixes only the pixels' directions).
        """
        arr = _float_array(P, "P", 3)
        if arr.shape[1:] != (3, 4):
            raise ValueError(f"P must have shape (n_views, 3, 4), got {arr.shape}")
        det_shape = _det_shape(det_shape)
        dv, du = _detector_pair(det_spacing, "det_spacing", _positive_length)
        depth = arr[:, 2, 3]
        if np.any(depth == 0):
            k = int(np.flatnonzero(depth == 0)[0])
            raise ValueError(
                f"P: P[{k}, 2, 3] = 0, i.e. the world origin lies in the source plane of view {k}; its sign cannot "
                f"be fixed (the world origin must lie in front of the source)"
            )
        arr = arr * np.sign(depth)[:, None, None]
        m, p4 = arr[:, :, 0:3], arr[:, :, 3]
        with np.errstate(all="ignore"):
            condition = np.linalg.cond(m)
        singular = ~(condition < 1e12)
        if np.any(singular):
            k = int(np.flatnonzero(singular)[0])
            raise ValueError(f"P: the left 3x3 block of P[{k}] is singular (condition number {condition[k]:.3g})")
        with np.errstate(all="ignore"):  # extreme P: overflows are caught below (mismatch, from_vectors)
            m_inv = np.linalg.inv(m)
            source = -np.einsum("nij,nj->ni", m_inv, p4)
            a, b, e = m_inv[:, :, 0], m_inv[:, :, 1], m_inv[:, :, 2]
            scale = du / _hypot3(a)
            row_step = du * (_hypot3(b) / _hypot3(a))
        mismatch = ~(np.abs(row_step - dv) <= 1e-6 * dv)  # (NaN included)
        if np.any(mismatch):
            k = int(np.flatnonzero(mismatch)[0])
            raise ValueError(
                f"det_spacing: the pixel aspect ratio of P (row step / column step = {row_step[k] / du:.9g} in "
                f"view {k}) does not match det_spacing (dv / du = {dv / du:.9g})"
            )
        n_rows, n_cols = det_shape
        c0, r0 = (n_cols - 1) / 2, (n_rows - 1) / 2
        with np.errstate(all="ignore"):
            centre = source + scale[:, None] * (c0 * a + r0 * b + e)
            vectors = np.concatenate([source, centre, scale[:, None] * a, scale[:, None] * b], axis=1)
        try:
            return cls.from_vectors(vectors, det_shape)
        except ValueError as err:
            raise ValueError(f"P: the geometry that P describes (with det_spacing {dv:g}, {du:g} mm) is not usable: {err}") from None

    def to_projection_matrices(self) -> np.ndarray:
        """(n_views, 3, 4) float64 projection matrices (flat detectors only), in the convention of
        ``from_projection_matrices``: ``P = [B^-1 | -B^-1 s]`` with ``B = [u | v | d0 - s]`` (columns)
        and ``d0`` the centre of pixel (row 0, col 0)."""
        if self.detector != "flat":
            raise ValueError(
                "to_projection_matrices: a curved (cylindrical) detector is not a projective camera; "
                "only flat detectors have projection matrices"
            )
        s, d, u, v = _split_3d(self._vectors)
        n_rows, n_cols = self.det_shape
        corner = d - (n_cols - 1) / 2 * u - (n_rows - 1) / 2 * v
        b_inv = np.linalg.inv(np.stack([u, v, corner - s], axis=2))
        return np.concatenate([b_inv, -b_inv @ s[:, :, None]], axis=2)

    def _ray_arrays(self):
        s = self._vectors[:, None, None, 0:3]
        if self.detector == "flat":
            centres = self._flat_pixel_centres()
        else:
            _, _, u, v = _split_3d(self._vectors)
            hv, radius, e_c, e_u = _cylinder_frame(self._vectors)
            rows, cols = _index_offsets(self.det_shape[0]), _index_offsets(self.det_shape[1])
            gamma = cols[None, :] * (_norm(u) / radius)[:, None]  # (n_views, n_cols)
            on_cylinder = (
                radius[:, None, None] * (np.cos(gamma)[..., None] * e_c[:, None, :] + np.sin(gamma)[..., None] * e_u[:, None, :])
                + hv[:, None, :]
            )  # (n_views, n_cols, 3), relative to s
            centres = s + on_cylinder[:, None, :, :] + rows[None, :, None, None] * v[:, None, None, :]
        return s, centres - s

    def __repr__(self):
        pitch = f", pitch={self.pitch:g} mm" if self.pitch else ""
        return (
            f"ConeBeam3D({self._angles_repr()}, {self._distances_repr()}{self._spacing_repr()}{pitch}, "
            f"detector={self.detector!r})"
        )


_DESCRIBED = {cls.__name__: cls for cls in (Volume, ParallelBeam2D, FanBeam2D, ParallelBeam3D, ConeBeam3D)}

# The circular short form: the constructor's arguments (required, optional), the angles given as n_views,
# angular_range (default below) and start_angle.
_CIRCULAR = {
    "ParallelBeam2D": (("det_count",), ("det_spacing", "det_offset"), math.pi),
    "FanBeam2D": (("source_distance", "detector_distance", "det_count"), ("det_spacing", "det_offset", "detector"),
                  2 * math.pi),
    "ParallelBeam3D": (("det_shape",), ("det_spacing", "det_offset"), math.pi),
    "ConeBeam3D": (("source_distance", "detector_distance", "det_shape"),
                   ("det_spacing", "det_offset", "detector", "pitch"), 2 * math.pi),
}


def _circular_from_dict(description: dict):
    kind = description["type"]
    required, optional, default_range = _CIRCULAR[kind]
    allowed = {"type", "n_views", "angular_range", "start_angle", *required, *optional}
    unknown = sorted(set(description) - allowed)
    missing = [k for k in ("n_views", *required) if k not in description]
    if unknown or missing:
        problems = ([f"missing key(s) {missing}"] if missing else []) + ([f"unknown key(s) {unknown}"] if unknown else [])
        raise ValueError(f"description: the circular form of {kind}: {'; '.join(problems)}; allowed: {sorted(allowed)}")
    angles = uniform_angles(description["n_views"], description.get("angular_range", default_range),
                            description.get("start_angle", 0.0))
    return _DESCRIBED[kind](angles, *(description[k] for k in required),
                            **{k: description[k] for k in optional if k in description})


def geometry_from_dict(description: dict):
    """The :class:`Volume` or geometry that a dict describes (dispatch on ``"type"``): the exact form
    that ``to_dict()`` writes (with ``"vectors"``), or the short form of a circular scan: the
    constructor's arguments with the angles as ``n_views``, ``angular_range`` (default pi for parallel
    beams, 2 pi for fan and cone beams) and ``start_angle`` (default 0), e.g.
    ``{"type": "ParallelBeam2D", "n_views": 30, "det_count": 183}``."""
    if not isinstance(description, dict):
        raise TypeError(f"description must be a dict (from .to_dict()), got {type(description).__name__}")
    cls = _DESCRIBED.get(description.get("type"))
    if cls is None:
        raise ValueError(f"description: unknown type {description.get('type')!r}; expected one of {sorted(_DESCRIBED)}")
    if cls is not Volume and "vectors" not in description:
        return _circular_from_dict(description)
    return cls.from_dict(description)
