"""Quality tables of analytic reconstruction: accuracy against peers, and two experiment reproductions.

Usage (from the repository root)::

    python benchmarks/analytic.py                          # every part, full sizes
    python benchmarks/analytic.py --part accuracy          # one part; the others' entries are kept
    python benchmarks/analytic.py --quick                  # tiny sizes, into a temporary directory
    python benchmarks/analytic.py --quick --output-dir /tmp/analytic_quick

Parts (run in this order, each a function ``run_*(quick, output_dir) -> (dict, markdown)``):

  accuracy       FBP (parallel; fan full and short scan) and FDK of the modified Shepp-Logan
                 phantom from exact projections: PSNR, SSIM, flat-region means, next to ASTRA's
                 CPU FBP and scikit-image's iradon, with timing ratios
                 (benchmarks/_analytic_accuracy.py)
  adler-oktem    the Adler-Oektem ellipse experiment (benchmarks/_analytic_experiments.py)
  limited-angle  the limited-angle experiment (benchmarks/_analytic_experiments.py)

Results: ``<output-dir>/analytic.json`` holds one entry per part (its result, its Markdown
section, the machine and the date it ran on); a run merges its parts into the file and keeps the
others. ``<output-dir>/analytic.md`` is then rewritten from the whole JSON: a header with the
machine, then one section per part. A part that raises is reported as failed (and its entry
from an earlier run is kept); the other parts still run. ``--quick`` never writes into
benchmarks/results: without ``--output-dir`` it uses a fresh temporary directory.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(ROOT), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from _timing import machine_info  # noqa: E402

RESULTS = HERE / "results"
JSON_NAME = "analytic.json"
MD_NAME = "analytic.md"

# part -> (module in benchmarks/, function, title of its section when it has no result)
PARTS = {
    "accuracy": ("_analytic_accuracy", "run_accuracy", "Accuracy: FBP and FDK from exact analytic projections"),
    "adler-oktem": ("_analytic_experiments", "run_adler_oktem", "Adler-Oktem experiment"),
    "limited-angle": ("_analytic_experiments", "run_limited_angle", "Limited-angle experiment"),
}
ORDER = tuple(PARTS)


def load_part(name: str):
    """The ``run_*`` function of part ``name`` (its module imported on first use)."""
    module_name, function, _ = PARTS[name]
    return getattr(importlib.import_module(module_name), function)


def _read_json(path: Path) -> dict:
    if not path.exists():
        return {"parts": {}}
    with open(path) as f:
        data = json.load(f)
    data.setdefault("parts", {})
    return data


def _machine_lines(info: dict) -> list[str]:
    keys = ("date", "cpu_model", "cpu_count", "cpu_affinity", "torch", "torch_threads", "python", "platform", "host",
            "device", "gpu")
    return [f"- {k}: {info[k]}" for k in keys if info.get(k) is not None]


def render_markdown(data: dict, unavailable: dict[str, str] | None = None) -> str:
    """The whole analytic.md from the JSON: header with the machine, then the parts in ORDER
    (``unavailable``: part -> why it has no result, e.g. it failed)."""
    unavailable = unavailable or {}
    parts = data.get("parts", {})
    lines = ["# Analytic reconstruction: quality tables", "",
             "Written by `python benchmarks/analytic.py` (see its docstring and docs/reconstruction.md, "
             "\"Quality tables\"); every number below was measured by it, on the machine named with each part.", ""]
    if any(entry.get("quick") for entry in parts.values()):
        lines += ["**Quick smoke run: tiny problem sizes, the numbers are not results.**", ""]
    if data.get("machine"):
        lines += ["Machine of the latest run:", "", *_machine_lines(data["machine"]), ""]
    for name in ORDER:
        entry = parts.get(name)
        if entry is None:
            reason = unavailable.get(name, "not run yet")
            lines += [f"## {PARTS[name][2]}", "", f"Not available: {reason}.", ""]
            continue
        machine = entry.get("machine", {})
        lines += [entry["markdown"].rstrip(), "",
                  f"_Part '{name}' ran on {entry.get('date', '?')}, {machine.get('cpu_model', '?')}, "
                  f"{machine.get('torch_threads', '?')} torch threads, in {entry.get('wall_s', float('nan')):.0f} s"
                  + (" (quick mode)" if entry.get("quick") else "") + "._", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_outputs(output_dir: Path, new_entries: dict[str, dict], unavailable: dict[str, str] | None = None,
                  machine: dict | None = None) -> dict:
    """Merge ``new_entries`` into ``output_dir/analytic.json`` (other parts kept) and rewrite analytic.md."""
    output_dir.mkdir(parents=True, exist_ok=True)
    data = _read_json(output_dir / JSON_NAME)
    data["parts"].update(new_entries)
    if machine is not None:
        data["machine"] = machine
    data["parts"] = {k: data["parts"][k] for k in [*ORDER, *sorted(set(data["parts"]) - set(ORDER))]
                     if k in data["parts"]}
    with open(output_dir / JSON_NAME, "w") as f:
        json.dump(data, f, indent=1, allow_nan=True)
        f.write("\n")
    (output_dir / MD_NAME).write_text(render_markdown(data, unavailable))
    return data


def run(parts, quick: bool, output_dir: Path) -> dict[str, str]:
    """Run ``parts`` (names from ORDER), merge their results into ``output_dir``; part -> 'ok', or
    'failed: ...' (it raised; the traceback is printed and the next part runs)."""
    output_dir = Path(output_dir)
    if quick and output_dir.resolve() == RESULTS.resolve():
        raise ValueError(f"--quick must not write into {RESULTS} (the real results): give another --output-dir")
    machine = machine_info("cpu")
    status, entries, unavailable = {}, {}, {}
    for name in ORDER:
        if name not in parts:
            continue
        fn = load_part(name)
        print(f"[analytic] running part '{name}'{' (quick)' if quick else ''} ...", flush=True)
        t0 = time.perf_counter()
        try:
            result, markdown = fn(quick, output_dir)
        except Exception as e:  # keep going: the other parts' results are still worth writing
            traceback.print_exc()
            status[name] = unavailable[name] = f"failed: {type(e).__name__}: {e}"
            print(f"[analytic] part '{name}' {status[name]} (its entry in {JSON_NAME} is left as it was)",
                  file=sys.stderr, flush=True)
            continue
        wall = time.perf_counter() - t0
        entries[name] = {"date": machine["date"], "quick": quick, "wall_s": round(wall, 1), "machine": machine,
                         "result": result, "markdown": markdown}
        status[name] = "ok"
        print(f"[analytic] part '{name}' done in {wall:.0f} s", flush=True)
        # Write after every part, so that a later failure keeps what was measured.
        write_outputs(output_dir, entries, unavailable, machine)
    write_outputs(output_dir, entries, unavailable, machine if entries else None)
    print(f"[analytic] wrote {output_dir / JSON_NAME} and {output_dir / MD_NAME}", flush=True)
    return status


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=(*ORDER, "all"), default="all", help="which part to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke test; never into benchmarks/results")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help=f"where to write analytic.json/.md and the figures (default: {RESULTS}; "
                             "with --quick a new temporary directory)")
    args = parser.parse_args(argv)
    output_dir = args.output_dir
    if output_dir is None:
        output_dir = Path(tempfile.mkdtemp(prefix="known_ops_analytic_quick_")) if args.quick else RESULTS
    parts = ORDER if args.part == "all" else (args.part,)
    try:
        status = run(parts, args.quick, output_dir)
    except ValueError as e:
        parser.error(str(e))
    failed = {k: v for k, v in status.items() if v.startswith("failed")}
    if failed:
        print("[analytic] failed parts: " + "; ".join(f"{k}: {v}" for k, v in failed.items()), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
