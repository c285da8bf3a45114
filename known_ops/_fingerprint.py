"""Hash of the compiled extension's sources (csrc/ and the build script setup.py, whose flags are part
of the build), shared by setup.py (which records it at build time) and known_ops._ops (which compares
it at import to detect a stale build).

It imports nothing from known_ops, so setup.py can load it by path before the package exists."""
from __future__ import annotations

import hashlib
from pathlib import Path


def _is_cuda_source(path: Path) -> bool:
    """The CUDA kernels and their torch bindings (compiled only into CUDA builds)."""
    return path.suffix in (".cu", ".cuh") or "_cuda" in path.stem


def source_fingerprint(csrc: Path, with_cuda: bool = True) -> str:
    """SHA-256 over the relative paths and contents of the files under `csrc` that a build compiles
    (all of them, or without the CUDA sources for a CPU-only build), in sorted order, and of setup.py
    beside `csrc` (its compiler flags, e.g. OpenMP, change the build too)."""
    digest = hashlib.sha256()
    root = csrc.parent
    build_script = root / "setup.py"
    for path in [build_script] * build_script.is_file() + sorted(csrc.rglob("*")):
        if path.is_file() and (with_cuda or not _is_cuda_source(path)):
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()
