"""Speed of known_ops' ray transforms (2D and 3D cone beam) against peers, on the same problems in the same run.

Usage (from the repository root)::

    python benchmarks/operators.py                     # cases a (single + batch 16), c, e, f on the CPU
    python benchmarks/operators.py --quick             # fewer repeats, cases a and e only
    python benchmarks/operators.py --cases a,e --peers ours,astra-linear
    python benchmarks/operators.py --cases f --quick --peers ours,mbirjax
    python benchmarks/operators.py --device cuda       # cases a256, g256, c, g; ours and grid_sample on the GPU

Cases (issue 2):
  a1    parallel, 256x256 pixels of 1 mm, 256 bins of 1 mm, 180 views over pi, one image
  a16   as a1, batch of 16
  a256  as a1, batch of 256 (GPU)
  g256  as a1 but 256 views, batch of 256 (the GPU target's problem)
  c     parallel, 512x512 pixels of 1 mm, 725 bins of 1 mm, 720 views over pi, one image
  e     fan, flat detector, 256x256 pixels of 1 mm, 256 bins of 2 mm, 360 views over 2 pi,
        source 500 mm from the isocentre, detector 1000 mm from the source
  f     cone, flat detector, 128^3 voxels of 1 mm, 128x128 detector pixels of 2 mm, 180 views
        over 2 pi, source 500 mm from the isocentre, detector 1000 mm from the source, one volume
  g     (GPU only) as f with 256^3 voxels, a 256x256 detector of 2 mm and 256 views
  ``--cases a`` means a1 and a16.

Methods (each skipped with the reason recorded when it is not installed or does not
apply): ours (known_ops.RayTransform, Joseph), ASTRA CPU ``linear``, ``line``, ``strip``
(parallel) and ``line_fanflat`` (fan), scikit-image ``radon`` / ``iradon(filter_name=None)``
(parallel), mirtorch's ``CT`` (Siddon), mbirjax's ``ParallelBeamModel`` (and its
``ConeBeamModel`` with one detector row for the fan case, with all rows for the cone
cases), diffct's cone ``Projector`` (cone cases; on the CPU it runs its portable PyTorch
backend, timed on 4 of the views and scaled to all of them), ``astra-cone`` (listed as
skipped: ASTRA's 3D projectors are CUDA only), and ``grid_sample``: a pure-PyTorch
rotate-and-sum baseline, bilinear in 2D, trilinear along the cone rays in 3D
(benchmarks/_grid_sample.py). The 3D peers' geometry is checked against ours on the
case's own geometry: the relative L2 difference of their projections of an off-centre
cube is printed and recorded (``geometry_rel_diff``).

Definitions (the same for every method, so the rates are comparable):
  ray samples per image = n_views x det_count x nx
      (samples per ray = nx, the number of image columns: Joseph's method takes one
      sample per column, or per row, crossed; on a square image that is nx for every
      ray. The count measures the problem, not each method's own work.)
  ray samples per volume (cone cases) = the sum over the views x rows x cols rays of
      Joseph's samples on each: one per slice of the ray's major axis at which its
      bilinear taps touch the volume, counted from the geometry (rays that miss count 0)
  ray samples per second = ray samples per image / time per image
  time per image = median time of one call on the whole batch / batch size (an image is
      one volume in the cone cases)
      (peers without a batch API are called image by image inside the timed call)
  speed-up = peer's time per image / ours, for the same case and operation
      (> 1: ours is faster)

Timing: float32; every call is warmed up, then the median of the repeats is taken.
Only the projection is timed: operators, projector ids, JIT compilation and
input conversion are prepared beforehand. On CUDA, CUDA events bracket each call.
Results go to benchmarks/results/operators.{json,md} (``--output-dir``, ``--name``).
A full CPU run takes about 20 minutes on 2 cores, most of it in the slow peers on case c
(mirtorch recomputes its 6 GB intersection plan on every call there), plus a few for case f;
``--quick`` about 5; ``--cases f --quick`` about 3.
"""
from __future__ import annotations

import argparse
import functools
import gc
import importlib.metadata
import multiprocessing
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _grid_sample import GridSampleConeProjector, GridSampleProjector  # noqa: E402
from _timing import machine_info, measure  # noqa: E402

import known_ops as ko  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


# --------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    name: str
    title: str
    beam: str  # "parallel", "fan" or "cone"
    size: int  # square image, ny = nx (cone: a cube, nz = ny = nx)
    n_views: int
    angle_range: float
    det_count: int  # detector bins (cone: columns)
    det_spacing: float  # mm (cone: rows and columns alike)
    batch: int
    pixel: float = 1.0
    source_distance: float | None = None  # source to isocentre (mm)
    detector_distance: float | None = None  # isocentre to detector (mm)
    det_rows: int = 0  # cone: detector rows
    gpu_only: bool = False  # too large for the CPU peers: run with --device cuda

    @property
    def ndim(self) -> int:
        return 3 if self.beam == "cone" else 2

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.size,) * self.ndim

    @property
    def det_shape(self) -> tuple[int, ...]:
        return (self.det_rows, self.det_count) if self.ndim == 3 else (self.det_count,)

    @property
    def samples_per_ray(self) -> float:
        """nx in 2D; in 3D the mean of Joseph's count over all rays (those that miss included)."""
        if self.ndim == 2:
            return self.size
        return self.samples_per_image / (self.n_views * self.det_rows * self.det_count)

    @property
    def samples_per_image(self) -> int:
        if self.ndim == 3:
            return joseph_samples_3d(self)
        return self.n_views * self.det_count * self.samples_per_ray

    def angles(self) -> np.ndarray:
        return ko.uniform_angles(self.n_views, self.angle_range)

    def volume(self) -> ko.Volume:
        return ko.Volume(shape=self.shape, spacing=self.pixel)

    def geometry(self, views=None):
        """The case's geometry; ``views`` (indices) keeps only those views."""
        angles = self.angles() if views is None else self.angles()[views]
        if self.beam == "parallel":
            return ko.ParallelBeam2D(angles, self.det_count, det_spacing=self.det_spacing)
        if self.beam == "fan":
            return ko.FanBeam2D(angles, self.source_distance, self.detector_distance, self.det_count,
                                det_spacing=self.det_spacing, detector="flat")
        return ko.ConeBeam3D(angles, self.source_distance, self.detector_distance, det_shape=self.det_shape,
                             det_spacing=self.det_spacing, detector="flat")


