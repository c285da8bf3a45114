"""recon.training: registry, configs, the data stream, fit, checkpoints and resume, DDP, the CLI.

Tiny problems (16x16 images, 8 views, learnable FBP) so that the whole file runs in well under a
minute on 2 cores; the subprocess tests (kill-and-resume, torchrun, spawn workers) dominate.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import known_ops as ko
import phantoms
import recon
from phantoms.noise import GaussianNoise
from recon.train import main as train_main
from recon.training import (
    CheckpointMismatchError,
    ConfigError,
    EllipseStream,
    ImageStream,
    StreamSampler,
    TrainingData,
    build_model,
    fit,
    load_config,
    make_optimizer,
    model_from_config,
    register_model,
    resolve_config,
    training_data_from_config,
    validation_set,
    volume_and_geometry,
)
from recon.training.fit import HOLD_MESSAGE

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "recon" / "training" / "configs" / "adler_ellipses_fbp_learnable.json"


def tiny_config(**overrides) -> dict:
    config = {
        "name": "tiny",
        "seed": 3,
        "volume": {"shape": [16, 16], "spacing": 1.0},
        "geometry": {"type": "ParallelBeam2D", "n_views": 8, "det_count": 23},
        "model": {"name": "FBP", "params": {"learnable": True}},
        "data": {"noise": {"type": "gaussian", "level": 0.05}, "ellipses": {"n_ellipses": 5}, "supersample": 1,
                 "validation": {"shepp_logan": True, "random_ellipses": 1}},
        "optim": {"lr": 1e-2},
        "steps": 6, "batch_size": 4, "validate_every": 3, "checkpoint_every": 3, "log_every": 1, "png": False,
    }
    config.update(overrides)
    return config


def _env() -> dict:
    # Same thread count as this process, so the subprocesses compute exactly what an in-process run does.
    return {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "PYTHONUNBUFFERED": "1"}


def _write(path: Path, config: dict) -> Path:
    path.write_text(json.dumps(config))
    return path


def _assert_same_state(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if atol == 0.0:
            assert torch.equal(a[key], b[key]), key
        else:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=atol)


# --- registry and config -------------------------------------------------------------------------------


def test_registry_builds_lazily_and_names_unknown_models():
    vol, geo = ko.Volume((16, 16)), ko.ParallelBeam2D(ko.uniform_angles(8), 23)
    assert isinstance(build_model("FBP", vol, geo, learnable=True), recon.FBP)
    with pytest.raises(ValueError, match="unknown model 'Nope'.*FBP.*LearnedPrimalDual"):
        build_model("Nope", vol, geo)
    register_model("test_missing_module", "no_such_package.models:Net", overwrite=True)  # imports nothing yet
    with pytest.raises(ImportError, match="test_missing_module.*no_such_package.models:Net"):
        build_model("test_missing_module", vol, geo)
    register_model("test_fbp_hann", lambda v, g, **p: recon.FBP(v, g, filter="hann", **p), overwrite=True)
    assert build_model("test_fbp_hann", vol, geo).filter is not None
    with pytest.raises(ValueError, match="already registered"):
        register_model("FBP", "recon.analytic:FDK")
    with pytest.raises(ValueError, match="import path"):
        register_model("test_bad_path", "recon.analytic.FBP")


def test_config_validation_names_the_key_and_short_forms_resolve():
    config = resolve_config(tiny_config())
    assert resolve_config(config) == config  # idempotent
    assert config["geometry"] == ko.ParallelBeam2D(ko.uniform_angles(8), 23).to_dict()
    assert config["optim"]["betas"] == [0.9, 0.99] and config["optim"]["clip_grad_norm"] == 1.0
    fan = resolve_config(tiny_config(geometry={"type": "FanBeam2D", "n_views": 12, "source_distance": 40.0,
                                               "detector_distance": 20.0, "det_count": 31, "det_spacing": 1.5,
                                               "detector": "curved"}))
    assert fan["geometry"] == ko.FanBeam2D(ko.uniform_angles(12, 2 * math.pi), 40.0, 20.0, 31, 1.5,
                                           detector="curved").to_dict()
    bad = [
        ({"model": {"name": "Unknown"}}, "model.name.*known models: .*FBP"),
        ({"optim": {"lr": -1}}, "optim.lr"),
        ({"optim": {"name": "rmsprop", "betas": [0.9, 0.9]}}, "optim.betas"),
        ({"data": {"nosie": {}}}, "data.nosie"),
        ({"data": {"noise": {"type": "gaussian", "level": -1}}}, "data.noise.*level"),
        ({"geometry": {"type": "ParallelBeam2D", "n_views": 8}}, "geometry.*missing.*det_count"),
        ({"volume": {"shape": [16, 16, 16]}}, "geometry.*volume is 3D|data.source"),
        ({"amp": "fp8"}, "'amp'"),
        ({"steps": 0}, "'steps'"),
        ({"device": "tpu"}, "'device'"),
        ({"data": {"validation": {"seed": 3}}}, "data.validation.seed"),
    ]
    for override, pattern in bad:
        with pytest.raises(ConfigError, match=pattern):
            resolve_config(tiny_config(**override))


def test_example_config_is_adlers_set_up():
    config = load_config(EXAMPLE)
    vol, geo = ko.Volume.from_dict(config["volume"]), ko.geometry_from_dict(config["geometry"])
    assert vol.bounds == ((-64.0, 64.0), (-64.0, 64.0))
    assert geo.n_views == 30 and geo.det_count == 183
    assert geo.det_count * float(geo.det_spacing[0]) == pytest.approx(128 * math.sqrt(2))
    assert geo.angles == pytest.approx((torch.arange(30, dtype=torch.float64) + 0.5).numpy() * math.pi / 30)
    assert config["data"]["noise"] == {"type": "gaussian", "level": 0.05, "ndim": 2}
    assert config["model"] == {"name": "FBP", "params": {"filter": "ram-lak", "learnable": True}}


def test_schedules():
    p = [torch.nn.Parameter(torch.zeros(1))]
    base = resolve_config(tiny_config(steps=100))["optim"]
    opt, sched = make_optimizer(p, base, 100)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 1e-2 and lrs[50] == pytest.approx(0.5e-2) and opt.param_groups[0]["lr"] == pytest.approx(0.0)
    rms = resolve_config(tiny_config(optim={"name": "rmsprop"}))["optim"]
    assert rms["schedule"] == "inverse_time" and rms["clip_grad_norm"] is None
    opt, sched = make_optimizer(p, rms, 10**6)
    assert isinstance(opt, torch.optim.RMSprop)
    factor = sched.lr_lambdas[0]
    assert [factor(s) for s in (0, 499, 500, 999, 1000)] == [1.0, 1.0, 0.5, 0.5, 1 / 3]


# --- data ----------------------------------------------------------------------------------------------


def test_ranks_see_the_global_batch_of_one_process():
    single = list(StreamSampler(10, 3, 4))
    assert single == list(range(10, 22))
    ranks = [list(StreamSampler(10, 3, 4, rank=r, world_size=2)) for r in range(2)]
    assert ranks[0] == [10, 12, 14, 16, 18, 20] and ranks[1] == [11, 13, 15, 17, 19, 21]
    with pytest.raises(ValueError, match="divisible"):
        StreamSampler(0, 1, 5, world_size=2)

    config = resolve_config(tiny_config())
    vol, geo = ko.Volume.from_dict(config["volume"]), ko.geometry_from_dict(config["geometry"])
    one = list(training_data_from_config(config, vol, geo).batches(8, 2))
    two = [list(training_data_from_config(config, vol, geo, rank=r, world_size=2).batches(8, 2)) for r in range(2)]
    for step in range(2):
        for j in range(4):  # item j of the global batch is item j // 2 of rank j % 2
            assert torch.equal(one[step][0][j], two[j % 2][step][0][j // 2])
            assert torch.equal(one[step][1][j], two[j % 2][step][1][j // 2])


def test_finite_training_sets_are_reshuffled_per_epoch():
    vol, geo = ko.Volume((16, 16)), ko.ParallelBeam2D(ko.uniform_angles(8), 23)
    stream = EllipseStream(vol, geo, seed=1, train_items=3, supersample=1, ellipses={"n_ellipses": 2})
    epochs = [[stream.order(k) for k in range(3 * e, 3 * e + 3)] for e in range(4)]
    assert all(sorted(e) == [0, 1, 2] for e in epochs) and len({tuple(e) for e in epochs}) > 1
    assert torch.equal(stream[4][1], stream.dataset[stream.order(4)][1])


def test_image_source_is_projected_on_the_device_with_seeded_noise():
    vol, geo = ko.Volume((16, 16)), ko.ParallelBeam2D(ko.uniform_angles(8), 23)
    images = torch.rand(5, 16, 16)
    data = TrainingData(ImageStream(images, seed=2), vol, geo, GaussianNoise(0.05), seed=2, global_batch=5)
    (x, y), = list(data.batches(0, 1))
    assert sorted(float(v) for v in x.sum((1, 2))) == pytest.approx(sorted(float(v) for v in images.sum((1, 2))))
    clean = ko.RayTransform(vol, geo)(x)
    rel = float(((y - clean).std(dim=(1, 2)) / clean.abs().mean(dim=(1, 2))).mean())
    assert 0.03 < rel < 0.07
    (x2, y2), = list(data.batches(0, 1))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    config = tiny_config(data={"source": "images", "noise": {"type": "poisson", "photons": 1e4, "mu_scale": 0.05},
                               "validation": {"shepp_logan": False, "random_ellipses": 0}}, steps=2)
    summary = fit(model_from_config(config), config, images=images, validation_images=images[:2], progress=False)
    assert summary["step"] == 2 and math.isfinite(summary["loss"]) and "val_psnr" in summary["validation"]


def test_image_source_with_given_sinograms_uses_them_with_the_same_noise(tmp_path):
    vol, geo = ko.Volume((16, 16)), ko.ParallelBeam2D(ko.uniform_angles(8), 23)
    images = torch.rand(5, 16, 16)
    sinograms = ko.RayTransform(vol, geo)(images)
    projected = TrainingData(ImageStream(images, seed=2), vol, geo, GaussianNoise(0.05), seed=2, global_batch=5)
    given = TrainingData(ImageStream(images, seed=2, sinograms=sinograms, noise=GaussianNoise(0.05)), vol, geo,
                         GaussianNoise(0.05), seed=2, global_batch=5)
    assert given.operator is None  # nothing is projected
    (x0, y0), = list(projected.batches(0, 1))
    (x1, y1), = list(given.batches(0, 1))
    assert torch.equal(x0, x1)
    torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-5)  # the same noise realisation per image
    # Other clean data (e.g. exact line integrals) is used as given, not replaced by A x.
    shifted = TrainingData(ImageStream(images, seed=2, sinograms=sinograms + 1.0), vol, geo, seed=2, global_batch=5)
    (x2, y2), = list(shifted.batches(0, 1))
    torch.testing.assert_close(y2, ko.RayTransform(vol, geo)(x2) + 1.0, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="sinograms.*4 sinograms for 5 images"):
        ImageStream(images, sinograms=sinograms[:4])
    # Through the config: data.sinograms is a file of (N, *geometry.shape), checked by shape and source.
    torch.save(images, tmp_path / "images.pt")
    torch.save(sinograms, tmp_path / "sinograms.pt")
    torch.save(sinograms[:, :, :5], tmp_path / "wrong.pt")
    data = {"source": "images", "images": str(tmp_path / "images.pt"), "sinograms": str(tmp_path / "sinograms.pt"),
            "noise": {"type": "gaussian", "level": 0.05}, "validation": {"shepp_logan": False, "random_ellipses": 0}}
    config = tiny_config(data=data, steps=2, batch_size=2)
    summary = fit(model_from_config(config), config, validation_images=images[:2], progress=False)
    assert summary["step"] == 2 and math.isfinite(summary["loss"])
    config = resolve_config(tiny_config(data={**data, "sinograms": str(tmp_path / "wrong.pt")}))
    with pytest.raises(ValueError, match=r"data.sinograms.*shape \(N, 8, 23\)"):
        training_data_from_config(config, vol, geo)
    with pytest.raises(ConfigError, match="data.sinograms.*only used with data.source 'images'"):
        resolve_config(tiny_config(data={"sinograms": str(tmp_path / "sinograms.pt")}))


def test_3d_geometry_trains_on_projected_images():
    config = tiny_config(volume={"shape": [4, 16, 16]},
                         geometry={"type": "ParallelBeam3D", "n_views": 8, "det_shape": [4, 23]},
                         data={"source": "images", "noise": {"type": "gaussian", "level": 0.05},
                               "validation": {"shepp_logan": False, "random_ellipses": 0}}, steps=2, batch_size=2)
    assert resolve_config(config)["data"]["noise"]["ndim"] == 3  # the noise level of a whole 3D projection set
    summary = fit(model_from_config(config), config, images=torch.rand(4, 4, 16, 16),
                  validation_images=torch.rand(2, 4, 16, 16), progress=False)
    assert summary["step"] == 2 and math.isfinite(summary["validation"]["val_ssim"])


def test_dataloader_with_spawned_workers_gives_the_same_batches():
    config = resolve_config(tiny_config(batch_size=2))
    vol, geo = ko.Volume.from_dict(config["volume"]), ko.geometry_from_dict(config["geometry"])
    in_process = list(training_data_from_config(config, vol, geo).batches(0, 2))
    config["data"]["workers"] = 1
    data = training_data_from_config(config, vol, geo)
    assert data.loader(0, 2).multiprocessing_context.get_start_method() == "spawn"
    spawned = list(data.batches(0, 2))
    for (x0, y0), (x1, y1) in zip(in_process, spawned, strict=True):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)


# --- fit and checkpoints -------------------------------------------------------------------------------


def test_fit_logs_validates_and_writes_weights_only_checkpoints(tmp_path):
    config = tiny_config(png=True)
    model = model_from_config(config)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    summary = fit(model, config, output=tmp_path, progress=False)
    assert summary["step"] == 6 and summary["best"]["step"] in (3, 6)
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(7))
    assert {"loss", "lr", "grad_norm", "steps_per_s", "time"} <= lines[1].keys()
    assert {"val_psnr", "val_ssim", "val_psnr_shepp_logan"} <= lines[3].keys() and "val_psnr" not in lines[2]
    assert lines[1]["lr"] == 1e-2 and lines[6]["lr"] < lines[1]["lr"]
    assert sorted(p.name for p in (tmp_path / "validation").iterdir()) == [
        "step_0000000.png", "step_0000003.png", "step_0000006.png"]
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert saved["step"] == 6 and saved["data"] == {"position": 24, "global_batch": 4}
    assert saved["config"]["geometry"] == resolve_config(config)["geometry"]
    assert isinstance(saved["rng"]["torch"], torch.Tensor) and isinstance(saved["rng"]["python"]["state"], torch.Tensor)
    _assert_same_state(saved["model"], model.state_dict())
    assert not all(torch.equal(initial[k], v) for k, v in model.state_dict().items())
    assert torch.load(tmp_path / "best.pt", weights_only=True)["step"] == summary["best"]["step"]


def test_same_training_check_fills_new_defaults_and_names_missing_keys():
    from recon.training.checkpoint import check_same_training

    config = resolve_config(tiny_config())
    older = json.loads(json.dumps(config))
    del older["data"]["sinograms"]  # a checkpoint saved before the harness had this key (at its default)
    check_same_training({"config": older}, config)
    wanted = json.loads(json.dumps(config))
    wanted["data"]["sinograms"] = "sinograms.pt"
    with pytest.raises(CheckpointMismatchError, match="data.sinograms: None in the checkpoint, 'sinograms.pt'"):
        check_same_training({"config": older}, wanted)
    invalid = dict(older, steps=0)  # not resolvable any more: compared as saved, the difference is named
    with pytest.raises(CheckpointMismatchError, match="steps: 0 in the checkpoint, 6 in the config"):
        check_same_training({"config": invalid}, config)
    extra = dict(config, unknown_key=1)
    with pytest.raises(CheckpointMismatchError, match="unknown_key: absent in the checkpoint, 1 in the config"):
        check_same_training({"config": config}, extra)


def test_resume_errors_are_clear(tmp_path):
    config = tiny_config(steps=2, data={"validation": {"shepp_logan": False, "random_ellipses": 0}})
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume from"):
        fit(model_from_config(config), config, output=tmp_path, resume=True, progress=False)
    fit(model_from_config(config), config, output=tmp_path, progress=False)
    with pytest.raises(FileExistsError, match="resume"):
        fit(model_from_config(config), config, output=tmp_path, progress=False)
    other = tiny_config(steps=4, geometry={"type": "ParallelBeam2D", "n_views": 8, "det_count": 25})
    with pytest.raises(CheckpointMismatchError, match="geometry.*det_count: 23 in the checkpoint, 25 in the config"):
        fit(model_from_config(other), other, output=tmp_path, resume=True, progress=False)
    other = tiny_config(steps=4, volume={"shape": [16, 16], "spacing": 0.5})
    with pytest.raises(CheckpointMismatchError, match="volume.*spacing"):
        fit(model_from_config(other), other, output=tmp_path, resume=True, progress=False)
    with pytest.raises(CheckpointMismatchError, match="batch_size"):
        fit(model_from_config(config), {**config, "steps": 4, "batch_size": 2}, output=tmp_path, resume=True,
            progress=False)
    # A crash after the checkpoint may leave log lines of later steps: resuming drops them.
    with open(tmp_path / "log.jsonl", "a") as f:
        f.write(json.dumps({"step": 3, "loss": -1.0}) + "\n")
    summary = fit(model_from_config(config), {**config, "steps": 4}, output=tmp_path, resume=True, progress=False)
    assert summary["step"] == 4
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4] and lines[2]["loss"] >= 0


def test_amp_bf16_on_the_cpu_trains():
    config = tiny_config(amp="bf16", steps=3, data={"validation": {"shepp_logan": True, "random_ellipses": 0}})
    model = model_from_config(config)
    before = model.filter.response.detach().clone()
    summary = fit(model, config, progress=False)
    assert math.isfinite(summary["loss"]) and math.isfinite(summary["validation"]["val_psnr"])
    assert not torch.equal(before, model.filter.response)


# --- subprocesses: the command line, SIGKILL and resume, torchrun ------------------------------------------


def test_cli_killed_at_step_n_resumes_bit_identically(tmp_path, capsys):
    from recon.train import main

    config = tiny_config()
    path = _write(tmp_path / "tiny.json", config)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "recon.train", str(path), "--output", str(out), "--no-progress"]
    with open(tmp_path / "stderr.txt", "w+") as stderr:
        proc = subprocess.Popen(cmd + ["--hold-at-step", "4"], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                                stderr=stderr, text=True)
        watchdog = threading.Timer(240, proc.kill)  # a hung run fails the test instead of blocking it
        watchdog.start()
        try:
            line = proc.stdout.readline()  # blocks until the run holds, or until it dies ('')
            stderr.seek(0)
            assert line.strip() == HOLD_MESSAGE.format(step=4), stderr.read()[-3000:]
            assert torch.load(out / "last.pt", weights_only=True)["step"] == 4
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        finally:
            watchdog.cancel()
            proc.kill()
            proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    # Resume in this process through the same command line (one interpreter start fewer).
    assert main(cmd[3:] + ["--resume"]) == 0
    assert "step 6: validation PSNR" in capsys.readouterr().out
    resumed = torch.load(out / "last.pt", weights_only=True)
    assert resumed["step"] == 6

    reference = model_from_config(config)
    fit(reference, config, output=tmp_path / "reference", progress=False)
    _assert_same_state(resumed["model"], reference.state_dict())
    expected = torch.load(tmp_path / "reference" / "last.pt", weights_only=True)
    assert resumed["optimizer"]["state"].keys() == expected["optimizer"]["state"].keys()
    for k, state in expected["optimizer"]["state"].items():
        _assert_same_state(resumed["optimizer"]["state"][k], state)
    assert torch.equal(resumed["rng"]["torch"], expected["rng"]["torch"])
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(7))  # the killed run's log, continued once from the checkpoint
    assert (out / "config.json").is_file() and (out / "best.pt").is_file()


def test_cli_errors_exit_with_status_2(tmp_path, capsys):
    from recon.train import main

    path = _write(tmp_path / "tiny.json", tiny_config(steps=1, data={"validation": {"shepp_logan": False,
                                                                                    "random_ellipses": 0}}))
    out = str(tmp_path / "run")
    assert main([str(path), "--output", out, "--no-progress", "--steps", "1"]) == 0
    assert main([str(path), "--output", out, "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main([str(path), "--output", str(tmp_path / "none"), "--resume", "--no-progress"]) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err
    _write(tmp_path / "bad.json", tiny_config(model={"name": "LearnedNothing"}))
    assert main([str(tmp_path / "bad.json"), "--output", out]) == 2
    assert "unknown model 'LearnedNothing'" in capsys.readouterr().err


def test_torchrun_ddp_on_two_cpu_processes_matches_one_process(tmp_path):
    config = tiny_config(steps=3, data={"noise": {"type": "gaussian", "level": 0.05}, "ellipses": {"n_ellipses": 5},
                                        "supersample": 1, "validation": {"shepp_logan": True, "random_ellipses": 0}})
    path = _write(tmp_path / "tiny.json", config)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "recon.train", str(path), "--output", str(tmp_path / "ddp"), "--no-progress"]
    done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)
    assert ddp["world_size"] == 2 and ddp["step"] == 3

    model = model_from_config(config)
    fit(model, config, output=tmp_path / "single", progress=False)
    _assert_same_state(ddp["model"], model.state_dict(), atol=1e-6)
    logged = [json.loads(line) for line in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    single = [json.loads(line) for line in (tmp_path / "single" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [0, 1, 2, 3]  # rank 0 alone writes the log
    assert [r["loss"] for r in logged[1:]] == pytest.approx([r["loss"] for r in single[1:]], rel=1e-5)


# --- the shipped configs: every model trains from the command line -----------------------------------------

CONFIGS = sorted((ROOT / "recon" / "training" / "configs").glob("*.json"))
# Small sizes of each model, so that a shipped config trains two steps in about a second here.
_SMALL = {
    "LearnedGradient": {"hidden": 8, "n_iter": 2},
    "LearnedPrimal": {"hidden": 8, "n_iter": 2},
    "LearnedPrimalDual": {"hidden": 8, "n_iter": 2},
    "UNetPostProcessing": {"features": 4, "depth": 2},
    "VariationalNetwork": {"n_stages": 2, "n_filters": 4, "kernel_size": 3},
}
_SMALL_FAN = {"type": "FanBeam2D", "n_views": 12, "source_distance": 60.0, "detector_distance": 40.0, "det_count": 31}


def test_there_is_a_shipped_config_for_every_learned_model():
    names = {json.loads(path.read_text())["model"]["name"] for path in CONFIGS}
    assert {"LearnedFBP", "VariationalNetwork", "LearnedGradient", "LearnedPrimal", "LearnedPrimalDual",
            "DerivedRebinning", "UNetPostProcessing"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_resolves_and_trains_from_the_command_line(path, tmp_path, capsys):
    config = resolve_config(json.loads(path.read_text()))  # the shipped config as it is
    assert config["description"], "every shipped config says what it reproduces"
    small = json.loads(path.read_text())
    small.update(volume={"shape": [16, 16], "spacing": 1.0}, batch_size=2, validate_every=1, checkpoint_every=1,
                 png=False)
    if small["geometry"]["type"] == "FanBeam2D":  # keep its distances and arc (the limited-angle scans)
        small["geometry"].update(n_views=8, det_count=23)
    else:
        small["geometry"] = {"type": small["geometry"]["type"], "n_views": 8, "det_count": 23}
    small["model"]["params"].update(_SMALL.get(small["model"]["name"], {}))
    if small["model"]["name"] == "DerivedRebinning":
        small["model"]["params"]["fan_geometry"] = small["data"]["target"] = _SMALL_FAN
    small["data"].update(supersample=1, ellipses={"n_ellipses": 5},
                         validation={"shepp_logan": True, "random_ellipses": 1})
    out = tmp_path / "run"
    assert train_main([str(_write(tmp_path / "config.json", small)), "--steps", "2", "--output", str(out),
                       "--no-progress"]) == 0
    assert "step 2: validation PSNR" in capsys.readouterr().out
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 2 and math.isfinite(log[-1]["loss"])
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 2


def test_projection_targets_are_the_exact_projections_of_the_same_phantoms():
    """data.target: a geometry; the targets are the phantoms' exact line integrals in it (DerivedRebinning)."""
    config = resolve_config(tiny_config(data={"target": _SMALL_FAN, "noise": None, "ellipses": {"n_ellipses": 4},
                                              "supersample": 1}))
    volume, geometry = volume_and_geometry(config)
    data = training_data_from_config(config, volume, geometry)
    x, y = next(iter(data.batches(0, 1)))
    fan = ko.geometry_from_dict(_SMALL_FAN)
    assert x.shape == (4, *fan.shape) and y.shape == (4, *geometry.shape)
    stream = data.stream
    for k in range(4):
        ellipses = stream.dataset.ellipses(k)
        rays = fan.rays()
        expected = phantoms.ellipse_line_integrals(rays[..., 0:2], rays[..., 2:4], ellipses).float()
        torch.testing.assert_close(x[k], expected)
    names, xv, yv = validation_set(config, volume, geometry)
    assert xv.shape[1:] == fan.shape and yv.shape[1:] == geometry.shape


