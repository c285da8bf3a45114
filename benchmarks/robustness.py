"""Robustness of learned limited-angle reconstruction (Huang et al., MICCAI 2018; Maier et al., Nature
Machine Intelligence 2019): do more known operators mean a smaller maximum error?

The limited-angle set-up and models of ``benchmarks/limited_angle.py`` (the 140-degree flat-detector fan
scan, 128 x 128 pixels of 1 mm): LearnedFBP, LearnedFBP + VN, LearnedPrimalDual and FBP + U-Net (in the
order of the hypothesis: from the most known operators to the fewest), each trained with the
limited-angle experiment's noise (Gaussian, 1 % of the mean |y|; the limited-angle checkpoints are shared)
and without noise (trained here), beside the FBP with Parker's weights that LearnedFBP starts from.
Tests, on phantoms that no training run saw:

- in distribution: held-out random ellipses, exact sinograms, no noise;
- Poisson noise at several doses (incident photons per detector bin, image values relative to water);
- out of distribution: a small high-contrast disc and a thin line on a held-out phantom, and a rectangle
  with a star (straight edges, corners);
- adversarial: projected gradient ascent on the squared error within ``||delta|| <= epsilon ||y||``
  (epsilon 1 % and 3 %), beside random perturbations of the same norm.

Measures: mean and maximum absolute error (image and region of interest), structures that appear
(connected components of the error above a threshold away from the truth's edges), recovered contrast of
the disc and the line (below half: vanished) and the shift of the rectangle's edges in mm
(benchmarks/_robustness.py defines each).

    python benchmarks/robustness.py                  # CPU scale (trains the noise-free models, about 40 min)
    python benchmarks/robustness.py --scale full --device cuda   # limited_angle's full budgets, more test images
    python benchmarks/robustness.py --quick          # seconds, tiny sizes (the tests), into a temporary folder
    python benchmarks/robustness.py --evaluate-only  # evaluate the saved checkpoints, no training

Writes ``benchmarks/results/robustness{_full}.{json,md}`` and the figures ``robustness_images.png`` and
``robustness_dose.png``. The checkpoints live where ``limited_angle.py`` keeps them
(``runs/experiments/limited_angle/<scale>/<model>/140deg/{seed0,noisefree_seed0}``, ignored by git);
missing ones are trained (the noise-trained ones are the limited-angle experiment's own runs).
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

import limited_angle as la  # noqa: E402
import phantoms  # noqa: E402
import recon  # noqa: E402
from _robustness import (adversarial_perturbation, contrast_recovery, edge_shift, error_measures,  # noqa: E402
                         false_structures, ood_phantoms, poisson_sinograms, random_perturbation, relative_noise)
from _experiments import experiment_folders, experiment_parser  # noqa: E402
from _timing import machine_info  # noqa: E402
from recon.learned import count_parameters  # noqa: E402

NAME = "robustness"
ARC = 140
# The hypothesis' order: from the model with the most known operators to the one with the fewest.
MODELS = ("LearnedFBP", "LearnedFBP + VN", "LearnedPrimalDual", "FBP + U-Net")
KNOWN = {
    "FBP (Parker)": "everything: Parker and cosine weights, Hann-windowed ramp filter, back-projection",
    "LearnedFBP": "cosine weights, filter, back-projection (learns the redundancy weights)",
    "LearnedFBP + VN": "the LearnedFBP, then A and A^T in every stage's data term (learns filters and potentials)",
    "LearnedPrimalDual": "A and A^T in every iteration (learns the primal and dual updates)",
    "FBP + U-Net": "only the FBP at the input (learns an image-to-image network)",
}
BASELINE = "FBP (Parker)"
TRAININGS = {"noise 1 %": dict(noise=la.NOISE, variant=""), "noise-free": dict(noise=0.0, variant="noisefree_")}
# Image values are attenuation relative to water: mu_water about 0.02 / mm (about 70 keV), so a line integral
# y (value x mm) is an optical depth of 0.02 y. Doses: incident photons per detector bin.
MU_SCALE = 0.02
DOSES = (1e6, 1e5, 1e4, 1e3)
EPSILONS = (0.01, 0.03)
THRESHOLD = 0.1  # |error| above which a component counts as a structure (the phantoms' values span about +-0.5)
MIN_PIXELS = 4
EDGE_BAND = 2
VANISHED = 0.5  # recovered contrast below which a structure has vanished
TEST_SEED = la.TEST_SEED  # the held-out random ellipses (no training, validation or tuning run uses it)
POISSON_SEED = 2018
RANDOM_SEED = 2019

SCALES = {
    "quick": dict(n_test=2, n_adv=1, pgd_steps=2, insert_radius=6.0, line_width=4.0),
    "cpu": dict(n_test=8, n_adv=4, pgd_steps=20, insert_radius=3.0, line_width=1.5),
    "full": dict(n_test=50, n_adv=10, pgd_steps=50, insert_radius=3.0, line_width=1.5),
}


# --- data -------------------------------------------------------------------------------------------------------


def held_out(volume, geometry, n: int):
    """(ellipse lists, images, exact sinograms) of ``n`` held-out random-ellipse phantoms, float32."""
    data = phantoms.RandomEllipsesDataset(n, volume, geometry, seed=TEST_SEED)
    pairs = [data[k] for k in range(n)]
    return ([data.ellipses(k) for k in range(n)], torch.stack([p[0] for p in pairs]),
            torch.stack([p[1] for p in pairs]))


def missing_wedge(normal_deg: float, geometry) -> bool:
    """Whether an edge with this normal is in the missing wedge: its normal (mod 180 degrees) outside the
    scan's source angles, the directions whose rays through the centre run along the edge (ignoring the
    fan's spread, a few degrees near the centre)."""
    angles = [math.degrees(a) for a in geometry.angles.tolist()]
    return not (min(angles) <= normal_deg % 180 <= max(angles))


