"""Time the voxel-driven pair (model="voxel", FDK weighting: the FBP/FDK back-projector) and
FBP / FDK end to end, on one device, and count voxel-view updates per second.

    python benchmarks/voxel_timing.py [--device cuda] [--cases fbp512,fdk128,fdk256] [--repeats 10]
                                      [--output-dir benchmarks/results] [--name voxel_timing]

Cases (float32, one image or volume):
  fbp512   2D parallel beam, 512 x 512 pixels, 720 views over pi, 768 bins
  fan512   2D flat fan beam, 512 x 512 pixels, 720 views over 2 pi, 1024 bins
  fdk128   circular cone beam, 128^3 voxels, 180 views of 128 x 192
  fdk256   circular cone beam, 256^3 voxels, 256 views of 256 x 384 (CUDA only by default)
Work = voxels x views (each back-projection does one detector interpolation per voxel and view).
Writes <name>.json and <name>.md into the output directory.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

import known_ops as ko  # noqa: E402
import recon  # noqa: E402
from _timing import machine_info, measure  # noqa: E402


def _case(name: str):
    if name == "fbp512":
        return ko.Volume((512, 512)), ko.ParallelBeam2D(ko.uniform_angles(720, math.pi), 768, 1.0)
    if name == "fan512":
        return ko.Volume((512, 512)), ko.FanBeam2D(ko.uniform_angles(720, 2 * math.pi), 1000.0, 500.0, 1024, 1.2)
    if name == "fdk128":
        return ko.Volume((128, 128, 128)), ko.ConeBeam3D(ko.uniform_angles(180, 2 * math.pi), 400.0, 200.0, (128, 192), 1.5)
    if name == "fdk256":
        return ko.Volume((256, 256, 256)), ko.ConeBeam3D(ko.uniform_angles(256, 2 * math.pi), 800.0, 400.0, (256, 384), 1.5)
    raise SystemExit(f"unknown case {name!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cases", default=None, help="comma-separated (default: all but fdk256 on the CPU)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--output-dir", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--name", default="voxel_timing")
    args = parser.parse_args()
    device = torch.device(args.device)
    cases = args.cases.split(",") if args.cases else (
        ["fbp512", "fan512", "fdk128", "fdk256"] if device.type == "cuda" else ["fbp512", "fan512", "fdk128"])
    rows = []
    for name in cases:
        volume, geometry = _case(name)
        A = ko.RayTransform(volume, geometry, model="voxel", weighting="fdk").to(device)
        reconstruct = recon.FBP(volume, geometry).to(device)
        x = torch.rand(volume.shape, device=device)
        y = torch.rand(geometry.shape, device=device)
        work = math.prod(volume.shape) * geometry.n_views
        row = {"case": name, "volume": list(volume.shape), "projections": list(geometry.shape), "voxel_views": work}
        with torch.no_grad():
            for label, fn in (("forward", lambda: A(x)), ("back_projection", lambda: A.T(y)),
                              ("fbp_or_fdk", lambda: reconstruct(y))):
                t = measure(fn, repeats=args.repeats, device=args.device)
                row[f"{label}_ms"] = t.median_ms
                row[f"{label}_voxel_views_per_s"] = work / (t.median_ms / 1e3)
        rows.append(row)
        print(f"{name:7s} forward {row['forward_ms']:9.2f} ms  back-projection {row['back_projection_ms']:9.2f} ms "
              f"({row['back_projection_voxel_views_per_s']:.2e} voxel-views/s)  FBP/FDK {row['fbp_or_fdk_ms']:9.2f} ms")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine_info(args.device), "rows": rows}
    (args.output_dir / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Voxel-driven pair and FBP/FDK timings ({args.device})", "",
             "| case | volume | projections | forward (ms) | back-projection (ms) | voxel-views/s | FBP/FDK (ms) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {'x'.join(map(str, r['volume']))} | {'x'.join(map(str, r['projections']))} | "
                     f"{r['forward_ms']:.2f} | {r['back_projection_ms']:.2f} | {r['back_projection_voxel_views_per_s']:.2e} | "
                     f"{r['fbp_or_fdk_ms']:.2f} |")
    (args.output_dir / f"{args.name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
