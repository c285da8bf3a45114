"""Up-front size checks: refuse a construction or call whose arrays cannot fit the device.

Allocating first and failing later is worse than a clear refusal: an allocation a little below the
machine's memory may succeed (Linux overcommits) and then get the process killed when it is
filled, and one far above it fails deep inside torch or numpy with a message about bytes rather
than about the parameter that asked for them. The estimate is compared with the device's total
memory (CPU: physical memory; CUDA: the device's memory), so that it never refuses what could
fit: the point is to catch sizes that are wrong by orders of magnitude (a det_count of 10**9),
not to predict out-of-memory errors.
"""
from __future__ import annotations

import math
import os

import torch

__all__ = ["SizeError", "device_memory_bytes", "check_fits", "nbytes"]


class SizeError(ValueError, MemoryError):
    """A construction or call would need more memory than the device has (a ValueError that names
    the parameters and gives the estimate; also a MemoryError)."""


def device_memory_bytes(device=None) -> int | None:
    """Total memory of `device` in bytes (CPU: physical memory); None when it cannot be told."""
    device = torch.device("cpu" if device is None else device)
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[1])
        except Exception:  # noqa: BLE001 - no driver, an odd device: no check rather than a false refusal
            return None
    if device.type != "cpu":
        return None  # meta tensors need no memory; other backends: unknown
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return None


def nbytes(*shape, dtype=torch.float32) -> int:
    """Bytes of an array of `shape` and `dtype` (a torch dtype or a size in bytes), exact for any size."""
    size = dtype if isinstance(dtype, int) else torch.empty((), dtype=dtype).element_size()
    return math.prod(int(n) for n in shape) * size


def _gigabytes(n: int) -> str:
    return f"{n / 1e9:.3g} GB"


def check_fits(needed: int, what: str, advice: str, device=None) -> None:
    """Raise SizeError when `needed` bytes exceed the total memory of `device`.

    `what` says what is allocated, naming the parameters (e.g. "the ray tables of 2 views x
    10**9 detector bins (n_views x det_count x 4 values, float64 and float32)"); `advice` what
    to change."""
    total = device_memory_bytes(device)
    if total is None or needed <= total:
        return
    where = "this machine's" if torch.device("cpu" if device is None else device).type == "cpu" else f"{device}'s"
    raise SizeError(
        f"{what} would need about {_gigabytes(needed)} of memory, more than {where} {_gigabytes(total)}; {advice}"
    )
