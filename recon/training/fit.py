"""The training loop: ``fit(model, config)``, model-agnostic.

A model is any ``nn.Module`` called as ``model(y) -> x``: sinograms ``(B, *geometry.shape)`` in,
images ``(B, *volume.shape)`` out. ``fit`` simulates the data (``recon.training.data``), trains
with the config's optimiser, schedule and loss, validates on a fixed set (PSNR, SSIM), logs
JSON lines, draws PNGs, writes checkpoints and resumes from them, in one process or under
``torchrun`` (DistributedDataParallel). The reference is ``docs/training.md``.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..metrics import psnr, ssim
from . import checkpoint as ckpt
from . import distributed
from .config import ConfigError, resolve_config, volume_and_geometry
from .data import training_data_from_config, validation_set
from .registry import build_model

__all__ = ["fit", "model_from_config", "make_optimizer", "seed_everything", "LAST", "BEST", "LOG"]

LAST, BEST, LOG, CONFIG = "last.pt", "best.pt", "log.jsonl", "config.json"
HOLD_MESSAGE = "holding at step {step}: checkpoint written; waiting to be killed"


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global RNG and torch (CPU and CUDA) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def model_from_config(config: dict) -> nn.Module:
    """The config's model, ``build_model(name, volume, geometry, **params)``, initialised after
    seeding every RNG with the config's seed (so the seed fixes the initial weights)."""
    config = resolve_config(config)
    if config["model"] is None:
        raise ConfigError("config key 'model': is required here, e.g. {\"name\": \"FBP\", \"params\": {}}")
    volume, geometry = volume_and_geometry(config)
    seed_everything(config["seed"])
    return build_model(config["model"]["name"], volume, geometry, **config["model"]["params"])


