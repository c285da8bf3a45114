"""ODL (1.0, ``odl.applications.tomo``): our operators as ``odl.Operator`` and ODL's geometries as ours.

Conventions (docs/interop.md):

- **Arrays.** ODL indexes a volume array ``(x, y[, z])``; ours is ``(..., [z,] y, x)``: the axes are
  reversed. ODL's 3D projections are ``(angle, u, v)``, ours ``(view, row = v, col = u)``. 2D
  sinograms ``(angle, bin)`` are the same. Both permutations are their own inverse.
- **Geometries.** Every geometry is read through ODL's own methods (``src_position``,
  ``det_point_position``, ``rotation_matrix`` and the detector's ``surface_deriv``), never through
  ODL's ASTRA vectors (``astra_conebeam_2d_geom_to_vec``), which are rotated by -90 degrees with
  respect to ODL's (and our) world axes, because ODL hands its arrays to ASTRA untransposed.
- **Adjoint.** ODL's spaces are weighted (``<a, b> = w * sum(a * b)``, ``w`` the cell volume in the
  volume space and ``angle step * detector cell`` in the projection space, both 1 when the voxels are
  1 mm: ODL's ``uniform_discr`` leaves a unit-cell space unweighted). The adjoint in ODL's inner
  products is ``(w_range / w_domain) * A.T``; ``to_odl(A).adjoint`` applies that factor.

``odl`` is imported when a function is called, never at import.
"""
from __future__ import annotations

import builtins
import functools
import math

import numpy as np
import torch

from ..geometry import ConeBeam3D, FanBeam2D, ParallelBeam2D, ParallelBeam3D, Volume, _Geometry
from ..linear import LinearOperator

__all__ = ["to_odl", "from_odl", "space_from_volume", "volume_from_space", "geometry_from_odl", "geometry_to_odl",
           "volume_to_odl", "volume_from_odl", "projections_to_odl", "projections_from_odl"]


def _odl():
    try:
        import odl
    except ImportError as err:
        raise ImportError("known_ops.interop.odl needs the odl package (pip install odl)") from err
    return odl


def _tomo():
    odl = _odl()
    try:
        return odl.applications.tomo
    except AttributeError as err:  # ODL < 1.0 kept it in odl.tomo
        raise ImportError(f"known_ops.interop.odl needs ODL 1.0 (odl.applications.tomo); found odl {odl.__version__}") from err


# --- volumes and spaces --------------------------------------------------------------------------


def space_from_volume(volume: Volume, dtype="float64", **kwargs):
    """ODL's ``uniform_discr`` of ``volume`` (axes reversed: ODL's ``(x, y[, z])``); ``kwargs`` go to
    ``odl.uniform_discr`` (e.g. ``impl``)."""
    if not isinstance(volume, Volume):
        raise TypeError(f"volume must be a known_ops.Volume, got {type(volume).__name__}")
    odl = _odl()
    bounds = volume.bounds[::-1]
    return odl.uniform_discr([lo for lo, _ in bounds], [hi for _, hi in bounds], volume.shape[::-1], dtype=dtype, **kwargs)


def volume_from_space(space) -> Volume:
    """Our :class:`Volume` of a uniform 2D or 3D ODL ``DiscretizedSpace``."""
    if not (hasattr(space, "partition") and hasattr(space, "is_uniform")):
        raise TypeError(f"space must be an ODL DiscretizedSpace, got {type(space).__name__}")
    if not space.is_uniform:
        raise ValueError("space: the ODL space must be uniformly discretised")
    if space.ndim not in (2, 3):
        raise ValueError(f"space must be 2D or 3D, got {space.ndim}D")
    lo, hi = np.asarray(space.min_pt, dtype=np.float64), np.asarray(space.max_pt, dtype=np.float64)
    shape = tuple(int(n) for n in space.shape)
    spacing = (hi - lo) / np.asarray(shape)
    return Volume(shape[::-1], spacing=tuple(spacing[::-1].tolist()), offset=tuple(((lo + hi) / 2)[::-1].tolist()))


