"""Sample efficiency: test PSNR against the number of distinct training phantoms, on Adler and Oektem's ellipses.

Precision learning's claim under test: a model with fewer free parameters (more known operators)
needs fewer training samples. LearnedFBP (5,678 parameters), LearnedGradient (13,318),
LearnedPrimalDual (253,220) and FBP + U-Net (7,759,521) are each trained on a pool of N distinct
random-ellipse phantoms (N = 1, 10, 100 at CPU scale; 10, 100, 1000 at full scale) and on the
unlimited stream (a new phantom for every item, as Adler and Oektem trained), with the same number of
steps and batch for every pool of a model, so that only the number of distinct samples varies. The
set-up, the test set (the modified Shepp-Logan phantom and held-out random ellipses), the model
configs and the FBP reference are those of ``benchmarks/adler_ellipses.py``.

The pools (``data.train_items`` of ``recon.training``): pool N is the phantoms 0..N-1 of the training
stream (seed 0), so the pools are nested (pool 10 holds pool 1); every epoch visits them in a fresh
seeded order, and each phantom keeps its one noise realisation in every epoch (N fixed noisy
sinograms, not N phantoms with fresh noise). The model's initial weights are the same for every
pool (seed 0). The training-set PSNR (the first items of the pool, with their training noise) beside
the test PSNR shows overfitting.

    python benchmarks/sample_efficiency.py                  # CPU scale: 16 runs, about 80 minutes here
    python benchmarks/sample_efficiency.py --scale full --device cuda   # the papers' budgets (1e5 steps)
    python benchmarks/sample_efficiency.py --quick          # seconds, tiny sizes (the tests), a temporary folder
    python benchmarks/sample_efficiency.py --evaluate-only  # re-evaluate the saved checkpoints, no training
    python benchmarks/sample_efficiency.py --models "FBP + U-Net" --pools 1 0 --steps 100 --output-dir /tmp/se

Writes ``benchmarks/results/sample_efficiency{_full}.{json,md}`` and the figure ``sample_efficiency.png``
(PSNR against the number of distinct training phantoms, log x, one line per model). Checkpoints go to
``runs/experiments/sample_efficiency/<scale>/<model>/pool<N>_<steps>x<batch>/`` (ignored by git); an
interrupted run resumes there and a finished one is reused.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(ROOT), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import torch  # noqa: E402

import adler_ellipses as adler  # noqa: E402
from _analytic_experiments import _ao_setup  # noqa: E402
from _experiments import experiment_folders, experiment_parser, train_or_load  # noqa: E402
from _timing import machine_info  # noqa: E402
from recon.learned import count_parameters  # noqa: E402
from recon.training import resolve_config, training_data_from_config  # noqa: E402

NAME = "sample_efficiency"
RUNS = ROOT / "runs" / "experiments" / NAME
TRAIN_SEED = 0  # one training stream for every pool: pool N is its phantoms 0..N-1
MODELS = ("LearnedFBP", "LearnedGradient", "LearnedPrimalDual", "FBP + U-Net")  # rows of adler_ellipses.LEARNED

# Steps and batch per model, the same for every pool. CPU budgets are sized from
# benchmarks/results/training_speed.md (2 vCPUs; s / step plus 0.15 s of data simulation per 5 items):
# about 5 minutes a run (LearnedFBP about 3), 16 runs in about 80 minutes with the evaluations.
SCALES = {
    "quick": dict(pools=(2, None), budgets={m: (3, 2) for m in MODELS}, n_train_eval=2),
    "cpu": dict(pools=(1, 10, 100, None), n_train_eval=20,
                budgets={"LearnedFBP": (1000, 5), "LearnedGradient": (70, 20), "LearnedPrimalDual": (240, 5),
                         "FBP + U-Net": (300, 5)}),
    "full": dict(pools=(10, 100, 1000, None), n_train_eval=100,
                 budgets={m: adler.LEARNED[m][2]["full"] for m in MODELS}),
}

# Published context, as read (abstracts); none of these papers gives a PSNR-against-samples curve for this set-up.
PUBLISHED = [
    ("Maier et al., Learning with known operators reduces maximum error bounds, Nature Machine Intelligence 1(8), "
     "373-380, 2019",
     "derives a maximal training-error bound that shrinks when known operators are built in, and shows "
     "experimentally that known operators reduce the number of free parameters; its abstract states the claim "
     "in parameters and error bounds, not in numbers of training samples."),
    ("Syben et al., Deriving neural network architectures using precision learning: parallel-to-fan beam "
     "conversion, GCPR 2018 (LNCS 11269)",
     "the known operators leave so few trainable parameters that they can be estimated from synthetic data only "
     "(benchmarks/derived_rebinning.py); no sample count is given in the abstract."),
    ("A deep risk estimator for known operator learning, arXiv:2605.08517, 2026",
     "the sample size needed for a target risk scales with the number of trainable parameters a known operator "
     "replaces; its calibrated bound follows the measured test MSE within a factor of two at every training-set "
     "size (an FBP network against a dense learned matrix, CT)."),
]


def pool_label(pool) -> str:
    return "unlimited" if pool is None else str(pool)


# --- training ------------------------------------------------------------------------------------------------


def run_config(model: str, scale_name: str, pool, steps: int, batch: int, volume, geometry, device: str) -> dict:
    """Adler's config of ``model`` at this scale, with ``data.train_items = pool`` and this budget."""
    config = adler.run_config(model, scale_name, adler.SCALES[scale_name], TRAIN_SEED, volume, geometry, device)
    validate_every = max(1, min(steps // 10, 1000))  # about 10 points of the curve; at least every 1000 steps
    config.update(name=f"{NAME}_{scale_name}_{adler.LEARNED[model][0]}_pool{pool_label(pool)}", steps=steps,
                  batch_size=batch, validate_every=validate_every, checkpoint_every=max(validate_every, min(steps, 100)),
                  keep_best=False)
    config["data"]["train_items"] = pool
    return resolve_config(config)


def reconstruct(model, y: torch.Tensor, device: str, chunk: int = 8) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return torch.cat([model(y[i:i + chunk].to(device)).float().cpu() for i in range(0, len(y), chunk)])


def training_pairs(config: dict, volume, geometry, n: int):
    """The first ``n`` phantoms of the pool with the very sinograms (noise included) the model trained on."""
    dataset = training_data_from_config(config, volume, geometry).stream.dataset
    pairs = [dataset[k] for k in range(n)]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def pool_row(model_name: str, pool, scale_name: str, scale: dict, steps: int, batch: int, volume, geometry, x_test,
             y_test, device: str, evaluate_only: bool, progress: bool, runs: Path) -> dict:
    config = run_config(model_name, scale_name, pool, steps, batch, volume, geometry, device)
    out = runs / config["model"]["name"] / f"pool{pool_label(pool)}_{steps}x{batch}"
    model, step, elapsed = train_or_load(config, out, evaluate_only, progress)
    machine_file = out / "machine.json"
    if not evaluate_only and not machine_file.exists():
        machine_file.write_text(json.dumps(machine_info(device), indent=1))
    trained_on = json.loads(machine_file.read_text()) if machine_file.exists() else None
    test = adler.scores(reconstruct(model, y_test, device), x_test)
    n_train = scale["n_train_eval"] if pool is None else min(pool, scale["n_train_eval"])
    x_train, y_train = training_pairs(config, volume, geometry, n_train)
    train = adler.scores(reconstruct(model, y_train, device), x_train)
    seen = steps * batch  # items drawn in training
    return {"model": model_name, "model_class": config["model"]["name"], "config": adler.LEARNED[model_name][0],
            "pool": pool, "distinct_phantoms": seen if pool is None else min(pool, seen), "items_seen": seen,
            "epochs": None if pool is None else seen / pool, "parameters": count_parameters(model), "steps": step,
            "batch": batch, "optimiser": config["optim"]["name"], "train_minutes": elapsed / 60,
            "trained_on": _where(trained_on) if trained_on else "unknown (no machine.json)",
            "summary": adler.summary([test]), "per_image": test, "train_n": n_train,
            "train_psnr": sum(train["psnr"]) / n_train, "train_ssim": sum(train["ssim"]) / n_train,
            "curve": adler.curve(out)}


def _where(machine: dict) -> str:
    return machine.get("gpu") or f"{machine['cpu_model']}, {machine['cpu_count']} cores"


# --- report ---------------------------------------------------------------------------------------------------


def markdown(result: dict) -> str:
    m = result["machine"]
    fbp = result["fbp"]
    cpu_items = [steps * batch for steps, batch in SCALES["cpu"]["budgets"].values()]
    lines = [
        f"# Sample efficiency on Adler and Oektem's ellipses: test PSNR against distinct training phantoms "
        f"({result['scale']} scale)",
        "",
        result["setup"],
        "",
        "| model | parameters | distinct training phantoms | passes over the pool | held-out ellipses PSNR (dB) | "
        "SSIM | Shepp-Logan PSNR (dB) | SSIM | training-set PSNR (dB) | gap (dB) | budget |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["rows"]:
        s = r["summary"]
        pool = (f"unlimited ({r['distinct_phantoms']:,} new)" if r["pool"] is None else f"{r['pool']:,}")
        passes = "1" if r["epochs"] is None else f"{r['epochs']:g}"
        gap = r["train_psnr"] - s["psnr_ellipses"]
        lines.append(
            f"| {r['model']} | {r['parameters']:,} | {pool} | {passes} | "
            f"{adler._pm(s['psnr_ellipses'], s['psnr_ellipses_std'])} | "
            f"{adler._pm(s['ssim_ellipses'], s['ssim_ellipses_std'], 3)} | {s['psnr_shepp_logan']:.2f} | "
            f"{s['ssim_shepp_logan']:.3f} | {r['train_psnr']:.2f} (n={r['train_n']}) | {gap:+.2f} | "
            f"{r['steps']} steps x batch {r['batch']}, {r['train_minutes']:.1f} min ({r['optimiser']}), "
            f"{r['trained_on']} |")
    lines += [
        f"| FBP (reference) | 0 | {fbp['n_tune']} (cut-off tuning) | | "
        f"{adler._pm(fbp['summary']['psnr_ellipses'], fbp['summary']['psnr_ellipses_std'])} | "
        f"{adler._pm(fbp['summary']['ssim_ellipses'], fbp['summary']['ssim_ellipses_std'], 3)} | "
        f"{fbp['summary']['psnr_shepp_logan']:.2f} | {fbp['summary']['ssim_shepp_logan']:.3f} | | | {fbp['setting']} |",
        "",
    ]
    drops = []
    for name in dict.fromkeys(r["model"] for r in result["rows"]):
        mine = [r for r in result["rows"] if r["model"] == name]
        unlimited = next((r for r in mine if r["pool"] is None), None)
        finite = sorted((r for r in mine if r["pool"] is not None), key=lambda r: r["pool"])
        if unlimited and finite:
            per_pool = ", ".join(f"{r['pool']}: {r['summary']['psnr_ellipses'] - unlimited['summary']['psnr_ellipses']:+.2f}"
                                 for r in finite)
            drops.append(f"{name} ({unlimited['parameters']:,} parameters) {per_pool}")
    if drops:
        lines += ["- Held-out ellipses PSNR of each pool minus that of the unlimited stream (dB): "
                  + "; ".join(drops) + ".", ""]
    lines += [
        f"- Machine of this run: {_where(m)}, torch {m['torch']}, {m['date']}; device {result['device']}. "
        f"Total run time {result['total_minutes']:.0f} min. The budget column names the machine each row trained on.",
        f"- Test set: the modified Shepp-Logan phantom (exact sinogram, noise seed {adler.SHEPP_LOGAN_NOISE_SEED}) and "
        f"{result['n_test']} held-out random ellipses (seed {adler.TEST_SEED}), as benchmarks/adler_ellipses.py; "
        "held-out PSNR and SSIM: mean +- std over those images (recon.psnr / recon.ssim, data range max - min of "
        "each truth). Gap: training-set PSNR minus held-out ellipses PSNR.",
        f"- Training data (recon.training, `data.train_items`): random ellipses with exact sinograms and 5 % Gaussian "
        f"noise, training seed {TRAIN_SEED}. A pool of N is the phantoms 0..N-1 of that stream (pools are nested), "
        "visited in a fresh seeded order every epoch, each phantom with one fixed noise realisation; 'unlimited' "
        "draws a new phantom (and noise) for every item, as Adler and Oektem trained. Same steps, batch, optimiser, "
        "schedule and initial weights for every pool of a model: only the number of distinct samples varies. "
        "The last step's model is evaluated. Training-set PSNR: the first items of the pool with their training "
        "noise (for the unlimited stream, its first items, each seen once).",
        "- Models and optimisers: the configs in recon/training/configs used by benchmarks/adler_ellipses.py. "
        "FBP reference: Hann window, cut-off tuned on random ellipses of the training law (not the test images).",
        f"- At CPU scale a run draws only {min(cpu_items):,}-{max(cpu_items):,} items, so a pool of 1,000 would be "
        "nearly the unlimited stream; the CPU pools are therefore 1, 10 and 100. The full scale (`--scale full`, a "
        "GPU) uses the papers' budgets (1e5 steps; LearnedFBP 2e4) and pools of 10, 100 and 1,000.",
        f"- Figure: `{result['figure']}` (held-out ellipses PSNR, solid, and training-set PSNR, dotted, against the "
        "number of distinct training phantoms, log x; the unlimited stream at the number of phantoms it drew).",
        "",
        "Published context (read, not reproduced; none gives a number to set beside ours):",
        "",
    ]
    lines += [f"- {source}: {claim}" for source, claim in PUBLISHED]
    return "\n".join(lines) + "\n"


def figure(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
    for k, name in enumerate(dict.fromkeys(r["model"] for r in result["rows"])):
        mine = sorted((r for r in result["rows"] if r["model"] == name), key=lambda r: r["distinct_phantoms"])
        n = [r["distinct_phantoms"] for r in mine]
        color = f"C{k}"
        label = f"{name} ({mine[0]['parameters']:,} parameters)"
        axes[0].plot(n, [r["summary"]["psnr_ellipses"] for r in mine], "o-", color=color, label=label)
        axes[0].plot(n, [r["train_psnr"] for r in mine], ":", color=color)
        axes[1].plot(n, [r["summary"]["psnr_shepp_logan"] for r in mine], "o-", color=color, label=label)
        for ax, key in ((axes[0], "psnr_ellipses"), (axes[1], "psnr_shepp_logan")):
            for r in mine:
                if r["pool"] is None:
                    ax.plot(r["distinct_phantoms"], r["summary"][key], "s", ms=9, mfc="none", color=color)
    for ax, key, title in ((axes[0], "psnr_ellipses", f"held-out ellipses (mean of {result['n_test']}); dotted: "
                            "training set"), (axes[1], "psnr_shepp_logan", "modified Shepp-Logan")):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.axhline(result["fbp"]["summary"][key], ls="--", lw=0.8, color="gray")
        ax.text(ax.get_xlim()[0], result["fbp"]["summary"][key], " tuned FBP", va="bottom", fontsize=7, color="gray")
        ax.set_xlabel("distinct training phantoms (square: unlimited stream)")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(title, fontsize=9)
    axes[1].legend(fontsize=7)
    fig.suptitle(f"Sample efficiency, {result['scale']} scale: same steps for every pool of a model", fontsize=9)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- main -----------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = experiment_parser(__doc__, "runs/experiments/sample_efficiency/<scale>")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    parser.add_argument("--pools", nargs="*", type=int,
                        help="pool sizes (distinct training phantoms), 0 for the unlimited stream (default: the scale's)")
    parser.add_argument("--steps", type=int, help="override every model's steps (a shorter check; keeps the batch)")
    args = parser.parse_args(argv)
    if args.pools is not None and any(p < 0 for p in args.pools):
        parser.error("--pools: sizes must be positive, or 0 for the unlimited stream")
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be a positive integer")
    scale_name, out, runs = experiment_folders(args, NAME, HERE / "results", RUNS)
    scale = SCALES[scale_name]
    pools = scale["pools"] if args.pools is None else tuple(p or None for p in args.pools)
    t_start = time.perf_counter()
    torch.manual_seed(0)
    adler_scale = adler.SCALES[scale_name]
    volume, geometry, _ = _ao_setup(adler_scale["size"], adler_scale["n_views"])
    _, x_test, y_test = adler.test_set(volume, geometry, adler_scale["n_test"])
    (fbp_row,), _ = adler.analytic_rows(adler_scale, volume, geometry, x_test, y_test, ["FBP"])
    rows = []
    for name in args.models:
        steps, batch = scale["budgets"][name]
        steps = args.steps or steps
        for pool in pools:
            print(f"== {name}, pool {pool_label(pool)}: {steps} steps x batch {batch}", flush=True)
            rows.append(pool_row(name, pool, scale_name, scale, steps, batch, volume, geometry, x_test, y_test,
                                 args.device, args.evaluate_only, not args.no_progress, runs))
    suffix = "" if scale_name == "cpu" else f"_{scale_name}"
    result = {
        "scale": scale_name, "device": args.device, "n_test": adler_scale["n_test"], "train_seed": TRAIN_SEED,
        "test_seed": adler.TEST_SEED, "pools": [pool_label(p) for p in pools], "figure": f"{NAME}{suffix}.png",
        "setup": (f"{adler_scale['size']} x {adler_scale['size']} pixels of 1 mm, {adler_scale['n_views']} parallel "
                  f"views at (k + 1/2) pi / {adler_scale['n_views']}, {geometry.det_count} bins of "
                  f"{float(geometry.det_spacing[0]):.4f} mm, additive Gaussian noise of {adler.NOISE} mean |y| per "
                  "sinogram (benchmarks/adler_ellipses.py's set-up)."),
        "fbp": {"setting": fbp_row["setting"], "n_tune": adler_scale["n_train_fbp"],
                "summary": adler.summary(fbp_row["per_seed"])},
        "machine": machine_info(args.device), "rows": rows, "total_minutes": (time.perf_counter() - t_start) / 60,
        "published": [{"source": s, "claim": c} for s, c in PUBLISHED],
    }
    (out / f"{NAME}{suffix}.json").write_text(json.dumps(result, indent=1))
    table = markdown(result)
    (out / f"{NAME}{suffix}.md").write_text(table)
    figure(result, out / result["figure"])
    print(table)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