# --- evaluation ---------------------------------------------------------------------------------------------------


def reconstruct(model, y: torch.Tensor, device: str) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(y[i:i + 8].to(device)).float().cpu() for i in range(0, len(y), 8)])


def measure(x: torch.Tensor, truth: torch.Tensor, roi: torch.Tensor) -> dict:
    out = error_measures(x, truth, roi)
    structures = false_structures(x, truth, THRESHOLD, MIN_PIXELS, EDGE_BAND)
    out["structures"] = [s["count"] for s in structures]
    out["structure_pixels"] = [s["pixels"] for s in structures]
    return out


def evaluate(model, tests: dict, roi, volume, geometry, scale: dict, device: str) -> tuple[dict, dict]:
    """All test conditions for one model: ``{condition: measures}`` and example images for the figure."""
    results, images = {}, {}
    x_clean = reconstruct(model, tests["y"], device)
    results["clean"] = measure(x_clean, tests["x"], roi)
    for dose, y in tests["poisson"].items():
        x = reconstruct(model, y, device)
        results[f"poisson {dose:.0e}"] = measure(x, tests["x"], roi)
        if dose == min(DOSES):
            images["poisson"] = x[0]
    for p in tests["ood"]:
        x = reconstruct(model, p.sinogram[None], device)
        m = measure(x, p.image[None], roi)
        if p.structure is not None:
            m["contrast"] = contrast_recovery(x, p.image[None], p.structure)
        if p.edges:
            m["edge_shift_mm"] = [edge_shift(x, p.image[None], volume, e)[0] for e in p.edges]
        results[p.name] = m
        images[p.name] = x[0]
    n_adv = scale["n_adv"]
    x_adv, y_adv = tests["x"][:n_adv].to(device), tests["y"][:n_adv].to(device)
    clean_sq = (x_clean[:n_adv] - tests["x"][:n_adv]).double().square().flatten(1).sum(1)
    for eps in EPSILONS:
        delta, history = adversarial_perturbation(model, y_adv, x_adv, eps, steps=scale["pgd_steps"])
        x = reconstruct(model, y_adv + delta, device)
        m = measure(x, tests["x"][:n_adv], roi)
        m["squared_error_gain"] = ((x - tests["x"][:n_adv]).double().square().flatten(1).sum(1) / clean_sq).tolist()
        m["pgd_history"] = history.cpu().tolist()
        x_rand = reconstruct(model, y_adv + random_perturbation(y_adv, eps, RANDOM_SEED).to(device), device)
        m["random"] = measure(x_rand, tests["x"][:n_adv], roi)
        m["random"]["squared_error_gain"] = ((x_rand - tests["x"][:n_adv]).double().square().flatten(1).sum(1)
                                             / clean_sq).tolist()
        results[f"adversarial {eps:.0%}"] = m
        if eps == max(EPSILONS):
            images["adversarial"] = x[0]
    images["clean"] = x_clean[0]
    return results, images


