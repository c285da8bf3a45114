"""Smoke test of the sample-efficiency experiment benchmarks/sample_efficiency.py in quick mode: every
(model, pool) run trains with the same budget, is evaluated on the test and training sets and lands in
the JSON, the Markdown and the figure; --evaluate-only re-reads the checkpoints."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from recon.training import training_data_from_config

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

pytest.importorskip("matplotlib", reason="the experiment draws its figure with matplotlib")


def test_sample_efficiency_quick_run_writes_its_table(tmp_path):
    import sample_efficiency

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny problems: one thread is faster than two
    try:
        models = ["LearnedFBP", "FBP + U-Net"]
        assert sample_efficiency.main(["--quick", "--no-progress", "--output-dir", str(tmp_path),
                                       "--models", *models]) == 0
        result = json.loads((tmp_path / "sample_efficiency_quick.json").read_text())
        rows = result["rows"]
        assert [(r["model"], r["pool"]) for r in rows] == [(m, p) for m in models for p in (2, None)]
        for r in rows:
            # Same budget for every pool; the pool bounds the distinct phantoms, the stream draws new ones.
            assert (r["steps"], r["batch"], r["items_seen"]) == (3, 2, 6)
            assert r["distinct_phantoms"] == (6 if r["pool"] is None else 2)
            assert r["train_n"] == 2 and r["train_psnr"] > 0 and r["summary"]["psnr_ellipses"] > 0
            assert r["parameters"] > 0 and r["curve"]
        table = (tmp_path / "sample_efficiency_quick.md").read_text()
        assert "unlimited (6 new)" in table and "FBP (reference)" in table and "Nature Machine Intelligence" in table
        assert (tmp_path / "sample_efficiency_quick.png").stat().st_size > 0

        again = tmp_path / "again"
        assert sample_efficiency.main(["--quick", "--evaluate-only", "--no-progress", "--output-dir", str(again),
                                       "--runs-dir", str(tmp_path / "runs"), "--models", "LearnedFBP"]) == 0
        evaluated = json.loads((again / "sample_efficiency_quick.json").read_text())["rows"]
        assert [r["per_image"] for r in evaluated] == [r["per_image"] for r in rows[:2]]  # same checkpoints
    finally:
        torch.set_num_threads(threads)


def test_a_pool_is_the_first_phantoms_of_the_training_stream_with_their_noise():
    """The training-set PSNR is taken on exactly the pairs the model trained on: pool N holds items
    0..N-1 of the unlimited stream, noise included (so the pools are nested)."""
    import sample_efficiency
    from _analytic_experiments import _ao_setup

    volume, geometry, _ = _ao_setup(32, 30)
    small = sample_efficiency.run_config("LearnedFBP", "quick", 3, 2, 2, volume, geometry, "cpu")
    stream = sample_efficiency.run_config("LearnedFBP", "quick", None, 2, 2, volume, geometry, "cpu")
    assert small["data"]["train_items"] == 3 and stream["data"]["train_items"] is None
    x_small, y_small = sample_efficiency.training_pairs(small, volume, geometry, 3)
    x_stream, y_stream = sample_efficiency.training_pairs(stream, volume, geometry, 3)
    assert torch.equal(x_small, x_stream) and torch.equal(y_small, y_stream)
    data = training_data_from_config(small, volume, geometry)
    drawn = {[torch.equal(data.stream[k][1], y) for y in y_small].index(True) for k in range(6)}
    assert drawn == {0, 1, 2}  # two epochs of the pool visit only its three pairs


def test_a_checkpoint_trained_with_another_config_is_never_reused(tmp_path):
    """The experiments reuse a finished run's checkpoint; one trained for other steps (or data, or model)
    must be an error, or the table would print the new budget beside the old model."""
    import sample_efficiency
    from _analytic_experiments import _ao_setup
    from _experiments import train_or_load
    from recon.training import CheckpointMismatchError
    from recon.training.checkpoint import check_same_training

    volume, geometry, _ = _ao_setup(32, 30)
    config = sample_efficiency.run_config("LearnedFBP", "quick", 3, 2, 2, volume, geometry, "cpu")
    trained, step, _ = train_or_load(config, tmp_path, evaluate_only=False, progress=False)
    assert step == 2
    reused, step, _ = train_or_load(config, tmp_path, evaluate_only=True, progress=False)
    assert step == 2 and all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(),
                                                                reused.state_dict().values()))
    check_same_training({"config": dict(config, device="cuda")}, config)  # trained on a GPU, evaluated here
    for changed in (dict(config, steps=1), dict(config, data=dict(config["data"], train_items=4))):
        for evaluate_only in (False, True):
            with pytest.raises(CheckpointMismatchError, match="another config"):
                train_or_load(changed, tmp_path, evaluate_only=evaluate_only, progress=False)
