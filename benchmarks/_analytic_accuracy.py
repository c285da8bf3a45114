"""Accuracy part of the analytic quality tables (run by ``benchmarks/analytic.py --part accuracy``).

FBP of the modified Shepp-Logan phantom from its exact analytic projections (parallel beam over
pi, fan beam full scan, fan beam short scan with Parker weights) and FDK of the modified 3D
Shepp-Logan phantom, each against the phantom: PSNR, SSIM, RMSE and the mean value in flat
regions; ours next to ASTRA's CPU FBP and scikit-image's ``iradon`` on the same sinogram, with
their timings measured in the same run.

``run_accuracy(quick, output_dir)`` returns ``(result, markdown)``: a JSON-able dict and the
Markdown section, and writes the figure ``analytic_accuracy.png`` into ``output_dir``.

Sizes (``quick=False``): 512 x 512 pixels of 0.5 mm (the phantom's unit is 128 mm, the outer
skull 177 x 236 mm), 720 parallel views over [0, pi) on 725 bins of 0.5 mm (the image diagonal;
scikit-image's ``radon(circle=False)`` size); fan beams with the source 500 mm and the flat
detector 250 mm from the isocentre, bins of 0.75 mm (0.5 mm at the isocentre) covering the
image's circumscribed circle, 720 views over 2 pi, or the short scan pi + fan angle at the same
angular step; FDK on 128^3 voxels of 2 mm, the same distances, 360 views over 2 pi, 3 mm
detector pixels, columns covering the volume's circumscribed cylinder and rows the phantom's
shadow. ``quick=True``: the same geometries on tiny grids, one timed call each (a smoke test,
not results).

Conventions (written into the Markdown too):

- Data: exact line integrals of the ellipses / ellipsoids (``phantoms.*_projections``, float64,
  mm), cast to float32; every method reconstructs from the same float32 array.
- Reference: the phantom rasterised on the method's pixel grid (``phantoms.shepp_logan`` with 8x8
  sub-samples per pixel, ``shepp_logan_3d`` with 4x4x4), i.e. the pixel means.
- PSNR, SSIM, RMSE: ``recon.psnr`` / ``recon.ssim`` / ``recon.rmse`` in float64 with
  ``data_range = max(ref) - min(ref)`` (= 1.0 here; scikit-image's conventions, SSIM with its
  default 7x7 uniform window), over the whole image / volume.
- Flat regions: the pixels whose centre lies inside a given set of ellipses and outside all the
  others, at least ``margin`` from every ellipse boundary. The distance test is conservative and
  exact from the tables: a point at normalised radius ``rho`` of an ellipse with smallest semi-axis
  ``b`` is at least ``|1 - rho| b`` from its boundary. The region's value is the sum of the
  intensities of its ellipses; we report the mean of the reconstruction over the region, its
  error, relative to the value where that is not 0, and the worst over the regions.
"""
from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

