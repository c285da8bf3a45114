"""The data types the known operators accept, and their mixed-precision (autocast) policy.

The operators compute in float32 or float64. Inside a ``torch.autocast`` region of the data's
device type, float16 and bfloat16 inputs are run in float32 (as torchvision does for its ops), and
the result stays float32; the next autocast-aware op casts it as it needs. Outside autocast, half
precision is rejected with a message that says what to do (native half-precision kernels are not
available). The compiled custom ops have the same policy registered with the dispatcher
(``known_ops._ops``), so calling them directly under autocast works too.
"""
from __future__ import annotations

import torch

FLOAT_TYPES = (torch.float32, torch.float64)
HALF_TYPES = (torch.float16, torch.bfloat16)


def floating_input(t, name: str) -> torch.Tensor:
    """``t`` as a float32/float64 tensor: unchanged when it already is one, upcast to float32 when it
    is half precision inside an autocast region of its device; otherwise a TypeError naming ``name``."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype in FLOAT_TYPES:
        return t
    if t.dtype in HALF_TYPES:
        if torch.is_autocast_enabled(t.device.type):
            return t.float()
        raise TypeError(
            f"{name} must be float32 or float64, got {t.dtype}; cast it with .float(), or call the operator inside "
            "torch.autocast, which runs it in float32"
        )
    raise TypeError(f"{name} must be float32 or float64, got {t.dtype}")