# --- geometries ----------------------------------------------------------------------------------


def _detector_frame(geometry, angles: np.ndarray):
    """Per view: the detector point at the middle of the detector partition and the steps (one per
    detector axis) from one cell to the next, from ODL's own geometry methods."""
    dpart = geometry.det_partition
    if not dpart.is_uniform:
        raise ValueError("geometry: the detector partition must be uniform (equally sized bins)")
    mid = (np.asarray(dpart.min_pt, dtype=np.float64) + np.asarray(dpart.max_pt, dtype=np.float64)) / 2
    cells = np.asarray(dpart.cell_sides, dtype=np.float64)
    param = float(mid[0]) if dpart.ndim == 1 else tuple(float(m) for m in mid)
    centre = np.asarray(geometry.det_point_position(angles, param), dtype=np.float64).reshape(len(angles), -1)
    rotation = np.asarray(geometry.rotation_matrix(angles), dtype=np.float64).reshape(len(angles), geometry.ndim, geometry.ndim)
    # d(det_point_position)/d(param) = rotation @ surface_deriv(param); times the cell size = one bin
    deriv = np.asarray(geometry.detector.surface_deriv(param), dtype=np.float64).reshape(dpart.ndim, geometry.ndim)
    steps = [np.einsum("nij,j->ni", rotation, deriv[k]) * cells[k] for k in range(dpart.ndim)]
    return centre, steps, mid, cells


def _curvature(geometry) -> str:
    """'flat' or 'curved' (our curved detectors are arcs / cylinders centred on the source)."""
    name = type(geometry.detector).__name__
    if name in ("Flat1dDetector", "Flat2dDetector"):
        return "flat"
    if name in ("CircularDetector", "CylindricalDetector"):
        return "curved"
    raise ValueError(f"geometry: ODL's {name} has no counterpart here (flat, circular and cylindrical detectors convert)")


def _same_vectors(a: np.ndarray, b: np.ndarray) -> bool:
    scale = max(float(np.max(np.abs(a))), 1.0)
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= 1e-9 * scale))


def _prefer_circular(vector_geometry, build):
    """The geometry our circular constructor builds (it keeps the angles and distances, as FBP wants)
    when its vectors equal ODL's (to 1e-9 relative), else the geometry built from ODL's vectors."""
    try:
        circular = build()
    except ValueError:
        return vector_geometry
    return circular if _same_vectors(circular.to_vectors(), vector_geometry.to_vectors()) else vector_geometry