_HERE = Path(__file__).resolve().parent
for _p in (str(_HERE.parent), str(_HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import known_ops as ko  # noqa: E402
import phantoms  # noqa: E402
import recon  # noqa: E402
from _timing import measure  # noqa: E402

__all__ = ["run_accuracy"]

FIGURE_NAME = "analytic_accuracy.png"

# Problem sizes. The field of view is 256 mm in every configuration (phantom unit = 128 mm), so the
# distances of the fan and cone geometries are the same for quick and full runs.
FULL = dict(n2d=512, spacing2d=0.5, views_parallel=720, views_fan=720, n3d=128, spacing3d=2.0, views_cone=360,
            repeats=3, repeats_3d=2, margin_px=4, margin_vox=2, slab_vox=5, supersample2d=8, supersample3d=4)
QUICK = dict(n2d=64, spacing2d=4.0, views_parallel=90, views_fan=90, n3d=32, spacing3d=8.0, views_cone=48,
             repeats=1, repeats_3d=1, margin_px=1, margin_vox=1, slab_vox=1, supersample2d=4, supersample3d=2)
SOURCE_DISTANCE = 500.0    # mm, source to isocentre (about 4 times the phantom's unit radius of 128 mm)
DETECTOR_DISTANCE = 250.0  # mm, isocentre to detector (magnification 1.5)
WINDOW = (0.15, 0.35)      # display window: brain 0.2, small structures 0.3, ventricles 0, skull 1

# Flat regions: (name, indices of the ellipses that contain it). 2D: Kak & Slaney's letters a..j
# (phantoms.MODIFIED_SHEPP_LOGAN, in order); 3D: Schabel's numbers 1..10 (MODIFIED_SHEPP_LOGAN_3D).
REGIONS_2D = (("brain (a, b)", (0, 1)), ("skull (a only)", (0,)), ("ventricle c (x > 0)", (0, 1, 2)),
              ("ventricle d (x < 0)", (0, 1, 3)), ("e (above the ventricles)", (0, 1, 4)),
              ("g (small disc, r 5.9 mm)", (0, 1, 6)))
REGIONS_3D = (("brain (1, 2)", (0, 1)), ("skull (1 only)", (0,)), ("ventricle 3 (x > 0)", (0, 1, 2)),
              ("ventricle 4 (x < 0)", (0, 1, 3)), ("ellipsoid 5", (0, 1, 4)))

ASTRA_FAN_NA = ("n/a: ASTRA 2.5's CPU 'FBP' algorithm accepts only 'parallel' geometries ('FBP currently only "
                "supports parallel projection geometries'); its fan-beam FBP is FBP_CUDA (GPU only)")
ASTRA_CONE_NA = "n/a: ASTRA's FDK is FDK_CUDA only (no CPU cone-beam reconstruction)"
SKIMAGE_NA = "n/a: scikit-image's iradon is parallel-beam only"


# --------------------------------------------------------------------------------------------- geometry

def _odd(n: int) -> int:
    return n if n % 2 else n + 1


def _fan_det(volume: ko.Volume, det_spacing: float) -> int:
    """Flat-detector bins (odd) covering the fan of the volume's circumscribed circle."""
    radius = math.hypot(*volume.extent[-2:]) / 2
    half = (SOURCE_DISTANCE + DETECTOR_DISTANCE) * math.tan(math.asin(radius / SOURCE_DISTANCE))
    return _odd(math.ceil(2 * half / det_spacing))


def _geometries_2d(cfg: dict):
    n, s = cfg["n2d"], cfg["spacing2d"]
    volume = ko.Volume((n, n), s)
    # scikit-image's radon(circle=False) bins: the padded diagonal; odd, so that the centre bin is
    # iradon's rotation axis (bin n_det // 2) as well as ours ((n_det - 1) / 2).
    n_par = _odd(n + int(np.ceil(np.sqrt(2) * n - n)))
    parallel = ko.ParallelBeam2D(ko.uniform_angles(cfg["views_parallel"], math.pi), n_par, s)
    d_sd = SOURCE_DISTANCE + DETECTOR_DISTANCE
    du = s * d_sd / SOURCE_DISTANCE  # one pixel at the isocentre
    n_fan = _fan_det(volume, du)
    step = 2 * math.pi / cfg["views_fan"]
    fan_full = ko.FanBeam2D(ko.uniform_angles(cfg["views_fan"], 2 * math.pi), SOURCE_DISTANCE, DETECTOR_DISTANCE,
                            n_fan, du)
    # Short scan: pi + the fan angle (2 x the largest bin-centre angle), rounded up to whole steps.
    delta = math.atan((n_fan - 1) / 2 * du / d_sd)
    n_short = math.ceil((math.pi + 2 * delta) / step - 1e-9)
    fan_short = ko.FanBeam2D(ko.uniform_angles(n_short, n_short * step), SOURCE_DISTANCE, DETECTOR_DISTANCE,
                             n_fan, du)
    return volume, parallel, fan_full, fan_short, delta


def _geometry_3d(cfg: dict):
    n, s = cfg["n3d"], cfg["spacing3d"]
    volume = ko.Volume((n, n, n), s)
    scale = phantoms.phantom_scale_3d(volume)
    d_sd = SOURCE_DISTANCE + DETECTOR_DISTANCE
    du = s * d_sd / SOURCE_DISTANCE
    n_cols = _fan_det(volume, du)  # the volume's circumscribed cylinder: filtered tails reach every voxel
    # Rows: the shadow of the phantom's outer ellipsoid (radius r_xy, half height z), seen from its
    # nearest point; rows beyond it would hold zero data and zero filtered data.
    skull = phantoms.shepp_logan_3d_ellipsoids(True, scale)[0]
    r_xy, z_half = max(skull.a, skull.b), skull.c
    half_v = z_half * d_sd / (SOURCE_DISTANCE - r_xy)
    n_rows = _odd(math.ceil(2 * half_v / du) + 2)
    geometry = ko.ConeBeam3D(ko.uniform_angles(cfg["views_cone"], 2 * math.pi), SOURCE_DISTANCE, DETECTOR_DISTANCE,
                             (n_rows, n_cols), du)
    return volume, geometry


def _describe(geometry) -> dict:
    out = {"type": type(geometry).__name__, "n_views": geometry.n_views}
    if geometry.angles is not None:
        out["angular_range_deg"] = round(math.degrees(geometry.n_views * abs(geometry.angles[1] - geometry.angles[0])), 4)
    if geometry.ndim == 2:
        out.update(det_count=geometry.det_count, det_spacing_mm=float(geometry.det_spacing[0]))
    else:
        out.update(det_shape=list(geometry.det_shape), det_spacing_mm=[float(v) for v in geometry.det_spacing[0]])
    if hasattr(geometry, "source_distance"):
        out.update(source_distance_mm=geometry.source_distance, detector_distance_mm=geometry.detector_distance,
                   detector=geometry.detector)
    return out


# --------------------------------------------------------------------------------------------- metrics

def _region_masks(volume: ko.Volume, shapes, specs, margin: float, z_limit: float | None = None):
    """[(name, value, mask)] for the flat regions ``specs`` of the ellipses / ellipsoids ``shapes`` (mm).

    A pixel belongs to region (name, members) when its centre is inside exactly the shapes
    ``members`` and at least ``margin`` mm from every shape's boundary (``|1 - rho| * smallest
    semi-axis`` is a lower bound of that distance). ``z_limit``: 3D only, keep ``|z| <= z_limit``.
    """
    axes = [volume.coordinates(d) for d in range(volume.ndim)]
    grids = np.meshgrid(*axes, indexing="ij")  # (z,) y, x
    points = np.stack(grids[::-1], axis=-1)    # (..., ndim) as (x, y[, z])
    inside, clear = [], np.ones(volume.shape, dtype=bool)
    for e in shapes:
        if volume.ndim == 2:
            t = math.radians(e.theta_deg)
            rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])  # columns: axes of a, b
            centre, semi = np.array([e.x0, e.y0]), np.array([e.a, e.b])
        else:
            rot, centre, semi = e.rotation(), np.array([e.x0, e.y0, e.z0]), np.array([e.a, e.b, e.c])
        local = (points - centre) @ rot
        rho = np.sqrt(np.sum((local / semi) ** 2, axis=-1))
        inside.append(rho <= 1.0)
        clear &= np.abs(1.0 - rho) * semi.min() >= margin
    if z_limit is not None:
        clear &= np.abs(grids[0]) <= z_limit
    out = []
    for name, members in specs:
        mask = clear.copy()
        for k, flag in enumerate(inside):
            mask &= flag if k in members else ~flag
        # 1 - 0.8 - 0.2 is -5.6e-17 in floating point: round, and + 0.0 turns -0.0 into 0.0.
        value = round(float(sum(shapes[k].intensity for k in members)), 12) + 0.0
        out.append((name, value, mask))
    return out


