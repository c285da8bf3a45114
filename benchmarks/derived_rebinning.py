"""Parallel-to-fan conversion: the derived network (Syben et al., GCPR 2018) against ray-by-ray interpolation.

A parallel sinogram (90, 180 or 360 views over pi, 183 bins of 0.989 mm) is converted into a fan
sinogram (360 views over 2 pi, source 500 mm and detector 500 mm from the centre, 363 flat bins of
1 mm) by
- ray-by-ray interpolation rebinning (``known_ops.ParallelToFanRebinning``: bilinear in view and bin),
- the derived network ``recon.learned.DerivedRebinning`` = ``A_fan FBP_par`` at its analytic
  initialisation (Ram-Lak filter, Parker weights), and
- the same network after training its filter and weights on synthetic random ellipses (exact
  parallel sinograms in, their exact fan sinograms as targets; ``recon.training``),
each scored against the exact fan-beam line integrals of test phantoms it never saw (the modified
Shepp-Logan phantom and held-out random ellipses; relative L2 error and PSNR of the sinogram), and by
the edge width (10-90 % rise, mm) of the fan-beam FBP of the converted sinogram of a uniform disc.

    python benchmarks/derived_rebinning.py            # CPU scale: each training run about 5 minutes here
    python benchmarks/derived_rebinning.py --quick    # seconds (the tests), into a temporary folder
    python benchmarks/derived_rebinning.py --evaluate-only

Writes ``benchmarks/results/derived_rebinning.{json,md}`` and ``derived_rebinning.png``; checkpoints go to
``runs/experiments/derived_rebinning/<scale>/views<n>/`` (reused when finished).
"""
from __future__ import annotations

import json
import math
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(ROOT), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import torch  # noqa: E402

import known_ops as ko  # noqa: E402
import phantoms  # noqa: E402
import recon  # noqa: E402
from _timing import machine_info  # noqa: E402
from recon.learned import count_parameters  # noqa: E402
from _experiments import experiment_folders, experiment_parser, train_or_load  # noqa: E402
from recon.training import model_from_config, resolve_config  # noqa: E402

NAME = "derived_rebinning"
CONFIG = ROOT / "recon" / "training" / "configs" / "derived_rebinning_parallel_to_fan.json"
RUNS = ROOT / "runs" / "experiments" / NAME
TEST_SEED = 271828
DISC_RADIUS = 0.6  # of the phantom scale (64 mm at full size): a uniform disc of radius 38.4 mm

SCALES = {
    "quick": dict(size=32, n_views=(12, 24), fan_views=48, n_test=2, steps=3, batch=2, validate_every=1),
    "cpu": dict(size=128, n_views=(90, 180, 360), fan_views=360, n_test=20, steps=300, batch=5, validate_every=50),
    "full": dict(size=128, n_views=(90, 180, 360), fan_views=360, n_test=100, steps=20_000, batch=5,
                 validate_every=500),
}


def geometries(size: int, n_parallel: int, n_fan: int):
    """The volume, the parallel source (ODL's parallel_beam_geometry bins) and the fan target, scaled with size."""
    volume = ko.Volume((size, size), 1.0)
    rho = size / 2 * math.sqrt(2)
    n_det = 2 * math.ceil(rho) + 1
    parallel = ko.ParallelBeam2D(ko.uniform_angles(n_parallel), n_det, det_spacing=2 * rho / n_det)
    # 2x magnification; bins of 1 mm cover the circle around the volume (a source 500 mm away at full size).
    distance = 500.0 * size / 128
    fan_bins = 2 * math.ceil(2 * rho * distance / math.sqrt(distance**2 - rho**2)) + 1
    fan = ko.FanBeam2D(ko.uniform_angles(n_fan, 2 * math.pi), distance, distance, fan_bins, 1.0)
    return volume, parallel, fan


def exact(geometry, ellipses) -> torch.Tensor:
    rays = geometry.rays()
    return phantoms.ellipse_line_integrals(rays[..., 0:2], rays[..., 2:4], ellipses)


def test_phantoms(volume, n_test: int):
    """(names, ellipse lists) in mm: modified Shepp-Logan and held-out random ellipses."""
    scale = phantoms.phantom_scale(volume)
    data = phantoms.RandomEllipsesDataset(n_test, volume, ko.ParallelBeam2D([0.0], 1), seed=TEST_SEED)
    return (["shepp_logan"] + [f"ellipses_{k}" for k in range(n_test)],
            [phantoms.shepp_logan_ellipses(modified=True, scale=scale)] + [data.ellipses(k) for k in range(n_test)])