def make_optimizer(params, optim: dict, steps: int):
    """The optimiser and ``LambdaLR`` schedule of a resolved ``config["optim"]`` for a run of
    ``steps`` steps: cosine decay to 0 at ``steps``, inverse-time decay
    ``1 / (1 + decay_rate * floor(step / decay_steps))``, or constant."""
    params = list(params)
    if optim["name"] == "adam":
        optimizer = torch.optim.Adam(params, lr=optim["lr"], betas=tuple(optim["betas"]), eps=optim["eps"],
                                     weight_decay=optim["weight_decay"])
    else:
        optimizer = torch.optim.RMSprop(params, lr=optim["lr"], alpha=optim["alpha"], eps=optim["eps"],
                                        momentum=optim["momentum"], weight_decay=optim["weight_decay"])
        if optim["square_avg_init"]:
            # TensorFlow 1's RMSProp (Adler and Oektem 2017) starts its mean square at 1, torch's at 0: with 0 the
            # first steps move every parameter by about lr / sqrt(1 - alpha), with 1 by about lr * gradient.
            for p in params:
                optimizer.state[p].update(step=torch.zeros((), dtype=torch.get_default_dtype()),
                                          square_avg=torch.full_like(p, optim["square_avg_init"], memory_format=torch.preserve_format))
                if optim["momentum"]:
                    optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    if optim["schedule"] == "cosine":
        def factor(s):
            return 0.5 * (1.0 + math.cos(math.pi * min(s, steps) / steps))
    elif optim["schedule"] == "inverse_time":
        def factor(s):
            return 1.0 / (1.0 + optim["decay_rate"] * (s // optim["decay_steps"]))
    else:
        def factor(s):
            return 1.0
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _sum_squared_error(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The squared error summed over each image, averaged over the batch (Adler and Oektem 2017)."""
    return (recon - x).square().flatten(1).sum(1).mean()


_LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss, "sse": _sum_squared_error}


def _autocast(amp, device: torch.device):
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


class _Log:
    """The JSON-lines log (main process only): one object per logged step."""

    def __init__(self, path: Path | None, keep_until: int | None):
        self.path = path
        if path is None:
            return
        lines = []
        if keep_until is not None and path.exists():  # resuming: drop the steps after the checkpoint
            lines = [line for line in path.read_text().splitlines() if self._step(line) <= keep_until]
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in lines))
        os.replace(tmp, path)

    @staticmethod
    def _step(line: str) -> float:
        try:
            return json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):  # e.g. a line torn by a kill: dropped
            return math.inf

    def write(self, record: dict) -> None:
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


class _NoBar:
    def update(self, n):
        pass

    def set_postfix(self, postfix=None, **kwargs):
        pass

    def close(self):
        pass


def _progress_bar(enabled: bool, **kwargs):
    """A tqdm bar (tqdm is imported only when a bar is shown)."""
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        raise ImportError("the progress bar needs tqdm: pip install tqdm (or pass progress=False / --no-progress)") from None
    return tqdm(**kwargs)


@torch.no_grad()
def _validate(model: nn.Module, names, x, y, batch_size: int, amp, device) -> tuple[dict, torch.Tensor]:
    was_training = model.training
    model.eval()
    outs = []
    for i in range(0, len(y), batch_size):
        with _autocast(amp, device):
            outs.append(model(y[i:i + batch_size]).float())
    model.train(was_training)
    out = torch.cat(outs)
    ndim = x.dim() - 1
    smallest = min(x.shape[1:])
    win = min(7, smallest if smallest % 2 else smallest - 1)  # SSIM's 7-pixel window, smaller for thin images
    p = psnr(out, x, ndim=ndim)
    s = ssim(out, x, ndim=ndim, win_size=win) if win >= 3 else torch.full_like(p, math.nan)
    metrics = {"val_psnr": float(p.mean()), "val_ssim": float(s.mean())}
    if "shepp_logan" in names:
        k = names.index("shepp_logan")
        metrics.update(val_psnr_shepp_logan=float(p[k]), val_ssim_shepp_logan=float(s[k]))
    return metrics, out


def _save_png(path: Path, names, x, out, step: int) -> None:
    """Truth (top) and reconstruction (bottom) of up to 4 validation images (3D: middle slice)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        warnings.warn("matplotlib is not installed: no validation PNGs (set \"png\": false to silence this)")
        return
    n = min(4, len(names))
    fig = Figure(figsize=(2.4 * n, 5.0))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, n, squeeze=False)
    for k in range(n):
        truth, recon = x[k], out[k]
        if truth.dim() == 3:
            truth, recon = truth[truth.shape[0] // 2], recon[recon.shape[0] // 2]
        lo, hi = float(truth.min()), float(truth.max())
        value = float(psnr(recon, truth))
        for row, image, title in ((0, truth, names[k]), (1, recon, f"{value:.2f} dB")):
            ax = axes[row][k]
            ax.imshow(image.cpu().numpy(), cmap="gray", vmin=lo, vmax=hi, origin="lower")
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.suptitle(f"step {step}: truth (top), reconstruction (bottom)", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def fit(model: nn.Module, config: dict, *, output=None, resume: bool = False, images=None,
        validation_images=None, progress: bool = True, hold_at_step: int | None = None) -> dict:
    """Train ``model`` as ``config`` says; returns a summary dict.

    ``output``: folder for ``log.jsonl``, ``config.json``, ``last.pt``, ``best.pt`` and
    ``validation/step_NNNNNNN.png`` (``None``: write nothing). ``resume=True`` continues from
    ``output/last.pt`` (bit-identical on the CPU); without it an existing ``last.pt`` is an error.
    ``images``: a tensor ``(N, *volume.shape)`` or dataset of images for ``data.source
    "images"``; ``validation_images``: more validation images (projected and noised).
    ``progress``: a tqdm bar. ``hold_at_step``: after step N, write the checkpoint, print
    ``holding at step N ...`` to stdout and wait to be killed (for tests of kill-and-resume).

    Under ``torchrun`` (``WORLD_SIZE > 1``) each process trains on its share of each global batch
    of ``batch_size`` items, gradients are averaged by DistributedDataParallel, and only rank 0
    validates and writes files.
    """
    config = resolve_config(config)
    volume, geometry = volume_and_geometry(config)
    out = None if output is None else Path(output)
    if resume and out is None:
        raise ValueError("resume=True needs output=, the folder of the run to continue")
    context = distributed.setup(config["device"])
    try:
        summary = _train(model, config, volume, geometry, out, resume, images, validation_images, progress,
                         hold_at_step, context)
    except BaseException:
        if context.owns_group:
            torch.distributed.destroy_process_group()
        raise
    distributed.teardown(context)
    return summary


def _train(model, config, volume, geometry, out, resume, images, validation_images, progress, hold_at_step, ctx):
    device, main, steps = ctx.device, ctx.is_main, config["steps"]
    last_path = None if out is None else out / LAST
    saved = None
    if resume:
        saved = ckpt.load_checkpoint(last_path)
        ckpt.check_compatible(saved, config, last_path)
        if saved["data"]["global_batch"] != config["batch_size"]:
            raise ckpt.CheckpointMismatchError(
                f"checkpoint {os.fspath(last_path)!r} was trained with batch_size {saved['data']['global_batch']}, "
                f"the config says {config['batch_size']}: keep the global batch size to resume the same data stream")
    elif last_path is not None and last_path.exists():
        raise FileExistsError(f"{os.fspath(last_path)!r} exists: resume that run (resume=True, --resume) or train "
                              "into another output folder")
    if main and out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG).write_text(json.dumps(config, indent=1) + "\n")

    if saved is None:
        seed_everything(config["seed"])
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (nothing requires grad)")
    optimizer, scheduler = make_optimizer(params, config["optim"], steps)
    scaler = torch.amp.GradScaler(device.type, enabled=config["amp"] == "fp16")
    start, position, best, elapsed = 0, 0, {"psnr": None, "step": None}, 0.0
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if scaler.is_enabled() and saved["scaler"]:
            scaler.load_state_dict(saved["scaler"])
        ckpt.set_rng_state(saved["rng"])
        start, position, best, elapsed = saved["step"], saved["data"]["position"], dict(saved["best"]), saved["elapsed"]

    net = model
    if ctx.distributed:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                      broadcast_buffers=False)
    if config["compile"]:
        net = torch.compile(net)
    data = training_data_from_config(config, volume, geometry, ctx.rank, ctx.world_size, device, images)
    val_cfg = config["data"]["validation"]
    has_validation = bool(val_cfg["shepp_logan"] or val_cfg["random_ellipses"] or val_cfg["images"]
                          or validation_images is not None)
    val = None
    if main and has_validation:
        names, xv, yv = validation_set(config, volume, geometry, validation_images)
        val = (names, xv.to(device), yv.to(device))
    loss_fn = _LOSSES[config["loss"]]
    log = _Log(out / LOG if main and out is not None else None, start if saved is not None else None)
    bar = _progress_bar(progress and main, total=steps, initial=min(start, steps), unit="step", desc=config["name"],
                        dynamic_ncols=True)
    t0 = time.perf_counter()

    def state(step):
        return {
            "format": ckpt.FORMAT, "step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "rng": ckpt.rng_state(), "data": {"position": position, "global_batch": config["batch_size"]},
            "best": dict(best), "elapsed": elapsed + time.perf_counter() - t0, "world_size": ctx.world_size,
            "config": config,
        }

    def validate(step):
        metrics, recon = _validate(model, *val, config["batch_size"], config["amp"], device)
        if config["png"] and out is not None:
            _save_png(out / "validation" / f"step_{step:07d}.png", val[0], val[1], recon, step)
        return metrics

    metrics = {}
    if saved is None and val is not None:  # the starting point, e.g. analytic FBP for a learnable one
        metrics = validate(0)
        log.write({"step": 0, **metrics, "time": 0.0})
        bar.set_postfix(val_psnr=f"{metrics['val_psnr']:.2f}")
    step, loss_value = start, None
    interval_start, interval_steps = time.perf_counter(), 0
    clip = config["optim"]["clip_grad_norm"] or math.inf
    net.train()
    for x, y in data.batches(position, max(0, steps - start)):
        step += 1
        lr = optimizer.param_groups[0]["lr"]
        optimizer.zero_grad(set_to_none=True)
        with _autocast(config["amp"], device):
            recon = net(y)
        if recon.shape != x.shape:
            raise ValueError(f"the model returned shape {tuple(recon.shape)} for sinograms {tuple(y.shape)}; "
                             f"expected images {tuple(x.shape)}")
        loss = loss_fn(recon.float(), x)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        position += config["batch_size"]
        interval_steps += 1
        bar.update(1)

        validate_now = has_validation and (step % config["validate_every"] == 0 or step == steps)
        if validate_now or step % config["log_every"] == 0 or step == steps:
            loss_value = float(distributed.all_mean(loss.detach(), ctx))  # every rank takes part
            now = time.perf_counter()
            record = {"step": step, "loss": loss_value, "lr": lr, "grad_norm": float(grad_norm),
                      "steps_per_s": interval_steps / (now - interval_start), "time": elapsed + now - t0}
            if validate_now and main:
                metrics = validate(step)
                record.update(metrics)
                if config["keep_best"] and out is not None and (best["psnr"] is None or metrics["val_psnr"] > best["psnr"]):
                    best = {"psnr": metrics["val_psnr"], "step": step}
                    ckpt.save_checkpoint(out / BEST, state(step))
            log.write(record)
            postfix = {"loss": f"{loss_value:.3g}"}
            if metrics:
                postfix["val_psnr"] = f"{metrics['val_psnr']:.2f}"
            bar.set_postfix(postfix)
            interval_start, interval_steps = time.perf_counter(), 0
        if main and out is not None and (step % config["checkpoint_every"] == 0 or step == steps or step == hold_at_step):
            t = time.perf_counter()
            ckpt.save_checkpoint(last_path, state(step))
            interval_start += time.perf_counter() - t  # steps/s counts training only
        if step == hold_at_step:
            bar.close()
            print(HOLD_MESSAGE.format(step=step), flush=True)
            while True:
                time.sleep(3600)
    bar.close()
    return {"step": step, "loss": loss_value, "validation": metrics, "best": best,
            "output": None if out is None else os.fspath(out)}
