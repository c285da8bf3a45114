"""Smoke test of the quality-table driver benchmarks/analytic.py: every part in quick mode into a
temporary directory (JSON, Markdown, figure), and the merge that keeps other parts' entries."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

pytest.importorskip("matplotlib", reason="the quality tables draw figures with matplotlib")

# Loaded from its file under a unique name (a plain "import analytic" could pick up another module).
_spec = importlib.util.spec_from_file_location("known_ops_benchmarks_analytic", BENCHMARKS / "analytic.py")
analytic = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(analytic)


def test_quick_run_writes_json_markdown_and_figure(tmp_path):
    status = analytic.main(["--quick", "--output-dir", str(tmp_path)])
    assert status == 0
    data = json.loads((tmp_path / "analytic.json").read_text())
    markdown = (tmp_path / "analytic.md").read_text()
    assert markdown.startswith("# Analytic reconstruction: quality tables")
    assert "Machine of the latest run" in markdown

    entry = data["parts"]["accuracy"]
    assert entry["quick"] is True
    result = entry["result"]
    assert set(result["cases"]) == {"parallel", "fan_full", "fan_short", "fdk"}
    assert (tmp_path / result["figure"]).is_file()
    ours = result["cases"]["parallel"]["rows"][0]
    assert ours["method"].startswith("ours") and ours["time_s"] > 0 and ours["psnr_db"] > 15
    # Even on the tiny quick grid the brain region comes back within a few per cent.
    brain = next(r for r in ours["regions"] if r["region"].startswith("brain"))
    assert brain["pixels"] > 0 and abs(brain["rel_error"]) < 0.05
    for case in ("fan_full", "fan_short"):
        assert any("n/a" in (r.get("note") or "") for r in result["cases"][case]["rows"])
    assert "regions_whole_volume" in result["cases"]["fdk"]["rows"][0]

    # One section per part, in the driver's order.
    assert set(data["parts"]) == {"accuracy", "adler-oktem", "limited-angle"}
    for name in ("adler-oktem", "limited-angle"):
        assert data["parts"][name]["quick"] is True and data["parts"][name]["markdown"].strip()
    heads = [data["parts"][name]["markdown"].strip().splitlines()[0] if name in data["parts"]
             else f"## {analytic.PARTS[name][2]}" for name in analytic.ORDER]
    positions = [markdown.find(h) for h in heads]
    assert min(positions) >= 0 and positions == sorted(positions), positions


def test_one_part_keeps_the_other_entries(tmp_path):
    other = {"date": "earlier", "quick": True, "wall_s": 1.0, "machine": {}, "result": {"value": 42},
             "markdown": "## Limited-angle experiment\n\nkept from an earlier run\n"}
    (tmp_path / "analytic.json").write_text(json.dumps({"parts": {"limited-angle": other}}))
    mine = {"date": "now", "quick": True, "wall_s": 1.0, "machine": {}, "result": {}, "markdown": "## Accuracy: x\n"}
    data = analytic.write_outputs(tmp_path, {"accuracy": mine}, {"adler-oktem": "missing here"})
    assert list(data["parts"]) == ["accuracy", "limited-angle"]
    stored = json.loads((tmp_path / "analytic.json").read_text())
    assert stored["parts"]["limited-angle"]["result"] == {"value": 42}
    markdown = (tmp_path / "analytic.md").read_text()
    assert markdown.index("## Accuracy: x") < markdown.index("Not available: missing here") < markdown.index(
        "kept from an earlier run")


def test_quick_never_writes_into_the_real_results(tmp_path):
    with pytest.raises(ValueError, match="must not write into"):
        analytic.run(("accuracy",), True, analytic.RESULTS)


def test_a_failing_part_is_reported_clearly(tmp_path, monkeypatch, capsys):
    def broken(quick, output_dir):
        raise RuntimeError("broken on purpose")

    monkeypatch.setattr(analytic, "load_part", lambda name: broken)
    assert analytic.main(["--part", "limited-angle", "--quick", "--output-dir", str(tmp_path)]) == 1
    assert "broken on purpose" in capsys.readouterr().err
    assert "Not available: failed: RuntimeError: broken on purpose" in (tmp_path / "analytic.md").read_text()


def test_adler_ellipses_experiment_quick_run_writes_its_table(tmp_path):
    """The learned-model experiment end to end at tiny sizes: every row trains (2 steps), is evaluated and
    lands in the JSON and Markdown with its budget; --evaluate-only re-reads the checkpoints."""
    import adler_ellipses

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny problems: one thread is faster than two
    try:
        rows = ["FBP", "LearnedPrimalDual", "LearnedFBP"]
        assert adler_ellipses.main(["--quick", "--no-progress", "--output-dir", str(tmp_path), "--rows", *rows]) == 0
        result = json.loads((tmp_path / "adler_ellipses_quick.json").read_text())
        assert [r["row"] for r in result["rows"]] == rows
        lpd = result["rows"][1]
        assert lpd["seeds"] == 2 and lpd["steps"] == 2 and lpd["parameters"] > 0 and len(lpd["curves"]) == 2
        table = (tmp_path / "adler_ellipses_quick.md").read_text()
        assert "19.75" in table and "more than 6 dB" in table
        assert (tmp_path / "adler_ellipses_curves.png").stat().st_size > 0
        again = tmp_path / "again"
        assert adler_ellipses.main(["--quick", "--evaluate-only", "--no-progress", "--output-dir", str(again),
                                    "--runs-dir", str(tmp_path / "runs"), "--rows", "LearnedPrimalDual"]) == 0
        evaluated = json.loads((again / "adler_ellipses_quick.json").read_text())["rows"][0]
        assert evaluated["per_seed"] == lpd["per_seed"]  # the same checkpoints, the same numbers
    finally:
        torch.set_num_threads(threads)


def test_derived_rebinning_experiment_quick_run_writes_its_table(tmp_path):
    """Interpolation rebinning, the derived network's analytic start and the trained network, per number of
    parallel views, with the edge width of the fan FBP of a disc; --evaluate-only reuses the checkpoints."""
    import derived_rebinning

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert derived_rebinning.main(["--quick", "--no-progress", "--output-dir", str(tmp_path)]) == 0
        result = json.loads((tmp_path / "derived_rebinning_quick.json").read_text())
        methods = {r["method"] for r in result["rows"]}
        assert methods == {"interpolation rebinning", "DerivedRebinning, analytic start", "DerivedRebinning, trained"}
        assert all(0 < r["relative_l2_shepp_logan"] < 1 and r["edge_width_mm"] > 0 for r in result["rows"])
        assert (tmp_path / "derived_rebinning_quick.png").stat().st_size > 0
        again = tmp_path / "again"
        assert derived_rebinning.main(["--quick", "--evaluate-only", "--no-progress", "--output-dir", str(again),
                                       "--runs-dir", str(tmp_path / "runs")]) == 0
        rows = json.loads((again / "derived_rebinning_quick.json").read_text())["rows"]
        assert [r["relative_l2_shepp_logan"] for r in rows] == [r["relative_l2_shepp_logan"] for r in result["rows"]]
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("ndim", [2, 3])
def test_batched_tv_runs_each_weight_as_its_own_solve(ndim):
    """The experiments' batched TV (every weight in one call, by the problem's positive homogeneity) equals
    one tv_pdhg solve per weight, for a batch of 2D images and of 3D volumes."""
    import known_ops as ko
    import recon
    from _analytic_experiments import _tv_batch

    if ndim == 2:
        volume = ko.Volume((12, 12))
        geometry = ko.ParallelBeam2D(torch.linspace(0, 3.0, 9, dtype=torch.float64), det_count=17)
    else:
        volume = ko.Volume((6, 8, 8))
        geometry = ko.ConeBeam3D(torch.linspace(0, 3.0, 7, dtype=torch.float64), source_distance=60.0,
                                 detector_distance=30.0, det_shape=(10, 14))
    A = ko.RayTransform(volume, geometry)
    y = A(torch.rand(2, *volume.shape, generator=torch.Generator().manual_seed(0)))
    lams = [0.5, 2.0]
    batched = _tv_batch(A, y.double(), lams, 15, nonneg=False)
    assert batched.shape == (2, 2, *volume.shape)
    for lam, x in zip(lams, batched):
        single = recon.tv_pdhg(A, y, lam, n_iter=15, precondition=True).double()
        assert torch.allclose(x, single, rtol=1e-4, atol=1e-5 * float(single.abs().max()))
