"""Projection-domain weights as modules: cosine pre-weighting, Parker short-scan redundancy weights
and a learnable multiplicative weight layer.

Every weight is computed in float64 from the geometry's per-view vectors (so geometries built with
``from_vectors`` get the same weights as the circular constructors), stored as a float64 buffer that
broadcasts against the projections, and cast to the data's dtype at call time. Formulas, conventions
and references: docs/filters_and_weights.md.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from torch import nn

from ._dtypes import floating_input
from ._memory import check_fits, nbytes
from .filters import _KeepsFloat64
from .geometry import ConeBeam3D, FanBeam2D, ParallelBeam2D, ParallelBeam3D

__all__ = ["cosine_weights", "parker_weights", "ProjectionWeight", "CosineWeighting", "ParkerWeighting"]

_PIXELS_PER_CHUNK = 1 << 21  # views are processed in chunks of about this many detector pixels (3D)


# --- rays from the per-view vectors (numpy, float64) -----------------------------------------------


def _offsets(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64) - (n - 1) / 2


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def _fan_directions(vectors: np.ndarray, det_count: int, detector: str) -> np.ndarray:
    """(n_views, det_count, 2): direction from the source to each bin centre (curved: unit)."""
    s, d, u = vectors[:, 0:2], vectors[:, 2:4], vectors[:, 4:6]
    k = _offsets(det_count)
    if detector == "flat":
        return (d - s)[:, None, :] + k[None, :, None] * u[:, None, :]
    h = d - s
    radius = np.linalg.norm(h, axis=1)
    gamma = k[None, :] * (np.linalg.norm(u, axis=1) / radius)[:, None]
    e_c, e_u = _unit(h), _unit(u)
    return np.cos(gamma)[..., None] * e_c[:, None, :] + np.sin(gamma)[..., None] * e_u[:, None, :]


def _cone_directions(vectors: np.ndarray, det_shape, detector: str) -> np.ndarray:
    """(n, n_rows, n_cols, 3): direction from the source to each pixel centre, for the views in `vectors`."""
    s, d, u, v = vectors[:, 0:3], vectors[:, 3:6], vectors[:, 6:9], vectors[:, 9:12]
    rows, cols = _offsets(det_shape[0]), _offsets(det_shape[1])
    row_part = rows[None, :, None, None] * v[:, None, None, :]
    if detector == "flat":
        return (d - s)[:, None, None, :] + cols[None, None, :, None] * u[:, None, None, :] + row_part
    # Cylinder through d with its axis through s along v (docs/conventions.md, 3D geometries).
    h = d - s
    e_v = _unit(v)
    hv = np.sum(h * e_v, axis=1, keepdims=True) * e_v
    hc = h - hv
    radius = np.linalg.norm(hc, axis=1)
    e_c, e_u = hc / radius[:, None], _unit(u)
    gamma = cols[None, :] * (np.linalg.norm(u, axis=1) / radius)[:, None]  # (n, n_cols)
    across = radius[:, None, None] * (np.cos(gamma)[..., None] * e_c[:, None, :] + np.sin(gamma)[..., None] * e_u[:, None, :])
    return (across + hv[:, None, :])[:, None, :, :] + row_part


def _central_directions(vectors: np.ndarray, ndim: int) -> np.ndarray:
    """Unit central ray per view: from the source towards the rotation centre (the world origin);
    in 3D without its component along the detector rows' step v (perpendicular to the axis)."""
    s = vectors[:, 0:ndim]
    c = -s
    if ndim == 3:
        e_v = _unit(vectors[:, 9:12])
        c = c - np.sum(c * e_v, axis=1, keepdims=True) * e_v
    length = np.linalg.norm(c, axis=1)
    if np.any(length <= 1e-12 * (1.0 + np.linalg.norm(vectors[:, 0:ndim], axis=1))):
        k = int(np.argmax(length <= 1e-12 * (1.0 + np.linalg.norm(vectors[:, 0:ndim], axis=1))))
        raise ValueError(
            f"geometry: the source of view {k} lies on the rotation axis through the origin, so the central ray "
            "(source -> rotation centre) is undefined"
        )
    return c / length[:, None]


