"""Shared pytest setup for the pac_triton suite.

Order matters: the Triton interpreter switch must be in the environment before anything
imports ``triton`` (importing torch does not), so it is set here, at the very top.
"""
import os

import torch

if not torch.cuda.is_available():
    # No GPU: any Triton kernel the suite reaches runs in the interpreter.
    os.environ.setdefault("TRITON_INTERPRET", "1")

# pytest-xdist's workers share the cores: each one with torch's default of one intra-op thread
# per core would oversubscribe them (-n 2 on 2 cores; the interpreted Triton tests are
# single-threaded either way, and here the difference is within the machine's noise).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

import contextlib  # noqa: E402
import functools  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from pac_testing import TOL, assert_close_rel, rel_rms_error, tol  # noqa: E402,F401
from sanitizer import _interp_active, sanitize, suite_sanitized  # noqa: E402

HAS_CUDA = torch.cuda.is_available()


def pytest_configure(config):
    # Also declared in pyproject.toml; repeated so the suite works from any rootdir.
    config.addinivalue_line("markers", "gpu: needs a CUDA device; reported as skipped elsewhere")
    config.addinivalue_line("markers", "slow: the slowest tests, run first (still run in CI)")
    config.addinivalue_line("markers", "unsanitized: not run under the suite-wide sanitizer (tests/sanitizer.py)")
    config.addinivalue_line("markers", "overflow_checked: run with the interpreter's int32 overflow checks "
                                       "(off elsewhere; see _interpreter_overflow_checks)")


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
    # The slowest tests (marker ``slow``: the AOT compile, ~35% of a cold suite's wall time on
    # one pytest-xdist worker) start first, so the other worker's share runs beside them and no
    # worker is left waiting on one at the end (stable: the rest keep their order).
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
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


@contextlib.contextmanager
def _interpreter_overflow_checks(on: bool):
    """Triton's interpreter builds an int32 overflow check for every integer ``+ - *`` of a
    kernel (``InterpreterOptions.sanitize_overflow``, on by default: the operation redone in
    int64 and compared with the int32 bounds) and then drops it: ``device_assert`` does nothing
    unless the ``debug`` option is on (triton 3.9, ``language/semantic.py``). So by default the
    suite paid about a third of each interpreted test's time for a check that could never fire
    (``test_pac_conv2d_backward[conv-k3-gauss-f32]``: 17.6 s with it, 11.7 s without).

    Here the check is off, except in tests marked ``overflow_checked`` (``test_golden.py``: one
    case per operator family through the Triton backend), where it is on *with* ``debug``, so an
    int32 overflow raises (``test_sanitizer.py::test_overflow_checks_on_where_marked``). At the
    suite's small shapes no index reaches 2**31 (the 64-bit offset paths are tested by forcing
    them)."""
    if not _interp_active():
        yield
        return
    import dataclasses

    from triton.runtime import interpreter
    builder = interpreter.interpreter_builder
    saved = builder.options
    builder.options = dataclasses.replace(saved, sanitize_overflow=on, debug=on or saved.debug)
    try:
        yield
    finally:
        builder.options = saved


class _NoPatch:
    def restore(self):
        pass


