"""ASTRA Toolbox: volume and projection geometries in both directions, and the array conventions.

Our geometries store ASTRA's vector layouts (``parallel_vec``, ``fanflat_vec``, ``parallel3d_vec``,
``cone_vec``), so a geometry converts without arithmetic; the two differences are in the arrays:

- ASTRA stores a **2D** image with row 0 at the *largest* y (ours: row index increases with y), so
  2D images are flipped along their rows (:func:`image_to_astra` / :func:`image_from_astra`).
  ASTRA's 3D volumes ``(slices, rows, cols) = (z, y, x)`` need no flip.
- ASTRA's **3D** projection data are ordered ``(rows, views, cols)`` (ours ``(views, rows, cols)``):
  :func:`projections_to_astra` / :func:`projections_from_astra` swap the two axes. 2D sinograms
  ``(views, bins)`` are the same.

``to_astra`` needs the ``astra`` package (it uses ASTRA's own ``create_vol_geom`` and
``create_proj_geom``); ``from_astra`` reads the dictionaries and does not import it.
"""
from __future__ import annotations

import numpy as np

from ..geometry import ConeBeam3D, FanBeam2D, ParallelBeam2D, ParallelBeam3D, Volume, _Geometry

__all__ = ["to_astra", "from_astra", "volume_to_astra", "volume_from_astra", "geometry_to_astra", "geometry_from_astra",
           "image_to_astra", "image_from_astra", "projections_to_astra", "projections_from_astra"]


def _astra():
    try:
        import astra
    except ImportError as err:
        raise ImportError(
            "known_ops.interop.astra needs the astra-toolbox package (pip install astra-toolbox)"
        ) from err
    return astra


# --- geometries ----------------------------------------------------------------------------------


def volume_to_astra(volume: Volume) -> dict:
    """ASTRA's ``vol_geom`` of ``volume``: its grid and its window (the outer edges, mm)."""
    if not isinstance(volume, Volume):
        raise TypeError(f"volume must be a known_ops.Volume, got {type(volume).__name__}")
    astra = _astra()
    if volume.ndim == 2:
        (ylo, yhi), (xlo, xhi) = volume.bounds
        ny, nx = volume.shape
        return astra.create_vol_geom(ny, nx, xlo, xhi, ylo, yhi)
    (zlo, zhi), (ylo, yhi), (xlo, xhi) = volume.bounds
    nz, ny, nx = volume.shape
    return astra.create_vol_geom(ny, nx, nz, xlo, xhi, ylo, yhi, zlo, zhi)


def geometry_to_astra(geometry) -> dict:
    """ASTRA's ``proj_geom`` of ``geometry``, in its vector form (``parallel_vec``, ``fanflat_vec``,
    ``parallel3d_vec`` or ``cone_vec``): ``geometry.to_vectors()`` unchanged."""
    if not isinstance(geometry, _Geometry):
        raise TypeError(f"geometry must be a known_ops projection geometry, got {type(geometry).__name__}")
    if getattr(geometry, "detector", "flat") != "flat":
        raise ValueError(
            "geometry: ASTRA has no curved-detector counterpart of this geometry (fanflat_vec and cone_vec read "
            "our vectors as a flat detector); only flat detectors convert"
        )
    astra = _astra()
    vectors = geometry.to_vectors()
    if isinstance(geometry, ParallelBeam2D):
        return astra.create_proj_geom("parallel_vec", geometry.det_count, vectors)
    if isinstance(geometry, FanBeam2D):
        return astra.create_proj_geom("fanflat_vec", geometry.det_count, vectors)
    kind = "parallel3d_vec" if isinstance(geometry, ParallelBeam3D) else "cone_vec"
    n_rows, n_cols = geometry.det_shape
    return astra.create_proj_geom(kind, n_rows, n_cols, vectors)


def to_astra(volume: Volume, geometry) -> tuple[dict, dict]:
    """ASTRA's ``(vol_geom, proj_geom)`` of our volume and geometry (vector forms; flat detectors).

    Use the images with :func:`image_to_astra` (2D row flip) and 3D projections with
    :func:`projections_to_astra`.
    """
    if isinstance(volume, Volume) and isinstance(geometry, _Geometry) and volume.ndim != geometry.ndim:
        raise ValueError(f"volume is {volume.ndim}D but geometry is {geometry.ndim}D")
    return volume_to_astra(volume), geometry_to_astra(geometry)


