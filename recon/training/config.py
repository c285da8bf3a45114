"""Training configurations: defaults, validation with messages that name the key, and the short
forms of the volume and the geometry. The reference is ``docs/training.md``.

:func:`resolve_config` turns a JSON-like dict into a complete one: every default filled in, the
volume and geometry in their full ``to_dict()`` form (exact, so that a checkpoint records the
geometry it was trained for), the noise in ``to_dict()`` form. Resolving a resolved config
changes nothing. Errors are :class:`ConfigError` (a ``ValueError``) naming the key, such as
``config key 'optim.lr': must be a positive number, got -1``.
"""
from __future__ import annotations

import copy
import json
import math
import numbers
import os

import known_ops as ko
from phantoms.noise import noise_from_dict

from .registry import check_model_name

__all__ = ["ConfigError", "default_config", "load_config", "resolve_config", "make_volume", "make_geometry",
           "volume_and_geometry", "target_geometry"]

VALIDATION_SEED = 2147483647  # default seed of the held-out random ellipses: the same set for every run

_TOP = {
    "name": "run", "description": "", "seed": 0, "volume": None, "geometry": None, "model": None, "data": {}, "optim": {},
    "loss": "mse", "steps": 1000, "batch_size": 5, "validate_every": 100, "checkpoint_every": 100,
    "log_every": 10, "keep_best": True, "png": True, "amp": None, "compile": False, "device": "cpu",
}
_DATA = {"source": "random_ellipses", "images": None, "sinograms": None, "noise": None, "train_items": None,
         "ellipses": {}, "supersample": 4, "workers": 0, "validation": {}, "target": "image"}
_VALIDATION = {"shepp_logan": True, "random_ellipses": 4, "images": None, "seed": VALIDATION_SEED}
_OPTIM = {
    "adam": {"lr": 1e-3, "betas": [0.9, 0.99], "eps": 1e-8, "weight_decay": 0.0, "schedule": "cosine",
             "clip_grad_norm": 1.0},
    "rmsprop": {"lr": 1e-3, "alpha": 0.99, "eps": 1e-8, "momentum": 0.0, "weight_decay": 0.0, "square_avg_init": 0.0,
                "schedule": "inverse_time", "clip_grad_norm": None},
}
_SCHEDULE = {"decay_steps": 500, "decay_rate": 1.0}  # inverse_time: lr / (1 + decay_rate * floor(step / decay_steps))
SCHEDULES = ("cosine", "inverse_time", "constant")
LOSSES = ("mse", "l1", "sse")
AMP = (None, "bf16", "fp16")
GEOMETRY_TYPES = ("ParallelBeam2D", "FanBeam2D", "ParallelBeam3D", "ConeBeam3D")


class ConfigError(ValueError):
    """A training configuration that cannot be used; the message names the key."""


def _fail(key: str, message: str):
    raise ConfigError(f"config key {key!r}: {message}")


def default_config() -> dict:
    """Every key with its default (``volume``, ``geometry`` and ``model`` must be given)."""
    config = copy.deepcopy(_TOP)
    config["data"] = {**copy.deepcopy(_DATA), "validation": dict(_VALIDATION)}
    config["optim"] = {"name": "adam", **copy.deepcopy(_OPTIM["adam"]), **_SCHEDULE}
    return config


def load_config(path) -> dict:
    """Read a JSON config file and resolve it."""
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {os.fspath(path)!r} does not exist") from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"config file {os.fspath(path)!r} is not valid JSON: {error}") from None
    return resolve_config(config)


# --- small validators ----------------------------------------------------------------------------


def _merge(user, defaults: dict, key: str) -> dict:
    if user is None:
        user = {}
    if not isinstance(user, dict):
        _fail(key, f"must be a JSON object (dict), got {type(user).__name__}")
    unknown = sorted(set(user) - set(defaults))
    if unknown:
        where = f"{key}." if key else ""
        raise ConfigError(f"unknown config key(s) {[where + k for k in unknown]}; allowed keys here: {sorted(defaults)}")
    return {**copy.deepcopy(defaults), **copy.deepcopy(user)}