def _region_stats(image: np.ndarray, regions) -> list[dict]:
    rows = []
    for name, value, mask in regions:
        count = int(mask.sum())
        if count == 0:
            rows.append({"region": name, "value": value, "pixels": 0, "mean": None, "abs_error": None,
                         "rel_error": None})
            continue
        mean = float(image[mask].mean())
        err = mean - value
        rows.append({"region": name, "value": value, "pixels": count, "mean": mean, "abs_error": err,
                     "rel_error": err / value if value != 0 else None})
    return rows


def _worst(stats: list[dict]) -> tuple[float | None, float | None]:
    rel = [abs(r["rel_error"]) for r in stats if r["rel_error"] is not None]
    ab = [abs(r["abs_error"]) for r in stats if r["abs_error"] is not None]
    return (max(rel) if rel else None), (max(ab) if ab else None)


def _metrics(image: np.ndarray, ref: torch.Tensor, regions, ndim: int, extra_regions=None) -> dict:
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float64))
    out = {
        "psnr_db": float(recon.psnr(x, ref, ndim=ndim)),
        "ssim": float(recon.ssim(x, ref, ndim=ndim)),
        "rmse": float(recon.rmse(x, ref, ndim=ndim)),
        "data_range": float(ref.max() - ref.min()),
        "regions": _region_stats(image, regions),
    }
    out["worst_rel_error"], out["worst_abs_error"] = _worst(out["regions"])
    if extra_regions is not None:  # 3D: the same regions over the whole volume
        out["regions_whole_volume"] = _region_stats(image, extra_regions)
        out["worst_rel_error_whole_volume"], out["worst_abs_error_whole_volume"] = _worst(out["regions_whole_volume"])
    return out


# --------------------------------------------------------------------------------------------- timing

def _timed(fn, repeats: int, max_seconds: float = 120.0):
    """(result, {time_s, times_s, cpu_per_wall}): one untimed call (whose result is returned), then
    ``_timing.measure`` of up to ``repeats`` calls (wall clock, with the process CPU time alongside)."""
    result = fn()
    timing = measure(fn, repeats=repeats, warmup=0, max_seconds=max_seconds)
    return result, {"time_s": timing.median_ms / 1e3, "times_s": [round(t / 1e3, 4) for t in timing.times_ms],
                    "cpu_per_wall": round(timing.cpu_per_wall, 2)}


# --------------------------------------------------------------------------------------------- methods

def _ours(volume, geometry, y32: torch.Tensor, filt: str, repeats: int, threads: int | None = None):
    model = recon.FBP(volume, geometry, filter=filt)
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            image, timing = _timed(lambda: model(y32), repeats)
    finally:
        torch.set_num_threads(previous)
    timing["threads"] = threads or previous
    return image.numpy().astype(np.float64), timing


def _astra_fbp(volume, geometry, y32: np.ndarray, filt: str, repeats: int):
    """ASTRA's CPU FBP ('FBP' algorithm, 'linear' projector) with its circular 'parallel' geometry, in our
    orientation (its row 0 is the largest y: flipped back)."""
    import astra

    (ylo, yhi), (xlo, xhi) = volume.bounds
    vol_geom = astra.create_vol_geom(volume.shape[0], volume.shape[1], xlo, xhi, ylo, yhi)
    proj_geom = astra.create_proj_geom("parallel", float(geometry.det_spacing[0]), geometry.det_count,
                                       np.asarray(geometry.angles, dtype=np.float64))
    pid = astra.create_projector("linear", proj_geom, vol_geom)
    sid = astra.data2d.create("-sino", proj_geom, y32)
    rid = astra.data2d.create("-vol", vol_geom, 0.0)
    cfg = astra.astra_dict("FBP")
    cfg.update(ProjectorId=pid, ProjectionDataId=sid, ReconstructionDataId=rid, FilterType=filt)
    aid = astra.algorithm.create(cfg)
    try:
        def run():
            astra.algorithm.run(aid)
            return astra.data2d.get(rid)

        image, timing = _timed(run, repeats)
    finally:
        astra.algorithm.delete(aid)
        astra.data2d.delete([sid, rid])
        astra.projector.delete(pid)
    timing["threads"] = None
    return np.flipud(image).astype(np.float64), timing