def _require(description: dict, keys, what: str):
    missing = [k for k in keys if k not in description]
    if missing:
        raise ValueError(f"{what}: missing key(s) {missing} (an ASTRA geometry dictionary has {sorted(description)})")
    return [description[k] for k in keys]


def volume_from_astra(vol_geom: dict) -> Volume:
    """Our :class:`Volume` of ASTRA's ``vol_geom`` (2D or 3D), with the spacing and offset of its window."""
    if not isinstance(vol_geom, dict):
        raise TypeError(f"vol_geom must be an ASTRA volume geometry dict, got {type(vol_geom).__name__}")
    ny, nx = _require(vol_geom, ("GridRowCount", "GridColCount"), "vol_geom")
    window = vol_geom.get("option", {})
    axes = [("Y", int(ny)), ("X", int(nx))]
    if "GridSliceCount" in vol_geom:
        axes.insert(0, ("Z", int(vol_geom["GridSliceCount"])))
    shape, spacing, offset = [], [], []
    for name, n in axes:
        # ASTRA's default window (create_vol_geom without one) is -n/2 ... n/2: unit voxels about the origin
        lo = float(window.get(f"WindowMin{name}", -n / 2))
        hi = float(window.get(f"WindowMax{name}", n / 2))
        if not hi > lo:
            raise ValueError(f"vol_geom: WindowMax{name} ({hi}) must be larger than WindowMin{name} ({lo})")
        shape.append(n)
        spacing.append((hi - lo) / n)
        offset.append((hi + lo) / 2)
    return Volume(shape, spacing=spacing, offset=offset)


def geometry_from_astra(proj_geom: dict):
    """Our geometry of ASTRA's ``proj_geom``: ``parallel``, ``fanflat``, ``parallel3d`` and ``cone`` (as
    our circular constructors, which give the vectors of ``astra.geom_2vec``), ``parallel_vec``,
    ``fanflat_vec``, ``parallel3d_vec`` and ``cone_vec`` (from their vectors)."""
    if not isinstance(proj_geom, dict):
        raise TypeError(f"proj_geom must be an ASTRA projection geometry dict, got {type(proj_geom).__name__}")
    kind = proj_geom.get("type")
    what = f"proj_geom ({kind!r})"
    if kind == "parallel":
        width, count, angles = _require(proj_geom, ("DetectorWidth", "DetectorCount", "ProjectionAngles"), what)
        return ParallelBeam2D(np.asarray(angles, dtype=np.float64), int(count), float(width))
    if kind == "fanflat":
        width, count, angles, d_so, d_od = _require(
            proj_geom, ("DetectorWidth", "DetectorCount", "ProjectionAngles", "DistanceOriginSource",
                        "DistanceOriginDetector"), what)
        return FanBeam2D(np.asarray(angles, dtype=np.float64), float(d_so), float(d_od), int(count), float(width))
    if kind in ("parallel3d", "cone"):
        keys = ("DetectorSpacingX", "DetectorSpacingY", "DetectorRowCount", "DetectorColCount", "ProjectionAngles")
        du, dv, rows, cols, angles = _require(proj_geom, keys, what)
        angles = np.asarray(angles, dtype=np.float64)
        if kind == "parallel3d":
            return ParallelBeam3D(angles, (int(rows), int(cols)), (float(dv), float(du)))
        d_so, d_od = _require(proj_geom, ("DistanceOriginSource", "DistanceOriginDetector"), what)
        return ConeBeam3D(angles, float(d_so), float(d_od), (int(rows), int(cols)), (float(dv), float(du)))
    if kind in ("parallel_vec", "fanflat_vec"):
        count, vectors = _require(proj_geom, ("DetectorCount", "Vectors"), what)
        cls = ParallelBeam2D if kind == "parallel_vec" else FanBeam2D
        return cls.from_vectors(np.asarray(vectors, dtype=np.float64), int(count))
    if kind in ("parallel3d_vec", "cone_vec"):
        rows, cols, vectors = _require(proj_geom, ("DetectorRowCount", "DetectorColCount", "Vectors"), what)
        cls = ParallelBeam3D if kind == "parallel3d_vec" else ConeBeam3D
        return cls.from_vectors(np.asarray(vectors, dtype=np.float64), (int(rows), int(cols)))
    raise ValueError(
        f"proj_geom: unsupported ASTRA geometry type {kind!r}; supported: parallel, fanflat, parallel3d, cone, "
        "parallel_vec, fanflat_vec, parallel3d_vec, cone_vec"
    )