def _mean(values) -> float:
    values = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
    return statistics.fmean(values) if values else math.nan


def conditions() -> list[str]:
    return (["clean"] + [f"poisson {d:.0e}" for d in DOSES] + ["insert", "line", "shapes"]
            + [f"adversarial {e:.0%}" for e in EPSILONS])


def kendall_tau(values: list[float]) -> float:
    """Kendall's tau between the order of ``values`` and their position (+1: increasing along the list, the
    hypothesis' order; -1: the reverse)."""
    n, total = len(values), 0
    for i in range(n):
        for j in range(i + 1, n):
            total += (values[j] > values[i]) - (values[j] < values[i])
    return total / (n * (n - 1) / 2)


def hypothesis(rows: list[dict]) -> list[dict]:
    """Per training and condition: the models' mean maximum absolute error in the hypothesis' order, whether
    it increases along that order, and Kendall's tau."""
    out = []
    for training in TRAININGS:
        by_model = {r["model"]: r for r in rows if r["training"] == training}
        if not all(m in by_model for m in MODELS):
            continue
        for condition in conditions():
            values = [_mean(by_model[m]["results"][condition]["max"]) for m in MODELS]
            out.append({"training": training, "condition": condition, "max_abs_error": values,
                        "holds": all(a <= b for a, b in zip(values, values[1:])), "kendall_tau": kendall_tau(values)})
    return out


# --- report -------------------------------------------------------------------------------------------------------


