"""Speed of known_ops' 2D ray transforms against peers, on the same problems in the same run.

Usage (from the repository root)::

    python benchmarks/operators.py                     # cases a (single + batch 16), c, e on the CPU
    python benchmarks/operators.py --quick             # fewer repeats, cases a and e only
    python benchmarks/operators.py --cases a,e --peers ours,astra-linear
    python benchmarks/operators.py --device cuda       # cases a256, g256, c; ours and grid_sample on the GPU

Cases (issue 2):
  a1    parallel, 256x256 pixels of 1 mm, 256 bins of 1 mm, 180 views over pi, one image
  a16   as a1, batch of 16
  a256  as a1, batch of 256 (GPU)
  g256  as a1 but 256 views, batch of 256 (the GPU target's problem)
  c     parallel, 512x512 pixels of 1 mm, 725 bins of 1 mm, 720 views over pi, one image
  e     fan, flat detector, 256x256 pixels of 1 mm, 256 bins of 2 mm, 360 views over 2 pi,
        source 500 mm from the isocentre, detector 1000 mm from the source
  ``--cases a`` means a1 and a16.

Methods (each skipped with the reason recorded when it is not installed or does not
apply): ours (known_ops.RayTransform, Joseph), ASTRA CPU ``linear``, ``line``, ``strip``
(parallel) and ``line_fanflat`` (fan), scikit-image ``radon`` / ``iradon(filter_name=None)``
(parallel), mirtorch's ``CT`` (Siddon), mbirjax's ``ParallelBeamModel`` (and its
``ConeBeamModel`` with one detector row for the fan case), and ``grid_sample``: a
pure-PyTorch rotate-and-sum baseline (benchmarks/_grid_sample.py).

Definitions (the same for every method, so the rates are comparable):
  ray samples per image = n_views x det_count x nx
      (samples per ray = nx, the number of image columns: Joseph's method takes one
      sample per column, or per row, crossed; on a square image that is nx for every
      ray. The count measures the problem, not each method's own work.)
  ray samples per second = ray samples per image / time per image
  time per image = median time of one call on the whole batch / batch size
      (peers without a batch API are called image by image inside the timed call)
  speed-up = peer's time per image / ours, for the same case and operation
      (> 1: ours is faster)

Timing: float32; every call is warmed up, then the median of the repeats is taken.
Only the projection is timed: operators, projector ids, JIT compilation and
input conversion are prepared beforehand. On CUDA, CUDA events bracket each call.
Results go to benchmarks/results/operators.{json,md} (``--output-dir``, ``--name``).
A full CPU run takes about 20 minutes on 2 cores, most of it in the slow peers on case c
(mirtorch recomputes its 6 GB intersection plan on every call there); ``--quick`` about 5.
"""
from __future__ import annotations

import argparse
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
from _grid_sample import GridSampleProjector  # noqa: E402
from _timing import machine_info, measure  # noqa: E402

import known_ops as ko  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