def geometry_from_odl(geometry):
    """Our geometry of an ODL tomography geometry: ``Parallel2dGeometry``, ``FanBeamGeometry`` (flat or
    circular detector), ``Parallel3dAxisGeometry`` and ``ConeBeamGeometry`` (flat or cylindrical detector, circular or helical).

    Each view is read from ODL's ``src_position`` / ``det_point_position`` / ``rotation_matrix`` and
    the detector's ``surface_deriv`` at the middle of the detector partition, so shifted detectors,
    ``det_pos_init``, shift functions and helices carry over. When the views are those of our
    circular constructor (ODL's default orientations), that geometry is returned (with ``angles``);
    otherwise one built from the vectors. ODL's detector parameter increases along our ``u`` (and
    ``v``): the sinogram needs no flip.
    """
    tomo = _tomo()
    if not isinstance(geometry, tomo.Geometry):
        raise TypeError(f"geometry must be an ODL tomography Geometry, got {type(geometry).__name__}")
    if geometry.motion_partition.ndim != 1:
        raise ValueError(
            f"geometry: only one motion parameter (an angle per view) converts, got {geometry.motion_partition.ndim}"
        )
    angles = np.asarray(geometry.angles, dtype=np.float64).reshape(-1)
    detector = _curvature(geometry)
    centre, steps, mid, cells = _detector_frame(geometry, angles)
    shape = tuple(int(n) for n in geometry.det_partition.shape)
    parallel = isinstance(geometry, tomo.ParallelBeamGeometry)
    if parallel:
        if detector != "flat":
            raise ValueError("geometry: a parallel-beam geometry with a curved detector has no counterpart here")
        # a ray's direction: ODL's detector-to-source vector (our circular r = (sin t, -cos t) at ODL's default)
        first = np.asarray(geometry.det_to_src(angles, float(mid[0]) if len(mid) == 1 else tuple(mid)), dtype=np.float64)
    else:
        first = np.asarray(geometry.src_position(angles), dtype=np.float64).reshape(len(angles), -1)
        if detector == "curved":
            radius = np.asarray(geometry.det_curvature_radius, dtype=object).reshape(-1)[0]
            distance = float(np.linalg.norm((centre - first)[0, :2]))
            if radius is None or abs(float(radius) - distance) > 1e-9 * distance:
                raise ValueError(
                    f"geometry: our curved detectors are centred on the source: det_curvature_radius must be "
                    f"src_radius + det_radius = {distance:g}, got {radius}"
                )
    if parallel:
        # only the detector's position across the rays matters: drop its part along them (ODL puts
        # the detector 1 mm from the origin, along the rays), so that circular scans are recognised
        centre = centre - (np.sum(centre * first, axis=1) / np.sum(first * first, axis=1))[:, None] * first
    if geometry.ndim == 2:
        vectors = np.concatenate([first, centre, steps[0]], axis=1)
        if parallel:
            vec = ParallelBeam2D.from_vectors(vectors, shape[0])
            return _prefer_circular(vec, lambda: ParallelBeam2D(angles, shape[0], cells[0], det_offset=mid[0]))
        vec = FanBeam2D.from_vectors(vectors, shape[0], detector=detector)
        arc = float(geometry.det_curvature_radius) if detector == "curved" else 1.0  # curved: parameter = angle
        return _prefer_circular(vec, lambda: FanBeam2D(angles, geometry.src_radius, geometry.det_radius, shape[0],
                                                       cells[0] * arc, det_offset=mid[0] * arc, detector=detector))
    # 3D: ODL's detector axes are (u, v) = (our columns, our rows)
    vectors = np.concatenate([first, centre, steps[0], steps[1]], axis=1)
    det_shape = (shape[1], shape[0])
    if parallel:
        vec = ParallelBeam3D.from_vectors(vectors, det_shape)
        return _prefer_circular(vec, lambda: ParallelBeam3D(angles, det_shape, (cells[1], cells[0]),
                                                            det_offset=(mid[1], mid[0])))
    vec = ConeBeam3D.from_vectors(vectors, det_shape, detector=detector)
    if detector == "curved":
        arc = float(np.asarray(geometry.det_curvature_radius, dtype=object).reshape(-1)[0])
    else:
        arc = 1.0
    return _prefer_circular(vec, lambda: ConeBeam3D(angles, geometry.src_radius, geometry.det_radius, det_shape,
                                                    (cells[1], cells[0] * arc), det_offset=(mid[1], mid[0] * arc),
                                                    detector=detector, pitch=getattr(geometry, "pitch", 0.0)))


def _snap(value: float, step: float) -> float:
    """``value`` rounded to the nearest multiple of pi / 2 when within 1e-9 steps of it, so that ODL's usual
    partitions (0 to pi, 0 to 2 pi), rebuilt from their midpoints, come back equal (ODL compares exactly)."""
    nearest = round(value / (math.pi / 2)) * (math.pi / 2)
    return float(nearest) if abs(value - nearest) <= 1e-9 * abs(step) else float(value)


def _angle_partition(angles: np.ndarray):
    """ODL's partition whose cell midpoints are ``angles`` (uniform when they are equally spaced)."""
    odl = _odl()
    if len(angles) > 1:
        step = np.diff(angles)
        if np.all(np.abs(step - step[0]) <= 1e-12 * max(abs(step[0]), 1.0)) and step[0] > 0:
            ends = [_snap(angles[0] - step[0] / 2, step[0]), _snap(angles[-1] + step[0] / 2, step[0])]
            return odl.uniform_partition(ends[0], ends[1], len(angles))
    if len(angles) > 1 and np.all(np.diff(angles) > 0):
        return odl.nonuniform_partition(angles)
    raise ValueError("geometry: ODL needs increasing angles (as many views as distinct angles)")