def _f(value, digits=3):
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown(result: dict) -> str:
    m = result["machine"]
    where = m.get("gpu") or f"{m['cpu_model']}, {m['cpu_count']} cores"
    rows = result["rows"]
    lines = [f"# Robustness of learned limited-angle reconstruction ({result['scale']} scale)", "", result["setup"], "",
             "## Models", "",
             "| model | training | known operators | parameters | training budget |", "|---|---|---|---:|---|"]
    for r in rows:
        budget = (f"{r['steps']} steps x batch {r['batch']}, {r['train_minutes']:.1f} min" if r.get("steps")
                  else "none (analytic)")
        lines.append(f"| {r['model']} | {r['training']} | {KNOWN[r['model']]} | {r['parameters']:,} | {budget} |")
    lines += ["", "## Mean and maximum absolute error", "",
              "Mean over the test images of each image's mean / maximum absolute error (whole image; ROI: the "
              "central disc of radius 32 mm). Image values: the phantoms' units (random ellipses span about "
              "+-0.5; the disc and the line have contrast 1).", ""]
    header = "| model | training | " + " | ".join(conditions()) + " |"
    lines += ["### Maximum absolute error (whole image)", "", header, "|---|---|" + "---:|" * len(conditions())]
    for r in rows:
        lines.append(f"| {r['model']} | {r['training']} | "
                     + " | ".join(_f(_mean(r["results"][c]["max"])) for c in conditions()) + " |")
    lines += ["", "### Maximum absolute error in the ROI", "", header, "|---|---|" + "---:|" * len(conditions())]
    for r in rows:
        lines.append(f"| {r['model']} | {r['training']} | "
                     + " | ".join(_f(_mean(r["results"][c]["max_roi"])) for c in conditions()) + " |")
    lines += ["", "### Mean absolute error (whole image)", "", header, "|---|---|" + "---:|" * len(conditions())]
    for r in rows:
        lines.append(f"| {r['model']} | {r['training']} | "
                     + " | ".join(_f(_mean(r["results"][c]["mae"]), 4) for c in conditions()) + " |")
    lines += ["", "## Structures that appear or vanish, edge shifts", "",
              f"Appearing: 8-connected components of |error| > {THRESHOLD} of at least {MIN_PIXELS} pixels, more "
              f"than {EDGE_BAND} pixels away from the truth's edges (mean count per image). Vanishing: the recovered "
              f"contrast of the disc and the line (reconstruction's contrast against a ring 2-5 pixels around it, "
              f"over the truth's); below {VANISHED:.0%} the structure has vanished. Edge shift: the rectangle's "
              "edges (normal direction in degrees; * = in the missing wedge), position of the half-level crossing "
              "of the profile across the edge minus the truth's, in mm, + outward.", ""]
    edges = result["edges"]
    edge_cols = " | ".join(f"edge {e['normal_deg']:.0f}{'*' if e['missing_wedge'] else ''}" for e in edges)
    lines += ["| model | training | structures: clean | Poisson lowest dose | shapes | adversarial "
              f"{max(EPSILONS):.0%} | disc contrast | line contrast | {edge_cols} |",
              "|---|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(edges)]
    low = f"poisson {min(DOSES):.0e}"
    for r in rows:
        res = r["results"]
        shifts = " | ".join(_f(v, 2) for v in res["shapes"]["edge_shift_mm"])
        lines.append(
            f"| {r['model']} | {r['training']} | {_f(_mean(res['clean']['structures']), 1)} | "
            f"{_f(_mean(res[low]['structures']), 1)} | {_f(_mean(res['shapes']['structures']), 1)} | "
            f"{_f(_mean(res[f'adversarial {max(EPSILONS):.0%}']['structures']), 1)} | "
            f"{res['insert']['contrast'][0]:.0%} | {res['line']['contrast'][0]:.0%} | {shifts} |")
    lines += ["", "## Adversarial perturbations", "",
              f"Projected gradient ascent ({result['pgd_steps']} steps) on the squared error of "
              f"{result['n_adv']} held-out phantoms, ||delta|| <= epsilon ||y|| per sinogram; beside it a random "
              "direction of the same norm. Gain: squared error over the clean one (mean over the images).", "",
              "| model | training | " + " | ".join(f"gain {e:.0%} (random) | max {e:.0%} (random)" for e in EPSILONS)
              + " |", "|---|---|" + "---:|---:|" * len(EPSILONS)]
    for r in rows:
        cells = []
        for e in EPSILONS:
            a = r["results"][f"adversarial {e:.0%}"]
            cells.append(f"{_mean(a['squared_error_gain']):.2f} ({_mean(a['random']['squared_error_gain']):.2f})")
            cells.append(f"{_mean(a['max']):.3f} ({_mean(a['random']['max']):.3f})")
        lines.append(f"| {r['model']} | {r['training']} | " + " | ".join(cells) + " |")
    holds = result["hypothesis"]
    n_hold = sum(h["holds"] for h in holds)
    lines += ["", "## The hypothesis", "",
              "More known operators, smaller maximum error: the mean maximum absolute error should increase along "
              f"{' < '.join(MODELS)}. It holds exactly in {n_hold} of {len(holds)} (training, condition) pairs; "
              "Kendall's tau (+1: the hypothesis' order, -1: the reverse) per pair:", "",
              "| training | condition | " + " | ".join(MODELS) + " | order holds | tau |",
              "|---|---|" + "---:|" * len(MODELS) + "---|---:|"]
    for h in holds:
        lines.append(f"| {h['training']} | {h['condition']} | " + " | ".join(_f(v) for v in h["max_abs_error"])
                     + f" | {'yes' if h['holds'] else 'no'} | {h['kendall_tau']:+.2f} |")
    if holds:
        lines.append(f"\nMean tau: {statistics.fmean(h['kendall_tau'] for h in holds):+.2f}.")
    lines += ["", "## Published claims", "",
              "- Huang et al., MICCAI 2018 ('Some investigations on robustness of deep learning in limited angle "
              "tomography'): a U-Net trained for limited-angle reconstruction is sensitive to Poisson noise; its "
              "images look artifact-free while structures sit at wrong positions (the skin shifted by up to 1 cm) "
              "or are lost; retraining with simulated Poisson noise reduces this, but the retrained U-Net is still "
              "susceptible to adversarial examples. Compare the FBP + U-Net rows under Poisson noise (the "
              "noise-free and the noise-trained one), the edge shifts, and the adversarial gain.",
              "- Maier et al., Nature Machine Intelligence 1, 373-380 (2019) ('Learning with known operators "
              "reduces maximum training error bounds'): the bound on the maximum error of a network, a sum of "
              "the learned layers' approximation errors amplified by the layers after them, loses the term of "
              "every layer that is replaced by a known operator. It bounds the training (approximation) error; "
              "the maximum errors measured here are at test time, under perturbations and shifts of the "
              "phantoms' law, so they test the argument's spirit rather than the bound itself.",
              "",
              f"- Machine: {where}, torch {m['torch']}, {m['date']}; device {result['device']}. Total run time "
              f"{result['total_minutes']:.1f} min (evaluation {result['evaluation_minutes']:.1f} min).",
              f"- Seeds: held-out phantoms {TEST_SEED}, Poisson noise {POISSON_SEED}, random perturbations "
              f"{RANDOM_SEED}; training seed 0 (limited_angle.py's configs).",
              "- The CPU-scale models train for limited_angle.py's CPU budgets (about 10 minutes each), far "
              "below the papers' budgets; the ranking can change with training (`--scale full` on a GPU)."]
    return "\n".join(lines) + "\n"


def figures(result: dict, images: dict, tests: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    styles = {"noise 1 %": "-", "noise-free": "--"}
    for k, r in enumerate(result["rows"]):
        values = [_mean(r["results"][f"poisson {d:.0e}"]["max"]) for d in DOSES]
        ax.plot(DOSES, values, styles.get(r["training"], ":"), marker="o", color=f"C{[BASELINE, *MODELS].index(r['model'])}",
                label=f"{r['model']} ({r['training']})")
    ax.set_xscale("log")
    ax.set_xlabel("incident photons per detector bin")
    ax.set_ylabel("mean of the maximum |error| per image")
    ax.set_title(f"Poisson noise, {ARC}-degree fan scan: solid trained with 1 % noise, dashed without", fontsize=8)
    ax.legend(fontsize=6)
    fig.savefig(out / f"{NAME}_dose.png", dpi=100)
    plt.close(fig)

    names = [k for k in images if k[1] in ("none", "noise 1 %")] or list(images)
    columns = [("shapes", "shapes"), ("insert", "disc insert"), ("line", "line"),
               ("poisson", f"Poisson {min(DOSES):.0e}"), ("adversarial", f"adversarial {max(EPSILONS):.0%}")]
    truths = {"shapes": tests["ood"][2].image, "insert": tests["ood"][0].image, "line": tests["ood"][1].image,
              "poisson": tests["x"][0], "adversarial": tests["x"][0]}
    fig, axes = plt.subplots(len(names) + 1, len(columns), figsize=(2.0 * len(columns), 2.0 * (len(names) + 1)),
                             layout="constrained")
    for j, (key, title) in enumerate(columns):
        axes[0, j].imshow(truths[key].numpy(), cmap="gray", origin="lower", vmin=-0.5, vmax=1.0)
        axes[0, j].set_title(f"truth: {title}", fontsize=7)
        for i, name in enumerate(names):
            axes[i + 1, j].imshow(images[name][key].numpy(), cmap="gray", origin="lower", vmin=-0.5, vmax=1.0)
            axes[i + 1, j].set_title(f"{name[0]} ({name[1]})", fontsize=6)
    for a in axes.flat:
        a.axis("off")
    fig.savefig(out / f"{NAME}_images.png", dpi=100)
    plt.close(fig)


# --- main ---------------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = experiment_parser(__doc__, "runs/experiments/limited_angle/<scale>")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    parser.add_argument("--trainings", nargs="*", default=list(TRAININGS), choices=list(TRAININGS))
    args = parser.parse_args(argv)
    scale_name, out, runs = experiment_folders(args, NAME, HERE / "results", None)
    scale = SCALES[scale_name]
    t_start = time.perf_counter()
    torch.manual_seed(0)

    volume, geometry = la.volume_for(scale_name), la.geometry_for(ARC, scale_name)
    roi = la.roi_mask(volume)
    backgrounds, x_test, y_test = held_out(volume, geometry, scale["n_test"])
    tests = {"x": x_test, "y": y_test,
             "poisson": {d: poisson_sinograms(y_test, d, MU_SCALE, POISSON_SEED) for d in DOSES},
             "ood": ood_phantoms(volume, geometry, backgrounds[0], scale["insert_radius"], scale["line_width"])}
    noise_levels = {f"{d:.0e}": relative_noise(tests["poisson"][d], y_test) for d in DOSES}

    # Train (or load) everything first, so that the evaluation time is measured on its own.
    models = [(BASELINE, "none", recon.FBP(volume, geometry, filter="hann").to(args.device), None)]
    for training in args.trainings:
        spec = TRAININGS[training]
        for name in args.models:
            print(f"== {name} ({training})", flush=True)
            module, step, seconds = la.train_model(name, ARC, scale_name, noise=spec["noise"], variant=spec["variant"],
                                                   evaluate_only=args.evaluate_only, progress=not args.no_progress,
                                                   runs=runs, device=args.device)
            config = la.model_config(name, ARC, scale_name, noise=spec["noise"], variant=spec["variant"])
            models.append((name, training, module.eval(), dict(steps=step, batch=config["batch_size"],
                                                                train_minutes=seconds / 60)))
    t_eval = time.perf_counter()
    rows, images = [], {}
    for name, training, module, budget in models:
        print(f"== evaluating {name} ({training})", flush=True)
        t0 = time.perf_counter()
        results, pictures = evaluate(module, tests, roi, volume, geometry, scale, args.device)
        rows.append({"model": name, "training": training, "parameters": count_parameters(module),
                     **(budget or {}), "evaluation_minutes": (time.perf_counter() - t0) / 60, "results": results})
        images[(name, training)] = pictures
    evaluation_minutes = (time.perf_counter() - t_eval) / 60

    edges = [{"x": e.x, "y": e.y, "normal_deg": e.normal_deg, "half_length": e.half_length,
              "missing_wedge": missing_wedge(e.normal_deg, geometry)} for e in tests["ood"][2].edges]
    angles = [math.degrees(a) for a in geometry.angles.tolist()]
    pixel = float(volume.spacing[0])
    result = {
        "scale": scale_name, "device": args.device, "arc_deg": ARC, "n_test": scale["n_test"], "n_adv": scale["n_adv"],
        "pgd_steps": scale["pgd_steps"], "doses": list(DOSES), "mu_scale": MU_SCALE, "epsilons": list(EPSILONS),
        "threshold": THRESHOLD, "min_pixels": MIN_PIXELS, "edge_band": EDGE_BAND,
        "poisson_relative_noise": noise_levels, "edges": edges,
        "setup": (
            f"{volume.shape[0]} x {volume.shape[1]} pixels of {pixel:g} mm; flat-detector fan beam over {ARC} degrees "
            f"({geometry.n_views} views at {angles[0]:.2f} .. {angles[-1]:.2f} degrees), D_so = D_od = "
            f"{la.SCALES[scale_name]['d_so']:g} mm, {geometry.det_count} bins (limited_angle.py's set-up). "
            f"Test: {scale['n_test']} held-out random-ellipse phantoms (seed {TEST_SEED}) with exact sinograms; "
            f"Poisson noise at {', '.join(f'{d:.0e}' for d in DOSES)} incident photons per bin with mu = "
            f"{MU_SCALE} / mm per unit of image value (values relative to water), i.e. noise std of "
            + ", ".join(f"{100 * v:.2g} %" for v in noise_levels.values())
            + " of the mean |y| (the noise-trained models saw Gaussian noise of 1 %); out-of-distribution "
            f"phantoms: a disc of radius {scale['insert_radius']:g} mm and a line {scale['line_width']:g} mm wide "
            "(contrast 1) on the first held-out phantom, and a rectangle (40 x 24 mm, 0.5, turned by 160 "
            "degrees) with a five-pointed star (0.3), all with exact sinograms; adversarial: PGD with "
            f"epsilon {', '.join(f'{e:.0%}' for e in EPSILONS)} of ||y|| on the first {scale['n_adv']} held-out "
            "phantoms."),
        "machine": machine_info(args.device), "rows": rows, "evaluation_minutes": evaluation_minutes,
    }
    result["hypothesis"] = hypothesis(rows)
    result["total_minutes"] = (time.perf_counter() - t_start) / 60
    suffix = "" if scale_name == "cpu" else f"_{scale_name}"
    (out / f"{NAME}{suffix}.json").write_text(json.dumps(result, indent=1, default=float))
    table = markdown(result)
    (out / f"{NAME}{suffix}.md").write_text(table)
    figures(result, images, tests, out)
    print(table)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
