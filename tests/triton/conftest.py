"""Fixtures for the Triton-backend tests.

The top-level ``tests/conftest.py`` switches the Triton interpreter on when there is no CUDA
(before triton is imported). Here, for every test: small forced block sizes (every axis spans
several tiles), NaN-filled outputs, default configs (no autotuning) and IEEE float32 dots (no
TF32). Helpers (guard bands, named cases, runners, the reference made to raise while the
Triton path runs) live in ``triton_helpers.py``.
"""
from __future__ import annotations

import pytest

from triton_helpers import HAS_CUDA


@pytest.fixture
def small_blocks():
    """Dot tiles of 16 on GPU (the hardware minimum); 8 under the interpreter (cheaper, and
    the tiling logic is the same)."""
    from pac_triton.triton import configs
    dot = 16 if HAS_CUDA else 8
    configs.settings.fill_outputs_with_nan = True
    with configs.force_blocks(BLOCK_P=16, BLOCK_O=dot, BLOCK_C=dot, DW_BLOCK_C=4, KER_BLOCK_C=2, BLOCK_D=2):
        yield
    configs.settings.fill_outputs_with_nan = False


@pytest.fixture(autouse=True)
def _triton_env(small_blocks, monkeypatch):
    pytest.importorskip("pac_triton.triton")
    from pac_triton.triton import host_common
    monkeypatch.setenv("PAC_TRITON_AUTOTUNE", "0")
    monkeypatch.setattr(host_common, "allow_tf32", lambda: False)
    yield
