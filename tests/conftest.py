"""Shared pytest setup for the pac_triton suite.

Order matters: the Triton interpreter switch must be in the environment before anything
imports ``triton`` (importing torch does not), so it is set here, at the very top.
"""
import os

import torch

if not torch.cuda.is_available():
    # No GPU: any Triton kernel the suite reaches runs in the interpreter.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import random  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from pac_testing import TOL, assert_close_rel, rel_rms_error, tol  # noqa: E402,F401

HAS_CUDA = torch.cuda.is_available()


def pytest_configure(config):
    # Also declared in pyproject.toml; repeated so the suite works from any rootdir.
    config.addinivalue_line("markers", "gpu: needs a CUDA device; reported as skipped elsewhere")
    config.addinivalue_line("markers", "slow: slower tests (still run in CI)")


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def fixed_seed():
    """Every test starts from the same seed, so failures reproduce."""
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    yield


@pytest.fixture(autouse=True)
def _no_backend_env(monkeypatch):
    """Tests choose their backend explicitly; an inherited PAC_TRITON_BACKEND must not leak in."""
    monkeypatch.delenv("PAC_TRITON_BACKEND", raising=False)
    yield


@pytest.fixture
def tolerance():
    """dtype -> relative-RMS tolerance (see ``pac_testing.TOL``)."""
    return tol