@functools.lru_cache(maxsize=None)
def joseph_samples_3d(case: Case) -> int:
    """Ray samples of Joseph's method on a cone case: for every ray (views x rows x cols), the number
    of slices of its major axis (the axis of largest |direction| in index units) at which the sample's
    bilinear taps touch the volume, i.e. both minor coordinates lie in (-1, n) voxels. Rays that miss
    the volume count 0."""
    n = np.array(case.shape, dtype=np.float64)  # (nz, ny, nx): index axes k, i, j
    spacing = np.full(3, case.pixel)
    rows, cols = case.det_shape
    r = np.arange(rows) - (rows - 1) / 2
    c = np.arange(cols) - (cols - 1) / 2
    total = 0
    for vec in case.geometry().to_vectors():  # cone_vec rows: source, detector centre, u, v, in (x, y, z)
        s, d, u, v = vec[0:3], vec[3:6], vec[6:9], vec[9:12]
        pixels = d + c[None, :, None] * u + r[:, None, None] * v  # (rows, cols, 3) in (x, y, z)
        origin = s[::-1] / spacing + (n - 1) / 2  # the source in index units, (k, i, j)
        direction = ((pixels - s)[..., ::-1] / spacing).reshape(-1, 3)
        a = np.abs(direction)
        major = np.where((a[:, 2] >= a[:, 1]) & (a[:, 2] >= a[:, 0]), 2, np.where(a[:, 1] >= a[:, 0], 1, 0))
        for m in range(3):
            dm = direction[major == m]
            if not len(dm):
                continue
            first = np.zeros(len(dm))
            last = np.full(len(dm), n[m] - 1)
            for b in (ax for ax in range(3) if ax != m):
                beta = dm[:, b] / dm[:, m]  # minor coordinate = alpha + beta * major index
                alpha = origin[b] - origin[m] * beta
                with np.errstate(divide="ignore", invalid="ignore"):
                    lo, hi = (-1.0 - alpha) / beta, (n[b] - alpha) / beta
                lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
                flat = beta == 0
                inside = (alpha > -1.0) & (alpha < n[b])
                first = np.maximum(first, np.where(flat, np.where(inside, 0, np.inf), np.floor(lo) + 1))
                last = np.minimum(last, np.where(flat, np.where(inside, n[m] - 1, -np.inf), np.ceil(hi) - 1))
            total += int(np.maximum(last - first + 1, 0).sum())
    return total


def _parallel_a(name, title, batch, n_views=180):
    return Case(name, title, "parallel", 256, n_views, math.pi, 256, 1.0, batch)


CASES = {
    c.name: c
    for c in (
        _parallel_a("a1", "(a) 256x256, 256 bins, 180 views over pi, one image", 1),
        _parallel_a("a16", "(a) 256x256, 256 bins, 180 views over pi, batch 16", 16),
        _parallel_a("a256", "(a) 256x256, 256 bins, 180 views over pi, batch 256", 256),
        _parallel_a("g256", "GPU target: 256x256, 256 bins, 256 views over pi, batch 256", 256, n_views=256),
        Case("c", "(c) 512x512, 725 bins, 720 views over pi, one image", "parallel", 512, 720, math.pi, 725, 1.0, 1),
        Case("e", "(e) fan 256x256, 256 bins of 2 mm, 360 views over 2 pi, source 500 mm, detector 1000 mm "
             "from the source", "fan", 256, 360, 2 * math.pi, 256, 2.0, 1, source_distance=500.0,
             detector_distance=500.0),
        Case("f", "(f) cone 128^3 voxels of 1 mm, 128x128 detector of 2 mm, 180 views over 2 pi, source 500 mm, "
             "detector 1000 mm from the source, one volume", "cone", 128, 180, 2 * math.pi, 128, 2.0, 1,
             source_distance=500.0, detector_distance=500.0, det_rows=128),
        Case("g", "(g, GPU) cone 256^3 voxels of 1 mm, 256x256 detector of 2 mm, 256 views over 2 pi, source 500 mm, "
             "detector 1000 mm from the source, one volume", "cone", 256, 256, 2 * math.pi, 256, 2.0, 1,
             source_distance=500.0, detector_distance=500.0, det_rows=256, gpu_only=True),
    )
}
CASE_GROUPS = {"a": ("a1", "a16")}
DEFAULT_CASES = {"cpu": "a,c,e,f", "cuda": "a256,g256,c,g"}
QUICK_CASES = {"cpu": "a,e", "cuda": "a256"}


def parse_cases(text: str) -> list[Case]:
    names: list[str] = []
    for token in (t.strip() for t in text.split(",") if t.strip()):
        for name in CASE_GROUPS.get(token, (token,)):
            if name not in CASES:
                raise SystemExit(f"unknown case {name!r}; choose from {sorted(CASES) + sorted(CASE_GROUPS)}")
            if name not in names:
                names.append(name)
    return [CASES[n] for n in names]