def _per_view_compressed(compute, n_views: int, chunk: int) -> np.ndarray:
    """Stack compute(slice) over all views, or only the first view (leading size 1) when every view
    is the same (circular scans): saves memory for large 3D detectors."""
    first = compute(slice(0, 1))
    parts = None
    for start in range(0, n_views, chunk):
        block = compute(slice(start, min(n_views, start + chunk)))
        if parts is None and np.max(np.abs(block - first)) <= 1e-12:
            continue
        if parts is None:
            parts = [np.broadcast_to(first, (start,) + first.shape[1:])]
        parts.append(block)
    return first if parts is None else np.concatenate(parts, axis=0)


def _same_relative_geometry(vectors: np.ndarray, ndim: int, central: np.ndarray) -> bool:
    """True when every view is view 0 moved rigidly: the inner products of d - s, u (, v) and the central
    direction agree (each to 1e-12 of the product of the two lengths), so every function of the rays
    relative to the central ray does too."""
    s = vectors[:, 0:ndim]
    steps = [vectors[:, k * ndim : (k + 1) * ndim] for k in range(2, vectors.shape[1] // ndim)]  # u (, v)
    parts = [vectors[:, ndim : 2 * ndim] - s] + steps
    frame = np.stack(parts + [central], axis=1)  # (n_views, m, ndim)
    gram = frame @ np.swapaxes(frame, 1, 2)
    lengths = np.sqrt(np.diagonal(gram[0]))
    return bool(np.all(np.abs(gram - gram[:1]) <= 1e-12 * np.outer(lengths, lengths)))


# Float64 arrays per ray that the weights' numpy code holds at once, at most (directions, angles and
# the temporaries of the Parker function; measured peak: about 8 for parker_weights, 7 for cosine_weights).
_ARRAYS_PER_RAY = 10


def _check_weight_size(geometry, pixels_per_view: int, name: str) -> None:
    """Refuse weights whose float64 arrays (pixels_per_view per view) cannot fit the machine's memory."""
    detector = f"det_count {geometry.det_count}" if geometry.ndim == 2 else f"det_shape {geometry.det_shape}"
    check_fits(
        nbytes(geometry.n_views, pixels_per_view, _ARRAYS_PER_RAY, dtype=8),
        f"{name}: the weights of {geometry.n_views} views x {pixels_per_view} detector pixels ({detector})",
        "use a smaller detector or fewer views",
    )


def _chunk(geometry) -> int:
    if geometry.ndim == 2:
        return geometry.n_views
    return max(1, _PIXELS_PER_CHUNK // (geometry.det_shape[0] * geometry.det_shape[1]))


# --- cosine weights --------------------------------------------------------------------------------


def cosine_weights(geometry) -> torch.Tensor:
    """Fan- and cone-beam cosine pre-weights, a float64 tensor that broadcasts against ``geometry.shape``.

    The weight of a ray is the cosine of the angle between it (source -> detector pixel centre) and
    the view's central ray (source -> rotation centre, the world origin; in 3D the ray perpendicular
    to the detector's row direction ``v``, i.e. to the rotation axis). For circular scans this is

    - flat detector: ``D / sqrt(D^2 + u^2 [+ v^2])``, ``D = D_so + D_od``, ``(u, v)`` the pixel's
      position on the detector (mm) relative to the foot of the perpendicular from the source
      (``u`` includes the detector offset);
    - curved detector: ``cos(gamma) [* D / sqrt(D^2 + v^2)]``, ``gamma`` the column's fan angle
      (including the offset's turn) and ``v`` the row height,

    the factor of Feldkamp, Davis & Kress (JOSA A 1(6), 1984) and Kak & Slaney (1988, sec. 3.4).
    The result has a leading size-1 view dimension when all views have the same weights.
    """
    if isinstance(geometry, (ParallelBeam2D, ParallelBeam3D)):
        raise TypeError("geometry: cosine weights are for fan and cone beams (FanBeam2D, ConeBeam3D); parallel beams need none")
    if not isinstance(geometry, (FanBeam2D, ConeBeam3D)):
        raise TypeError(f"geometry must be a FanBeam2D or ConeBeam3D, got {type(geometry).__name__}")
    vectors = geometry.to_vectors()
    ndim = geometry.ndim
    central = _central_directions(vectors, ndim)
    pixels = geometry.det_count if ndim == 2 else geometry.det_shape[0] * geometry.det_shape[1]
    same = _same_relative_geometry(vectors, ndim, central)
    if same:  # one view is computed
        check_fits(nbytes(pixels, _ARRAYS_PER_RAY, dtype=8),
                   f"cosine_weights: the weights of {pixels} detector pixels", "use a smaller detector")
    elif ndim == 2:
        _check_weight_size(geometry, pixels, "cosine_weights")
    else:  # chunks of views are computed; the result may hold every view
        check_fits(nbytes(geometry.n_views, pixels, dtype=8) + nbytes(_PIXELS_PER_CHUNK + pixels, _ARRAYS_PER_RAY, dtype=8),
                   f"cosine_weights: the weights of {geometry.n_views} views x {pixels} detector pixels "
                   f"(det_shape {geometry.det_shape})", "use a smaller detector or fewer views")

    def compute(views: slice) -> np.ndarray:
        vec = vectors[views]
        if ndim == 2:
            rays = _fan_directions(vec, geometry.det_count, geometry.detector)
            c = central[views][:, None, :]
        else:
            rays = _cone_directions(vec, geometry.det_shape, geometry.detector)
            c = central[views][:, None, None, :]
        return np.sum(rays * c, axis=-1) / np.linalg.norm(rays, axis=-1)

    if same:  # circular and helical scans: one view suffices
        return torch.from_numpy(np.ascontiguousarray(compute(slice(0, 1))))
    return torch.from_numpy(np.ascontiguousarray(_per_view_compressed(compute, geometry.n_views, _chunk(geometry))))


# --- Parker weights --------------------------------------------------------------------------------


def _smooth_step(x: np.ndarray) -> np.ndarray:
    """Wesarg's S(x): 0 for x <= -1/2, (1 + sin(pi x)) / 2 in between, 1 for x >= 1/2."""
    inside = 0.5 * (1.0 + np.sin(math.pi * np.clip(x, -0.5, 0.5)))
    return np.where(x >= 0.5, 1.0, np.where(x <= -0.5, 0.0, inside))


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den for den >= 0, with den = 0 read as the limit of a step (sign of num times inf)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num / den
    return np.where(den > 0, out, np.where(num > 0, np.inf, np.where(num < 0, -np.inf, 0.0)))


def _parker_function(beta, gamma, scan_range: float, delta: float, q: float = 1.0) -> np.ndarray:
    """Generalised Parker weights (Wesarg, Ebert & Bortfeld, Med. Phys. 29(3), 2002), normalised so
    that a ray and its conjugate sum to 1.

    ``beta`` in [0, scan_range] is the scan angle from the start of the scan, ``gamma`` the fan angle
    with the conjugate of ``(beta, gamma)`` at ``(beta + pi + 2 gamma, -gamma)``, ``delta >= |gamma|``
    the half fan angle, ``scan_range >= pi + 2 delta``. ``q = 1``: Parker's weights (Med. Phys. 9(2),
    1982) with ``delta`` replaced by ``(scan_range - pi) / 2``; ``q < 1`` narrows the transitions.

    Reduced scans (``parker_weights(..., reduced_scan=True)``): ``delta = (scan_range - pi) / 2`` (may
    be smaller than ``|gamma|``, or negative) and ``scan_range = pi + 2 delta``. The transition lengths
    ``b`` are then clamped at 0 (a step whose ratio is read as +-inf), so a ray whose conjugate lies
    outside the scan gets weight 1, and the formula above still makes measured pairs sum to 1.
    """
    beta = np.asarray(beta, dtype=np.float64)
    gamma = np.asarray(gamma, dtype=np.float64)
    eps = max(scan_range - math.pi - 2.0 * delta, 0.0)

    def b(g):
        return np.maximum(q * (2.0 * delta - 2.0 * g + eps), 0.0)

    bp, bm = b(gamma), b(-gamma)
    total = (
        _smooth_step(_safe_ratio(beta, bp) - 0.5)
        + _smooth_step(_safe_ratio(beta - 2.0 * delta + 2.0 * gamma - eps, bp) + 0.5)
        - _smooth_step(_safe_ratio(beta - math.pi + 2.0 * gamma, bm) - 0.5)
        - _smooth_step(_safe_ratio(beta - math.pi - 2.0 * delta - eps, bm) + 0.5)
    )
    return 0.5 * total


def _view_angles(geometry) -> np.ndarray:
    """Rotation angle of each view about the z axis, from the vectors (unwrapped), after checking that the
    scan is circular about the origin (sources on one circle in a plane z = const; parallel rays across z)."""
    vectors = geometry.to_vectors()
    point = isinstance(geometry, (FanBeam2D, ConeBeam3D))
    a = vectors[:, 0 : geometry.ndim]
    if point:
        radius = np.hypot(a[:, 0], a[:, 1])
        if np.any(radius <= 0) or np.ptp(radius) > 1e-6 * radius.max():
            raise ValueError(
                "geometry: Parker weights need a circular scan about the origin (every source at the same distance "
                f"from the z axis); the source distances range over [{radius.min():.6g}, {radius.max():.6g}] mm"
            )
        if geometry.ndim == 3 and np.ptp(a[:, 2]) > 1e-9 * radius.max():
            raise ValueError(
                "geometry: Parker weights need a circular cone-beam scan (all sources in one plane z = const); "
                "helical scans and other trajectories are not supported"
            )
        angles = np.arctan2(a[:, 0], -a[:, 1])  # s = D (sin t, -cos t [, z])
    else:
        if geometry.ndim == 3 and np.any(np.abs(a[:, 2]) > 1e-9 * np.linalg.norm(a, axis=1)):
            raise ValueError("geometry: Parker weights need parallel rays perpendicular to the z axis (rotation about z)")
        angles = np.arctan2(a[:, 0], -a[:, 1])  # r = (sin t, -cos t [, 0])
    return np.unwrap(angles)


def _fan_angles(geometry) -> np.ndarray:
    """Signed fan angle of every ray in the xy plane (counter-clockwise from the central ray, source ->
    origin), (n_views, det_count) in 2D, (n_views, 1 or n_rows, n_cols) in 3D."""
    vectors = geometry.to_vectors()
    s = vectors[:, 0:2]
    c = -s
    if geometry.ndim == 2:
        rays = _fan_directions(vectors, geometry.det_count, geometry.detector)
        cross = c[:, None, 0] * rays[..., 1] - c[:, None, 1] * rays[..., 0]
        dot = c[:, None, 0] * rays[..., 0] + c[:, None, 1] * rays[..., 1]
        return np.arctan2(cross, dot)

    def compute(views: slice) -> np.ndarray:
        rays = _cone_directions(vectors[views], geometry.det_shape, geometry.detector)
        cv = c[views][:, None, None, :]
        cross = cv[..., 0] * rays[..., 1] - cv[..., 1] * rays[..., 0]
        dot = cv[..., 0] * rays[..., 0] + cv[..., 1] * rays[..., 1]
        return np.arctan2(cross, dot)

    v = vectors[:, 9:12]
    if np.all(np.hypot(v[:, 0], v[:, 1]) <= 1e-12 * np.linalg.norm(v, axis=1)):
        # Rows step along z: the rays of a column differ only in z, so one row gives every row's angle.
        rays = _cone_directions(vectors, (1, geometry.det_shape[1]), geometry.detector)
        cross = c[:, None, None, 0] * rays[..., 1] - c[:, None, None, 1] * rays[..., 0]
        dot = c[:, None, None, 0] * rays[..., 0] + c[:, None, None, 1] * rays[..., 1]
        return np.arctan2(cross, dot)
    # Otherwise compress the rows where they agree, chunk by chunk.
    chunk = _chunk(geometry)
    parts, full = [], False
    for start in range(0, geometry.n_views, chunk):
        block = compute(slice(start, min(geometry.n_views, start + chunk)))
        if not full and np.max(np.abs(block - block[:, :1, :])) <= 1e-12:
            parts.append(block[:, :1, :])
            continue
        if not full:
            parts = [np.broadcast_to(p, (p.shape[0], geometry.det_shape[0], p.shape[2])) for p in parts]
            full = True
        parts.append(block)
    return np.concatenate(parts, axis=0)


def parker_weights(geometry, q: float = 1.0, reduced_scan: bool = False) -> torch.Tensor:
    """Redundancy weights of a circular scan, a float64 tensor that broadcasts against ``geometry.shape``,
    normalised so that every line (a ray and its conjugate) has total weight 1.

    - Scan range ``Delta = n_views * |angle step|`` (each view stands for one angular step, so the
      views sit at the midpoints ``beta_k = (k + 1/2) |step|`` of ``[0, Delta]``).
    - ``Delta = 2 pi`` (full scan; tolerance 1e-6 rad): every weight is 1/2.
    - ``pi + 2 delta <= Delta < 2 pi`` (``delta`` = the largest ``|fan angle|`` of the rays; parallel
      beams: 0): Parker's weights (Med. Phys. 9(2), 1982), generalised to any such range by Wesarg et al.
      ("Parker weights revisited", Med. Phys. 29(3), 2002); ``q`` in (0, 1] is Wesarg's parameter,
      ``q = 1`` the classical Parker shape.
    - ``Delta < pi + 2 delta`` (shorter than a short scan: limited angle): a ``ValueError``, unless
      ``reduced_scan=True``, which gives Parker's weights with ``delta`` replaced by the scan's own
      ``(Delta - pi) / 2`` (negative below a half turn): the transitions then cover exactly the
      views whose conjugate ray was also measured, so measured pairs still sum to 1, and rays whose
      line was measured once get weight 1 (parallel beams: all weights 1). The data stay incomplete:
      these weights only remove the double counting (docs/filters_and_weights.md).
    - Longer scans and helical scans raise a ``ValueError``.

    FanBeam2D (flat and curved), circular ConeBeam3D (the fan weights of each column, the same for every
    row: shape ``(n_views, 1, n_cols)``), ParallelBeam2D and ParallelBeam3D (fan angle 0: one weight per
    view, shape ``(n_views, 1[, 1])``). The view angles (derived
    from the vectors, about the z axis through the origin) must be equally spaced and monotonic, in
    either direction.
    """
    if not isinstance(geometry, (FanBeam2D, ConeBeam3D, ParallelBeam2D, ParallelBeam3D)):
        raise TypeError(
            f"geometry must be a FanBeam2D, ConeBeam3D, ParallelBeam2D or ParallelBeam3D, got {type(geometry).__name__}"
        )
    if isinstance(q, bool) or not isinstance(q, numbers.Real):
        raise TypeError(f"q must be a real number in (0, 1], got {q!r}")
    q = float(q)
    if not (0.0 < q <= 1.0):
        raise ValueError(f"q must be in (0, 1], got {q}")
    if not isinstance(reduced_scan, bool):
        raise TypeError(f"reduced_scan must be True or False, got {reduced_scan!r}")
    if geometry.n_views < 2:
        raise ValueError("geometry: Parker weights need at least 2 views (equally spaced angles)")
    angles = _view_angles(geometry)
    steps = np.diff(angles)
    step = float(np.mean(steps))
    if not (np.all(steps > 0) or np.all(steps < 0)) or np.max(np.abs(steps - step)) > 1e-6 * abs(step):
        raise ValueError(
            "geometry: Parker weights need monotonic, equally spaced view angles (relative tolerance 1e-6); "
            f"the angle steps range over [{steps.min():.6g}, {steps.max():.6g}] rad"
        )
    scan_range = geometry.n_views * abs(step)
    tol = 1e-6
    ones = (1,) * geometry.ndim
    if scan_range > 2 * math.pi + tol:
        raise ValueError(
            f"geometry: the scan covers {scan_range:.6g} rad (n_views x angle step), more than a full turn (2 pi); "
            "Parker weights are for scans of pi + 2 delta up to 2 pi"
        )
    if abs(scan_range - 2 * math.pi) <= tol:
        return torch.full(ones, 0.5, dtype=torch.float64)
    if isinstance(geometry, (FanBeam2D, ConeBeam3D)):
        _check_weight_size(geometry, geometry.det_count if geometry.ndim == 2 else geometry.det_shape[1], "parker_weights")
        gamma = _fan_angles(geometry)
    else:
        gamma = np.zeros((1,) * geometry.ndim)  # parallel rays: the weight depends on the view only
    delta = float(np.max(np.abs(gamma)))
    if scan_range < math.pi + 2 * delta - tol:
        if not reduced_scan:
            raise ValueError(
                f"geometry: the scan covers {scan_range:.6g} rad (n_views x angle step), less than the short scan "
                f"pi + 2 delta = {math.pi + 2 * delta:.6g} rad (delta = {delta:.6g} rad, the half fan angle); "
                "Parker weights are for scans of pi + 2 delta up to 2 pi (reduced_scan=True gives Parker's weights "
                "for the reduced scan, with delta replaced by (range - pi) / 2)"
            )
        delta = (scan_range - math.pi) / 2  # Parker's weights for the reduced scan (limited angle)
    # In the scan's own direction of rotation; the conjugate of (beta, gamma) is (beta + pi + 2 gamma, -gamma).
    gamma = np.sign(step) * gamma
    beta = (np.arange(geometry.n_views, dtype=np.float64) + 0.5) * abs(step)
    beta = beta.reshape((-1,) + (1,) * (gamma.ndim - 1))
    weights = _parker_function(beta, gamma, min(scan_range, 2 * math.pi), delta, q)
    return torch.from_numpy(np.ascontiguousarray(np.clip(weights, 0.0, 1.0)))


# --- modules ---------------------------------------------------------------------------------------


def _shape(value) -> tuple[int, ...]:
    try:
        dims = tuple(value)
    except TypeError:
        raise TypeError(f"shape must be a sequence of positive integers, got {value!r}") from None
    if not dims:
        raise ValueError("shape must have at least one dimension")
    for k, n in enumerate(dims):
        if isinstance(n, bool) or not isinstance(n, numbers.Integral):
            raise TypeError(f"shape[{k}] must be a positive integer, got {n!r}")
        if n < 1:
            raise ValueError(f"shape[{k}] must be a positive integer, got {n}")
    return tuple(int(n) for n in dims)


class ProjectionWeight(_KeepsFloat64):
    """A multiplicative projection-domain weight ``y -> w * y``, frozen or learnable.

    The layer of Wuerfl et al., "Deep learning computed tomography: learning projection-domain weights
    from image domain in limited angle problems", IEEE TMI 37(6), 2018: a weight per detector pixel
    and view, initialised from known redundancy weights (e.g. ``parker_weights(geo)``) and fine-tuned.

    Args:
        shape: shape of the weight, the trailing dimensions of the data or broadcastable to them,
            e.g. ``geometry.shape`` (one weight per view and pixel) or ``(1, det_count)``.
            ``None``: the shape of ``init``.
        init: initial weights (tensor or array, broadcast to ``shape``); ``None``: ones.
        learnable: ``False``: a frozen float64 buffer ``weight``; ``True``: an ``nn.Parameter``
            (float64) initialised to it.

    The forward multiplies ``(..., *shape)`` data (float32 or float64) by the weight cast to the
    data's dtype; dimensions of size 1 in ``shape`` broadcast.
    """

    _FLOAT64_BUFFERS = ("weight",)

    def __init__(self, shape=None, init=None, learnable: bool = False):
        super().__init__()
        if shape is None and init is None:
            raise TypeError("ProjectionWeight needs shape, init or both")
        if not isinstance(learnable, bool):
            raise TypeError(f"learnable must be True or False, got {learnable!r}")
        if init is not None:
            if isinstance(init, torch.Tensor):
                if init.dtype.is_complex or init.dtype == torch.bool:
                    raise TypeError(f"init must hold real numbers, got {init.dtype}")
                init = init.detach().to(device="cpu", dtype=torch.float64)
            else:
                try:
                    init = torch.from_numpy(np.array(init, dtype=np.float64))
                except (TypeError, ValueError):
                    raise TypeError("init must be a tensor or an array of real numbers") from None
            if init.dim() == 0:
                raise ValueError("init must have at least one dimension")
            if not bool(torch.isfinite(init).all()):
                raise ValueError("init must contain only finite values")
        shape = tuple(init.shape) if shape is None else _shape(shape)
        check_fits(nbytes(*shape, dtype=8), f"ProjectionWeight: a float64 weight of shape {shape}",
                   "use a smaller shape (dimensions of size 1 broadcast)")
        if init is None:
            weight = torch.ones(shape, dtype=torch.float64)
        else:
            try:
                weight = init.broadcast_to(shape).clone()
            except RuntimeError:
                raise ValueError(f"init of shape {tuple(init.shape)} does not broadcast to shape {shape}") from None
        self.shape = shape
        self.learnable = learnable
        self._data_shape = shape
        self._exact = False  # True: the data's trailing dims must equal _data_shape exactly
        if learnable:
            self.weight = nn.Parameter(weight)
        else:
            self.register_buffer("weight", weight, persistent=False)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """``y * weight``, the same shape and dtype as ``y``."""
        y = floating_input(y, "y")
        expected = self._data_shape
        k = len(expected)
        trailing = tuple(y.shape[-k:]) if y.dim() >= k else None
        ok = trailing is not None and all(
            t == e or (e == 1 and not self._exact) for t, e in zip(trailing, expected)
        )
        if not ok:
            raise ValueError(f"y must have shape (..., {', '.join(map(str, expected))}), got {tuple(y.shape)}")
        if y.device != self.weight.device:
            raise ValueError(
                f"y is on {y.device} but the weights are on {self.weight.device}; move them with .to({str(y.device)!r})"
            )
        return y * self.weight.to(y.dtype)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, learnable={self.learnable}"


class CosineWeighting(ProjectionWeight):
    """Multiplies fan- or cone-beam projections ``(..., *geometry.shape)`` by ``cosine_weights(geometry)``.

    ``learnable=True`` makes the (possibly view-compressed) weight a parameter initialised to them; for a
    weight per view and pixel use ``ProjectionWeight(geometry.shape, init=cosine_weights(geometry))``.
    """

    def __init__(self, geometry, learnable: bool = False):
        w = cosine_weights(geometry)
        super().__init__(tuple(w.shape), init=w, learnable=learnable)
        self._data_shape = tuple(geometry.shape)
        self._exact = True


class ParkerWeighting(ProjectionWeight):
    """Multiplies projections ``(..., *geometry.shape)`` by ``parker_weights(geometry, q, reduced_scan)``
    (1/2 for a full scan). ``learnable=True``: a parameter initialised to them (see ``ProjectionWeight``)."""

    def __init__(self, geometry, q: float = 1.0, learnable: bool = False, reduced_scan: bool = False):
        w = parker_weights(geometry, q=q, reduced_scan=reduced_scan)
        super().__init__(tuple(w.shape), init=w, learnable=learnable)
        self._data_shape = tuple(geometry.shape)
        self._exact = True