def _skimage_fbp(volume, geometry, y32: np.ndarray, filt: str, repeats: int):
    """scikit-image's iradon: pixel units (line integrals / pixel size), angles in degrees, sinogram
    (bins, angles); its image rows run downwards (flipped back) and its rotation axis is the pixel
    n // 2, half a pixel off our grid's centre for even n (see _skimage_volume)."""
    from skimage.transform import iradon

    n = volume.shape[0]
    sino = np.ascontiguousarray(y32.T / np.float32(volume.spacing[0]))
    theta = np.degrees(np.asarray(geometry.angles, dtype=np.float64))
    image, timing = _timed(lambda: iradon(sino, theta=theta, output_size=n, filter_name=filt, circle=False),
                           repeats)
    timing["threads"] = None
    return np.flipud(image).astype(np.float64), timing


def _skimage_volume(volume: ko.Volume) -> ko.Volume:
    """The grid on which iradon's (flipped) output lives: its pixel (i, j) is at x = (j - n//2) s,
    y = -(i - n//2) s about the rotation axis, i.e. after the row flip an offset of (+s/2, -s/2) in
    (y, x) from ours for even n."""
    n, s = volume.shape[0], volume.spacing[0]
    shift = s / 2 if n % 2 == 0 else 0.0
    return ko.Volume(volume.shape, volume.spacing, offset=(shift, -shift))


