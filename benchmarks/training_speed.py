"""Training throughput of every learned model on Adler and Oektem's ellipse set-up.

128 x 128 pixels of 1 mm, 30 parallel views of 183 bins, batch 5, Adam and the MSE loss: one
training step (forward, backward, optimiser step) per model, timed after a warm-up, each model in its
own process (so that its peak memory is its own). Reported per model: parameters, seconds per step,
steps per second, the share of the step spent in the library's projectors (torch.profiler: the self
time of the ``known_ops::`` operators over the step's wall time), and the peak memory (CPU: the
process's peak resident memory; CUDA: ``torch.cuda.max_memory_allocated``). Beside it, in the same
run, LearnedPrimalDual built on the classic stack: ODL's ray transform over ASTRA's CPU projector
through a ``torch.autograd.Function``, as dival does (skipped with a reason if ODL or ASTRA is
missing: ``pip install odl astra-toolbox``), and LearnedPrimalDual under ``torch.compile`` and bf16
autocast.

    python benchmarks/training_speed.py [--device cuda] [--steps 10] [--models LearnedPrimalDual ...]

Writes ``benchmarks/results/training_speed{_cuda}.{json,md}``. The training data of the step is
simulated once before timing (the random ellipses' exact sinograms, 5 % noise); the harness's data
simulation is measured separately in the ``data`` row.
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import known_ops as ko  # noqa: E402
import phantoms  # noqa: E402
from _timing import machine_info  # noqa: E402
from recon.learned import count_parameters  # noqa: E402

RESULTS = HERE / "results"
BATCH = 5
# Adler and Oektem, Inverse Problems 2017, sec. 5: the partially learned gradient scheme trained for
# 1e5 steps "in about four days" on a GTX Titan (their batch of 20 images): about 3.5 s a step.
ADLER_2017_SECONDS_PER_STEP = 4 * 24 * 3600 / 1e5

VARIANTS = {
    # name: (model class, keyword arguments, options)
    "LearnedFBP": ("LearnedFBP", {"filter": "hann", "learn_filter": True}, {}),
    "VariationalNetwork": ("VariationalNetwork", {}, {}),
    "LearnedGradient": ("LearnedGradient", {}, {}),
    "LearnedPrimal": ("LearnedPrimal", {}, {}),
    "LearnedPrimalDual": ("LearnedPrimalDual", {}, {}),
    "UNetPostProcessing": ("UNetPostProcessing", {}, {}),
    "LearnedPrimalDual (torch.compile)": ("LearnedPrimalDual", {}, {"compile": True}),
    "LearnedPrimalDual (bf16 autocast)": ("LearnedPrimalDual", {}, {"amp": True}),
    "LearnedPrimalDual on ODL + ASTRA (dival style)": ("LearnedPrimalDual", {}, {"odl": True}),
}


def adler_setup():
    """128 x 128 pixels of 1 mm on [-64, 64]^2; 30 views at the midpoints of equal cells of [0, pi);
    183 bins over [-64 sqrt 2, 64 sqrt 2] (ODL's parallel_beam_geometry)."""
    volume = ko.Volume((128, 128), 1.0)
    rho = 64 * math.sqrt(2)
    n_det = 2 * math.ceil(rho) + 1
    geometry = ko.ParallelBeam2D((np.arange(30) + 0.5) * math.pi / 30, n_det, det_spacing=2 * rho / n_det)
    return volume, geometry


# --- the classic stack: ODL over ASTRA through an autograd.Function ------------------------------------


class _OdlApply(torch.autograd.Function):
    """``op`` applied item by item through NumPy (as ODL's torch wrappers and dival do); the backward
    applies ``op_t`` (the transpose)."""

    @staticmethod
    def forward(ctx, x, op, op_t):
        ctx.op, ctx.op_t = op, op_t
        items = x.detach().cpu().numpy()
        return torch.from_numpy(np.stack([np.asarray(op(item).data) for item in items])).to(x.device, x.dtype)

    @staticmethod
    def backward(ctx, grad):
        return _OdlApply.apply(grad, ctx.op_t, ctx.op), None, None


class OdlRayTransform(ko.LinearOperator):
    """ODL's ``RayTransform`` (impl ``astra_cpu``) as a LinearOperator with the exact transpose. ODL's
    ``adjoint`` is the adjoint in its weighted spaces, a multiple ``c A^T`` of the transpose; ``c`` is
    measured once from a random pair, ``c = <x, adjoint(y)> / <A x, y>`` (the benchmark checks the
    result with the adjointness test)."""

    def __init__(self, volume, geometry):
        super().__init__()
        import odl
        from odl.applications import tomo

        space = odl.uniform_discr([-64, -64], [64, 64], volume.shape, dtype="float32")
        odl_geometry = tomo.parallel_beam_geometry(space, num_angles=geometry.n_views)
        self.op = tomo.RayTransform(space, odl_geometry, impl="astra_cpu")
        rng = np.random.default_rng(0)
        x = rng.random(space.shape).astype("float32")
        y = rng.random(self.op.range.shape).astype("float32")
        ratio = float(np.vdot(x, self.op.adjoint(y).data) / np.vdot(self.op(x).data, y))
        self.transpose = (1.0 / ratio) * self.op.adjoint
        self.domain_shape = tuple(volume.shape)
        # ODL indexes images (x, y) and sinograms (angle, detector): transposes convert our (y, x) images.
        self.range_shape = tuple(self.op.range.shape)

    def forward(self, x):
        lead = x.shape[: x.dim() - 2]
        flat = x.reshape(-1, *self.domain_shape).transpose(-1, -2)
        return _OdlApply.apply(flat, self.op, self.transpose).reshape(lead + self.range_shape)

    def adjoint(self, y):
        lead = y.shape[: y.dim() - 2]
        flat = y.reshape(-1, *self.range_shape)
        return _OdlApply.apply(flat, self.transpose, self.op).transpose(-1, -2).reshape(lead + self.domain_shape)


# --- one model, in its own process ------------------------------------------------------------------------


def _training_batch(volume, geometry):
    noise = phantoms.GaussianNoise(0.05)
    data = phantoms.RandomEllipsesDataset(BATCH, volume, geometry, seed=0, noise=noise)
    t0 = time.perf_counter()
    pairs = [data[k] for k in range(BATCH)]
    seconds = time.perf_counter() - t0
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs]), seconds


