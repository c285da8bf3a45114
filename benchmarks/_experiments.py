"""Shared by the learned-model experiments (adler_ellipses.py, derived_rebinning.py, limited_angle.py): training a
config through the harness into a checkpoint folder, resumed or reused."""
from __future__ import annotations

from pathlib import Path

from recon.training import fit, load_checkpoint, model_from_config

__all__ = ["train_or_load"]


def train_or_load(config: dict, out: Path, evaluate_only: bool, progress: bool, model=None):
    """(model, step, training seconds) of a resolved ``config``: trained into ``out`` (resumed when a
    checkpoint is there and the run is not finished, reused when it is) or, with ``evaluate_only``,
    loaded from ``out/last.pt`` (a missing checkpoint is then an error). ``model``: a ready-built
    model instead of ``model_from_config(config)`` (e.g. a network that starts from another trained
    model)."""
    if model is None:
        model = model_from_config(config)
    last = out / "last.pt"
    saved = load_checkpoint(last) if last.exists() else None
    if evaluate_only or (saved is not None and saved["step"] >= config["steps"]):
        if saved is None:
            raise FileNotFoundError(f"--evaluate-only: no checkpoint {last}; train first (without --evaluate-only)")
        model.load_state_dict(saved["model"])
        return model.to(config["device"]), saved["step"], saved["elapsed"]
    result = fit(model, config, output=out, resume=saved is not None, progress=progress)
    return model, result["step"], load_checkpoint(last)["elapsed"]
