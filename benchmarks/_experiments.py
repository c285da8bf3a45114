"""Shared by the learned-model experiments (adler_ellipses.py, limited_angle.py, robustness.py,
sample_efficiency.py, derived_rebinning.py): their common command line and folders, and training a
config through the harness into a checkpoint folder, resumed or reused."""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from recon.training import fit, load_checkpoint, model_from_config
from recon.training.checkpoint import check_same_training

__all__ = ["experiment_folders", "experiment_parser", "train_or_load"]


def experiment_parser(doc: str, runs_default: str) -> argparse.ArgumentParser:
    """The options every experiment takes (its own are added by the caller): the scale, --quick, the device,
    --evaluate-only, the results and checkpoint folders, --no-progress. ``doc``: the script's docstring;
    ``runs_default``: the default checkpoint folder, for the help text."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--scale", choices=("cpu", "full"), default="cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and budgets (seconds), for the tests")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--evaluate-only", action="store_true", help="evaluate saved checkpoints, train nothing")
    parser.add_argument("--output-dir", help="results folder (default benchmarks/results; --quick: a temporary one)")
    parser.add_argument("--runs-dir", help=f"checkpoint folder (default {runs_default}; --quick: under the output folder)")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def experiment_folders(args, name: str, results: Path, runs_root: Path | None):
    """(scale name, results folder, checkpoint folder) from the parsed options: --quick writes into a new
    temporary folder with its checkpoints under it; otherwise ``results`` and ``runs_root/<scale>``
    (None when ``runs_root`` is None: the experiment keeps its models elsewhere)."""
    scale_name = "quick" if args.quick else args.scale
    if args.output_dir:
        out = Path(args.output_dir)
    else:
        out = Path(tempfile.mkdtemp(prefix=f"{name}_quick_")) if args.quick else results
    out.mkdir(parents=True, exist_ok=True)
    if args.runs_dir:
        runs = Path(args.runs_dir)
    else:
        runs = out / "runs" if args.quick else (runs_root / scale_name if runs_root is not None else None)
    return scale_name, out, runs


def train_or_load(config: dict, out: Path, evaluate_only: bool, progress: bool, model=None):
    """(model, step, training seconds) of a resolved ``config``: trained into ``out`` (resumed when a
    checkpoint is there and the run is not finished, reused when it is) or, with ``evaluate_only``,
    loaded from ``out/last.pt`` (a missing checkpoint is then an error). A checkpoint trained with another
    config (other steps, data, model; the device may differ) is an error, never silently reused.
    ``model``: a ready-built model instead of ``model_from_config(config)`` (e.g. a network that starts
    from another trained model)."""
    if model is None:
        model = model_from_config(config)
    last = out / "last.pt"
    saved = load_checkpoint(last) if last.exists() else None
    if saved is not None:
        check_same_training(saved, config, last)
    if evaluate_only or (saved is not None and saved["step"] >= config["steps"]):
        if saved is None:
            raise FileNotFoundError(f"--evaluate-only: no checkpoint {last}; train first (without --evaluate-only)")
        model.load_state_dict(saved["model"])
        return model.to(config["device"]), saved["step"], saved["elapsed"]
    result = fit(model, config, output=out, resume=saved is not None, progress=progress)
    return model, result["step"], load_checkpoint(last)["elapsed"]
