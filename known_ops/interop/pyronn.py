"""PYRO-NN (pyronn 0.1.0 with PYRO-NN-Layers): its geometry objects as ours, and our cone beams as its
projection matrices.

The geometries are read by their attributes (duck typing), so PYRO-NN itself, which imports
TensorFlow in its geometry module, is not needed. Each view is placed where PYRO-NN-Layers' CUDA
kernels cast their rays (docs/interop.md, "PYRO-NN"):

- **2D parallel** (``par_projector_2D``): ray direction ``r`` = ``ray_vectors[k]``, detector axis
  ``(-r_y, r_x)``, bin ``c`` at ``detector_origin + c * detector_spacing`` along it
  (``detector_origin = -(n - 1) / 2 * detector_spacing``: centred, like ours).
- **2D fan** (``fan_projector_2D``): central ray ``c`` = ``central_ray_vectors[k]``, source
  ``-source_isocenter_distance * c``, detector centre ``source + source_detector_distance * c``,
  the same detector axis ``(-c_y, c_x)``; for the same source position it runs opposite to our
  circular ``FanBeam2D``'s ``u`` (vectors take care of it).
- **3D cone** (``cone_projector_3D``): the ray of pixel ``(row, col)`` leaves the source
  (``P``'s null space) along ``M^-1 (col, row, 1)``, ``P = [M | p4]``: ``P`` maps to 0-based pixel
  indices at the ray positions, exactly the convention of
  :meth:`known_ops.ConeBeam3D.from_projection_matrices`, so the matrices are read as they are.
  ``circular_trajectory_3d`` puts the principal point at ``detector_shape * 0.5`` (not
  ``(n - 1) / 2``), so PYRO-NN's own detector is shifted by half a pixel along both axes: the
  isocentre projects to pixel ``n / 2``. The import keeps that half pixel, because PYRO-NN computes it.

Volumes: voxel ``(k, i, j)`` of PYRO-NN's ``(Z, Y, X)`` arrays sits at ``volume_origin + index *
volume_spacing`` (index ``(x, y, z) = (j, i, k)``), the same axes as ours, with the default
``volume_origin = -(n - 1) / 2 * volume_spacing`` (centred).
"""
from __future__ import annotations

import numpy as np

from ..geometry import ConeBeam3D, FanBeam2D, ParallelBeam2D, Volume

__all__ = ["from_pyronn", "to_pyronn_matrices", "volume_from_pyronn"]


def _attribute(geometry, name: str):
    if not hasattr(geometry, name):
        raise TypeError(f"geometry: a PYRO-NN geometry has the attribute {name!r}; {type(geometry).__name__} has not")
    return getattr(geometry, name)


def _array(geometry, name: str, ndim: int | None = None) -> np.ndarray:
    arr = np.asarray(_attribute(geometry, name), dtype=np.float64)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"geometry.{name} must be {ndim}-dimensional, got shape {arr.shape}")
    return arr


def volume_from_pyronn(geometry) -> Volume:
    """Our :class:`Volume` of a PYRO-NN geometry's ``volume_shape``, ``volume_spacing`` and ``volume_origin``."""
    shape = tuple(int(n) for n in np.asarray(_attribute(geometry, "volume_shape")).reshape(-1))
    spacing = _array(geometry, "volume_spacing").reshape(-1)
    origin = _array(geometry, "volume_origin").reshape(-1) if hasattr(geometry, "volume_origin") else None
    if origin is None:
        origin = -(np.asarray(shape) - 1) / 2 * spacing
    if not (len(shape) == len(spacing) == len(origin)):
        raise ValueError(f"geometry: volume_shape, volume_spacing and volume_origin differ in length "
                         f"({len(shape)}, {len(spacing)}, {len(origin)})")
    # voxel index k at origin + k * spacing; ours at offset + (k - (n - 1) / 2) * spacing
    offset = origin + (np.asarray(shape) - 1) / 2 * spacing
    return Volume(shape, spacing=tuple(spacing.tolist()), offset=tuple(offset.tolist()))