def run_worker(variant: str, device: str, steps: int) -> dict:
    import recon.learned as learned

    torch.manual_seed(0)
    name, kwargs, options = VARIANTS[variant]
    volume, geometry = adler_setup()
    if options.get("odl"):
        try:
            import astra  # noqa: F401
            import odl  # noqa: F401
        except ImportError as error:
            return {"variant": variant, "skipped": f"{error.name} is not installed (pip install odl astra-toolbox)"}
        if device != "cpu":
            return {"variant": variant, "skipped": "the ODL/ASTRA CPU baseline runs on the CPU only"}
        operator = OdlRayTransform(volume, geometry)
        kwargs = {**kwargs, "operator": operator}
        odl_adjointness = operator.adjointness_test(dtype=torch.float32)
    cls = getattr(learned, name, None)
    if cls is None:
        return {"variant": variant, "skipped": f"recon.learned has no {name}"}
    x, y, data_seconds = _training_batch(volume, geometry)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    model = cls(volume, geometry, **kwargs).to(device)
    x, y = x.to(device), y.to(device)
    net = torch.compile(model) if options.get("compile") else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.99))
    amp = options.get("amp")

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bool(amp)):
            out = net(y)
        loss = torch.nn.functional.mse_loss(out.float(), x)
        loss.backward()
        optimizer.step()
        if device != "cpu":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    step()  # warm-up (and compilation)
    first = time.perf_counter() - t0
    step()
    if device != "cpu":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]
                                + ([torch.profiler.ProfilerActivity.CUDA] if device != "cpu" else [])) as prof:
        t0 = time.perf_counter()
        step()
        profiled = time.perf_counter() - t0
    events = prof.key_averages()
    attr = "self_device_time_total" if device != "cpu" else "self_cpu_time_total"
    projector_us = sum(getattr(e, attr) for e in events if e.key.startswith("known_ops::") or "_OdlApply" in e.key)
    total_us = profiled * 1e6 if device == "cpu" else sum(getattr(e, attr) for e in events)
    result = {
        "variant": variant,
        "model": name,
        "parameters": count_parameters(model),
        "seconds_per_step": float(np.median(times)),
        "seconds_per_step_min": float(np.min(times)),
        "first_step_seconds": first,
        "steps_timed": len(times),
        "projector_share": projector_us / total_us if total_us else math.nan,
        "data_seconds_per_batch": data_seconds,
    }
    if options.get("odl"):
        result["odl_adjointness_float32"] = odl_adjointness
    if device == "cpu":
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result.update(peak_memory_mb=peak, memory_increase_mb=peak - rss0)
    else:
        result.update(peak_memory_mb=torch.cuda.max_memory_allocated() / 2**20)
    return result


