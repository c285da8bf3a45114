"""Hash of the compiled extension's sources (csrc/), shared by setup.py (which records it at build
time) and known_ops._ops (which compares it at import to detect a stale build).

It imports nothing from known_ops, so setup.py can load it by path before the package exists."""
from __future__ import annotations

import hashlib
from pathlib import Path


def source_fingerprint(csrc: Path) -> str:
    """SHA-256 over the relative paths and contents of every file under `csrc`, in sorted order."""
    digest = hashlib.sha256()
    root = csrc.parent
    for path in sorted(csrc.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()