def make_data(case: Case, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float32 test data: images (B, ny, nx), zero outside the inscribed circle (scikit-image's
    ``circle=True`` requires it), and projections (B, n_views, det_count); in 3D volumes
    (B, nz, ny, nx), zero outside the inscribed cylinder, and projections (B, n_views, rows, cols)."""
    rng = np.random.default_rng(seed)
    n = case.size
    c = np.arange(n) - (n - 1) / 2
    disk = (c[:, None] ** 2 + c[None, :] ** 2) <= (n / 2) ** 2
    x = rng.random((case.batch, *case.shape), dtype=np.float32)
    x *= disk
    y = rng.random((case.batch, case.n_views, *case.det_shape), dtype=np.float32)
    return x, y


def offcentre_cube(case: Case) -> np.ndarray:
    """A cube of ones, an eighth of the volume's width on a side, away from the centre on every
    axis and inside the cone's field of view: (nz, ny, nx), float32. For geometry checks."""
    n = case.size
    x = np.zeros(case.shape, dtype=np.float32)
    a, w = n // 8, n // 8
    x[n // 2 + a // 2:n // 2 + a // 2 + w, n // 2 - 2 * a:n // 2 - 2 * a + w, n // 2 + a:n // 2 + a + w] = 1.0
    return x


def ours_projection(case: Case, volume: np.ndarray, device: str = "cpu", geometry=None) -> np.ndarray:
    """Our forward projection of one volume on the case's geometry (or ``geometry``), as a numpy array."""
    op = ko.RayTransform(case.volume(), case.geometry() if geometry is None else geometry).to(device)
    with torch.no_grad():
        return op(torch.from_numpy(volume).to(device)).cpu().numpy()


def rel_diff(a, b) -> float:
    """||a - b|| / ||b||, in float64."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# --------------------------------------------------------------------------- methods
class Skip(Exception):
    """A method that cannot run a case (not installed, wrong device); the message is the reason recorded."""


class NotApplicable(Skip):
    """A method that does not model a case's geometry (e.g. a fan projector on a parallel case)."""


@dataclass
class Prepared:
    forward: object  # zero-argument callables, projecting the whole batch
    adjoint: object
    note: str = ""
    close: object = None
    warmup: int = 0  # a method's own minimum number of warm-up calls
    scale: float = 1.0  # the measured times are multiplied by this (a peer timed on a subset of the views)
    geometry_rel_diff: float | None = None  # ||peer(cube) - ours(cube)|| / ||ours(cube)|| (3D peers)


def _no_grad(fn):
    def run():
        with torch.no_grad():
            return fn()
    return run


def _cpu_only(device: str, what: str) -> None:
    if device != "cpu":
        raise Skip(f"{what} runs on the CPU only; run without --device cuda to time it")


def build_ours(case: Case, x: np.ndarray, y: np.ndarray, device: str) -> Prepared:
    op = ko.RayTransform(case.volume(), case.geometry()).to(device)
    xt = torch.from_numpy(x).to(device)
    yt = torch.from_numpy(y).to(device)
    if case.batch == 1:  # one image as (ny, nx), as a user would pass it
        xt, yt = xt[0], yt[0]
    return Prepared(_no_grad(lambda: op(xt)), _no_grad(lambda: op.T(yt)),
                    note=f"known_ops.RayTransform (Joseph), {torch.get_num_threads()} threads" if device == "cpu"
                    else "known_ops.RayTransform (Joseph)")


def build_grid_sample(case: Case, x: np.ndarray, y: np.ndarray, device: str) -> Prepared:
    max_elements = 2**28 if device != "cpu" else 2**25
    if case.ndim == 3:
        proj = GridSampleConeProjector(case.shape, (case.pixel,) * 3, case.geometry().to_vectors(), case.det_shape,
                                       device=device, max_elements=max_elements, batch=case.batch)
        cube = offcentre_cube(case)
        with torch.no_grad():
            agreement = rel_diff(proj.forward(torch.from_numpy(cube).to(device)[None])[0].cpu(),
                                 ours_projection(case, cube, device))
        print(f"  {'grid_sample':<20} geometry check: rel. L2 difference to ours on an off-centre cube "
              f"{agreement:.2%}", flush=True)
        xt = torch.from_numpy(x).to(device)
        yt = torch.from_numpy(y).to(device)
        return Prepared(_no_grad(lambda: proj.forward(xt)), _no_grad(lambda: proj.adjoint(yt)),
                        note=f"trilinear grid_sample, {proj.n_samples} samples per ray, {proj.n_chunks} view "
                        f"chunks, grids built in each call; geometry check vs ours: {agreement:.2%}",
                        geometry_rel_diff=agreement)
    proj = GridSampleProjector(case.shape, (case.pixel, case.pixel), case.geometry().to_vectors(), case.det_count,
                               case.beam == "fan", device=device, max_elements=max_elements, batch=case.batch)
    xt = torch.from_numpy(x).to(device)
    yt = torch.from_numpy(y).to(device)
    return Prepared(_no_grad(lambda: proj.forward(xt)), _no_grad(lambda: proj.adjoint(yt)),
                    note=f"bilinear grid_sample, {proj.n_samples} samples per ray, {len(proj.grids)} view chunks")


def build_astra(projector: str):
    def build(case: Case, x: np.ndarray, y: np.ndarray, device: str) -> Prepared:
        _cpu_only(device, "ASTRA's CPU projector")
        if case.ndim == 3:
            raise NotApplicable(f"ASTRA '{projector}' is a 2D projector")
        fan_projector = projector.endswith("_fanflat")
        if fan_projector != (case.beam == "fan"):
            raise NotApplicable(f"ASTRA '{projector}' is a {'fan' if fan_projector else 'parallel'}-beam projector")
        try:
            import astra
        except ImportError as e:
            raise Skip(f"astra-toolbox is not installed ({e})")
        ny, nx = case.shape
        hx, hy = nx * case.pixel / 2, ny * case.pixel / 2
        vol_geom = astra.create_vol_geom(ny, nx, -hx, hx, -hy, hy)
        if case.beam == "parallel":
            proj_geom = astra.create_proj_geom("parallel", case.det_spacing, case.det_count, case.angles())
        else:
            proj_geom = astra.create_proj_geom("fanflat", case.det_spacing, case.det_count, case.angles(),
                                               case.source_distance, case.detector_distance)
        pid = astra.create_projector(projector, proj_geom, vol_geom)
        # ASTRA works in place on linked numpy buffers: copy each image in, run, copy the result out.
        vol_buf = np.zeros((ny, nx), dtype=np.float32)
        sino_buf = np.zeros((case.n_views, case.det_count), dtype=np.float32)
        vid = astra.data2d.link("-vol", vol_geom, vol_buf)
        sid = astra.data2d.link("-sino", proj_geom, sino_buf)
        algs = {}
        for kind, key in (("FP", "VolumeDataId"), ("BP", "ReconstructionDataId")):
            cfg = astra.astra_dict(kind)
            cfg["ProjectorId"], cfg["ProjectionDataId"], cfg[key] = pid, sid, vid
            algs[kind] = astra.algorithm.create(cfg)
        images = np.ascontiguousarray(x[:, ::-1])  # ASTRA's row 0 is the largest y
        sino_out = np.empty_like(y)
        vol_out = np.empty_like(x)

        def forward():
            for i in range(case.batch):
                vol_buf[...] = images[i]
                astra.algorithm.run(algs["FP"])
                sino_out[i] = sino_buf
            return sino_out

        def adjoint():
            for i in range(case.batch):
                sino_buf[...] = y[i]
                astra.algorithm.run(algs["BP"])
                vol_out[i] = vol_buf[::-1]
            return vol_out

        def close():
            for a in algs.values():
                astra.algorithm.delete(a)
            astra.data2d.delete([vid, sid])
            astra.projector.delete(pid)

        return Prepared(forward, adjoint, note=f"astra {projector}, FP/BP algorithms on linked buffers, "
                        "image by image", close=close)

    return build


def build_astra_cone(case: Case, x: np.ndarray, y: np.ndarray, device: str) -> Prepared:
    if case.ndim != 3:
        raise NotApplicable("a 3D projector")
    if device == "cpu":
        raise Skip("ASTRA has no CPU 3D projector: its cone-beam projectors (FP3D_CUDA/BP3D_CUDA) run on CUDA only")
    raise Skip("ASTRA's CUDA cone-beam projector is not wired into this benchmark (compare against its published "
               "figures)")


def build_skimage(case: Case, x: np.ndarray, y: np.ndarray, device: str) -> Prepared:
    _cpu_only(device, "scikit-image")
    if case.beam != "parallel":
        raise NotApplicable("scikit-image's radon is parallel-beam only")
    try:
        from skimage.transform import iradon, radon
    except ImportError as e:
        raise Skip(f"scikit-image is not installed ({e})")
    if case.det_spacing != case.pixel:
        raise Skip("scikit-image's detector bins are one pixel wide")
    n = case.size
    # radon's detector is fixed by the image: n bins with circle=True, the padded diagonal without.
    padded = n + int(np.ceil(np.sqrt(2) * n - n))
    if case.det_count == n:
        circle = True
    elif case.det_count == padded:
        circle = False
    else:
        raise Skip(f"scikit-image's radon gives {n} (circle=True) or {padded} (circle=False) bins, "
                   f"not {case.det_count}")
    theta = np.degrees(case.angles())
    sinos = [np.ascontiguousarray(s.T) for s in y]  # radon's layout: (bins, angles)

    def forward():
        return [radon(img, theta=theta, circle=circle, preserve_range=True) for img in x]

    def adjoint():
        return [iradon(s, theta=theta, output_size=n, filter_name=None, circle=circle) for s in sinos]

    return Prepared(forward, adjoint, note=f"radon/iradon(filter_name=None), circle={circle}, image by image")


def build_mirtorch(case: Case, x: np.ndarray, y: np.ndarray, device: str) -> Prepared:
    if case.ndim == 3:
        raise NotApplicable("mirtorch's CT is 2D only")
    try:
        from mirtorch.linear import CT
    except ImportError as e:
        raise Skip(f"mirtorch is not installed ({e})")
    cache = 2**31  # let it keep its intersection plan when that fits in 2 GiB (its default is 128 MiB)
    kwargs = dict(voxel_size=case.pixel, detector_spacing=case.det_spacing, geometry=case.beam,
                  max_cache_bytes=cache)
    if case.beam == "fan":
        kwargs.update(source_distance=case.source_distance, detector_distance=case.detector_distance)
    angles = torch.as_tensor(case.angles(), dtype=torch.float32, device=device)
    op = CT(case.shape, angles, case.det_count, **kwargs)
    cached = op._plan is not None
    xt = torch.from_numpy(x).to(device)
    yt = torch.from_numpy(y).to(device)
    adj = op.H
    # CT maps one image of exactly image_shape: loop over the batch.
    forward = _no_grad(lambda: [op(img) for img in xt])
    adjoint = _no_grad(lambda: [adj(s) for s in yt])
    # Observed here: its gathers run ~15x slower for the first ~20 calls after construction (on a1:
    # about 1 s, then 70 ms), so it is warmed up with at least 25 images' worth of calls.
    return Prepared(forward, adjoint, note=f"mirtorch.linear.CT (Siddon), plan "
                    f"{'cached' if cached else 'recomputed per call (over 2 GiB)'}, image by image",
                    warmup=math.ceil(25 / case.batch))


def build_mbirjax(case: Case, x: np.ndarray, y: np.ndarray, device: str) -> Prepared:
    _cpu_only(device, "mbirjax (as installed here, JAX CPU)")
    if case.beam == "fan" and case.batch > 1:
        raise NotApplicable("mbirjax has no 2D fan model; the rows of its cone model are not independent fan slices")
    try:
        import mbirjax as mj  # before jax, so that mbirjax can set up one JAX device per core
    except ImportError as e:
        raise Skip(f"mbirjax is not installed ({e})")
    if case.ndim == 3:
        return _build_mbirjax_cone(mj, case, x, y)
    sino_shape = (case.n_views, case.batch, case.det_count)  # (views, detector rows = slices, channels)
    if case.beam == "parallel":
        model = mj.ParallelBeamModel(sino_shape, case.angles())
        note = "ParallelBeamModel"
    else:
        model = mj.ConeBeamModel(sino_shape, case.angles(), source_detector_dist=case.source_distance
                                 + case.detector_distance, source_iso_dist=case.source_distance)
        note = "ConeBeamModel with one detector row"
    model.set_params(recon_shape=(*case.shape, case.batch), delta_voxel=case.pixel,
                     delta_det_channel=case.det_spacing, use_ror_mask=False, verbose=0)
    recon = np.ascontiguousarray(x.transpose(1, 2, 0))  # (rows, cols, slices)
    sino = np.ascontiguousarray(y.transpose(1, 0, 2))
    # np.asarray waits for JAX's asynchronous result and brings it to the host.
    return Prepared(lambda: np.asarray(model.forward_project(recon)), lambda: np.asarray(model.back_project(sino)),
                    note=f"mbirjax {note}, batch as slices, use_ror_mask=False")


def _build_mbirjax_cone(mj, case: Case, x: np.ndarray, y: np.ndarray) -> Prepared:
    """mbirjax's ConeBeamModel on a cone case. Its recon is (rows, cols, slices) with rows along -y
    (its y_tilde = (row - (ny-1)/2) * voxel is our -y, with the same angles and the source at +y of
    its rotated frame), cols along x and slices along z; its sinogram is (views, detector rows,
    channels), as ours. So a volume (nz, ny, nx) of ours is ``x.transpose(1, 2, 0)[::-1]`` there."""
    if case.batch != 1:
        raise NotApplicable("mbirjax's cone model projects one volume")
    model = mj.ConeBeamModel((case.n_views, *case.det_shape), case.angles(),
                             source_detector_dist=case.source_distance + case.detector_distance,
                             source_iso_dist=case.source_distance)
    model.set_params(recon_shape=(case.size, case.size, case.size), delta_voxel=case.pixel,
                     delta_det_channel=case.det_spacing, delta_det_row=case.det_spacing, use_ror_mask=False,
                     verbose=0)

    def to_mbir(volume):  # (nz, ny, nx) -> (rows = -y, cols = x, slices = z)
        return np.ascontiguousarray(volume.transpose(1, 2, 0)[::-1])

    # The geometry check: the same off-centre cube through both (this also compiles mbirjax's projector).
    cube = offcentre_cube(case)
    agreement = rel_diff(np.asarray(model.forward_project(to_mbir(cube))), ours_projection(case, cube))
    print(f"  {'mbirjax':<20} geometry check: rel. L2 difference to ours on an off-centre cube {agreement:.2%}",
          flush=True)
    recon = to_mbir(x[0])
    sino = np.ascontiguousarray(y[0])
    return Prepared(lambda: np.asarray(model.forward_project(recon)), lambda: np.asarray(model.back_project(sino)),
                    note=f"mbirjax ConeBeamModel, use_ror_mask=False; geometry check vs ours: {agreement:.2%}",
                    geometry_rel_diff=agreement)


DIFFCT_CPU_VIEWS = 4  # diffct's CPU (portable PyTorch) path takes ~5 s per view on case f: time a few views


def build_diffct(case: Case, x: np.ndarray, y: np.ndarray, device: str) -> Prepared:
    if case.ndim != 3:
        raise NotApplicable("benchmarked on the cone cases only")
    try:
        import diffct
    except Exception as e:  # ImportError, or numba's own errors
        raise Skip(f"diffct is not importable ({type(e).__name__}: {e})")
    # On the CPU, time a few views spread over the scan and scale to all: a circular scan's views cost alike.
    if device == "cpu" and case.n_views > DIFFCT_CPU_VIEWS:
        step = case.n_views // DIFFCT_CPU_VIEWS
        views = np.arange(DIFFCT_CPU_VIEWS) * step + step // 3
    else:
        views = np.arange(case.n_views)
    geo = case.geometry(views)
    vec = torch.as_tensor(geo.to_vectors(), dtype=torch.float32, device=device)
    src, det, u, v = vec[:, 0:3], vec[:, 3:6], vec[:, 6:9], vec[:, 9:12]
    # The same frame as ours (centred volume (D, H, W) = (z, y, x)); its cone sinograms are (views, U, V).
    trajectory = (src, det, u / u.norm(dim=1, keepdim=True), v / v.norm(dim=1, keepdim=True))
    try:
        proj = diffct.Projector(trajectory, case.shape, (case.det_count, case.det_rows), beam="cone",
                                detector_spacing=(case.det_spacing, case.det_spacing), voxel_spacing=case.pixel)
    except RuntimeError as e:
        raise Skip(f"diffct cannot run here ({e})")
    cube = offcentre_cube(case)
    with torch.no_grad():
        agreement = rel_diff(proj.project(torch.from_numpy(cube).to(device)).transpose(-1, -2).cpu(),
                             ours_projection(case, cube, device, geo))
    print(f"  {'diffct':<20} geometry check: rel. L2 difference to ours on an off-centre cube {agreement:.2%} "
          f"({len(views)} views)", flush=True)
    xt = torch.from_numpy(x[0]).to(device)
    yt = torch.from_numpy(np.ascontiguousarray(y[0, views].transpose(0, 2, 1))).to(device)
    subset = len(views) < case.n_views
    return Prepared(_no_grad(lambda: proj.project(xt)), _no_grad(lambda: proj.backproject(yt)),
                    note=f"diffct {importlib.metadata.version('diffct')} Projector(beam='cone'), backend "
                    f"{proj.backend!r}, precision {proj.precision!r}"
                    + (f"; timed on {len(views)} of {case.n_views} views, time scaled by "
                       f"{case.n_views / len(views):g}" if subset else ""),
                    scale=case.n_views / len(views), geometry_rel_diff=agreement)


METHODS = {
    "ours": build_ours,
    "astra-linear": build_astra("linear"),
    "astra-line": build_astra("line"),
    "astra-strip": build_astra("strip"),
    "astra-line_fanflat": build_astra("line_fanflat"),
    "skimage": build_skimage,
    "mirtorch": build_mirtorch,
    "mbirjax": build_mbirjax,
    "diffct": build_diffct,
    "astra-cone": build_astra_cone,
    "grid_sample": build_grid_sample,
}
TORCH_METHODS = ("ours", "grid_sample", "mirtorch", "diffct")  # run on --device; the others use the CPU
DISTRIBUTIONS = {"astra": "astra-toolbox", "skimage": "scikit-image", "mirtorch": "MIRTorch", "mbirjax": "mbirjax",
                 "jax": "jax", "diffct": "diffct", "numba": "numba", "numpy": "numpy", "scipy": "scipy"}


def versions() -> dict:
    out = {}
    for key, dist in DISTRIBUTIONS.items():
        try:
            out[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[key] = None
    out["torch"] = torch.__version__
    out["known_ops"] = ko.__version__
    return out


# --------------------------------------------------------------------------- running
def measure_method(case: Case, name: str, device: str, repeats: int, warmup: int, max_seconds: float,
                   threads: int | None = None) -> list[dict]:
    """Set up one method on one case and time its forward and adjoint; rows for the report."""
    if threads:
        torch.set_num_threads(threads)
    x, y = make_data(case)
    rows = []
    on = device if name in TORCH_METHODS else "cpu"
    base = {"case": case.name, "method": name, "device": on, "batch": case.batch}
    try:
        prepared = METHODS[name](case, x, y, device)
    except Skip as e:
        status = "n/a" if isinstance(e, NotApplicable) else "skipped"
        print(f"  {name:<20} {status}: {e}", flush=True)
        return [{**base, "status": status, "reason": str(e)}]
    except Exception as e:  # a peer that fails is recorded, not fatal
        print(f"  {name:<20} failed to set up: {type(e).__name__}: {e}", flush=True)
        return [{**base, "status": "failed", "reason": f"setup: {type(e).__name__}: {e}"}]
    for op in ("forward", "adjoint"):
        fn = getattr(prepared, op)
        try:
            t = measure(fn, repeats=repeats, warmup=max(warmup, prepared.warmup), max_seconds=max_seconds,
                        device=device)
        except Exception as e:
            rows.append({**base, "op": op, "status": "failed", "reason": f"{type(e).__name__}: {e}"})
            print(f"  {name:<20} {op:<8} failed: {type(e).__name__}: {e}", flush=True)
            continue
        k = prepared.scale
        per_image = t.median_ms * k / case.batch
        rows.append({**base, "op": op, "status": "ok", "note": prepared.note, "ms": t.median_ms * k,
                     "ms_per_image": per_image, "min_ms": t.min_ms * k, "repeats": t.repeats,
                     "times_ms": [round(v * k, 4) for v in t.times_ms],
                     "samples_per_s": case.samples_per_image / (per_image / 1e3),
                     "images_per_s": 1e3 / per_image})
        if k != 1.0:
            rows[-1]["time_scale"] = k
        if prepared.geometry_rel_diff is not None:
            rows[-1]["geometry_rel_diff"] = prepared.geometry_rel_diff
        print(f"  {name:<20} {op:<8} {per_image:10.3f} ms/image  "
              f"{rows[-1]['samples_per_s']:.3e} samples/s  ({t.repeats} repeats)", flush=True)
    if prepared.close is not None:
        prepared.close()
    return rows


def run_case(case: Case, methods: list[str], device: str, repeats: int, warmup: int, max_seconds: float,
             threads: int | None = None, isolate: bool = True) -> list[dict]:
    """Times every method on one case. Each method runs in a fresh process by default: peers leave
    thread pools behind (JAX's, OpenMP's) that would otherwise share the cores with the next method."""
    rows = []
    for name in methods:
        args = (case, name, device, repeats, warmup, max_seconds, threads)
        if isolate:
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                rows += pool.apply(measure_method, args)
        else:
            rows += measure_method(*args)
            gc.collect()
    add_speedups(rows)
    return rows


def add_speedups(rows: list[dict]) -> None:
    ours = {r["op"]: r["ms_per_image"] for r in rows if r["method"] == "ours" and r["status"] == "ok"}
    for r in rows:
        if r["status"] == "ok" and r["op"] in ours:
            r["speedup"] = r["ms_per_image"] / ours[r["op"]]


def _ok(rows, case, method, op):
    for r in rows:
        if (r["case"], r["method"], r.get("op"), r["status"]) == (case, method, op, "ok"):
            return r
    return None


PEER_TARGETS = (  # (case, peer, minimum speed-up of ours)
    ("a1", "astra-linear", 5.0),
    ("c", "astra-linear", 5.0),
    ("a16", "astra-linear", 8.0),
    ("e", "astra-line_fanflat", 5.0),
    ("f", "mbirjax", 8.0),
)


def check_targets(rows: list[dict], cases: list[Case], device: str) -> list[dict]:
    """The issue's targets, judged from the measured ratios (missing measurements are 'not measured')."""
    out = []
    if device == "cpu":
        run = {c.name for c in cases}
        for case, peer, factor in (t for t in PEER_TARGETS if t[0] in run):
            for op in ("forward", "adjoint"):
                r = _ok(rows, case, peer, op)
                sp = r.get("speedup") if r else None
                out.append({"target": f"{op} >= {factor:g}x faster than {peer} on {case}", "case": case, "op": op,
                            "value": sp, "met": None if sp is None else sp >= factor})
        for case in cases:
            for op in ("forward", "adjoint"):
                peers = [r for r in rows if r["case"] == case.name and r.get("op") == op and r["status"] == "ok"
                         and r["method"] != "ours" and "speedup" in r]
                if not peers:
                    out.append({"target": f"{op} faster than every peer on {case.name}", "case": case.name,
                                "op": op, "value": None, "met": None})
                    continue
                worst = min(peers, key=lambda r: r["speedup"])
                out.append({"target": f"{op} faster than every peer on {case.name} (closest: {worst['method']})",
                            "case": case.name, "op": op, "value": worst["speedup"], "met": worst["speedup"] > 1.0})
    else:
        fwd, adj = _ok(rows, "g256", "ours", "forward"), _ok(rows, "g256", "ours", "adjoint")
        out.append({"target": "g256 forward >= 1.5e12 ray samples/s", "case": "g256", "op": "forward",
                    "value": fwd["samples_per_s"] if fwd else None,
                    "met": None if fwd is None else fwd["samples_per_s"] >= 1.5e12})
        ratio = adj["ms"] / fwd["ms"] if fwd and adj else None
        out.append({"target": "g256 adjoint time <= 1.5x forward time", "case": "g256", "op": "adjoint",
                    "value": ratio, "met": None if ratio is None else ratio <= 1.5})
    return out


# --------------------------------------------------------------------------- reporting
def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def case_table(case: Case, rows: list[dict], images_per_s: bool = False):
    """(header, body rows, notes) of one case's table; ``images_per_s`` adds those columns (for GPUs)."""
    header = ["method"]
    for op in ("fwd", "adj"):
        header += [f"{op} ms/img", f"{op} samples/s"] + ([f"{op} img/s"] if images_per_s else []) + [f"{op} speed-up"]
    width = len(header) // 2
    body, notes = [], []
    for method in dict.fromkeys(r["method"] for r in rows if r["case"] == case.name):
        mine = [r for r in rows if r["case"] == case.name and r["method"] == method]
        if all(r["status"] == "n/a" for r in mine):
            continue  # the method does not model this geometry
        if all(r["status"] != "ok" for r in mine):
            notes.append(f"{method}: {mine[0]['status']}: {mine[0]['reason']}")
            continue
        cells = [method]
        for op in ("forward", "adjoint"):
            r = next((r for r in mine if r.get("op") == op), None)
            if r is None or r["status"] != "ok":
                cells += ["failed"] + ["-"] * (width - 1)
                if r is not None:
                    notes.append(f"{method} {op}: {r['status']}: {r['reason']}")
                continue
            cells += [_fmt(r["ms_per_image"], ".4g"), _fmt(r["samples_per_s"], ".3e")]
            cells += [_fmt(r["images_per_s"], ".4g")] if images_per_s else []
            target = next((f for c, m, f in PEER_TARGETS if (c, m) == (case.name, method)), None)
            cells += [_fmt(r.get("speedup"), ".2f") + ("x" if r.get("speedup") is not None else "")
                      + (f" (target: >= {target:g}x)" if target is not None else "")]
        body.append(cells)
        scale = next((r["time_scale"] for r in mine if r["status"] == "ok" and r.get("time_scale")), None)
        if scale is not None:
            notes.append(f"{method}: {next(r['note'] for r in mine if r['status'] == 'ok')}")
        geo = next((r["geometry_rel_diff"] for r in mine if "geometry_rel_diff" in r), None)
        if geo is not None:
            notes.append(f"{method}: geometry check, relative L2 difference of its projection of an off-centre "
                         f"cube to ours: {geo:.2%}")
    return header, body, notes


def samples_text(case: Case) -> str:
    """How the case's ray samples are counted."""
    if case.ndim == 2:
        return f"{case.samples_per_image:.3e} ray samples per image (views x bins x nx)."
    n_rays = case.n_views * case.det_rows * case.det_count
    return (f"{case.samples_per_image:.3e} ray samples per volume: Joseph's count over the {n_rays:.3e} rays "
            f"(views x rows x cols), one sample per slice of a ray's major axis at which it touches the volume, "
            f"{case.samples_per_ray:.1f} per ray on average (views x rows x cols x {case.size} would be "
            f"{n_rays * case.size:.3e}).")


def print_report(cases, rows, targets, info):
    print(f"\n{info['cpu_model']}, {info['torch_threads']} torch threads, torch {info['torch']}, "
          f"device {info['device']}" + (f" ({info['gpu']})" if "gpu" in info else ""))
    print("ray samples = views x bins x nx (2D), Joseph's count (3D); speed-up = peer time / ours (per image)")
    for case in cases:
        header, body, notes = case_table(case, rows, images_per_s=info["device"] != "cpu")
        print(f"\n{case.name}: {case.title}\n  [{samples_text(case)}]")
        widths = [max(len(str(c)) for c in col) for col in zip(header, *body)]
        for line in [header] + body:
            print("  " + "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in
                                   enumerate(zip(line, widths))))
        for n in notes:
            print(f"  ({n})")
    print("\nTargets:")
    for t in targets:
        state = {True: "MET", False: "NOT MET", None: "NOT MEASURED"}[t["met"]]
        print(f"  [{state:^12}] {t['target']}: {_fmt(t['value'], '.3g')}")


def markdown(cases, rows, targets, info, settings) -> str:
    lines = ["# Ray transform speed: known_ops vs peers", "",
             f"Machine: {info['cpu_model']}, {info['cpu_count']} cores, {info['torch_threads']} torch threads, "
             f"torch {info['torch']}, device `{info['device']}`" + (f" ({info['gpu']}, CUDA {info['cuda']})"
                                                                    if "gpu" in info else "") + f"; {info['date']}.",
             "", f"Command: `{settings['command']}`" + (" (quick run: few repeats)" if settings["quick"] else ""),
             "",
             "float32. Time per image = median of the repeats (after warm-up) of one call on the whole batch, "
             "divided by the batch size (an image is one volume in 3D). Ray samples per image = views x detector "
             "bins x nx in 2D (one sample per image column, as Joseph's method takes on a square image); in 3D, "
             "Joseph's count: one sample per slice of each ray's major axis inside the volume, summed over the "
             "views x rows x cols rays. The same count is used for every method. Speed-up = the method's time per "
             "image / ours (> 1: ours is faster).", ""]
    for case in cases:
        header, body, notes = case_table(case, rows, images_per_s=info["device"] != "cpu")
        lines += [f"## {case.name}: {case.title}", "", samples_text(case), "",
                  "| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        lines += ["| " + " | ".join(map(str, b)) + " |" for b in body]
        if notes:
            lines += [""] + [f"- {n}" for n in notes]
        lines.append("")
    lines += ["## Targets", "", "| target | value | met |", "|---|---:|---|"]
    for t in targets:
        state = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        lines.append(f"| {t['target']} | {_fmt(t['value'], '.3g')} | {state} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", help="comma-separated cases: a (= a1,a16), a1, a16, a256, g256, c, e, f, g (GPU) "
                   f"(default: {DEFAULT_CASES['cpu']} on the CPU, {DEFAULT_CASES['cuda']} on CUDA)")
    p.add_argument("--peers", default=None, help=f"comma-separated methods (default: all): {','.join(METHODS)}")
    p.add_argument("--device", default="cpu", help="device for ours (and the torch peers): cpu or cuda")
    p.add_argument("--quick", action="store_true", help="3 repeats, at most ~3 s per measurement, cases a and e")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement (default 10; quick 3)")
    p.add_argument("--warmup", type=int, default=None, help="untimed warm-up calls (default 2; quick 1)")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="stop repeating a measurement after this much time (default 20; quick 3)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--no-isolate", action="store_true",
                   help="run every method in this process (default: a fresh process per method and case)")
    p.add_argument("--output-dir", default=str(RESULTS), help="where to write NAME.json and NAME.md")
    p.add_argument("--name", default=None, help="output file stem (default: operators, gpu_operators on CUDA)")
    args = p.parse_args(argv)

    device = torch.device(args.device).type
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch reports no CUDA device (torch %s, CUDA build %s)"
                         % (torch.__version__, torch.version.cuda))
    if device not in ("cpu", "cuda"):
        raise SystemExit(f"--device must be cpu or cuda, got {args.device!r}")
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = parse_cases(args.cases or (QUICK_CASES if args.quick else DEFAULT_CASES)[device])
    if device == "cpu" and any(c.gpu_only for c in cases):
        raise SystemExit(f"case(s) {[c.name for c in cases if c.gpu_only]} are for the GPU: add --device cuda")
    methods = list(METHODS) if args.peers is None else [m.strip() for m in args.peers.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    if "ours" not in methods:
        methods.insert(0, "ours")
    repeats = args.repeats or (3 if args.quick else 10)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    max_seconds = args.max_seconds or (3.0 if args.quick else 20.0)

    info = machine_info(args.device)
    info["versions"] = versions()
    print(f"known_ops operator benchmark on {info['cpu_model']} ({info['cpu_count']} cores, "
          f"{info['torch_threads']} torch threads), device {args.device}", flush=True)

    rows: list[dict] = []
    for case in cases:
        print(f"\n{case.name}: {case.title}", flush=True)
        rows += run_case(case, methods, args.device, repeats, warmup, max_seconds, args.threads,
                         isolate=not args.no_isolate)
    targets = check_targets(rows, cases, device)
    print_report(cases, rows, targets, info)

    settings = {"command": " ".join(["python", "benchmarks/operators.py"] + (argv if argv is not None
                                                                            else sys.argv[1:])),
                "quick": args.quick, "isolated_processes": not args.no_isolate, "repeats": repeats,
                "warmup": warmup, "max_seconds": max_seconds,
                "dtype": "float32", "methods": methods}
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.name or ("operators" if device == "cpu" else "gpu_operators")
    report = {
        "machine": info,
        "settings": settings,
        "definitions": {
            "ray_samples_per_image": "2D: n_views * det_count * nx (samples per ray = nx, image columns; "
                                     "Joseph's count on a square image); 3D (cone): the sum over the "
                                     "n_views * rows * cols rays of the slices of each ray's major axis at "
                                     "which Joseph's bilinear taps touch the volume; the same for every method",
            "geometry_rel_diff": "3D peers: ||peer(cube) - ours(cube)|| / ||ours(cube)|| for an off-centre cube "
                                 "on the case's geometry",
            "time_scale": "a peer timed on a subset of the views: its times are multiplied by this",
            "ms_per_image": "median over repeats of one call on the whole batch, divided by the batch size",
            "samples_per_s": "ray_samples_per_image / (ms_per_image / 1000)",
            "speedup": "method's ms_per_image / ours (> 1 means ours is faster)",
        },
        "cases": {c.name: {**asdict(c), "samples_per_image": c.samples_per_image, "samples_per_ray": c.samples_per_ray}
                  for c in cases},
        "measurements": rows,
        "targets": targets,
    }
    (out_dir / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out_dir / f"{stem}.md").write_text(markdown(cases, rows, targets, info, settings))
    print(f"\nwrote {out_dir / (stem + '.json')} and {out_dir / (stem + '.md')}")


if __name__ == "__main__":
    main()
