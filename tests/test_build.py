"""The import-time checks of the compiled extension: a stale or mismatched build gives a clear
ImportError that says how to rebuild (known_ops/_ops.py)."""
from __future__ import annotations

import re

import pytest
import torch

from known_ops import _build_info, _ops


def test_stale_sources_are_reported(monkeypatch):
    monkeypatch.setattr(_build_info, "SOURCE_FINGERPRINT", "0" * 64)
    with pytest.raises(ImportError, match=r"stale .*csrc/ changed.*make build"):
        _ops._load_extension()


def test_other_torch_version_is_reported(monkeypatch):
    monkeypatch.setattr(_build_info, "TORCH_VERSION", "0.0.1")
    with pytest.raises(ImportError, match=r"built against torch 0\.0\.1, but torch " + re.escape(torch.__version__) + ".*make build"):
        _ops._load_extension()


def test_current_build_loads():
    _ops._load_extension()  # the build the other tests use is up to date
