"""The limited-angle experiment (benchmarks/limited_angle.py) in quick mode: every arc, baseline and learned
model of the quick scale, the cone-beam part, the tables and figures; --evaluate-only re-reads the
checkpoints; and the importable set-up that the robustness experiment re-uses."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

pytest.importorskip("matplotlib", reason="the experiment draws figures with matplotlib")

import limited_angle  # noqa: E402

import known_ops as ko  # noqa: E402


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny problems: one thread is faster than two
    yield
    torch.set_num_threads(threads)


def test_set_up_geometries_and_region_of_interest():
    s = limited_angle.SCALES["cpu"]
    fan = limited_angle.fan_angle_deg("cpu")
    short = limited_angle.geometry_for("short", "cpu")
    assert short.n_views == 215 and 180 + fan <= 215 * s["step_deg"]  # the short scan covers 180 + fan angle
    arc140 = limited_angle.geometry_for(140, "cpu")
    assert arc140.n_views == 140 and arc140.det_count == short.det_count
    assert np.allclose(arc140.angles, short.angles[:140])  # every arc is the first views of the short scan
    # Parker's weights of the short scan sum to 1 over conjugate rays (not all 1); of 140 degrees: all 1.
    assert not torch.all(ko.parker_weights(short, reduced_scan=True) == 1)
    assert torch.all(ko.parker_weights(arc140, reduced_scan=True) == 1)
    mask = limited_angle.roi_mask(limited_angle.volume_for("cpu"))
    assert mask.shape == (128, 128) and int(mask.sum()) == 64 * 64
    volume, cone = limited_angle.cone_setup("cpu")
    assert volume.shape == (64, 64, 64) and cone.n_views * limited_angle.SCALES["cpu"]["cone"]["step_deg"] >= 180
    with pytest.raises(ValueError, match="arc"):
        limited_angle.geometry_for(90, "cpu")


def test_model_configs_resolve_at_every_scale_and_arc():
    for scale in ("cpu", "full"):
        for model, arcs in limited_angle.SCALES[scale]["train"].items():
            for arc in arcs:
                config = limited_angle.model_config(model, arc, scale)
                assert config["steps"] == limited_angle.MODELS[model][2][scale][0]
                assert config["geometry"] == limited_angle.geometry_for(arc, scale).to_dict()
        volume, cone = limited_angle.cone_setup(scale)
        for model, (_, params, budgets, _) in limited_angle.CONE_MODELS.items():
            config = limited_angle.cone_config(model, scale, Path("train.pt"), Path("validation.pt"), "cpu")
            assert (config["steps"], config["batch_size"]) == budgets[scale]
            assert params[scale].items() <= config["model"]["params"].items()
            assert config["geometry"] == cone.to_dict() and config["volume"] == volume.to_dict()
    run = limited_angle.run_dir("LearnedFBP + VN", 140, "cpu", variant="noise_free_")
    assert run.parts[-4:] == ("cpu", "LearnedFBP_VN", "140deg", "noise_free_seed0")


def test_quick_run_writes_tables_figures_and_reuses_checkpoints(tmp_path, one_thread):
    assert limited_angle.main(["--quick", "--no-progress", "--output-dir", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "limited_angle_quick.json").read_text())
    assert [a["arc"] for a in result["arcs"]] == ["short", 140]
    rows140 = [r["row"] for r in result["arcs"][1]["rows"]]
    assert rows140 == ["FBP (Parker)", "SIRT", "TV", *limited_angle.MODELS]
    for r in result["arcs"][1]["rows"]:
        assert set(limited_angle.METRICS) <= set(r["scores"]) and len(r["scores"]["psnr"]) == 3
        if r["kind"] == "learned":
            assert r["trained_steps"] == 2 and r["parameters"] > 0 and r["loss_first"] is not None
    assert result["machine"] and result["seeds"]["test"] == limited_angle.TEST_SEED
    assert [r["row"] for r in result["cone"]["rows"]] == ["FDK (Parker)", *limited_angle.CONE_MODELS, "SIRT", "TV"]
    for r in result["cone"]["rows"][1:-2]:
        assert r["trained_steps"] == 2 and r["parameters"] > 0
    table = (tmp_path / "limited_angle_quick.md").read_text()
    assert "Wuerfl" in table and "+23 %" in table and "steps x batch" in table
    for figure in ("weights", "images", "cone"):
        assert (tmp_path / f"limited_angle_{figure}.png").stat().st_size > 0

    again = tmp_path / "again"
    assert limited_angle.main(["--quick", "--evaluate-only", "--no-progress", "--no-cone", "--arcs", "140",
                               "--models", "LearnedFBP", "LearnedFBP + VN", "--output-dir", str(again),
                               "--runs-dir", str(tmp_path / "runs")]) == 0
    evaluated = json.loads((again / "limited_angle_quick.json").read_text())["arcs"][0]["rows"]
    first = {r["row"]: r for r in result["arcs"][1]["rows"]}
    for r in evaluated:
        if r["kind"] == "learned":
            assert r["scores"] == first[r["row"]]["scores"]  # the same checkpoints, the same numbers


def test_trained_models_loads_every_pair_of_a_scale(tmp_path, one_thread):
    models = limited_angle.trained_models("quick", models=["LearnedFBP"], progress=False, runs=tmp_path)
    assert set(models) == {("LearnedFBP", "short"), ("LearnedFBP", 140)}
    again = limited_angle.trained_models("quick", models=["LearnedFBP"], arcs=[140], evaluate_only=True,
                                         progress=False, runs=tmp_path)
    assert torch.equal(limited_angle.weights_of(again[("LearnedFBP", 140)]),
                       limited_angle.weights_of(models[("LearnedFBP", 140)]))