# --- the table --------------------------------------------------------------------------------------------


def _markdown(results: list[dict], machine: dict, device: str, steps: int) -> str:
    where = machine.get("gpu") or f"{machine['cpu_model']}, {machine['cpu_count']} cores, {machine['torch_threads']} threads"
    lines = [
        "# Training throughput of the learned models",
        "",
        f"Adler and Oektem's set-up: 128 x 128 pixels, 30 parallel views of 183 bins, batch {BATCH}, Adam, MSE; "
        f"median of {steps} training steps after two warm-up steps; {device} ({where}); torch {machine['torch']}; "
        f"{machine['date']}.",
        "",
        "| model | parameters | s / step | steps / s | in projectors | peak memory (MB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if "skipped" in r:
            lines.append(f"| {r['variant']} | | | | | skipped: {r['skipped']} |")
            continue
        lines.append(
            f"| {r['variant']} | {r['parameters']:,} | {r['seconds_per_step']:.3f} | {1 / r['seconds_per_step']:.2f} | "
            f"{100 * r['projector_share']:.0f} % | {r['peak_memory_mb']:.0f} |")
    data = [r["data_seconds_per_batch"] for r in results if "data_seconds_per_batch" in r]
    by_name = {r["variant"]: r for r in results if "skipped" not in r}
    base = by_name.get("LearnedPrimalDual")
    lines.append("")
    if base:
        for variant, what in (("LearnedPrimalDual on ODL + ASTRA (dival style)", "the ODL + ASTRA stack"),
                              ("LearnedPrimalDual (torch.compile)", "torch.compile (inductor)"),
                              ("LearnedPrimalDual (bf16 autocast)", "bf16 autocast")):
            if variant in by_name:
                ratio = by_name[variant]["seconds_per_step"] / base["seconds_per_step"]
                lines.append(f"- LearnedPrimalDual with {what}: {ratio:.2f} x the time of a step on this library's "
                             "operators in eager float32, same run.")
    lines += [
        "",
        f"- Simulating one batch of {BATCH} random-ellipse phantoms with exact sinograms and noise (the harness's "
        f"default data, CPU): {np.median(data):.2f} s (median over the runs); the harness overlaps it with training "
        "when `data.workers > 0`.",
        f"- For scale: Adler and Oektem trained the partially learned gradient scheme for 1e5 steps in about four days on "
        f"a GTX Titan (Inverse Problems 2017), about {ADLER_2017_SECONDS_PER_STEP:.1f} s a step with batches of 20.",
        "- *in projectors*: self time of the `known_ops::` operators (forward and back projections, their autograd "
        "calls; for the ODL row, the ODL/ASTRA calls) over the profiled step's wall time; the rest is mostly the "
        "convolutions.",
        "- The ODL + ASTRA row runs the same LearnedPrimalDual with ODL's ray transform (impl `astra_cpu`) applied "
        "item by item through NumPy in a `torch.autograd.Function`, with the exact transpose as its backward.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per model")
    parser.add_argument("--models", nargs="*", default=list(VARIANTS), help="variants to run (default: all)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(args.worker, args.device, args.steps)))
        return 0
    results = []
    for variant in args.models:
        if variant not in VARIANTS:
            raise SystemExit(f"unknown variant {variant!r}; known: {list(VARIANTS)}")
        proc = subprocess.run([sys.executable, __file__, "--worker", variant, "--device", args.device,
                               "--steps", str(args.steps)], capture_output=True, text=True)
        if proc.returncode != 0:
            results.append({"variant": variant, "skipped": f"failed: {proc.stderr.strip().splitlines()[-1]}"})
        else:
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    machine = machine_info(args.device)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    name = "training_speed" + ("" if args.device == "cpu" else "_cuda")
    (out / f"{name}.json").write_text(json.dumps({"machine": machine, "batch": BATCH, "steps": args.steps,
                                                  "results": results}, indent=2))
    table = _markdown(results, machine, args.device, args.steps)
    (out / f"{name}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