def geometry_to_odl(geometry):
    """ODL's geometry of one built by our circular constructors (``ParallelBeam2D``, ``FanBeam2D`` flat or
    curved, ``ParallelBeam3D``, ``ConeBeam3D`` flat or curved, without a helix), with increasing angles.

    The result is checked: converted back with :func:`geometry_from_odl` it must give our vectors
    (1e-9 relative), else a ``ValueError``. Geometries built from vectors have no ODL counterpart.
    """
    if not isinstance(geometry, _Geometry):
        raise TypeError(f"geometry must be a known_ops projection geometry, got {type(geometry).__name__}")
    if geometry.angles is None:
        raise ValueError("geometry: one built from vectors has no ODL counterpart (ODL describes scans by angles)")
    if getattr(geometry, "pitch", 0.0):
        raise ValueError("geometry: helical scans do not convert to ODL here (ODL's helix starts at angle 0)")
    tomo, odl = _tomo(), _odl()
    apart = _angle_partition(np.asarray(geometry.angles, dtype=np.float64))
    curved = getattr(geometry, "detector", "flat") == "curved"
    if geometry.ndim == 2:
        n, du, offset = geometry.det_count, float(geometry.det_spacing[0]), float(geometry.det_offset)
        if isinstance(geometry, ParallelBeam2D):
            dpart = odl.uniform_partition(offset - n * du / 2, offset + n * du / 2, n)
            odl_geometry = tomo.Parallel2dGeometry(apart, dpart)
        else:
            radius = geometry.source_distance + geometry.detector_distance
            scale = radius if curved else 1.0  # ODL's circular detector parameter is an angle
            dpart = odl.uniform_partition((offset - n * du / 2) / scale, (offset + n * du / 2) / scale, n)
            odl_geometry = tomo.FanBeamGeometry(apart, dpart, geometry.source_distance, geometry.detector_distance,
                                                det_curvature_radius=radius if curved else None)
    else:
        (n_rows, n_cols), (dv, du) = geometry.det_shape, geometry.det_spacing[0]
        v_offset, u_offset = geometry.det_offset
        scale = (geometry.source_distance + geometry.detector_distance) if curved else 1.0
        dpart = odl.uniform_partition([(u_offset - n_cols * du / 2) / scale, v_offset - n_rows * dv / 2],
                                      [(u_offset + n_cols * du / 2) / scale, v_offset + n_rows * dv / 2], (n_cols, n_rows))
        if isinstance(geometry, ParallelBeam3D):
            odl_geometry = tomo.Parallel3dAxisGeometry(apart, dpart)
        else:
            odl_geometry = tomo.ConeBeamGeometry(apart, dpart, geometry.source_distance, geometry.detector_distance,
                                                 det_curvature_radius=(scale, None) if curved else None)
    if not _same_vectors(geometry_from_odl(odl_geometry).to_vectors(), geometry.to_vectors()):
        raise ValueError(f"geometry: no ODL geometry reproduces {geometry!r}")
    return odl_geometry


def from_odl(ray_trafo_or_space, geometry=None):
    """Our ``(Volume, geometry)`` of an ODL ``RayTransform`` (its domain and geometry), or of an ODL
    space and an ODL geometry: ``from_odl(ray_trafo)`` or ``from_odl(space, geometry)``."""
    if geometry is None:
        if not (hasattr(ray_trafo_or_space, "domain") and hasattr(ray_trafo_or_space, "geometry")):
            raise TypeError("from_odl: give an ODL RayTransform, or an ODL space and an ODL geometry")
        space, geometry = ray_trafo_or_space.domain, ray_trafo_or_space.geometry
    else:
        space = ray_trafo_or_space
    volume, ours = volume_from_space(space), geometry_from_odl(geometry)
    if volume.ndim != ours.ndim:
        raise ValueError(f"space is {volume.ndim}D but geometry is {ours.ndim}D")
    return volume, ours


