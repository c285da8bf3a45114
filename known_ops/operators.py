"""RayTransform: the forward projector A and its exact adjoint A.T as torch modules."""
from __future__ import annotations

import math

import numpy as np
import torch

from . import _ops
from ._dtypes import floating_input
from ._memory import check_fits, nbytes
from .geometry import ConeBeam3D, FanBeam2D, ParallelBeam2D, ParallelBeam3D, Volume, geometry_from_dict
from .linear import LinearOperator, check_trailing_shape

__all__ = ["RayTransform"]

_MODELS = ("joseph", "voxel")


def _check_source_outside(volume: Volume, geometry: FanBeam2D) -> float:
    """Fan rays are lines through the source; the image (grown by one pixel) must lie in front of it.

    Precisely: in every view the grown image must lie strictly on one side of the
    line through the source parallel to the detector, so that each point of it
    projects to a finite detector position, continuously (the back-projection
    finds the rays through a pixel by projecting the pixel's neighbourhood).
    This excludes a source inside or beside the image.
    """
    vectors = geometry.to_vectors()
    source, step = vectors[:, 0:2], vectors[:, 4:6]
    step = step / np.hypot(step[:, 0], step[:, 1])[:, None]  # unit: no product of two large lengths below
    (ylo, yhi), (xlo, xhi) = volume.bounds
    sy, sx = volume.spacing
    corners = np.array([[x, y] for x in (xlo - sx, xhi + sx) for y in (ylo - sy, yhi + sy)])  # (4, 2)
    rel = corners[None, :, :] - source[:, None, :]  # (views, 4, 2)
    # Signed distance of each corner from the line through the source along u.
    side = rel[..., 0] * step[:, None, 1] - rel[..., 1] * step[:, None, 0]
    _check_finite_positions(side)
    bad = ~(np.all(side > 0, axis=1) | np.all(side < 0, axis=1))
    if np.any(bad):
        k = int(np.argmax(bad))
        raise ValueError(
            f"geometry: the source of view {k} at ({source[k, 0]:.4g}, {source[k, 1]:.4g}) mm lies inside the volume "
            f"or level with it (x in [{xlo:.4g}, {xhi:.4g}], y in [{ylo:.4g}, {yhi:.4g}] mm, plus one pixel), but "
            "every pixel must lie in front of the source; increase source_distance or shrink the volume"
        )
    return float(np.min(np.abs(side)))  # the clearance (mm)


def _check_finite_positions(values: np.ndarray) -> None:
    """The volume's corners relative to the sources must be finite; the geometry and volume classes bound
    every length, so this only guards against a volume or geometry made some other way."""
    if not np.all(np.isfinite(values)):
        raise ValueError(
            "geometry: the positions of the volume relative to the sources overflow float64: the geometry's "
            "vectors or the volume's extent are too large"
        )


def _grown_corners(volume: Volume) -> np.ndarray:
    """(2^ndim, ndim) corners (x, y[, z]) in mm of the volume grown by one voxel on every side."""
    lows_highs = [(lo - s, hi + s) for (lo, hi), s in zip(volume.bounds, volume.spacing)][::-1]  # x first
    grids = np.meshgrid(*lows_highs, indexing="ij")
    return np.stack([g.ravel() for g in grids], axis=1)


def _check_cone_in_front(volume: Volume, geometry: ConeBeam3D) -> float:
    """Cone rays are lines through the source; the volume (grown by one voxel) must lie in front of it.

    In every view the grown volume must lie strictly on the detector's side of the
    plane through the source parallel to a flat detector (for a curved detector:
    perpendicular to the centre direction), so that every voxel projects to a
    finite detector position; the 3D analogue of the 2D fan check.
    """
    vectors = geometry.to_vectors()
    source, centre, u, v = vectors[:, 0:3], vectors[:, 3:6], vectors[:, 6:9], vectors[:, 9:12]
    if geometry.detector == "flat":
        normal = np.cross(u, v)
    else:  # the centre direction: d - s without its component along the cylinder axis v
        h = centre - source
        normal = h - np.sum(h * v, axis=1, keepdims=True) / np.sum(v * v, axis=1, keepdims=True) * v
    normal = normal / np.linalg.norm(normal, axis=1, keepdims=True)  # unit: depths are lengths, no overflow
    normal = normal * np.sign(np.sum(normal * (centre - source), axis=1, keepdims=True))
    corners = _grown_corners(volume)  # (8, 3)
    depth = np.einsum("vcx,vx->vc", corners[None, :, :] - source[:, None, :], normal)
    _check_finite_positions(depth)
    bad = ~np.all(depth > 0, axis=1)
    if np.any(bad):
        k = int(np.argmax(bad))
        s = ", ".join(f"{c:.4g}" for c in source[k])
        raise ValueError(
            f"geometry: the source of view {k} at ({s}) mm lies inside the volume or level with it (bounds "
            f"{volume.bounds} mm in (z, y, x) order, plus one voxel), but every voxel must lie in front of the source; "
            "increase source_distance or shrink the volume"
        )
    return float(np.min(depth))  # the clearance (mm)


