"""Model names for configs: ``register_model(name, factory)`` and ``build_model(name, volume, geometry, **params)``.

A model is an ``nn.Module`` built as ``factory(volume, geometry, **params)`` and called as
``model(y) -> x`` (``y``: ``(B, *geometry.shape)``, ``x``: ``(B, *volume.shape)``). A factory is
a callable or an import path ``"package.module:Name"``, imported only when the name is first
built, so that importing the training harness does not import every model.
"""
from __future__ import annotations

import importlib
from typing import Callable, Union

from torch import nn

__all__ = ["register_model", "build_model", "resolve_model", "model_names"]

Factory = Union[Callable[..., nn.Module], str]

_LEARNED = ("LearnedFBP", "VariationalNetwork", "LearnedGradient", "LearnedPrimal", "LearnedPrimalDual",
            "DerivedRebinning", "UNetPostProcessing")

_REGISTRY: dict[str, Factory] = {
    "FBP": "recon.analytic:FBP",
    "FDK": "recon.analytic:FDK",
    **{name: f"recon.learned:{name}" for name in _LEARNED},
}


def register_model(name: str, factory: Factory, *, overwrite: bool = False) -> None:
    """Make ``name`` build ``factory(volume, geometry, **params)``; ``factory`` is a callable or an
    import path ``"module:attribute"`` (resolved lazily). Re-registering a name needs ``overwrite=True``."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"a model name must be a non-empty string, got {name!r}")
    if isinstance(factory, str):
        if factory.count(":") != 1 or not all(factory.split(":")):
            raise ValueError(f"an import path must look like 'package.module:Name', got {factory!r}")
    elif not callable(factory):
        raise TypeError(f"factory must be a callable or an import path 'module:Name', got {type(factory).__name__}")
    if name in _REGISTRY and not overwrite and _REGISTRY[name] is not factory:
        raise ValueError(f"model {name!r} is already registered (as {_REGISTRY[name]!r}); pass overwrite=True")
    _REGISTRY[name] = factory


def model_names() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_REGISTRY)


def check_model_name(name) -> str:
    """``name`` if it is registered, else a ValueError that lists the known names (imports nothing)."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(model_names())}")
    return name


def resolve_model(name: str) -> Callable[..., nn.Module]:
    """The factory registered as ``name``, imported if it was given as a path."""
    factory = _REGISTRY[check_model_name(name)]
    if callable(factory):
        return factory
    module_name, attribute = factory.split(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attribute)
    except (ImportError, AttributeError) as error:
        raise ImportError(
            f"model {name!r} is registered as {factory!r}, but it could not be imported: {error}"
        ) from error


def build_model(name: str, volume, geometry, **params) -> nn.Module:
    """``factory(volume, geometry, **params)`` for the model registered as ``name``."""
    model = resolve_model(name)(volume, geometry, **params)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model {name!r} built a {type(model).__name__}, not a torch.nn.Module")
    return model
