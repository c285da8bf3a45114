"""Smoke test of benchmarks/pyronn_filter_learning.py (PYRO-NN's filter-learning example): the quick scale
trains a few epochs and writes its JSON, Markdown and figure; the learned filter starts as the unpadded ramp
and improves the test PSNR."""
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

pytest.importorskip("matplotlib", reason="the example draws its figure with matplotlib")

_spec = importlib.util.spec_from_file_location("known_ops_benchmarks_pyronn_filter_learning",
                                               BENCHMARKS / "pyronn_filter_learning.py")
example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(example)


def test_quick_run_learns_and_writes_its_results(tmp_path):
    assert example.main(["--quick", "--output-dir", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "pyronn_filter_learning.json").read_text())
    assert (tmp_path / result["figure"]).is_file()
    assert (tmp_path / "pyronn_filter_learning.md").read_text().startswith("# PYRO-NN's filter-learning example")
    psnr = result["test_psnr_db"]
    assert psnr["learned"] > psnr["initial_ramp"]
    assert result["validation_loss"]["final"] < result["validation_loss"]["initial"]
    assert result["parameters"] == 50 // 2 + 1  # the rfft coefficients of the unpadded 50-bin rows


def test_the_initial_filter_is_pyronns_ramp():
    """PYRO-NN's filters.ramp(n): |k| / n at the FFT bins (zero at DC); ours, unpadded and without the spatial
    kernel, is the same |f| at the rfft bins (1 mm bins: f = k / n cycles/mm)."""
    import recon
    import known_ops as ko

    n = 400
    model = recon.FBP(ko.Volume((8, 8)), ko.ParallelBeam2D(ko.uniform_angles(4), n), filter="ram-lak", padding=False,
                      spatial_ramp=False, redundancy_weighting=None, learnable=["filter"])
    k = torch.arange(n // 2 + 1, dtype=torch.float64)
    torch.testing.assert_close(model.filter.response.detach(), k / n, rtol=1e-12, atol=1e-15)