def _detector_2d(geometry) -> tuple[int, float, float]:
    """(det_count, det_spacing, position of the detector's middle along its axis) of a 2D geometry."""
    count = int(np.asarray(_attribute(geometry, "detector_shape")).reshape(-1)[-1])
    spacing = float(_array(geometry, "detector_spacing").reshape(-1)[-1])
    origin = float(_array(geometry, "detector_origin").reshape(-1)[-1]) if hasattr(geometry, "detector_origin") \
        else -(count - 1) / 2 * spacing
    return count, spacing, origin + (count - 1) / 2 * spacing


def _perpendicular(r: np.ndarray) -> np.ndarray:
    """PYRO-NN's detector axis (-r_y, r_x) per view (not normalised, as in its kernels)."""
    return np.stack([-r[:, 1], r[:, 0]], axis=1)


def from_pyronn(geometry):
    """Our ``(Volume, geometry)`` of a PYRO-NN geometry object: 2D parallel (``ray_vectors``), 2D fan
    (``central_ray_vectors``, ``source_isocenter_distance``, ``source_detector_distance``) or 3D
    cone (``projection_matrices``, ``detector_shape``, ``detector_spacing``). Call PYRO-NN's
    ``set_trajectory`` first. The rays are those PYRO-NN-Layers' kernels cast (module docstring)."""
    volume = volume_from_pyronn(geometry)
    if hasattr(geometry, "projection_matrices"):
        P = _array(geometry, "projection_matrices", 3)
        det_shape = tuple(int(n) for n in np.asarray(_attribute(geometry, "detector_shape")).reshape(-1))
        det_spacing = tuple(float(s) for s in _array(geometry, "detector_spacing").reshape(-1))
        if len(det_shape) != 2 or len(det_spacing) != 2:
            raise ValueError(f"geometry: a cone beam has a 2D detector (rows, cols), got detector_shape {det_shape}")
        return volume, ConeBeam3D.from_projection_matrices(P, det_shape, det_spacing)
    count, spacing, middle = _detector_2d(geometry)
    if hasattr(geometry, "central_ray_vectors"):
        c = _array(geometry, "central_ray_vectors", 2)
        sid = float(_attribute(geometry, "source_isocenter_distance"))
        sdd = float(_attribute(geometry, "source_detector_distance"))
        axis = _perpendicular(c)
        source = -sid * c
        centre = source + sdd * c + middle * axis
        return volume, FanBeam2D.from_vectors(np.concatenate([source, centre, spacing * axis], axis=1), count)
    if hasattr(geometry, "ray_vectors"):
        r = _array(geometry, "ray_vectors", 2)
        axis = _perpendicular(r)
        return volume, ParallelBeam2D.from_vectors(np.concatenate([r, middle * axis, spacing * axis], axis=1), count)
    raise TypeError(
        "geometry: expected a PYRO-NN geometry with a trajectory (ray_vectors, central_ray_vectors or "
        f"projection_matrices; call its set_trajectory first), got {type(geometry).__name__}"
    )


def to_pyronn_matrices(geometry) -> np.ndarray:
    """PYRO-NN's ``(n_views, 3, 4)`` projection matrices of a flat-detector :class:`ConeBeam3D`
    (``geometry.to_projection_matrices()``: 0-based pixel indices at the pixels' centres, which is
    where PYRO-NN-Layers' cone kernels cast their rays), float64; pass them to PYRO-NN's
    ``GeometryCone3D.set_trajectory``. The volume must be placed as ours: PYRO-NN's
    ``volume_origin = offset - (n - 1) / 2 * spacing`` per axis (the default when the offset is 0)."""
    if not isinstance(geometry, ConeBeam3D):
        raise TypeError(f"geometry must be a known_ops.ConeBeam3D, got {type(geometry).__name__}")
    return geometry.to_projection_matrices()