def _load() -> list[float] | None:
    """The machine's 1, 5 and 15 minute load averages (other users' processes slow the timings down)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _peer_versions() -> dict:
    out = {}
    for name in ("astra", "skimage"):
        try:
            module = __import__(name)
            out[name] = getattr(module, "__version__", "?")
        except ImportError as e:
            out[name] = f"not installed ({e})"
    return out


# --------------------------------------------------------------------------------------------- the run

def run_accuracy(quick: bool, output_dir: Path) -> tuple[dict, str]:
    """Run the accuracy tables; write ``output_dir / analytic_accuracy.png``; return (result, markdown)."""
    cfg = QUICK if quick else FULL
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    load_start = _load()
    versions = _peer_versions()
    have_astra = not versions["astra"].startswith("not installed")
    have_skimage = not versions["skimage"].startswith("not installed")

    # ---- 2D data and references
    volume, parallel, fan_full, fan_short, delta = _geometries_2d(cfg)
    scale = phantoms.phantom_scale(volume)
    ellipses = phantoms.shepp_logan_ellipses(True, scale)
    margin2d = cfg["margin_px"] * volume.spacing[0]
    ref = phantoms.shepp_logan(volume, dtype=torch.float64, supersample=cfg["supersample2d"], scale=scale)
    regions = _region_masks(volume, ellipses, REGIONS_2D, margin2d)
    sk_volume = _skimage_volume(volume)
    sk_ref = phantoms.shepp_logan(sk_volume, dtype=torch.float64, supersample=cfg["supersample2d"], scale=scale)
    sk_regions = _region_masks(sk_volume, ellipses, REGIONS_2D, margin2d)

    cases: dict[str, dict] = {}
    images: dict[str, np.ndarray] = {}

    def row(method, filt, image, timing, reference, regs, note="", grid=None):
        entry = {"method": method, "filter": filt, "note": note, **timing,
                 **_metrics(image, reference, regs, ndim=2)}
        if grid is not None:
            entry["grid_offset_mm"] = list(grid.offset)
        return entry

    def na(method, reason):
        return {"method": method, "filter": None, "note": reason, "time_s": None}

    # ---- parallel beam
    t0 = time.perf_counter()
    y = phantoms.shepp_logan_projections(parallel, scale=scale, dtype=torch.float64)
    t_data = time.perf_counter() - t0
    y32 = y.float()
    y32_np = y32.numpy()
    rows = []
    for ours_filter, astra_filter, sk_filter in (("ram-lak", "ram-lak", "ramp"), ("hann", "hann", "hann")):
        img, tim = _ours(volume, parallel, y32, ours_filter, cfg["repeats"])
        images[f"parallel/ours/{ours_filter}"] = img
        rows.append(row("ours (recon.fbp)", ours_filter, img, tim, ref, regions))
        if ours_filter == "ram-lak":
            img1, tim1 = _ours(volume, parallel, y32, ours_filter, cfg["repeats"], threads=1)
            rows.append(row("ours (recon.fbp), 1 thread", ours_filter, img1, tim1, ref, regions,
                            note="torch.set_num_threads(1), for a per-core comparison with the single-threaded peers"))
        if have_astra:
            img, tim = _astra_fbp(volume, parallel, y32_np, astra_filter, cfg["repeats"])
            images[f"parallel/astra/{ours_filter}"] = img
            rows.append(row("ASTRA CPU FBP ('linear')", astra_filter, img, tim, ref, regions))
        else:
            rows.append(na("ASTRA CPU FBP", f"skipped: astra-toolbox {versions['astra']}"))
        if have_skimage:
            img, tim = _skimage_fbp(volume, parallel, y32_np, sk_filter, cfg["repeats"])
            images[f"parallel/skimage/{ours_filter}"] = img
            rows.append(row("scikit-image iradon", sk_filter, img, tim, sk_ref, sk_regions,
                            note="on its own grid, offset by half a pixel (compared with the phantom there)",
                            grid=sk_volume))
        else:
            rows.append(na("scikit-image iradon", f"skipped: scikit-image {versions['skimage']}"))
    _add_ratios(rows)
    cases["parallel"] = {"geometry": _describe(parallel), "exact_data_s": round(t_data, 3), "rows": rows}

    # ---- fan beam, full and short scan
    for key, geo in (("fan_full", fan_full), ("fan_short", fan_short)):
        t0 = time.perf_counter()
        yf = phantoms.shepp_logan_projections(geo, scale=scale, dtype=torch.float64).float()
        t_data = time.perf_counter() - t0
        img, tim = _ours(volume, geo, yf, "ram-lak", cfg["repeats"])
        images[f"{key}/ours/ram-lak"] = img
        rows = [row("ours (recon.fbp)", "ram-lak", img, tim, ref, regions,
                    note="Parker weights (short scan)" if key == "fan_short" else "redundancy weights 1/2 (full turn)"),
                na("ASTRA CPU FBP", ASTRA_FAN_NA), na("scikit-image iradon", SKIMAGE_NA)]
        _add_ratios(rows)
        cases[key] = {"geometry": _describe(geo), "exact_data_s": round(t_data, 3), "rows": rows}
    cases["fan_short"]["geometry"]["fan_angle_deg"] = round(math.degrees(2 * delta), 4)

    # ---- FDK (3D)
    vol3, cone = _geometry_3d(cfg)
    scale3 = phantoms.phantom_scale_3d(vol3)
    t0 = time.perf_counter()
    y3 = phantoms.shepp_logan_3d_projections(cone, scale=scale3, dtype=torch.float64).float()
    t_data = time.perf_counter() - t0
    ref3 = phantoms.shepp_logan_3d(vol3, dtype=torch.float64, supersample=cfg["supersample3d"], scale=scale3)
    ellipsoids = phantoms.shepp_logan_3d_ellipsoids(True, scale3)
    margin3d = cfg["margin_vox"] * vol3.spacing[0]
    slab = cfg["slab_vox"] * vol3.spacing[0]
    regions3 = _region_masks(vol3, ellipsoids, REGIONS_3D, margin3d, z_limit=slab)
    regions3_all = _region_masks(vol3, ellipsoids, REGIONS_3D, margin3d)
    model = recon.FDK(vol3, cone)
    with torch.no_grad():
        img3, tim3 = _timed(lambda: model(y3), cfg["repeats_3d"])
    img3 = img3.numpy().astype(np.float64)
    tim3["threads"] = torch.get_num_threads()
    fdk_row = {"method": "ours (recon.fdk)", "filter": "ram-lak", "note": "", **tim3,
               **_metrics(img3, ref3, regions3, ndim=3, extra_regions=regions3_all)}
    rows = [fdk_row, na("ASTRA", ASTRA_CONE_NA), na("scikit-image", "n/a: scikit-image has no cone-beam reconstruction")]
    _add_ratios(rows)
    cases["fdk"] = {"geometry": _describe(cone), "volume": {"shape": list(vol3.shape), "spacing_mm": vol3.spacing[0]},
                    "exact_data_s": round(t_data, 3), "central_slab_half_height_mm": slab, "rows": rows}

    result = {
        "quick": quick,
        "config": {**cfg, "source_distance_mm": SOURCE_DISTANCE, "detector_distance_mm": DETECTOR_DISTANCE,
                   "phantom": "modified Shepp-Logan (2D: Toft's intensities; 3D: Schabel's)",
                   "phantom_unit_mm": scale, "margin_2d_mm": margin2d, "margin_3d_mm": margin3d,
                   "volume_2d": {"shape": list(volume.shape), "spacing_mm": volume.spacing[0]}},
        "versions": {"torch": torch.__version__, **versions},
        "torch_threads": torch.get_num_threads(),
        "cases": cases,
        "figure": FIGURE_NAME,
    }
    _figure(output_dir / FIGURE_NAME, volume, sk_volume, scale, ellipses, ref, images, vol3, ref3, img3, cases,
            quick=quick)
    result["run_time_s"] = round(time.perf_counter() - t_start, 1)
    result["load_average"] = {"start": load_start, "end": _load()}
    return result, _markdown(result)


def _add_ratios(rows: list[dict]) -> None:
    """ratio = this method's time / ours (the first row's, same filter where there is one): > 1, ours faster."""
    ours = {r["filter"]: r["time_s"] for r in rows if r["method"].startswith("ours") and "1 thread" not in r["method"]}
    base = rows[0]["time_s"]
    for r in rows:
        if r.get("time_s") is None:
            r["ratio_vs_ours"] = None
            continue
        key = {"ramp": "ram-lak"}.get(r["filter"], r["filter"])
        r["ratio_vs_ours"] = r["time_s"] / ours.get(key, base)


# --------------------------------------------------------------------------------------------- figure

def _exact_line(ellipses, xs: np.ndarray, y: float) -> np.ndarray:
    """The 2D phantom's exact values at the points (x, y), x in ``xs`` (the sum of the intensities)."""
    pts = np.stack([xs, np.full_like(xs, y)], axis=-1)
    out = np.zeros(len(xs))
    for e in ellipses:
        t = math.radians(e.theta_deg)
        rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
        local = (pts - np.array([e.x0, e.y0])) @ rot
        out += e.intensity * (np.sum((local / np.array([e.a, e.b])) ** 2, axis=-1) <= 1.0)
    return out