def test_rmsprop_can_start_its_mean_square_at_one_as_tensorflow():
    """Adler and Oektem's RMSProp (TensorFlow 1) starts the mean square at 1: the first step is lr * gradient,
    where torch's (at 0) moves every parameter by about lr / sqrt(1 - alpha)."""
    p = torch.nn.Parameter(torch.zeros(3))
    optim = resolve_config(tiny_config(optim={"name": "rmsprop", "alpha": 0.9, "eps": 1e-10,
                                              "square_avg_init": 1.0}))["optim"]
    optimizer, _ = make_optimizer([p], optim, steps=10)
    p.grad = torch.tensor([1e-3, -2e-3, 0.0])
    optimizer.step()
    expected = -optim["lr"] * p.grad / torch.sqrt(0.9 + 0.1 * p.grad**2)
    torch.testing.assert_close(p.detach(), expected)
    state = optimizer.state_dict()
    fresh, _ = make_optimizer([torch.nn.Parameter(torch.zeros(3))], optim, steps=10)
    fresh.load_state_dict(state)  # the state round-trips like torch's own


def test_sum_of_squared_errors_loss():
    config = resolve_config(tiny_config(loss="sse"))
    assert config["loss"] == "sse"
    from recon.training.fit import _LOSSES

    x, r = torch.zeros(2, 4, 4), torch.ones(2, 4, 4)
    assert float(_LOSSES["sse"](r, x)) == 16.0