# --------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    name: str
    title: str
    beam: str  # "parallel" or "fan"
    size: int  # square image, ny = nx
    n_views: int
    angle_range: float
    det_count: int
    det_spacing: float
    batch: int
    pixel: float = 1.0
    source_distance: float | None = None  # source to isocentre (mm)
    detector_distance: float | None = None  # isocentre to detector (mm)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.size, self.size)

    @property
    def samples_per_ray(self) -> int:
        return self.size  # nx

    @property
    def samples_per_image(self) -> int:
        return self.n_views * self.det_count * self.samples_per_ray

    def angles(self) -> np.ndarray:
        return ko.uniform_angles(self.n_views, self.angle_range)

    def volume(self) -> ko.Volume:
        return ko.Volume(shape=self.shape, spacing=self.pixel)

    def geometry(self):
        if self.beam == "parallel":
            return ko.ParallelBeam2D(self.angles(), self.det_count, det_spacing=self.det_spacing)
        return ko.FanBeam2D(self.angles(), self.source_distance, self.detector_distance, self.det_count,
                            det_spacing=self.det_spacing, detector="flat")


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
    )
}
CASE_GROUPS = {"a": ("a1", "a16")}
DEFAULT_CASES = {"cpu": "a,c,e", "cuda": "a256,g256,c"}
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
    ``circle=True`` requires it), and projections (B, n_views, det_count)."""
    rng = np.random.default_rng(seed)
    n = case.size
    c = np.arange(n) - (n - 1) / 2
    disk = (c[:, None] ** 2 + c[None, :] ** 2) <= (n / 2) ** 2
    x = (rng.random((case.batch, n, n), dtype=np.float32) * disk).astype(np.float32)
    y = rng.random((case.batch, case.n_views, case.det_count), dtype=np.float32)
    return x, y


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
    proj = GridSampleProjector(case.shape, (case.pixel, case.pixel), case.geometry().to_vectors(), case.det_count,
                               case.beam == "fan", device=device, max_elements=max_elements, batch=case.batch)
    xt = torch.from_numpy(x).to(device)
    yt = torch.from_numpy(y).to(device)
    return Prepared(_no_grad(lambda: proj.forward(xt)), _no_grad(lambda: proj.adjoint(yt)),
                    note=f"bilinear grid_sample, {proj.n_samples} samples per ray, {len(proj.grids)} view chunks")


def build_astra(projector: str):
    def build(case: Case, x: np.ndarray, y: np.ndarray, device: str) -> Prepared:
        _cpu_only(device, "ASTRA's CPU projector")
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


METHODS = {
    "ours": build_ours,
    "astra-linear": build_astra("linear"),
    "astra-line": build_astra("line"),
    "astra-strip": build_astra("strip"),
    "astra-line_fanflat": build_astra("line_fanflat"),
    "skimage": build_skimage,
    "mirtorch": build_mirtorch,
    "mbirjax": build_mbirjax,
    "grid_sample": build_grid_sample,
}
TORCH_METHODS = ("ours", "grid_sample", "mirtorch")  # the methods that run on --device; the others use the CPU
DISTRIBUTIONS = {"astra": "astra-toolbox", "skimage": "scikit-image", "mirtorch": "MIRTorch", "mbirjax": "mbirjax",
                 "jax": "jax", "numpy": "numpy", "scipy": "scipy"}


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
        per_image = t.median_ms / case.batch
        rows.append({**base, "op": op, "status": "ok", "note": prepared.note, "ms": t.median_ms,
                     "ms_per_image": per_image, "min_ms": t.min_ms, "repeats": t.repeats,
                     "times_ms": [round(v, 4) for v in t.times_ms],
                     "samples_per_s": case.samples_per_image / (per_image / 1e3),
                     "images_per_s": 1e3 / per_image})
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


ASTRA_TARGETS = (  # (case, peer, minimum speed-up of ours)
    ("a1", "astra-linear", 5.0),
    ("c", "astra-linear", 5.0),
    ("a16", "astra-linear", 8.0),
    ("e", "astra-line_fanflat", 5.0),
)


def check_targets(rows: list[dict], cases: list[Case], device: str) -> list[dict]:
    """The issue's targets, judged from the measured ratios (missing measurements are 'not measured')."""
    out = []
    if device == "cpu":
        run = {c.name for c in cases}
        for case, peer, factor in (t for t in ASTRA_TARGETS if t[0] in run):
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
            cells += [_fmt(r.get("speedup"), ".2f") + ("x" if r.get("speedup") is not None else "")]
        body.append(cells)
    return header, body, notes


def print_report(cases, rows, targets, info):
    print(f"\n{info['cpu_model']}, {info['torch_threads']} torch threads, torch {info['torch']}, "
          f"device {info['device']}" + (f" ({info['gpu']})" if "gpu" in info else ""))
    print("ray samples = views x bins x nx; speed-up = peer time / ours (per image)")
    for case in cases:
        header, body, notes = case_table(case, rows, images_per_s=info["device"] != "cpu")
        print(f"\n{case.name}: {case.title}  [{case.samples_per_image:.3e} ray samples per image]")
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
             "divided by the batch size. Ray samples per image = views x detector bins x nx (one sample per "
             "image column, as Joseph's method takes on a square image); the same count is used for every "
             "method. Speed-up = the method's time per image / ours (> 1: ours is faster).", ""]
    for case in cases:
        header, body, notes = case_table(case, rows, images_per_s=info["device"] != "cpu")
        lines += [f"## {case.name}: {case.title}", "", f"{case.samples_per_image:.3e} ray samples per image.", "",
                  "| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        lines += ["| " + " | ".join(map(str, b)) + " |" for b in body]
        if notes:
            lines += [""] + [f"- {n}" for n in notes]
        lines.append("")
    lines += ["## Targets (issue 2)", "", "| target | value | met |", "|---|---:|---|"]
    for t in targets:
        state = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        lines.append(f"| {t['target']} | {_fmt(t['value'], '.3g')} | {state} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", help="comma-separated cases: a (= a1,a16), a1, a16, a256, g256, c, e "
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
            "ray_samples_per_image": "n_views * det_count * nx (samples per ray = nx, image columns; "
                                     "Joseph's count on a square image; the same for every method)",
            "ms_per_image": "median over repeats of one call on the whole batch, divided by the batch size",
            "samples_per_s": "ray_samples_per_image / (ms_per_image / 1000)",
            "speedup": "method's ms_per_image / ours (> 1 means ours is faster)",
        },
        "cases": {c.name: {**asdict(c), "samples_per_image": c.samples_per_image} for c in cases},
        "measurements": rows,
        "targets": targets,
    }
    (out_dir / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out_dir / f"{stem}.md").write_text(markdown(cases, rows, targets, info, settings))
    print(f"\nwrote {out_dir / (stem + '.json')} and {out_dir / (stem + '.md')}")


if __name__ == "__main__":
    main()
