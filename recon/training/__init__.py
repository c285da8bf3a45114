"""recon.training: a small, model-agnostic training harness for reconstruction models.

- :func:`fit` trains any ``nn.Module`` ``model(y) -> x`` from a JSON-like config: simulated data
  (random ellipses with exact sinograms, or projected images) with a noise model, Adam/RMSProp
  with cosine or inverse-time decay, validation (PSNR, SSIM), JSON-lines logs, PNGs, atomic
  checkpoints with bit-identical resume on the CPU, AMP, ``torch.compile`` and DDP under torchrun.
- :func:`register_model` / :func:`build_model`: model names for configs (resolved lazily).
- ``python -m recon.train CONFIG.json`` is the command line.

Layering: models (``recon.analytic``, ``recon.learned``) never import this package; it never
imports ``benchmarks``. See ``docs/training.md``.
"""
from .checkpoint import CheckpointMismatchError, load_checkpoint, save_checkpoint
from .config import ConfigError, default_config, load_config, resolve_config, volume_and_geometry
from .data import EllipseStream, ImageStream, StreamSampler, TrainingData, training_data_from_config, validation_set
from .fit import fit, make_optimizer, model_from_config, seed_everything
from .registry import build_model, model_names, register_model, resolve_model

__all__ = ["fit", "model_from_config", "make_optimizer", "seed_everything",
           "register_model", "build_model", "resolve_model", "model_names",
           "ConfigError", "default_config", "load_config", "resolve_config", "volume_and_geometry",
           "EllipseStream", "ImageStream", "StreamSampler", "TrainingData", "training_data_from_config",
           "validation_set", "CheckpointMismatchError", "load_checkpoint", "save_checkpoint"]