def _figure(path: Path, volume, sk_volume, scale, ellipses, ref2, images, vol3, ref3, img3, cases,
            quick: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def extent(vol):
        (ylo, yhi), (xlo, xhi) = vol.bounds[-2:]
        return [xlo, xhi, ylo, yhi]

    vmin, vmax = WINDOW
    # Quick runs: no layout engine and a low resolution (the figure only has to exist; it takes seconds).
    fig, axes = plt.subplots(3, 4, figsize=(20, 15), layout=None if quick else "constrained")

    def show(ax, image, vol, title, ext=None):
        ax.imshow(image, origin="lower", extent=ext or extent(vol), cmap="gray", vmin=vmin, vmax=vmax)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("x (mm)")
        ax.set_ylabel("y (mm)")

    def label(case, method_prefix, filt="ram-lak"):
        for r in cases[case]["rows"]:
            if r["method"].startswith(method_prefix) and r.get("psnr_db") is not None and \
                    {"ramp": "ram-lak"}.get(r["filter"], r["filter"]) == filt and "1 thread" not in r["method"]:
                return f"PSNR {r['psnr_db']:.2f} dB, {r['time_s']:.2f} s"
        return ""

    show(axes[0, 0], ref2.numpy(), volume, f"phantom {volume.shape[0]}^2, window [{vmin}, {vmax}]")
    panels = [(axes[0, 1], "parallel/ours/ram-lak", volume, "ours FBP, parallel", ("parallel", "ours")),
              (axes[0, 2], "parallel/astra/ram-lak", volume, "ASTRA CPU FBP, parallel", ("parallel", "ASTRA")),
              (axes[0, 3], "parallel/skimage/ram-lak", sk_volume, "scikit-image iradon, parallel",
               ("parallel", "scikit")),
              (axes[1, 0], "fan_full/ours/ram-lak", volume, "ours FBP, fan full scan", ("fan_full", "ours")),
              (axes[1, 1], "fan_short/ours/ram-lak", volume, "ours FBP, fan short scan (Parker)",
               ("fan_short", "ours"))]
    for ax, key, vol, title, (case, prefix) in panels:
        if key in images:
            show(ax, images[key], vol, f"{title} (ram-lak)\n{label(case, prefix)}")
        else:
            ax.set_axis_off()
            ax.set_title(f"{title}: not available", fontsize=10)

    # Horizontal profile through y = -0.1 unit: skull, ventricle d, disc g, ventricle c, skull.
    y_line = -0.1 * scale
    gs = axes[1, 2].get_gridspec()
    axes[1, 2].remove()
    axes[1, 3].remove()
    ax = fig.add_subplot(gs[1, 2:])
    x_fine = np.linspace(*volume.bounds[1], 4000)
    ax.plot(x_fine, _exact_line(ellipses, x_fine, y_line), color="k", lw=1, label="phantom (exact)")
    for key, vol, name in (("parallel/ours/ram-lak", volume, "ours, parallel"),
                           ("parallel/astra/ram-lak", volume, "ASTRA, parallel"),
                           ("parallel/skimage/ram-lak", sk_volume, "scikit-image, parallel"),
                           ("fan_full/ours/ram-lak", volume, "ours, fan full"),
                           ("fan_short/ours/ram-lak", volume, "ours, fan short")):
        if key not in images:
            continue
        ys = vol.coordinates(0)
        i = int(np.argmin(np.abs(ys - y_line)))
        ax.plot(vol.coordinates(1), images[key][i], lw=0.9, label=f"{name} (row at y = {ys[i]:.2f} mm)")
    ax.set(xlabel="x (mm)", ylabel="value", ylim=(-0.1, 0.5),
           title=f"horizontal profile at y = {y_line:.1f} mm (ram-lak)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")

    # FDK: mid-plane slice, coronal slice (y = 0), and a profile along z at x = y = 0.
    k = vol3.shape[0] // 2
    i = vol3.shape[1] // 2
    z = vol3.coordinates(0)
    (zlo, zhi), _, (xlo, xhi) = vol3.bounds
    fdk_label = label("fdk", "ours")
    show(axes[2, 0], ref3[k].numpy(), vol3, f"3D phantom {vol3.shape[0]}^3, slice z = {z[k]:.1f} mm")
    show(axes[2, 1], img3[k], vol3, f"ours FDK, slice z = {z[k]:.1f} mm\n{fdk_label}")
    show(axes[2, 2], img3[:, i, :], vol3, f"ours FDK, coronal slice y = {vol3.coordinates(1)[i]:.1f} mm",
         ext=[xlo, xhi, zlo, zhi])
    axes[2, 2].set_ylabel("z (mm)")
    ax = axes[2, 3]
    j = vol3.shape[2] // 2
    ax.plot(z, ref3[:, i, j].numpy(), color="k", lw=1, drawstyle="steps-mid", label="phantom (voxelised)")
    ax.plot(z, img3[:, i, j], lw=0.9, label="ours FDK")
    ax.set(xlabel="z (mm)", ylabel="value", ylim=(-0.1, 0.5),
           title=f"profile along z at x = {vol3.coordinates(2)[j]:.1f}, y = {vol3.coordinates(1)[i]:.1f} mm")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle("Accuracy: FBP / FDK of the modified Shepp-Logan phantom from exact analytic projections")
    fig.savefig(path, dpi=30 if quick else 80)
    plt.close(fig)


# --------------------------------------------------------------------------------------------- markdown

def _f(value, fmt: str, none: str = "") -> str:
    return none if value is None else format(value, fmt)


def _pct(value) -> str:
    return "" if value is None else f"{100 * value:.3f} %"


def _method_table(rows: list[dict], whole_volume: bool = False) -> list[str]:
    head = ("| method | filter | time (s) | ratio (time / ours) | CPU/wall | PSNR (dB) | SSIM | RMSE | "
            "worst flat-region error (rel.) | worst abs. error |")
    sep = "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    if whole_volume:
        head += " worst rel. error, whole volume |"
        sep += "---:|"
    lines = [head, sep]
    for r in rows:
        if r.get("time_s") is None:
            lines.append(f"| {r['method']} | | {r['note']} | | | | | | | |" + (" |" if whole_volume else ""))
            continue
        cells = [r["method"], r["filter"], f"{r['time_s']:.3f}", _f(r.get("ratio_vs_ours"), ".2f"),
                 _f(r.get("cpu_per_wall"), ".2f"), f"{r['psnr_db']:.2f}", f"{r['ssim']:.4f}", f"{r['rmse']:.5f}",
                 _pct(r["worst_rel_error"]), _f(r["worst_abs_error"], ".5f")]
        if whole_volume:
            cells.append(_pct(r.get("worst_rel_error_whole_volume")))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _region_table(rows: list[dict], key: str = "regions") -> list[str]:
    measured = [r for r in rows if r.get(key) and "1 thread" not in r["method"]]  # 1 thread: the same image
    names = [f"{r['method']}, {r['filter']}" for r in measured]
    lines = ["| region | value | pixels | " + " | ".join(names) + " |",
             "|---|---:|---:|" + "---:|" * len(names)]
    for idx, reg in enumerate(measured[0][key]):
        cells = [reg["region"], f"{reg['value']:g}", str(reg["pixels"])]
        for r in measured:
            s = r[key][idx]
            if s["mean"] is None:
                cells.append("(empty)")
            elif s["rel_error"] is None:
                cells.append(f"{s['mean']:.5f} (abs {s['abs_error']:+.5f})")
            else:
                cells.append(f"{s['mean']:.5f} ({100 * s['rel_error']:+.3f} %)")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _load_sentence(result: dict) -> str:
    load = result.get("load_average") or {}
    if not load.get("start"):
        return ""
    return (f" Load average (1, 5, 15 min) at the start {', '.join(map(str, load['start']))}, at the end "
            f"{', '.join(map(str, load['end']))}, on {os.cpu_count()} CPUs: other processes shared the machine, so "
            "absolute times (and CPU/wall below 1) reflect that; all methods ran under the same conditions.")


def _per_core(rows: list[dict]) -> str:
    """One sentence: the peers' ram-lak times against ours on one thread (the peers use one core)."""
    one = next((r for r in rows if "1 thread" in r["method"] and r.get("time_s")), None)
    if one is None:
        return ""
    peers = [r for r in rows if r.get("time_s") and not r["method"].startswith("ours")
             and r["filter"] in ("ram-lak", "ramp")]
    ratios = ", ".join(f"{r['method']} {r['time_s'] / one['time_s']:.2f}x" for r in peers)
    busy = ", ".join(_f(r.get("cpu_per_wall"), ".2f") for r in peers)
    return (f"Per core (ram-lak; CPU/wall of the peers {busy}, of ours on 1 thread {one['cpu_per_wall']:.2f}): "
            f"time / ours on 1 thread ({one['time_s']:.3f} s): {ratios}.")


def _markdown(result: dict) -> str:
    cfg, cases = result["config"], result["cases"]
    v2 = cfg["volume_2d"]
    par, ff, fs, fdk = cases["parallel"], cases["fan_full"], cases["fan_short"], cases["fdk"]
    g3 = fdk["geometry"]
    out = [
        "## Accuracy: FBP and FDK from exact analytic projections",
        "",
        ("**Quick smoke run (tiny sizes): these numbers are not results.**\n\n" if result["quick"] else "")
        + f"Phantom: {cfg['phantom']}, unit {cfg['phantom_unit_mm']:g} mm. Data: exact line integrals of the ellipses "
        "/ ellipsoids (`phantoms.shepp_logan_projections`, `shepp_logan_3d_projections`, float64, mm) cast to "
        "float32; every method reconstructs the same float32 array. Reference: the phantom rasterised on the "
        f"method's grid ({cfg['supersample2d']}^2 sub-samples per pixel in 2D, {cfg['supersample3d']}^3 per voxel "
        "in 3D). PSNR / SSIM / RMSE: `recon.psnr` / `recon.ssim` / `recon.rmse` over the whole image in float64, "
        "`data_range = max(ref) - min(ref)` = 1.0 (scikit-image's conventions, SSIM with its 7x7 uniform window); "
        "edges dominate them (partial-volume pixels and the Gibbs ringing of an unwindowed ramp).",
        "",
        "Flat regions: pixels whose centre lies inside exactly the listed ellipses (ellipsoids) and at least "
        f"{cfg['margin_2d_mm']:g} mm ({cfg['margin_px']} pixels) in 2D, {cfg['margin_3d_mm']:g} mm "
        f"({cfg['margin_vox']} voxels) in 3D from every boundary (bound: `|1 - rho| * smallest semi-axis`); the "
        "value is the sum of their intensities; error = mean of the reconstruction - value, relative to the value "
        "(the ventricles, value 0: absolute). 'worst' = largest |relative error| over the non-zero regions; "
        "'worst abs.' over all regions.",
        "",
        f"Timing: wall time of one reconstruction from the float32 sinogram (filter and back-projection; operator "
        f"set-up, ASTRA object creation and unit conversion done beforehand), median of {cfg['repeats']} "
        f"(FDK: {cfg['repeats_3d']}) runs after one warm-up, all in the same process and run; ratio = the "
        "method's time / ours with the same filter (> 1: ours faster); CPU/wall = process CPU time / wall time "
        f"(~ cores kept busy). torch threads: {result['torch_threads']}; versions: "
        + ", ".join(f"{k} {v}" for k, v in result["versions"].items()) + "." + _load_sentence(result),
        "",
        f"### Parallel beam: {v2['shape'][0]} x {v2['shape'][1]} pixels of {v2['spacing_mm']:g} mm, "
        f"{par['geometry']['n_views']} views over 180 degrees, {par['geometry']['det_count']} bins of "
        f"{par['geometry']['det_spacing_mm']:g} mm",
        "",
        *_method_table(par["rows"]),
        "",
        _per_core(par["rows"]),
        "",
        *_region_table(par["rows"]),
        "",
        "- ours: `recon.fbp(y, volume, geometry, filter=...)` (spatial ramp of Kak & Slaney eq. 61, zero-padded "
        "to >= 2n - 1, voxel-driven linear-interpolation back-projection, times pi / n_views).",
        "- ASTRA: `create_proj_geom('parallel', du, n_det, angles)` (the same angles and bins as ours), "
        "`create_vol_geom(ny, nx, x_min, x_max, y_min, y_max)` with our bounds, CPU projector `linear`, algorithm "
        "`FBP` with `FilterType` `ram-lak` / `hann`; its image has row 0 at the largest y, so it is flipped "
        "(`np.flipud`). It works in world units (mm): the flat regions come back at the phantom's values without "
        "any rescaling, as measured above.",
        "- scikit-image: `iradon(y.T / pixel_size, theta=degrees(angles), output_size=n, filter_name='ramp' / "
        "'hann', circle=False)`: its sinogram is (bins, angles) in pixel units (line integrals in mm divided by "
        f"the {v2['spacing_mm']:g} mm pixel; its bins must be one pixel wide), angles in degrees, detector centre at bin "
        "n_det // 2 (n_det is odd here, so that is our centre bin). Its image rows run downwards (flipped back) "
        "and its rotation axis sits at pixel (n // 2, n // 2): for even n its grid is offset by half a pixel "
        "from ours, (+s/2, -s/2) in (y, x) after the flip, so its PSNR / SSIM / regions are computed against the "
        "phantom rasterised on that grid (against ours its PSNR would drop by ~10 dB from the half-pixel shift "
        "alone). `circle=False`: no mask outside the inscribed circle.",
        "",
        f"### Fan beam (flat detector): source {cfg['source_distance_mm']:g} mm, detector "
        f"{cfg['detector_distance_mm']:g} mm from the isocentre, {ff['geometry']['det_count']} bins of "
        f"{ff['geometry']['det_spacing_mm']:g} mm",
        "",
        f"Full scan: {ff['geometry']['n_views']} views over 360 degrees. Short scan: {fs['geometry']['n_views']} views "
        f"over {fs['geometry']['angular_range_deg']:.2f} degrees (180 + fan angle {fs['geometry']['fan_angle_deg']:.2f} "
        "degrees, rounded up to whole angular steps), Parker weights applied by `recon.FBP`.",
        "",
        "Full scan:",
        "",
        *_method_table(ff["rows"]),
        "",
        "Short scan:",
        "",
        *_method_table(fs["rows"]),
        "",
        *_region_table([ff["rows"][0] | {"method": "ours, full scan"}, fs["rows"][0] | {"method": "ours, short scan"}]),
        "",
        f"### FDK (cone beam, flat detector): {fdk['volume']['shape'][0]}^3 voxels of "
        f"{fdk['volume']['spacing_mm']:g} mm, {g3['n_views']} views over 360 degrees, detector {g3['det_shape'][0]} "
        f"rows x {g3['det_shape'][1]} columns of {g3['det_spacing_mm'][1]:g} mm, same distances",
        "",
        "Columns cover the volume's circumscribed cylinder; rows the shadow of the phantom's outer ellipsoid (rows "
        "beyond it hold zero data and zero filtered data). Flat regions: in the central slab "
        f"|z| <= {fdk['central_slab_half_height_mm']:g} mm, and over the whole volume (last column; off the "
        "mid-plane FDK's cone-beam approximation adds its own error).",
        "",
        *_method_table(fdk["rows"], whole_volume=True),
        "",
        "Central slab:",
        "",
        *_region_table(fdk["rows"]),
        "",
        "Whole volume:",
        "",
        *_region_table(fdk["rows"], key="regions_whole_volume"),
        "",
        "Earlier measurements for context (tests/test_fbp.py, docs/reconstruction.md: 128^2 pixels of 2 mm, three "
        "8 x 8 boxes of brain and ellipse e, other distances): flat regions within 0.11 % (parallel), 0.10 % (flat "
        "fan, full and short scans) and, for FDK near the mid-plane (source and detector 500 mm from the "
        "isocentre), 0.81 %. We know of no published table for exactly this set-up; the peers' columns above are "
        "the comparison.",
        "",
        f"Exact data took {par['exact_data_s']:.1f} s (parallel), {ff['exact_data_s']:.1f} s / "
        f"{fs['exact_data_s']:.1f} s (fan), {fdk['exact_data_s']:.1f} s (cone); the whole part "
        f"{result.get('run_time_s', float('nan')):.0f} s. Figure: `{result['figure']}` (display window "
        f"[{WINDOW[0]}, {WINDOW[1]}]).",
    ]
    return "\n".join(out) + "\n"