def sinogram_scores(p: torch.Tensor, truth: torch.Tensor) -> dict:
    p, truth = p.double(), truth.double()
    rel = torch.linalg.vector_norm(p - truth, dim=(-2, -1)) / torch.linalg.vector_norm(truth, dim=(-2, -1))
    return {"relative_l2": rel.tolist(), "psnr": recon.psnr(p, truth).tolist()}


def edge_width(image: torch.Tensor, volume, radius: float) -> float:
    """10-90 % rise distance (mm) of the radial edge profile of a reconstructed uniform disc of value 1: the
    pixels' values against their distance from the centre, averaged in 0.1-pixel bins across the edge."""
    ys, xs = (torch.as_tensor(volume.coordinates(a)) for a in (0, 1))
    r = torch.sqrt(ys[:, None] ** 2 + xs[None, :] ** 2).flatten()
    values = image.double().flatten()
    h = float(volume.spacing[0])
    near = (r > radius - 6 * h) & (r < radius + 6 * h)
    edges = torch.arange(radius - 6 * h, radius + 6 * h + 1e-9, 0.1 * h)
    centres, means = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = near & (r >= lo) & (r < hi)
        if inside.any():
            centres.append(float((lo + hi) / 2))
            means.append(float(values[inside].mean()))
    # Falling edge from 1 (inside) to 0 (outside): where the profile crosses 0.9 and 0.1.
    def crossing(level):
        for (r0, v0), (r1, v1) in zip(zip(centres, means), zip(centres[1:], means[1:])):
            if v0 >= level > v1:
                return r0 + (v0 - level) / (v0 - v1) * (r1 - r0)
        return math.nan

    return crossing(0.1) - crossing(0.9)


def trained_network(n_parallel: int, scale_name: str, scale: dict, volume, parallel, fan, runs: Path, device: str,
                  evaluate_only: bool, progress: bool):
    config = json.loads(CONFIG.read_text())
    config.update(name=f"{NAME}_{scale_name}_views{n_parallel}", steps=scale["steps"], batch_size=scale["batch"],
                  validate_every=scale["validate_every"], checkpoint_every=max(scale["validate_every"], 50),
                  device=device, png=False, volume=volume.to_dict(), geometry=parallel.to_dict())
    config["model"]["params"]["fan_geometry"] = fan.to_dict()
    config["data"]["target"] = fan.to_dict()
    config["data"]["validation"] = {"shepp_logan": True, "random_ellipses": 2}
    if scale_name == "quick":
        config["data"]["supersample"] = 1
    config = resolve_config(config)
    model, _, elapsed = train_or_load(config, runs / f"views{n_parallel}", evaluate_only, progress)
    return model, elapsed, config


def main(argv=None) -> int:
    parser = experiment_parser(__doc__, "runs/experiments/derived_rebinning/<scale>")
    args = parser.parse_args(argv)
    scale_name, out, runs = experiment_folders(args, NAME, HERE / "results", RUNS)
    scale = SCALES[scale_name]
    t_start = time.perf_counter()
    torch.manual_seed(0)
    rows, images = [], {}
    for n_parallel in scale["n_views"]:
        volume, parallel, fan = geometries(scale["size"], n_parallel, scale["fan_views"])
        names, ellipses = test_phantoms(volume, scale["n_test"])
        p_par = torch.stack([exact(parallel, e) for e in ellipses]).float()
        p_fan = torch.stack([exact(fan, e) for e in ellipses])
        disc = [phantoms.Ellipse(1.0, DISC_RADIUS, DISC_RADIUS, 0.0, 0.0, 0.0).scaled(phantoms.phantom_scale(volume))]
        disc_par = exact(parallel, disc).float()
        fan_fbp = recon.FBP(volume, fan)
        interpolation = ko.ParallelToFanRebinning(parallel, fan)
        print(f"== {n_parallel} parallel views", flush=True)
        trained, seconds, config = trained_network(n_parallel, scale_name, scale, volume, parallel, fan, runs,
                                                 args.device, args.evaluate_only, not args.no_progress)
        torch.manual_seed(0)
        analytic = model_from_config({**config, "device": "cpu"})
        methods = {"interpolation rebinning": interpolation, "DerivedRebinning, analytic start": analytic,
                   "DerivedRebinning, trained": trained.cpu().eval()}
        for method, op in methods.items():
            with torch.no_grad():
                converted = op(p_par)
                disc_image = fan_fbp(op(disc_par))
            s = sinogram_scores(converted, p_fan)
            rows.append({
                "parallel_views": n_parallel, "method": method,
                "relative_l2_shepp_logan": s["relative_l2"][0], "psnr_shepp_logan": s["psnr"][0],
                "relative_l2_ellipses": statistics.fmean(s["relative_l2"][1:]),
                "relative_l2_ellipses_std": statistics.stdev(s["relative_l2"][1:]) if scale["n_test"] > 1 else None,
                "edge_width_mm": edge_width(disc_image, volume, DISC_RADIUS * phantoms.phantom_scale(volume)),
                "parameters": count_parameters(op) if isinstance(op, torch.nn.Module) else 0,
                "train_minutes": seconds / 60 if method.endswith("trained") else None,
                "steps": config["steps"] if method.endswith("trained") else None,
                "covered_fraction": float(interpolation.covered.double().mean()),
            })
            if n_parallel == scale["n_views"][-1]:
                images[method] = converted[0]
        images["exact"] = p_fan[0].float()
    exact_disc = edge_width(recon.FBP(volume, fan)(exact(fan, disc).float()), volume,
                            DISC_RADIUS * phantoms.phantom_scale(volume))
    result = {"scale": scale_name, "machine": machine_info(args.device), "rows": rows,
              "edge_width_exact_fan_data_mm": exact_disc, "total_minutes": (time.perf_counter() - t_start) / 60,
              "setup": {"volume": f"{scale['size']}^2 pixels of {volume.spacing[0]:g} mm",
                        "parallel": f"{parallel.det_count} bins of {float(parallel.det_spacing[0]):.4f} mm, views over pi",
                        "fan": repr(fan), "test": f"modified Shepp-Logan and {scale['n_test']} random ellipses "
                                                  f"(seed {TEST_SEED}), exact sinograms, no noise",
                        "training": f"{scale['steps']} steps x batch {scale['batch']} of random ellipses (Adam, "
                                    "lr 1e-3, cosine), exact fan sinograms as targets"}}
    suffix = "" if scale_name == "cpu" else f"_{scale_name}"
    (out / f"{NAME}{suffix}.json").write_text(json.dumps(result, indent=1))
    table = markdown(result)
    (out / f"{NAME}{suffix}.md").write_text(table)
    figure(images, out / f"{NAME}{suffix}.png")
    print(table)
    print(f"written to {out}")
    return 0