# The kernels' arithmetic in the data's precision forms products of up to four lengths or inverse
# lengths (the voxel-driven pair's weights: a voxel's volume times |grad col x grad row|, or the FDK
# constant D_so D_sd |u|^2 over a squared depth). Lengths (mm) within [1 / SPAN, SPAN] keep them
# finite: SPAN^4 is well below the largest float64 (1.8e308) and float32 (3.4e38) value.
_SPAN = {torch.float64: 1e75, torch.float32: 1e9}


def _length_span(volume: Volume, geometry, clearance: float | None) -> tuple[float, float, str]:
    """(largest, smallest) of the lengths (mm) whose powers the kernels form, and what they are: the
    voxel spacing and the volume's reach, the detector steps, the ray direction (parallel) or the
    source's distance and the source-to-detector vector (fan, cone), and the clearance between the
    source and the grown volume (which sets the largest magnification)."""
    v = geometry.to_vectors()
    nd = geometry.ndim
    a, d = v[:, 0:nd], v[:, nd : 2 * nd]
    steps = [np.linalg.norm(v[:, k * nd : (k + 1) * nd], axis=1) for k in range(2, v.shape[1] // nd)]
    small = [np.asarray(volume.spacing)] + steps
    big = small + [np.array([max(abs(b) for pair in volume.bounds for b in pair)]), np.linalg.norm(a, axis=1)]
    if isinstance(geometry, (FanBeam2D, ConeBeam3D)):
        big.append(np.linalg.norm(d - a, axis=1))
        small.append(np.linalg.norm(d - a, axis=1))
        if clearance is not None:
            small.append(np.array([clearance]))
    else:
        small.append(np.linalg.norm(a, axis=1))
    return float(max(np.max(x) for x in big)), float(min(np.min(x) for x in small)), (
        "voxel spacing, volume extent, detector spacing, source and detector distances, source clearance"
    )


def _fdk_constants(geometry) -> torch.Tensor:
    """Per-view constants K of the FDK weighting of the voxel-driven pair (csrc/voxel.h): the
    weight of a voxel is K / L'^2, which makes it D_so D_sd / L^2 (flat detectors: L the voxel's
    depth from the source along the central ray, L' the denominator of the view's map; curved:
    L = L' the distance from the source (3D: from the axis through it); D_so: the rotation
    centre's (world origin's) depth, D_sd: the detector's). Parallel beams: L' = 1, K = 1."""
    v = geometry.to_vectors()
    n = v.shape[0]
    if isinstance(geometry, (ParallelBeam2D, ParallelBeam3D)):
        return torch.ones(n, dtype=torch.float64)
    if geometry.ndim == 2:
        s, d, u = v[:, 0:2], v[:, 2:4], v[:, 4:6]
        if geometry.detector == "flat":
            # den = cross(p - s, u) = |u| L  =>  K = D_so D_sd |u|^2
            def cross(a, b):
                return a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]

            u_len = np.hypot(u[:, 0], u[:, 1])
            d_so, d_sd = np.abs(cross(-s, u)) / u_len, np.abs(cross(d - s, u)) / u_len
            k = d_so * d_sd * u_len**2
        else:  # curved: the kernel divides by |p - s|^2 (equiangular FBP); K = D_so D_sd with D_sd = R
            radius = np.hypot(*(d - s).T)
            e_c = (d - s) / radius[:, None]
            k = np.sum(-s * e_c, axis=1) * radius
    else:
        s, d, u, vv = v[:, 0:3], v[:, 3:6], v[:, 6:9], v[:, 9:12]
        if geometry.detector == "flat":
            # den = n.(p - s) / n.(d - s) = L / D_sd  =>  K = D_so / D_sd
            normal = np.cross(u, vv)
            d_so, d_sd = np.abs(np.sum(normal * -s, axis=1)), np.abs(np.sum(normal * (d - s), axis=1))
            k = d_so / d_sd
        else:  # curved: the kernel divides by the squared distance from the axis through s; K = D_so R
            h = d - s
            radial = h - np.sum(h * vv, axis=1, keepdims=True) / np.sum(vv * vv, axis=1, keepdims=True) * vv
            radius = np.linalg.norm(radial, axis=1)
            k = np.sum(-s * radial / radius[:, None], axis=1) * radius
    if np.any(k <= 0):
        raise ValueError("geometry: weighting='fdk' needs the rotation centre (world origin) in front of the source in every view")
    return torch.from_numpy(np.ascontiguousarray(k, dtype=np.float64))


_NO_TORCHSCRIPT = (
    "known_ops.RayTransform does not support TorchScript ({what}; TorchScript is deprecated in PyTorch): "
    "use torch.compile(model) to compile a model that holds it, or torch.export.export(model, args) to "
    "capture its graph"
)


def _view_index(views, n_views: int, device) -> torch.Tensor:
    """A 1D int64 tensor of view indices (negative ones counted from the end) from a sequence, array,
    integer tensor, range or slice; checked.  Plain Python for sequences, so that torch.compile
    can trace it (and checks them while tracing).  A tensor's values are checked when the call runs,
    in eager mode by _ops.view_indices, in compiled code (torch.compile, torch.export) by the
    registered op known_ops::view_indices that calls it: the same ValueError in both, and the same
    read-back of the tensor's extremes to the host (a CUDA synchronisation when it is on a GPU)."""
    if isinstance(views, slice):
        views = range(*views.indices(n_views))
    if isinstance(views, torch.Tensor):
        if views.dtype.is_floating_point or views.dtype.is_complex or views.dtype == torch.bool:
            raise TypeError(f"views must hold integer view indices, got a tensor of {views.dtype}")
        if views.dim() != 1:
            raise ValueError(f"views must be one-dimensional, got shape {tuple(views.shape)}")
        if views.numel() == 0:
            raise ValueError("views must not be empty")
        check = _ops.view_indices_op if torch.compiler.is_compiling() else _ops.view_indices
        return check(views, n_views).to(device)
    if isinstance(views, np.ndarray):
        if views.ndim != 1:
            raise ValueError(f"views must be one-dimensional, got shape {views.shape}")
        if views.size and not np.issubdtype(views.dtype, np.integer):
            raise TypeError(f"views must hold integer view indices, got an array of {views.dtype}")
        views = views.tolist()
    try:
        items = list(views)
    except TypeError:
        raise TypeError(f"views must be integer view indices (a sequence, array, tensor, range or slice), got {views!r}") from None
    if not items:
        raise ValueError("views must not be empty")
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, np.integer)):
            if isinstance(item, (list, tuple, np.ndarray, torch.Tensor)):
                raise ValueError("views must be one-dimensional (a flat sequence of view indices)")
            raise TypeError(f"views must be integer view indices, got {item!r}")
        if not -n_views <= item < n_views:
            raise ValueError(f"views must index the geometry's {n_views} views (in [-{n_views}, {n_views - 1}]), got {item}")
    return torch.tensor([int(item) % n_views for item in items], dtype=torch.int64, device=device)


