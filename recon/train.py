"""Command line: ``python -m recon.train CONFIG.json [--device cuda] [--resume] [--steps N] [--output DIR]``.

Trains the config's model with :func:`recon.training.fit`; under ``torchrun`` with DDP. See
``docs/training.md``.
"""
from __future__ import annotations

import argparse
import json
import sys

from .training.checkpoint import CheckpointMismatchError
from .training.config import ConfigError, resolve_config
from .training.fit import fit, model_from_config


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m recon.train", description="Train a reconstruction model from a JSON config.")
    p.add_argument("config", help="JSON config file (docs/training.md)")
    p.add_argument("--device", help="override the config's device: cpu, cuda or cuda:N")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/last.pt")
    p.add_argument("--steps", type=int, help="override the config's total number of steps")
    p.add_argument("--output", help="output folder (default: runs/<config name>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--hold-at-step", type=int, metavar="N",
                   help="for tests: after step N write the checkpoint, print a line and wait to be killed")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        with open(args.config, encoding="utf-8") as f:
            config = json.load(f)
        if not isinstance(config, dict):
            raise ConfigError(f"config file {args.config!r} must hold a JSON object")
        if args.device is not None:
            config["device"] = args.device
        if args.steps is not None:
            config["steps"] = args.steps
        config = resolve_config(config)
        model = model_from_config(config)
        output = args.output or f"runs/{config['name']}"
        summary = fit(model, config, output=output, resume=args.resume, progress=not args.no_progress,
                      hold_at_step=args.hold_at_step)
    except (ConfigError, CheckpointMismatchError, FileNotFoundError, FileExistsError, json.JSONDecodeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if summary["validation"]:
        v = summary["validation"]
        print(f"step {summary['step']}: validation PSNR {v['val_psnr']:.2f} dB, SSIM {v['val_ssim']:.4f}; "
              f"output in {summary['output']}")
    else:
        print(f"step {summary['step']}; output in {summary['output']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