def markdown(result: dict) -> str:
    s, m = result["setup"], result["machine"]
    lines = [
        f"# Parallel-to-fan conversion: derived network against interpolation rebinning ({result['scale']} scale)",
        "",
        "Error of the converted fan sinogram against the exact fan-beam line integrals of test phantoms, and the edge "
        "width of the fan-beam FBP of a converted uniform disc.",
        "",
        "| parallel views | method | Shepp-Logan rel. L2 | Shepp-Logan PSNR (dB) | ellipses rel. L2 (mean +- std) | "
        "disc edge width (mm) | parameters | training |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["rows"]:
        std = "" if r["relative_l2_ellipses_std"] is None else f" +- {r['relative_l2_ellipses_std']:.4f}"
        training = "" if r["steps"] is None else f"{r['steps']} steps, {r['train_minutes']:.1f} min"
        lines.append(f"| {r['parallel_views']} | {r['method']} | {r['relative_l2_shepp_logan']:.4f} | "
                     f"{r['psnr_shepp_logan']:.2f} | {r['relative_l2_ellipses']:.4f}{std} | {r['edge_width_mm']:.2f} | "
                     f"{r['parameters']:,} | {training} |")
    lines += [
        "",
        f"- Edge width of the fan-beam FBP of the exact fan sinogram of the disc (the reference): "
        f"{result['edge_width_exact_fan_data_mm']:.2f} mm.",
        f"- Volume {s['volume']}; parallel: {s['parallel']}; fan: {s['fan']}.",
        f"- Test: {s['test']}. Training: {s['training']}; the baselines need no training.",
        "- Interpolation rebinning covers every fan ray here (the parallel half turn wraps mirrored); the derived "
        "network reconstructs the object on the volume grid and re-projects it, so what lies outside the grid is lost.",
        f"- Machine: {m.get('gpu') or m['cpu_model']}, torch {m['torch']}, {m['date']}; total {result['total_minutes']:.0f} min.",
        "- Published: Syben et al. (GCPR 2018) found the derived network to learn a filter close to the ramp and the "
        "analytic weights, and the conversion to be as accurate as the analytic chain.",
    ]
    return "\n".join(lines) + "\n"


def figure(images: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    exact_sino = images.pop("exact")
    fig, axes = plt.subplots(1, len(images) + 1, figsize=(3 * (len(images) + 1), 3), layout="constrained")
    axes[0].imshow(exact_sino.numpy(), cmap="gray", aspect="auto", origin="lower")
    axes[0].set_title("exact fan sinogram", fontsize=8)
    for ax, (name, image) in zip(axes[1:], images.items()):
        ax.imshow((image - exact_sino).numpy(), cmap="RdBu", aspect="auto", origin="lower")
        ax.set_title(f"{name}: error", fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