def from_astra(vol_geom: dict, proj_geom: dict):
    """Our ``(Volume, geometry)`` of ASTRA's ``vol_geom`` and ``proj_geom`` (see
    :func:`volume_from_astra` and :func:`geometry_from_astra`)."""
    volume, geometry = volume_from_astra(vol_geom), geometry_from_astra(proj_geom)
    if volume.ndim != geometry.ndim:
        raise ValueError(f"vol_geom is {volume.ndim}D but proj_geom ({proj_geom.get('type')!r}) is {geometry.ndim}D")
    return volume, geometry


# --- arrays --------------------------------------------------------------------------------------


def _check_trailing(data, expected: tuple[int, ...], name: str, what: str) -> None:
    shape = tuple(data.shape)
    if len(shape) < len(expected) or shape[len(shape) - len(expected):] != tuple(expected):
        raise ValueError(f"{name} must have shape (..., {', '.join(map(str, expected))}) ({what}), got {shape}")


def _flip(data, axis: int):
    """``data`` (tensor or array) with ``axis`` reversed, as a contiguous copy (ASTRA and torch.from_numpy
    need positive, contiguous strides)."""
    if hasattr(data, "flip") and hasattr(data, "detach"):  # torch tensor
        return data.flip(axis)
    return np.ascontiguousarray(np.flip(np.asarray(data), axis))


def _swap(data, a: int, b: int):
    """``data`` with axes ``a`` and ``b`` exchanged, as a contiguous copy."""
    if hasattr(data, "transpose") and hasattr(data, "detach"):
        return data.transpose(a, b).contiguous()
    return np.ascontiguousarray(np.swapaxes(np.asarray(data), a, b))


def image_to_astra(image, volume: Volume):
    """Our image or volume ``(..., [nz,] ny, nx)`` (tensor or array) in ASTRA's orientation: 2D rows
    reversed (ASTRA's row 0 is the largest y); 3D unchanged. Its own inverse in 2D."""
    if not isinstance(volume, Volume):
        raise TypeError(f"volume must be a known_ops.Volume, got {type(volume).__name__}")
    _check_trailing(image, volume.shape, "image", "the volume's shape")
    return _flip(image, -2) if volume.ndim == 2 else image


def image_from_astra(image, volume: Volume):
    """ASTRA's image (2D: row 0 at the largest y) or volume in our orientation (inverse of
    :func:`image_to_astra`)."""
    return image_to_astra(image, volume)


def projections_to_astra(projections, geometry):
    """Our projections in ASTRA's layout: 2D ``(..., views, bins)`` unchanged; 3D
    ``(..., views, rows, cols)`` -> ``(..., rows, views, cols)``."""
    if not isinstance(geometry, _Geometry):
        raise TypeError(f"geometry must be a known_ops projection geometry, got {type(geometry).__name__}")
    _check_trailing(projections, geometry.shape, "projections", "the geometry's shape")
    return projections if geometry.ndim == 2 else _swap(projections, -3, -2)


def projections_from_astra(projections, geometry):
    """ASTRA's projection data in our layout: 2D unchanged; 3D ``(..., rows, views, cols)`` ->
    ``(..., views, rows, cols)``."""
    if not isinstance(geometry, _Geometry):
        raise TypeError(f"geometry must be a known_ops projection geometry, got {type(geometry).__name__}")
    if geometry.ndim == 2:
        _check_trailing(projections, geometry.shape, "projections", "the geometry's shape")
        return projections
    n_views, n_rows, n_cols = geometry.shape
    _check_trailing(projections, (n_rows, n_views, n_cols), "projections", "ASTRA's (rows, views, cols)")
    return _swap(projections, -3, -2)