class RayTransform(LinearOperator):
    """The ray transform ``A`` from ``volume`` to ``geometry``'s projections, as a module.

    ``A(x)`` maps ``(..., ny, nx)`` to ``(..., n_views, det_count)`` line integrals
    (value x mm); ``A.T`` is its exact adjoint (``A.T.T is A``). Leading
    dimensions are batch/channel dimensions. Gradients flow both ways: the
    backward of ``A`` is ``A.T`` and vice versa. Move the operator to the data's
    device with ``A.to(device)``.

    ``model="joseph"``: Joseph's method (linear interpolation across the ray's
    major axis, one sample per column or row; in 3D bilinear interpolation in
    the plane across the major axis, one sample per slice) with its exact transpose.

    ``model="voxel"``: the voxel-driven pair. ``A.T`` interpolates each view's detector at
    every voxel's projection (linearly in 2D, bilinearly in 3D), the back-projector of
    FBP/FDK, weighted by the voxel's size times the density of rays across the ray there
    (``|grad u|``, 3D ``|grad u x grad v|``); ``A``, its exact transpose, splats the voxels
    onto the detector and approximates line integrals. ``weighting="fdk"`` replaces that
    weight by the distance weight of fan-beam FBP and FDK, ``D_so D_sd / L^2`` (``L``: the
    voxel's depth from the source along the central ray; 1 for parallel beams), so that
    ``A.T`` is exactly the FBP/FDK back-projector (its transpose then approximates no line
    integral). CPU and CUDA (on CUDA ``A`` splats with atomic adds, so its last bits may
    vary between runs; ``A.T`` is deterministic on both).

    3D: ``A(x)`` maps ``(..., nz, ny, nx)`` to ``(..., n_views, n_rows, n_cols)``.
    No per-ray table is stored in 3D: rays are set up from per-view frames when
    needed, so memory is the input plus the output (on CUDA the back-projection
    also holds a ray table for as many views as fit a budget, see README).

    ``A(x, views=idx)`` and ``A.T(y, views=idx)`` use only the views ``idx`` (ordered
    subsets, stochastic training): ``A(x, views=idx)`` equals ``A(x)[..., idx, :, ...]``.

    A ``RayTransform`` is a :class:`known_ops.LinearOperator` (composition, scaling, ``norm()``).
    ``volume``, ``geometry``, ``model`` and ``weighting`` are read-only (the tables are built
    for them): build a new operator to change them. Under ``torch.autocast`` half-precision
    inputs run in float32 (``known_ops._dtypes``). ``to_dict()`` describes the operator in JSON
    terms and ``RayTransform.from_dict`` rebuilds it.
    """

    _TABLES = ("_rays", "_views", "_rays_f32", "_views_f32", "_frames", "_fdk")

    def __init__(self, volume: Volume, geometry, model: str = "joseph", weighting: str = "line"):
        super().__init__()
        if not isinstance(volume, Volume):
            raise TypeError(f"volume must be a known_ops.Volume, got {type(volume).__name__}")
        if not isinstance(geometry, (ParallelBeam2D, FanBeam2D, ParallelBeam3D, ConeBeam3D)):
            raise TypeError(
                "geometry must be a ParallelBeam2D, FanBeam2D, ParallelBeam3D or ConeBeam3D, "
                f"got {type(geometry).__name__}"
            )
        if volume.ndim != geometry.ndim:
            raise ValueError(f"volume is {volume.ndim}D but geometry is {geometry.ndim}D")
        if model not in _MODELS:
            raise ValueError(f"model must be one of {_MODELS}, got {model!r}")
        if weighting not in ("line", "fdk"):
            raise ValueError(f"weighting must be 'line' or 'fdk', got {weighting!r}")
        if weighting != "line" and model != "voxel":
            raise ValueError("weighting='fdk' needs model='voxel' (the FBP/FDK back-projector)")
        clearance = None
        if isinstance(geometry, FanBeam2D):
            clearance = _check_source_outside(volume, geometry)
        if isinstance(geometry, ConeBeam3D):
            clearance = _check_cone_in_front(volume, geometry)
        # Read-only (see the properties below): the tables are built for these.
        self.__dict__.update(_volume=volume, _geometry=geometry, _model=model, _weighting=weighting)
        self.extra_repr()  # cache the description now, outside any compiled region
        # Per precision, why the operator cannot compute in it (None: it can); see _SPAN and the table checks.
        self.__dict__["_dtype_problems"] = self._dtype_problems_of(*_length_span(volume, geometry, clearance))
        if self._dtype_problems[torch.float64] is not None:
            raise ValueError(f"volume and geometry: {self._dtype_problems[torch.float64]}")
        fdk = _fdk_constants(geometry) if weighting == "fdk" else None
        self.register_buffer("_fdk", fdk, persistent=False)
        if volume.ndim == 3:
            self._register_frames()
        else:
            self._register_tables_2d()

    def _read_only(name):  # noqa: N805 - a helper that builds properties in the class body
        def get(self):
            return self.__dict__["_" + name]

        def set_(self, value):
            raise AttributeError(
                f"RayTransform.{name} is read-only (the operator's tables were built for it); "
                f"build a new RayTransform(volume, geometry, model=..., weighting=...) instead"
            )

        return property(get, set_, doc=f"The operator's {name} (read-only).")

    volume = _read_only("volume")
    geometry = _read_only("geometry")
    model = _read_only("model")
    weighting = _read_only("weighting")
    del _read_only

    def to_dict(self) -> dict:
        """A JSON-serialisable description: volume, geometry, model and weighting."""
        return {"type": "RayTransform", "volume": self.volume.to_dict(), "geometry": self.geometry.to_dict(),
                "model": self.model, "weighting": self.weighting}

    @classmethod
    def from_dict(cls, description: dict) -> "RayTransform":
        """The operator that :meth:`to_dict` described."""
        if not isinstance(description, dict) or description.get("type") != "RayTransform":
            raise ValueError("description must be a dict made by RayTransform.to_dict() (type 'RayTransform')")
        return cls(Volume.from_dict(description["volume"]), geometry_from_dict(description["geometry"]),
                   model=description.get("model", "joseph"), weighting=description.get("weighting", "line"))

    def _dtype_problems_of(self, largest: float, smallest: float, what: str) -> dict:
        """Why each precision cannot be used (None: it can), from the range of the lengths involved."""
        problems = {}
        for dtype, span in _SPAN.items():
            name = str(dtype).replace("torch.", "")
            if self.model == "voxel" and not (largest <= span and smallest >= 1 / span):
                problems[dtype] = (
                    f"the lengths of the volume and geometry ({what}) range over [{smallest:g}, {largest:g}] mm, "
                    f"beyond [{1 / span:g}, {span:g}] mm, where the voxel-driven pair's weights (products of up "
                    f"to four lengths) stay finite in {name}"
                )
            elif self.volume.ndim == 3 and not max(self.volume.spacing) <= span ** 4:
                problems[dtype] = (
                    f"the voxel spacing {self.volume.spacing} mm makes the ray weights (mm per slice) overflow {name}"
                )
            else:
                problems[dtype] = None
        return problems

    def _check_dtype(self, data: torch.Tensor, name: str) -> None:
        problem = self._dtype_problems.get(data.dtype)
        if problem is not None:
            raise ValueError(f"{name} is {str(data.dtype).replace('torch.', '')}, but {problem}; use float64 data")

    def _overflow_message(self, what: str, detail: str) -> str:
        """The tables overflow: the geometry's lengths are extreme beside the volume's spacing (each is
        within the bounds the geometry and volume classes check, but not the two together)."""
        longest = float(np.abs(self.geometry.to_vectors()).max())
        return (
            f"the projector's {what} overflow: the geometry's lengths (up to {longest:g} mm) are too large beside "
            f"the volume's spacing {self.volume.spacing} mm, or the spacing too small; use coarser voxels, or a "
            f"geometry closer to the volume: {detail}"
        )

    def _register_frames(self) -> None:
        """3D: one frame (float64, whatever the data's dtype) per view; rays are set up from it."""
        try:
            frames = _ops.frames_3d(
                torch.from_numpy(self.geometry.to_vectors()),
                self.geometry._kind,
                self.geometry.det_shape,
                self.volume.shape,
                list(self.volume.spacing) + list(self.volume.offset),
            )
        except RuntimeError as err:  # the frames op checks what it builds (csrc/joseph3d.h, frame3d_setup_problem)
            message = self._overflow_message("per-view frames", str(err).splitlines()[0])
            raise ValueError(f"volume and geometry: {message}") from None
        if not bool(torch.isfinite(frames.float()).all()):  # the kernels compute parts of them in the data's dtype
            # float64 data can still be projected; float32 data are refused (_check_dtype)
            self._dtype_problems[torch.float32] = self._overflow_message("frames in float32",
                                                                         "values beyond float32's 3.4e38")
        self.register_buffer("_frames", frames, persistent=False)

    def _register_tables_2d(self) -> None:
        """2D: ray and view tables in float64 and, computed once here rather than at every call, in float32."""
        sy, sx = self.volume.spacing
        oy, ox = self.volume.offset
        n_views, n_det = self.geometry.n_views, self.geometry.det_count
        check_fits(
            nbytes(n_views, n_det + 2, 4, dtype=8 + 4),
            f"RayTransform: the ray tables of {n_views} views x {n_det} detector bins (n_views x det_count x 4 "
            "numbers, in float64 and float32)",
            "use a smaller det_count or fewer views (angles)",
        )
        try:
            rays, views = _ops.tables_2d(
                torch.from_numpy(self.geometry.to_vectors()),
                self.geometry._kind,
                n_det,
                self.volume.shape,
                [sy, sx, oy, ox],
            )
        except RuntimeError as err:  # the tables op checks that what it built is finite
            message = self._overflow_message("ray tables", str(err).splitlines()[0])
            raise ValueError(f"volume and geometry: {message}") from None
        rays_f32, views_f32 = rays.float(), views.float()
        if not (bool(torch.isfinite(rays_f32).all()) and bool(torch.isfinite(views_f32).all())):
            # float64 data can still be projected; float32 data are refused (_check_dtype)
            self._dtype_problems[torch.float32] = self._overflow_message(
                "float32 ray tables", "ray positions or weights beyond float32's 3.4e38")
        self.register_buffer("_rays", rays, persistent=False)
        self.register_buffer("_views", views, persistent=False)
        self.register_buffer("_rays_f32", rays_f32, persistent=False)
        self.register_buffer("_views_f32", views_f32, persistent=False)

    def _apply(self, fn, recurse=True):
        # Module casts (A.float(), model.half(), model.to(dtype)) must not round
        # the geometry: each table keeps its dtype and only follows device moves.
        tables = {name: getattr(self, name) for name in self._TABLES if getattr(self, name, None) is not None}
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

    def _device(self) -> torch.device:
        return (self._frames if self.volume.ndim == 3 else self._rays).device

    def _check_device(self, data: torch.Tensor, name: str) -> None:
        if data.device != self._device():
            raise ValueError(
                f"{name} is on {data.device} but the operator's geometry tables are on {self._device()}; "
                f"move the operator with .to({str(data.device)!r})"
            )

    def _n_views(self) -> int:
        # From a table rather than from the geometry's numpy array: torch.compile traces tensors'
        # shapes as constants, and numpy arrays as tensors (which fails inside torch.func transforms).
        return (self._frames if self.volume.ndim == 3 else self._views).shape[0]

    def _view_indices(self, views):
        """The indices of `views` on the operator's device (None: all views)."""
        return None if views is None else _view_index(views, self._n_views(), self._device())

    def _tables(self, data: torch.Tensor, idx):
        """The geometry tables for data's dtype, then the FDK constants (None for the line-integral
        weighting), restricted to the view indices `idx` (None: all views)."""
        if self.volume.ndim == 3:
            tables = (self._frames,)
        elif data.dtype == torch.float32:
            tables = (self._rays_f32, self._views_f32)
        else:
            tables = (self._rays, self._views)
        tables += (self._fdk,)
        if idx is None:
            return tables
        return tuple(None if t is None else t.index_select(0, idx) for t in tables)

    def __prepare_scriptable__(self):
        # torch.jit.script calls this on every module of the model it scripts.
        raise RuntimeError(_NO_TORCHSCRIPT.format(what="torch.jit.script"))

    @staticmethod
    def _checked(t, name: str, expected: tuple[int, ...], what: str) -> torch.Tensor:
        if torch.jit.is_tracing():
            # A trace would bake in the checks of shapes and view indices (and the leading dims).
            raise RuntimeError(_NO_TORCHSCRIPT.format(what="torch.jit.trace"))
        t = floating_input(t, name)
        check_trailing_shape(t, name, expected, what)
        return t

    def _check_call_size(self, data: torch.Tensor, in_shape, out_shape, forward: bool) -> None:
        """Refuse a call whose output (and the kernels' work space) cannot fit the device's memory."""
        if torch.compiler.is_compiling():
            return  # shapes may be symbolic; eager calls are checked
        batch = math.prod(data.shape[: data.dim() - len(in_shape)])
        size = data.element_size()
        out_bytes = nbytes(batch, *out_shape, dtype=size)
        in_bytes = nbytes(batch, *in_shape, dtype=size)
        # Work space of the CPU kernels (and CUDA's, roughly): the 2D forward pads two copies of the
        # images, the 2D adjoint scatters into up to 8 private images per group, the 3D forward
        # keeps one transposed copy of the volumes; a copy of a non-contiguous input comes on top.
        if self.model == "voxel":
            work = 0
        elif self.volume.ndim == 2:
            work = 2 * in_bytes if forward else 2 * out_bytes + nbytes(8, *self.domain_shape, dtype=size)
        else:
            work = in_bytes if forward else 0
        if not data.is_contiguous():
            work += in_bytes
        what = "projections" if forward else "back-projections"
        check_fits(
            out_bytes + work,
            f"RayTransform.{'forward' if forward else 'adjoint'}: the {what} of a batch of {batch} "
            f"({tuple(data.shape)} {str(data.dtype).replace('torch.', '')} -> output {(batch, *out_shape)}, plus work space)",
            "project a smaller batch at a time",
            data.device,
        )

    def forward(self, x: torch.Tensor, views=None) -> torch.Tensor:
        """Projections ``A x`` of ``x`` (..., *volume.shape); only of ``views`` when given."""
        x = self._checked(x, "x", self.domain_shape, "the volume's shape")
        self._check_device(x, "x")
        self._check_dtype(x, "x")
        idx = self._view_indices(views)
        n_views = self.geometry.n_views if idx is None else len(idx)
        self._check_call_size(x, self.domain_shape, (n_views,) + tuple(self.range_shape[1:]), forward=True)
        *tables, fdk = self._tables(x, idx)
        lead = x.shape[: x.dim() - self.volume.ndim]
        flat = x.reshape((-1,) + tuple(self.domain_shape))
        if self.model == "voxel":
            if self.volume.ndim == 3:
                y = _ops.voxel3d_forward(flat, tables[0], *self.geometry.det_shape, fdk)
            else:
                y = _ops.voxel2d_forward(flat, tables[1], self.geometry.det_count, list(self.volume.spacing), fdk)
        elif self.volume.ndim == 3:
            y = _ops.joseph3d_forward(flat, tables[0], *self.geometry.det_shape)
        else:
            y = _ops.joseph2d_forward(flat, *tables)
        return y.reshape(lead + y.shape[1:])

    def adjoint(self, y: torch.Tensor, views=None) -> torch.Tensor:
        """Back-projection ``A^T y`` of ``y`` (..., n_views, *detector); of ``len(views)`` views when given."""
        idx = self._view_indices(views)
        detector = tuple(self.geometry.det_shape) if self.volume.ndim == 3 else (self.geometry.det_count,)
        expected = (self._n_views() if idx is None else len(idx),) + detector
        y = self._checked(y, "y", expected, "(n_views, " + ("n_rows, n_cols)" if self.volume.ndim == 3 else "det_count)"))
        self._check_device(y, "y")
        self._check_dtype(y, "y")
        self._check_call_size(y, expected, tuple(self.domain_shape), forward=False)
        *tables, fdk = self._tables(y, idx)
        lead = y.shape[: y.dim() - len(expected)]
        flat = y.reshape((-1,) + expected)
        if self.model == "voxel":
            if self.volume.ndim == 3:
                x = _ops.voxel3d_adjoint(flat, tables[0], *self.domain_shape, fdk)
            else:
                x = _ops.voxel2d_adjoint(flat, tables[1], *self.domain_shape, list(self.volume.spacing), fdk)
        elif self.volume.ndim == 3:
            x = _ops.joseph3d_adjoint(flat, tables[0], *self.domain_shape)
        else:
            x = _ops.joseph2d_adjoint(flat, *tables, *self.domain_shape)
        return x.reshape(lead + tuple(self.domain_shape))

    def extra_repr(self) -> str:
        # Built once: the geometries' reprs use NumPy, which torch.compile cannot trace (functorch's vmap
        # calls repr of the module it maps).
        text = self.__dict__.get("_extra_repr_text")
        if text is None:
            text = f"volume={self.volume!r},\ngeometry={self.geometry!r},\nmodel={self.model!r}"
            self.__dict__["_extra_repr_text"] = text
        return text
