"""Shared pytest setup for the pac_triton suite.

Order matters: the Triton interpreter switch must be in the environment before anything
imports ``triton`` (importing torch does not), so it is set here, at the very top.
"""
import os

import torch

if not torch.cuda.is_available():
    # No GPU: any Triton kernel the suite reaches runs in the interpreter.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import functools  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from pac_testing import TOL, assert_close_rel, rel_rms_error, tol  # noqa: E402,F401
from sanitizer import sanitize, suite_sanitized  # noqa: E402

HAS_CUDA = torch.cuda.is_available()


def pytest_configure(config):
    # Also declared in pyproject.toml; repeated so the suite works from any rootdir.
    config.addinivalue_line("markers", "gpu: needs a CUDA device; reported as skipped elsewhere")
    config.addinivalue_line("markers", "slow: slower tests (still run in CI)")
    config.addinivalue_line("markers", "unsanitized: not run under the suite-wide sanitizer (tests/sanitizer.py)")


def _call(fn, args, kwargs):
    return fn(*args, **kwargs)


# CPython keeps Python frames on a per-thread stack of 16 KiB chunks, frees a chunk as soon as
# its last frame returns, and (before the fix of python/cpython#142183, merged for 3.13 and 3.14
# in March 2026) keeps no spare: a loop that calls across a chunk boundary maps and unmaps
# 16 KiB per call.
# Triton's interpreter does exactly that; on this suite's Python 3.11 it cost ~40% of the
# tests' CPU time (545k mmap/munmap pairs in one 15 s test; strace). Each test function is
# therefore called from one frame declared ~1 MiB deep (a larger co_stacksize; the slots are
# never touched), which CPython places at the base of a fresh 2 MiB chunk: the test's own
# frames then live in the ~1 MiB above it and cross no boundary. Same results, less time.
_call_on_big_chunk = None
if sys.implementation.name == "cpython":
    _call_on_big_chunk = type(_call)(_call.__code__.replace(co_stacksize=1 << 17), _call.__globals__)


def _on_big_chunk(fn):
    @functools.wraps(fn)
    def run(*args, **kwargs):
        return _call_on_big_chunk(fn, args, kwargs)
    return run


def pytest_collection_modifyitems(config, items):
    if _call_on_big_chunk is not None:
        for item in items:
            if isinstance(item, pytest.Function):
                item.obj = _on_big_chunk(item.obj)
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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """Under Triton's interpreter every test runs under the memory sanitizer (``sanitizer.py``:
    out-of-bounds and misaligned accesses, races between programs, unordered read-after-write
    inside a program) and fails on any finding; ``PAC_TRITON_SANITIZE=0`` switches it off.
    Dot sizes are not held to the GPU's 16 here (tests force smaller tiles, which ``configs``
    refuses on a GPU; ``test_sanitizer.py`` checks the default configs' dots). The sanitizer's
    own tests (marker ``unsanitized``) plant hazards and are left out."""
    if not suite_sanitized() or item.get_closest_marker("unsanitized"):
        return (yield)
    with sanitize(gpu_dot_sizes=False) as s:
        result = yield
    if s.findings:
        pytest.fail("the sanitizer found GPU-only hazards:\n" + "\n".join(map(str, s.findings)), pytrace=False)
    return result


@pytest.fixture
def tolerance():
    """dtype -> relative-RMS tolerance (see ``pac_testing.TOL``)."""
    return tol