# --- arrays --------------------------------------------------------------------------------------


def _volume_axes(ndim: int) -> tuple[int, ...]:
    return tuple(range(ndim))[::-1]


def _projection_axes(ndim: int) -> tuple[int, ...]:
    return (0, 1) if ndim == 2 else (0, 2, 1)


def _to_tensor(element) -> torch.Tensor:
    data = element.data if hasattr(element, "data") else element
    return data if isinstance(data, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(np.asarray(data)))


def _to_element(space, tensor: torch.Tensor):
    if getattr(space, "impl", "numpy") == "numpy":
        return space.element(tensor.detach().cpu().contiguous().numpy())
    return space.element(tensor.contiguous())


def volume_from_odl(element) -> torch.Tensor:
    """An ODL volume element (or array indexed ``(x, y[, z])``) as our tensor ``([z,] y, x)``."""
    t = _to_tensor(element)
    return t.permute(_volume_axes(t.dim()))


def volume_to_odl(volume_tensor, space):
    """Our volume tensor ``([z,] y, x)`` as an element of the ODL space ``space`` (``(x, y[, z])``)."""
    t = torch.as_tensor(volume_tensor)
    return _to_element(space, t.permute(_volume_axes(t.dim())))


def projections_from_odl(element) -> torch.Tensor:
    """ODL projection data ``(angle, u[, v])`` as our tensor ``(view, bin)`` / ``(view, row, col)``."""
    t = _to_tensor(element)
    return t.permute(_projection_axes(t.dim()))


def projections_to_odl(projections, space):
    """Our projections ``(view, bin)`` / ``(view, row, col)`` as an element of ODL's projection space."""
    t = torch.as_tensor(projections)
    return _to_element(space, t.permute(_projection_axes(t.dim())))


# --- the operator --------------------------------------------------------------------------------


def _weight(space, name: str) -> float:
    """The constant of a space's inner product ``<a, b> = w sum(a b)`` (1 when unweighted)."""
    weighting = getattr(space, "weighting", None)
    const = getattr(weighting, "const", None)
    if const is None:
        raise ValueError(f"{name}: only ODL spaces with a constant weighting are supported, got {weighting!r}")
    return float(const)


def _projection_space(domain, geometry):
    """ODL's projection space for ``geometry``, built as ``odl.applications.tomo.RayTransform`` builds
    it (weighted by angle step times detector cell when the domain is weighted). Geometries built
    from vectors get a partition of view indices (cells of 1) and of the detector (cells of
    ``det_spacing``, averaged over the views)."""
    odl = _odl()
    try:
        partition = geometry_to_odl(geometry).partition
    except ValueError:
        if geometry.ndim == 2:
            du = float(np.mean(geometry.det_spacing))
            n = geometry.det_count
            partition = odl.uniform_partition([0.0, -n * du / 2], [float(geometry.n_views), n * du / 2], geometry.shape)
        else:
            (n_rows, n_cols), (dv, du) = geometry.det_shape, np.mean(geometry.det_spacing, axis=0)
            partition = odl.uniform_partition([0.0, -n_cols * du / 2, -n_rows * dv / 2],
                                              [float(geometry.n_views), n_cols * du / 2, n_rows * dv / 2],
                                              (geometry.n_views, n_cols, n_rows))
    weighting = None
    if domain.is_weighted:
        weighting = float(np.prod(partition.extent)) / partition.size
    tspace = domain.tspace_type(partition.shape, weighting=weighting, dtype=domain.dtype, device=domain.device)
    return odl.DiscretizedSpace(partition, tspace)