def _patch_lang_once_per_launch():
    """Triton's interpreter patches ``triton.language`` for the interpreter (``_patch_lang``:
    the builtins of ``tl``, ``tl.core``, ``tl.math``, ``tl.tensor`` and the tensor descriptors
    wrapped, found with ``inspect.getmembers``; ``range``, the tensor operators, ``reduce`` /
    ``scan`` and a few others set) once per launch, which it restores at the launch's end, and
    again at every call of a ``@triton.jit`` helper inside the kernel, whose patches it never
    restores. The modules are already patched then: the second pass wraps nothing (a wrapper is no
    longer a builtin), sets equivalent new objects for the rest and costs ~2 ms per helper call,
    a third of an interpreted test's time in this project's helper-heavy kernels. Here, while a
    launch (``GridExecutor.__call__``) runs, a helper's pass is skipped when the modules it sees
    are among those the launch patched; anything else (a launch's own pass and its restore, a
    helper whose module sees other modules or none, a jit function called outside a launch) goes
    to upstream's ``_patch_lang`` as before.
    ``test_sanitizer.py::test_lang_patched_once_per_launch`` checks that this is in place."""
    import inspect

    import triton.language as tl
    from triton.runtime import interpreter

    launches = []  # one entry per GridExecutor call running now (launches never nest)
    active = []  # the modules the running launch patched

    seen_langs = {}  # fn -> the language modules among its globals (a scan of them per helper call was ~2%)

    def langs(fn):
        mods = seen_langs.get(fn)
        if mods is None:
            mods = seen_langs[fn] = frozenset(id(v) for v in fn.__globals__.values()
                                              if inspect.ismodule(v) and (v is tl or v is tl.core))
        return mods

    def patch_lang(fn):
        if not launches:  # not inside a launch: upstream's behaviour
            return patch_lang.original(fn)
        mods = langs(fn)
        if active:  # a helper called inside the launch
            if mods and mods <= active[0]:
                return _NoPatch()
            active[0] |= mods  # other modules (tl.core for tl.sum): patched as upstream does,
            return patch_lang.original(fn)  # never restored; skipped from now on in this launch
        scope = patch_lang.original(fn)  # the launch's own pass, restored at its end
        active.append(set(mods))
        return scope

    grid_call = interpreter.GridExecutor.__call__

    def launch(self, *args, **kwargs):
        launches.append(self)
        try:
            return grid_call(self, *args, **kwargs)
        finally:
            launches.pop()
            active.clear()

    patch_lang.original = interpreter._patch_lang
    interpreter._patch_lang = patch_lang
    interpreter.GridExecutor.__call__ = launch


def _memoise_np_dtypes():
    """Triton's interpreter maps a Triton type to the NumPy dtype that holds its values
    (``interpreter._get_np_dtype``) for every value it creates, and builds a 20-entry dict to do
    so at each call: ~14% of an interpreted test's time here (``test_pac_conv2d_backward``'s six
    cases alone: 30-32 s -> 26-27 s). The answer depends on the type only (a pointer or a block of
    pointers: uint64; else its element type's), and Triton types that compare equal have the same
    element type, so it is memoised per element type (a block type's, or the scalar type itself;
    pointer and block types define ``__eq__`` without ``__hash__``, so every pointer shares one
    entry). ``test_sanitizer.py::test_np_dtype_memo_in_place`` checks it against upstream's."""
    import triton.language as tl
    from triton.runtime import interpreter

    upstream = getattr(interpreter, "_get_np_dtype", None)
    if upstream is None or hasattr(upstream, "upstream"):
        return
    memo = {}
    block_type, pointer_type = tl.block_type, tl.pointer_type

    def get_np_dtype(tt_dtype):
        key = tt_dtype.element_ty if isinstance(tt_dtype, block_type) else tt_dtype
        if isinstance(key, pointer_type):
            key = pointer_type
        try:
            return memo[key]
        except KeyError:
            memo[key] = out = upstream(tt_dtype)
            return out

    get_np_dtype.upstream = upstream
    interpreter._get_np_dtype = get_np_dtype


if _interp_active():
    _patch_lang_once_per_launch()
    _memoise_np_dtypes()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """Under Triton's interpreter every test runs under the memory sanitizer (``sanitizer.py``:
    out-of-bounds and misaligned accesses, races between programs, unordered read-after-write
    inside a program) and fails on any finding; ``PAC_TRITON_SANITIZE=0`` switches it off.
    Dot sizes are not held to the GPU's 16 here (tests force smaller tiles, which ``configs``
    refuses on a GPU; ``test_sanitizer.py`` checks the default configs' dots). The sanitizer's
    own tests (marker ``unsanitized``) plant hazards and are left out."""
    overflow = _interpreter_overflow_checks(item.get_closest_marker("overflow_checked") is not None)
    if not suite_sanitized() or item.get_closest_marker("unsanitized"):
        with overflow:
            return (yield)
    with overflow, sanitize(gpu_dot_sizes=False) as s:
        result = yield
    if s.findings:
        pytest.fail("the sanitizer found GPU-only hazards:\n" + "\n".join(map(str, s.findings)), pytrace=False)
    return result


@pytest.fixture
def tolerance():
    """dtype -> relative-RMS tolerance (see ``pac_testing.TOL``)."""
    return tol
