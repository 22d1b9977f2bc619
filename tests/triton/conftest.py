"""Fixtures for the Triton-backend tests.

The top-level ``tests/conftest.py`` switches the Triton interpreter on when there is no CUDA
(before triton is imported). Here: small forced block sizes (every axis spans several tiles)
and NaN-filled outputs. Helpers (guard bands, the reference made to raise while the Triton path
runs) live in ``triton_helpers.py``.
"""
from __future__ import annotations

import pytest

from triton_helpers import HAS_CUDA


@pytest.fixture
def small_blocks():
    """Dot tiles of 16 on GPU (the hardware minimum); 8 under the interpreter (cheaper, and
    the tiling logic is the same)."""
    from pac_triton.triton import launch, tuning
    dot = 16 if HAS_CUDA else 8
    launch.FILL_OUTPUTS_WITH_NAN = True
    with tuning.force_blocks(BLOCK_P=16, BLOCK_O=dot, BLOCK_C=dot, DW_BLOCK_C=4, KER_BLOCK_C=2, BLOCK_D=2):
        yield
    launch.FILL_OUTPUTS_WITH_NAN = False