def _integer(value, key: str, minimum: int = 1, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        _fail(key, f"must be an integer >= {minimum}{' or null' if allow_none else ''}, got {value!r}")
    return int(value)


def _real(value, key: str, positive: bool = False, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or value < 0 or (positive and value == 0):
        kind = "a positive" if positive else "a non-negative"
        _fail(key, f"must be {kind} number{' or null' if allow_none else ''}, got {value!r}")
    return float(value)


def _boolean(value, key: str) -> bool:
    if not isinstance(value, bool):
        _fail(key, f"must be true or false, got {value!r}")
    return value


def _choice(value, key: str, choices) -> str:
    if value not in choices:
        _fail(key, f"must be one of {list(choices)}, got {value!r}")
    return value


def _path(value, key: str, allow_none: bool = True):
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or not value:
        _fail(key, f"must be a file path (string){' or null' if allow_none else ''}, got {value!r}")
    return value


# --- volume and geometry -------------------------------------------------------------------------


def make_volume(description, key: str = "volume") -> ko.Volume:
    """A Volume from its ``to_dict()`` or the short form ``{"shape": [ny, nx], "spacing": 1.0, "offset": 0.0}``."""
    if not isinstance(description, dict):
        _fail(key, f"must be a JSON object such as {{\"shape\": [128, 128], \"spacing\": 1.0}}, got {description!r}")
    try:
        if "type" in description:
            return ko.Volume.from_dict(description)
        unknown = sorted(set(description) - {"shape", "spacing", "offset"})
        if unknown or "shape" not in description:
            _fail(key, f"the short form takes 'shape' (required), 'spacing' and 'offset'; got keys {sorted(description)}")
        return ko.Volume(description["shape"], spacing=description.get("spacing", 1.0),
                         offset=description.get("offset", 0.0))
    except (TypeError, ValueError, KeyError) as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"config key {key!r}: {error}") from None


def make_geometry(description, key: str = "geometry"):
    """A geometry from its ``to_dict()`` (has ``"vectors"``) or the short form of a circular scan
    (``known_ops.geometry_from_dict``), such as ``{"type": "ParallelBeam2D", "n_views": 30,
    "det_count": 183, "det_spacing": 1.0, "angular_range": 3.14159..., "start_angle": 0.0}``."""
    if not isinstance(description, dict) or description.get("type") not in GEOMETRY_TYPES:
        _fail(key, f"must be a JSON object with 'type' one of {sorted(GEOMETRY_TYPES)}, got {description!r}")
    try:
        return ko.geometry_from_dict(description)
    except (TypeError, ValueError, KeyError) as error:
        raise ConfigError(f"config key {key!r}: {error}") from None


def volume_and_geometry(config: dict):
    """The Volume and geometry of a (resolved) config."""
    return make_volume(config["volume"]), make_geometry(config["geometry"])


def target_geometry(config: dict):
    """None when the targets are images (``data.target = "image"``), else the geometry of the target
    projections (exact line integrals of the same phantoms, or ``A_target x`` for image sources)."""
    target = config["data"]["target"]
    return None if target == "image" else make_geometry(target, "data.target")


# --- the whole config ----------------------------------------------------------------------------


def _resolve_optim(user) -> dict:
    if user is None:
        user = {}
    if not isinstance(user, dict):
        _fail("optim", f"must be a JSON object (dict), got {type(user).__name__}")
    name = _choice(user.get("name", "adam"), "optim.name", tuple(_OPTIM))
    optim = {"name": name, **_merge({k: v for k, v in user.items() if k != "name"}, {**_OPTIM[name], **_SCHEDULE},
                                    "optim")}
    optim["lr"] = _real(optim["lr"], "optim.lr", positive=True)
    optim["eps"] = _real(optim["eps"], "optim.eps", positive=True)
    optim["weight_decay"] = _real(optim["weight_decay"], "optim.weight_decay")
    if name == "adam":
        betas = optim["betas"]
        if not isinstance(betas, (list, tuple)) or len(betas) != 2 or not all(
                isinstance(b, numbers.Real) and not isinstance(b, bool) and 0 <= b < 1 for b in betas):
            _fail("optim.betas", f"must be a pair of numbers in [0, 1), got {betas!r}")
        optim["betas"] = [float(b) for b in betas]
    else:
        optim["alpha"] = _real(optim["alpha"], "optim.alpha")
        optim["momentum"] = _real(optim["momentum"], "optim.momentum")
        optim["square_avg_init"] = _real(optim["square_avg_init"], "optim.square_avg_init")
    optim["schedule"] = _choice(optim["schedule"], "optim.schedule", SCHEDULES)
    optim["clip_grad_norm"] = _real(optim["clip_grad_norm"], "optim.clip_grad_norm", positive=True, allow_none=True)
    optim["decay_steps"] = _integer(optim["decay_steps"], "optim.decay_steps")
    optim["decay_rate"] = _real(optim["decay_rate"], "optim.decay_rate")
    return optim


def _resolve_data(user, seed: int, ndim: int) -> dict:
    data = _merge(user, _DATA, "data")
    data["source"] = _choice(data["source"], "data.source", ("random_ellipses", "images"))
    data["images"] = _path(data["images"], "data.images")
    if data["source"] == "random_ellipses" and data["images"] is not None:
        _fail("data.images", "is only used with data.source 'images'")
    data["sinograms"] = _path(data["sinograms"], "data.sinograms")
    if data["sinograms"] is not None and data["source"] != "images":
        _fail("data.sinograms", "is only used with data.source 'images'")
    if data["source"] == "random_ellipses" and ndim != 2:
        _fail("data.source", "'random_ellipses' simulates 2D data; use 'images' with a 3D geometry")
    noise = data["noise"]
    if isinstance(noise, dict) and noise.get("type") == "gaussian" and "ndim" not in noise:
        data["noise"] = {**noise, "ndim": ndim}  # the mean |y| over a whole sinogram: 2D, or 3D projections
    try:
        data["noise"] = noise_from_dict(data["noise"]).to_dict()
    except (TypeError, ValueError) as error:
        raise ConfigError(f"config key 'data.noise': {error}") from None
    data["train_items"] = _integer(data["train_items"], "data.train_items", allow_none=True)
    if not isinstance(data["ellipses"], dict):
        _fail("data.ellipses", f"must be a JSON object of random_ellipses() arguments, got {data['ellipses']!r}")
    data["supersample"] = _integer(data["supersample"], "data.supersample")
    data["workers"] = _integer(data["workers"], "data.workers", minimum=0)
    if data["target"] != "image":
        # Projections in another geometry (e.g. DerivedRebinning's fan sinograms), noise-free.
        if data["sinograms"] is not None:
            _fail("data.sinograms", "cannot be combined with data.target (the targets are projected by A_target)")
        target = make_geometry(data["target"], "data.target")
        if target.ndim != ndim:
            _fail("data.target", f"is {target.ndim}D but the volume is {ndim}D")
        data["target"] = target.to_dict()
    val = _merge(data["validation"], _VALIDATION, "data.validation")
    val["shepp_logan"] = _boolean(val["shepp_logan"], "data.validation.shepp_logan")
    val["random_ellipses"] = _integer(val["random_ellipses"], "data.validation.random_ellipses", minimum=0)
    val["images"] = _path(val["images"], "data.validation.images")
    val["seed"] = _integer(val["seed"], "data.validation.seed", minimum=0)
    if ndim != 2 and (val["shepp_logan"] or val["random_ellipses"]):
        _fail("data.validation", "Shepp-Logan and random-ellipse validation images are 2D; set shepp_logan false "
                                 "and random_ellipses 0 (and give validation images) for a 3D geometry")
    if val["random_ellipses"] and data["source"] == "random_ellipses" and val["seed"] == seed:
        _fail("data.validation.seed", f"equals the training seed {seed}: the validation ellipses would be training items")
    data["validation"] = val
    return data


def resolve_config(config: dict) -> dict:
    """The complete, validated config (a new dict): defaults filled in, volume and geometry as
    ``to_dict()``, the noise as ``to_dict()``. Raises :class:`ConfigError` naming the bad key."""
    config = _merge(config, _TOP, "")
    if config["volume"] is None:
        _fail("volume", "is required, e.g. {\"shape\": [128, 128], \"spacing\": 1.0}")
    if config["geometry"] is None:
        _fail("geometry", "is required, e.g. {\"type\": \"ParallelBeam2D\", \"n_views\": 30, \"det_count\": 183}")
    volume, geometry = make_volume(config["volume"]), make_geometry(config["geometry"])
    if volume.ndim != geometry.ndim:
        _fail("geometry", f"is {geometry.ndim}D but the volume is {volume.ndim}D")
    config["volume"], config["geometry"] = volume.to_dict(), geometry.to_dict()
    if not isinstance(config["name"], str) or not config["name"]:
        _fail("name", f"must be a non-empty string, got {config['name']!r}")
    if not isinstance(config["description"], str):
        _fail("description", f"must be a string, got {config['description']!r}")
    config["seed"] = _integer(config["seed"], "seed", minimum=0)
    if config["model"] is not None:
        model = _merge(config["model"], {"name": None, "params": {}}, "model")
        try:
            check_model_name(model["name"])
        except ValueError as error:
            raise ConfigError(f"config key 'model.name': {error}") from None
        if not isinstance(model["params"], dict):
            _fail("model.params", f"must be a JSON object of keyword arguments, got {model['params']!r}")
        config["model"] = model
    config["data"] = _resolve_data(config["data"], config["seed"], volume.ndim)
    config["optim"] = _resolve_optim(config["optim"])
    config["loss"] = _choice(config["loss"], "loss", LOSSES)
    for key in ("steps", "batch_size", "validate_every", "checkpoint_every", "log_every"):
        config[key] = _integer(config[key], key)
    for key in ("keep_best", "png", "compile"):
        config[key] = _boolean(config[key], key)
    config["amp"] = _choice(config["amp"], "amp", AMP)
    device = config["device"]
    if not isinstance(device, str) or not (device == "cpu" or device == "cuda" or
                                           (device.startswith("cuda:") and device[5:].isdigit())):
        _fail("device", f"must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return config
