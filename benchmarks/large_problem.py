"""Memory and time of the 3D operators on the large cone-beam problem of issue 3.

A 512^3 volume (1 mm voxels) and 720 views of a 768 x 768 flat detector (1.5 mm pixels, source
600 mm from the isocentre, detector 1200 mm from the source), float32: the input is 0.54 GB and
the projections 1.70 GB. The script projects and back-projects once and reports the time and the
peak memory beyond the input and the output:

- CUDA: torch.cuda.max_memory_allocated() during each call, minus the tensors it was given and
  returned (the ray-table chunk and the x/y-swapped copy of the volume are the extra).
- CPU: the process's resident memory, sampled every 5 ms during each call, minus its value before
  the call. ``--views N``
  projects only the first N views (the CPU needs about 2.5e11 ray samples for all 720, i.e. tens
  of minutes on two cores); the memory per view is then the same as for all views.

    python benchmarks/large_problem.py --device cuda
    python benchmarks/large_problem.py --device cpu --views 16

Writes benchmarks/results/large_problem_<device>.json (or --output).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import os
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import known_ops as ko  # noqa: E402

GB = 1e9


def rss_bytes() -> int:
    """Current resident memory of this process (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """Samples the resident memory every 5 ms in a thread while active; .peak is the largest value."""

    def __enter__(self):
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(device: str, fn, *tensors):
    """(result, seconds, peak memory during the call beyond what was in use before it)."""
    synchronize(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        start = time.perf_counter()
        result = fn(*tensors)
        synchronize(device)
        seconds = time.perf_counter() - start
        return result, seconds, torch.cuda.max_memory_allocated() - before
    before = rss_bytes()
    with PeakRss() as sampler:
        start = time.perf_counter()
        result = fn(*tensors)
        seconds = time.perf_counter() - start
    return result, seconds, sampler.peak - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--views", type=int, default=720, help="project only the first N of the 720 views")
    parser.add_argument("--size", type=int, default=512, help="volume edge (voxels)")
    parser.add_argument("--detector", type=int, default=768, help="detector edge (pixels)")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()

    n, m = args.size, args.detector
    vol = ko.Volume((n, n, n), spacing=512.0 / n)
    geo = ko.ConeBeam3D(ko.uniform_angles(720, 2 * math.pi), 600.0, 600.0, det_shape=(m, m), det_spacing=1.5 * 768 / m)
    A = ko.RayTransform(vol, geo).to(args.device)
    views = list(range(args.views)) if args.views < geo.n_views else None
    n_views = args.views if views is not None else geo.n_views

    x = torch.rand(vol.shape, device=args.device)
    input_bytes = x.numel() * x.element_size()
    y, t_fwd, peak_fwd = measure(args.device, lambda v: A(v, views=views), x)
    output_bytes = y.numel() * y.element_size()
    del x
    z, t_adj, peak_adj = measure(args.device, lambda p: A.T(p, views=views), y)

    # Extra = peak during the call minus the call's own output (the input existed before it).
    extra_fwd = peak_fwd - output_bytes
    extra_adj = peak_adj - z.numel() * z.element_size()
    result = {
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "volume": list(vol.shape),
        "detector": [m, m],
        "views_projected": n_views,
        "input_GB": input_bytes / GB,
        "projections_GB": output_bytes / GB,
        "forward_s": t_fwd,
        "adjoint_s": t_adj,
        "forward_peak_beyond_output_GB": extra_fwd / GB,
        "adjoint_peak_beyond_output_GB": extra_adj / GB,
        "memory_measure": "torch.cuda.max_memory_allocated" if args.device == "cuda" else "resident memory sampled every 5 ms",
    }
    for key, value in result.items():
        print(f"{key:32s} {value:.4g}" if isinstance(value, float) else f"{key:32s} {value}")
    out = args.output or Path(__file__).resolve().parent / "results" / f"large_problem_{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
