"""Checkpoints: data only (tensors, dicts, lists, numbers, strings), written atomically, read with
``torch.load(path, weights_only=True)``.

A checkpoint is a dict::

    format       "known-ops-training/1"
    step         steps completed
    model        the model's state_dict
    optimizer    optimizer.state_dict();  scheduler: scheduler.state_dict()
    scaler       GradScaler.state_dict() (empty when fp16 AMP is off)
    rng          {"python": ..., "numpy": ..., "torch": ByteTensor, "cuda": [ByteTensor, ...]}
    data         {"position": items of the stream consumed, "global_batch": B}
    best         {"psnr": best validation PSNR or None, "step": its step or None}
    elapsed      seconds of training so far (all runs)
    world_size   processes that trained it
    config       the resolved config (volume and geometry in to_dict() form)

Writing goes to a temporary file in the same folder, which is flushed, fsync'ed and renamed over
the target (``os.replace``), then the folder is fsync'ed: a crash leaves the old or the new file,
never a torn one.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from .config import ConfigError, resolve_config

__all__ = ["FORMAT", "CheckpointMismatchError", "save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state",
           "check_compatible", "check_same_training"]

FORMAT = "known-ops-training/1"


class CheckpointMismatchError(ValueError):
    """A checkpoint that does not belong to the config (another volume, geometry or model)."""


def rng_state() -> dict:
    """The states of Python's ``random``, NumPy's global RNG, torch's CPU RNG and (when CUDA is
    initialised) every CUDA device's RNG, as tensors and numbers."""
    version, state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {
        "python": {"version": version, "state": torch.tensor(state, dtype=torch.int64),
                   "gauss": [] if gauss is None else [gauss]},
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": list(cuda),
    }


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned (CUDA states only where CUDA is available)."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"][0] if py["gauss"] else None))
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        n = min(len(state["cuda"]), torch.cuda.device_count())
        for device in range(n):
            torch.cuda.set_rng_state(state["cuda"][device], device)


def save_checkpoint(path, checkpoint: dict) -> None:
    """Write ``checkpoint`` to ``path`` atomically (temporary file, fsync, ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint with ``torch.load(..., weights_only=True)`` (data only, never code)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from: {os.fspath(path)!r} does not exist "
                                "(start without resume, or point the output folder at a previous run)")
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise ValueError(f"{os.fspath(path)!r} is not a training checkpoint of format {FORMAT!r}")
    return checkpoint


def _differences(old, new, limit: int = 4) -> list[str]:
    """The keys in which two to_dict() descriptions (or configs) differ, nested dicts as dotted keys, with the
    values when they are not lists or dicts."""
    out = []

    def walk(old, new, prefix):
        for key in sorted(set(old) | set(new), key=str):
            name = f"{prefix}{key}"
            if (key in old) != (key in new):
                out.append(f"{name}: {'absent' if key not in old else repr(old[key])} in the checkpoint, "
                           f"{'absent' if key not in new else repr(new[key])} in the config")
                continue
            a, b = old[key], new[key]
            if a == b:
                continue
            if isinstance(a, dict) and isinstance(b, dict):
                walk(a, b, name + ".")
            elif isinstance(a, list) and isinstance(b, list):
                detail = f"{len(a)} entries" if len(a) == len(b) else f"{len(a)} vs {len(b)} entries"
                out.append(f"{name} ({detail}, values differ)" if len(a) == len(b) else f"{name} ({detail})")
            else:
                out.append(f"{name}: {a!r} in the checkpoint, {b!r} in the config")

    walk(old, new, "")
    return out[:limit] + ([f"and {len(out) - limit} more"] if len(out) > limit else [])


def check_same_training(checkpoint: dict, config: dict, path="checkpoint", free=("device",)) -> None:
    """Raise :class:`CheckpointMismatchError` naming what differs when ``checkpoint`` was trained with another
    config than ``config`` (any entry but those in ``free``): reusing it would misreport the model's budget.
    The checkpoint's config is resolved first, so that a config key added to the harness since, at its
    default, does not count as a difference."""
    try:
        saved = resolve_config(checkpoint["config"])
    except ConfigError:
        saved = checkpoint["config"]  # no longer valid: compared as saved, the differences are named
    saved = {k: v for k, v in saved.items() if k not in free}
    wanted = {k: v for k, v in config.items() if k not in free}
    if saved != wanted:
        raise CheckpointMismatchError(
            f"checkpoint {os.fspath(path)!r} was trained with another config: {'; '.join(_differences(saved, wanted))}. "
            f"Delete its folder to train again, or train into a new folder"
        )


def check_compatible(checkpoint: dict, config: dict, path="checkpoint") -> None:
    """Raise :class:`CheckpointMismatchError` naming what differs when the checkpoint's volume,
    geometry or model (name and parameters) are not those of ``config``."""
    saved = checkpoint["config"]
    for key in ("volume", "geometry", "model"):
        old, new = saved.get(key), config.get(key)
        if key == "model" and (old is None or new is None):
            continue
        if old != new:
            what = "; ".join(_differences(old or {}, new or {}))
            raise CheckpointMismatchError(
                f"the {key} of checkpoint {os.fspath(path)!r} does not match the config's: {what}. Resume with the "
                f"config the checkpoint was written for (its config is stored in it), or train into a new folder"
            )
