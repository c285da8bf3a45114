"""The robustness experiment (benchmarks/robustness.py) end to end in quick mode: every model of the
hypothesis trains with and without noise (2 steps, limited_angle.py's quick set-up), every test condition is
measured, the tables, the hypothesis check and the figures are written; --evaluate-only re-reads the
checkpoints."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

pytest.importorskip("matplotlib", reason="the experiment draws figures with matplotlib")
pytest.importorskip("scipy", reason="the structure counts label connected components with scipy.ndimage")


def test_robustness_experiment_quick_run_writes_its_tables(tmp_path):
    import robustness

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny problems: one thread is faster than two
    try:
        assert robustness.main(["--quick", "--no-progress", "--output-dir", str(tmp_path)]) == 0
        result = json.loads((tmp_path / "robustness_quick.json").read_text())
        rows = [(r["model"], r["training"]) for r in result["rows"]]
        assert rows == [("FBP (Parker)", "none")] + [(m, t) for t in robustness.TRAININGS for m in robustness.MODELS]
        conditions = robustness.conditions()
        for r in result["rows"]:
            assert set(conditions) <= set(r["results"])
            for c in conditions:
                m = r["results"][c]
                assert all(0 <= a <= b for a, b in zip(m["mae"], m["max"]))
                assert all(0 <= a <= b for a, b in zip(m["mae_roi"], m["max_roi"]))
                assert all(isinstance(k, int) and k >= 0 for k in m["structures"])
            assert len(r["results"]["shapes"]["edge_shift_mm"]) == 4
            assert len(r["results"]["insert"]["contrast"]) == 1
            adversarial = r["results"]["adversarial 3%"]
            # PGD never ends below its start (delta = 0), and a linear FBP's error grows under it.
            assert all(max(h) >= h[0] for h in zip(*adversarial["pgd_history"]))
            if r["model"] == "FBP (Parker)":
                assert min(adversarial["squared_error_gain"]) > 1.0
            else:
                assert r["steps"] == 2 and r["parameters"] > 0
        # Doses: the lower the dose, the more noise (stated against the training noise's units).
        levels = [result["poisson_relative_noise"][f"{d:.0e}"] for d in robustness.DOSES]
        assert levels == sorted(levels) and levels[0] > 0
        assert len(result["hypothesis"]) == 2 * len(conditions)
        assert sum(r["missing_wedge"] for r in result["edges"]) == 2  # the rectangle's 160 and 340 degree edges
        table = (tmp_path / "robustness_quick.md").read_text()
        assert "Huang et al., MICCAI 2018" in table and "Maier et al., Nature Machine Intelligence" in table
        assert "## The hypothesis" in table
        for figure in ("robustness_images.png", "robustness_dose.png"):
            assert (tmp_path / figure).stat().st_size > 0
        # --evaluate-only: the same checkpoints give the same numbers, and nothing is trained.
        again = tmp_path / "again"
        assert robustness.main(["--quick", "--evaluate-only", "--no-progress", "--output-dir", str(again),
                                "--runs-dir", str(tmp_path / "runs"), "--models", "LearnedFBP",
                                "--trainings", "noise-free"]) == 0
        evaluated = json.loads((again / "robustness_quick.json").read_text())["rows"]
        first = next(r for r in result["rows"] if (r["model"], r["training"]) == ("LearnedFBP", "noise-free"))
        assert evaluated[1]["results"]["clean"] == first["results"]["clean"]
        with pytest.raises(FileNotFoundError, match="evaluate-only"):
            robustness.main(["--quick", "--evaluate-only", "--no-progress", "--output-dir", str(tmp_path / "none"),
                             "--models", "LearnedFBP", "--trainings", "noise-free"])
    finally:
        torch.set_num_threads(threads)
