"""Timing and machine-description helpers shared by the benchmark scripts.

``measure`` runs a zero-argument callable a few times to warm it up (JIT compiles,
caches, allocator), then times repeats and reports their median. On CUDA every
repeat is bracketed by CUDA events on the current stream and read after a
synchronisation, so the figure is device time, not launch time.
"""
from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from dataclasses import dataclass, field

import torch

__all__ = ["Timing", "measure", "machine_info"]


@dataclass
class Timing:
    """Wall (or CUDA event) times of one measured call, in milliseconds, and the process CPU time
    spent during each."""

    times_ms: list[float] = field(default_factory=list)
    cpu_times_ms: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def min_ms(self) -> float:
        return min(self.times_ms)

    @property
    def repeats(self) -> int:
        return len(self.times_ms)

    @property
    def cpu_per_wall(self) -> float:
        """Process CPU time / wall time over the timed calls (about the number of cores kept busy)."""
        return sum(self.cpu_times_ms) / sum(self.times_ms)


def measure(fn, *, repeats: int, warmup: int = 1, max_seconds: float = 30.0, device: str = "cpu") -> Timing:
    """Call ``fn()`` ``warmup`` times, then time up to ``repeats`` calls.

    So that slow peers do not dominate a run, the warm-up stops after a call
    that took over ``max_seconds``, and timing stops once ``max_seconds`` have
    been spent on the timed calls (after at least one).
    """
    cuda = torch.device(device).type == "cuda"
    for _ in range(warmup):
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        if time.perf_counter() - t0 > max_seconds:
            break
    timing = Timing()
    spent = 0.0
    for _ in range(repeats):
        cpu0 = time.process_time()
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            ms = start.elapsed_time(end)
        else:
            t0 = time.perf_counter()
            fn()
            ms = (time.perf_counter() - t0) * 1e3
        timing.times_ms.append(ms)
        timing.cpu_times_ms.append((time.process_time() - cpu0) * 1e3)
        spent += ms / 1e3
        if spent > max_seconds:
            break
    return timing


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str) -> dict:
    """What the figures depend on: CPU, cores, threads, versions, GPU, date."""
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "device": device,
    }
    if torch.device(device).type == "cuda":
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        info.update({
            "gpu": props.name,
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "gpu_sm_count": props.multi_processor_count,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
        })
    return info