@functools.lru_cache(maxsize=None)
def _operator_class():
    odl = _odl()

    class KnownOpsOperator(odl.Operator):
        """A known-ops linear operator in ODL's spaces (see :func:`known_ops.interop.to_odl`)."""

        def __init__(self, op, domain, range, domain_axes, range_axes, adjoint=None):
            super().__init__(domain=domain, range=range, linear=True)
            self.known_op = op
            self._domain_axes, self._range_axes = domain_axes, range_axes
            # the adjoint in ODL's weighted inner products: (w_range / w_domain) * op.T
            self._adjoint_scale = _weight(range, "range") / _weight(domain, "domain")
            self._adjoint = adjoint

        def _call(self, x):
            t = _to_tensor(x).permute(self._domain_axes)
            with torch.no_grad():
                y = self.known_op(t.to(self.known_op_device()))
            return _to_element(self.range, y.permute(self._range_axes))

        def known_op_device(self):
            for tensor in list(self.known_op.buffers()) + list(self.known_op.parameters()):
                return tensor.device
            return torch.device("cpu")

        @property
        def adjoint(self):
            if self._adjoint is None:
                adjoint_op = self.known_op.T * self._adjoint_scale if self._adjoint_scale != 1.0 else self.known_op.T
                self._adjoint = KnownOpsOperator(adjoint_op, self.range, self.domain, self._range_axes,
                                                 self._domain_axes, adjoint=self)
            return self._adjoint

        def __repr__(self):
            return f"to_odl({self.known_op!r})"

    return KnownOpsOperator


def to_odl(operator, domain=None, range=None, dtype="float64"):
    """Our linear operator as an ``odl.Operator`` whose ``adjoint`` is the adjoint in ODL's inner products.

    For a :class:`known_ops.RayTransform`, ``domain`` defaults to ODL's ``uniform_discr`` of its volume
    (:func:`space_from_volume`, of ``dtype``) and ``range`` to the projection space that
    ``odl.applications.tomo.RayTransform`` makes for the same geometry, so elements of ODL's own
    ray transform's spaces (``ray_trafo.range.element(...)``) can be passed. Arrays are converted
    between ODL's axis order and ours (volume axes reversed; 3D projections ``(angle, u, v)``).

    Any other :class:`known_ops.LinearOperator` needs ``domain`` and ``range`` (ODL spaces whose
    shapes are its ``domain_shape`` and ``range_shape``); arrays pass unchanged.

    ``adjoint`` is ``(w_range / w_domain) * operator.T`` with ``w`` the constant weights of ODL's
    spaces (1 for unit cells, the cell volume otherwise): exact in ODL's inner products.
    """
    if not isinstance(operator, LinearOperator):
        raise TypeError(f"operator must be a known_ops LinearOperator, got {type(operator).__name__}")
    from ..operators import RayTransform

    if isinstance(operator, RayTransform):
        if domain is None:
            domain = space_from_volume(operator.volume, dtype=dtype)
        elif volume_from_space(domain) != operator.volume:
            raise ValueError(f"domain: the ODL space describes {volume_from_space(domain)!r}, not the operator's "
                             f"{operator.volume!r}")
        if range is None:
            range = _projection_space(domain, operator.geometry)
        ndim = operator.volume.ndim
        domain_axes, range_axes = _volume_axes(ndim), _projection_axes(ndim)
    else:
        if domain is None or range is None:
            raise ValueError("domain and range: give both ODL spaces for an operator other than a RayTransform")
        domain_axes, range_axes = tuple(builtins.range(len(domain.shape))), tuple(builtins.range(len(range.shape)))
    expected_domain = tuple(operator.domain_shape[k] for k in domain_axes)
    expected_range = tuple(operator.range_shape[k] for k in range_axes)
    if tuple(domain.shape) != expected_domain:
        raise ValueError(f"domain: shape {tuple(domain.shape)} does not fit the operator (expected {expected_domain})")
    if tuple(range.shape) != expected_range:
        raise ValueError(f"range: shape {tuple(range.shape)} does not fit the operator (expected {expected_range})")
    return _operator_class()(operator, domain, range, domain_axes, range_axes)

