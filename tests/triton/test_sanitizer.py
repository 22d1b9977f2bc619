"""The interpreter's memory sanitizer (``sanitizer.py``): each hazard it exists for, planted in a
tiny kernel, is reported; the same kernel written correctly is not. Then the project's kernels
under it at their default configs (``test_default_configs_sanitized``)."""
from __future__ import annotations

import os

import pytest
import torch

from triton_helpers import HAS_CUDA

pytestmark = [pytest.mark.skipif(HAS_CUDA or os.environ.get("TRITON_INTERPRET", "0") in ("", "0"),
                                 reason="the sanitizer instruments Triton's interpreter (CPU runs only)"),
              pytest.mark.unsanitized]

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")

from sanitizer import sanitize  # noqa: E402


@triton.jit
def _copy(src, dst, n, SHIFT: tl.constexpr, MASKED: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    if MASKED:
        v = tl.load(src + offs + SHIFT, mask=offs + SHIFT < n, other=0.0)
        tl.store(dst + offs, v, mask=offs < n)
    else:
        v = tl.load(src + offs + SHIFT)
        tl.store(dst + offs, v)


@triton.jit
def _sum_rows(src, dst, n, PER_PROGRAM_OUTPUT: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    v = tl.sum(tl.load(src + pid * BLOCK + tl.arange(0, BLOCK)), axis=0)
    if PER_PROGRAM_OUTPUT:
        tl.store(dst + pid, v)
    else:
        tl.store(dst, v)  # every program writes dst[0]: a race


@triton.jit
def _chain(buf, n, BLOCK: tl.constexpr):
    # program 1 reads what program 0 writes in the same launch
    pid = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    if pid == 0:
        tl.store(buf + offs, tl.zeros([BLOCK], tl.float32) + 1.0)
    else:
        v = tl.load(buf + offs)
        tl.store(buf + BLOCK + offs, v)


@triton.jit
def _accumulate(buf, BLOCK: tl.constexpr, BARRIER: tl.constexpr):
    # two passes over one row, the second reads the first's stores in another layout
    offs = tl.arange(0, BLOCK)
    tl.store(buf + offs, offs.to(tl.float32))
    if BARRIER:
        tl.debug_barrier()
    v = tl.load(buf + (BLOCK - 1 - offs))
    tl.store(buf + BLOCK + offs, v)


@triton.jit
def _pairs(src, dst, START: tl.constexpr, BLOCK: tl.constexpr):
    # bf16 pairs read as int32 words from element START on
    words = (src + START).to(tl.pointer_type(tl.int32))
    offs = tl.arange(0, BLOCK)
    tl.store(dst + offs, tl.load(words + offs))


@triton.jit
def _small_dot(a, b, c, K: tl.constexpr):
    i = tl.arange(0, 16)
    k = tl.arange(0, K)
    x = tl.load(a + i[:, None] * K + k[None, :])
    y = tl.load(b + k[:, None] * 16 + i[None, :])
    tl.store(c + i[:, None] * 16 + i[None, :], tl.dot(x, y))


def _kinds(s):
    return sorted({f.kind for f in s.findings})


def test_out_of_bounds_load_is_reported_and_masked_load_is_not():
    src, dst = torch.arange(40.0), torch.empty(40)
    with sanitize() as s:
        _copy[(3,)](src, dst, 40, SHIFT=1, MASKED=True, BLOCK=16)
    assert s.findings == [] and s.launches == 1
    torch.testing.assert_close(dst[:39], src[1:])
    big_src, dst2 = torch.arange(48.0), torch.empty(48)
    with sanitize() as s:
        # unmasked, 48 = 3 x 16 elements: the last program's last load is one past the end
        _copy[(3,)](big_src, dst2, 48, SHIFT=1, MASKED=False, BLOCK=16)
    assert _kinds(s) == ["out-of-bounds"], s.findings
    assert "program (2, 0, 0) loads 1 element(s)" in str(s.findings[0]), s.findings
    torch.testing.assert_close(dst2[:47], big_src[1:])


def test_out_of_bounds_store_is_reported():
    src, dst = torch.arange(48.0), torch.empty(40)
    with sanitize() as s:
        _copy[(3,)](src, dst, 40, SHIFT=0, MASKED=False, BLOCK=16)
    assert _kinds(s) == ["out-of-bounds"] and "stores 8 element(s)" in s.findings[0].detail, s.findings
    torch.testing.assert_close(dst, src[:40])  # the stores past the end were left out


def test_write_write_race_is_reported():
    src = torch.randn(64)
    with sanitize() as s:
        _sum_rows[(4,)](src, torch.empty(4), 64, PER_PROGRAM_OUTPUT=True, BLOCK=16)
    assert s.findings == []
    with sanitize() as s:
        _sum_rows[(4,)](src, torch.empty(4), 64, PER_PROGRAM_OUTPUT=False, BLOCK=16)
    assert _kinds(s) == ["write-write race"] and "_sum_rows" in str(s.findings[0])


def test_read_write_race_between_programs_is_reported():
    buf = torch.zeros(32)
    with sanitize() as s:
        _chain[(2,)](buf, 32, BLOCK=16)
    assert _kinds(s) == ["read-write race"]
    assert "program (1, 0, 0)" in s.findings[0].detail and "program (0, 0, 0)" in s.findings[0].detail


def test_unordered_read_after_write_in_one_program_needs_a_barrier():
    with sanitize() as s:
        _accumulate[(1,)](torch.zeros(32), BLOCK=16, BARRIER=False)
    assert _kinds(s) == ["unordered read-after-write"]
    with sanitize() as s:
        _accumulate[(1,)](torch.zeros(32), BLOCK=16, BARRIER=True)
    assert s.findings == []


def test_misaligned_word_load_is_reported():
    src = torch.randn(40).to(torch.bfloat16)
    dst = torch.empty(16, dtype=torch.int32)
    with sanitize() as s:
        _pairs[(1,)](src, dst, START=2, BLOCK=16)
    assert s.findings == []
    torch.testing.assert_close(dst, src[2:34].view(torch.int32))
    with sanitize() as s:
        _pairs[(1,)](src, dst, START=1, BLOCK=16)
    assert _kinds(s) == ["misaligned"] and "16 4-byte element(s)" in s.findings[0].detail, s.findings


def test_dot_inner_dimension_below_16_fails_as_on_a_gpu():
    a, b, c = torch.randn(16 * 8), torch.randn(8 * 16), torch.empty(256)
    _small_dot[(1,)](a, b, c, K=8)  # the interpreter alone accepts it
    with sanitize():
        with pytest.raises(Exception, match="K >= 16"):
            _small_dot[(1,)](torch.randn(16 * 8), torch.randn(8 * 16), torch.empty(256), K=8)
        _small_dot[(1,)](torch.randn(16 * 16), torch.randn(16 * 16), torch.empty(256), K=16)


def test_sanitizer_restores_the_interpreter():
    from triton.runtime import interpreter as I
    before = (I.InterpreterBuilder.create_masked_load, I.GridExecutor.__call__,
              I.interpreter_builder.codegen_fns["min_dot_size"])
    with pytest.raises(ZeroDivisionError):
        with sanitize():
            1 / 0
    after = (I.InterpreterBuilder.create_masked_load, I.GridExecutor.__call__,
             I.interpreter_builder.codegen_fns["min_dot_size"])
    assert before == after


# --- the project's kernels at their default configs --------------------------------------------

def _module(kind):
    import pac_triton as pac
    if kind == "conv":
        return pac.PacConv2d(3, 5, 3, padding=1, kernel_type="inv_0.5_1.5", normalize_kernel=True), 3
    if kind == "conv-s2-groups":
        return pac.PacConv2d(6, 4, 5, stride=2, padding=2, groups=2), 6
    if kind == "depthwise":
        return pac.PacConv2d(7, 7, 3, padding=1, groups=7, smooth_kernel_type="gaussian"), 7
    if kind == "transposed":
        return pac.PacConvTranspose2d(3, 5, 5, stride=2, padding=2, output_padding=1), 3
    if kind == "pool":
        return pac.PacPool2d(3, padding=1, normalize_kernel=True), 5
    raise ValueError(kind)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("kind", ["conv", "conv-s2-groups", "depthwise", "transposed", "pool"])
def test_default_configs_sanitized(kind, dtype):
    """Each family's forward and backward at the default (not forced) configs, on odd channel
    and guide counts (3, 5, 7; D = 3): no GPU-only hazard, and every tl.dot at least 16 deep as
    a GPU needs (the interpreter alone takes less)."""
    from pac_triton.triton import configs
    torch.manual_seed(0)
    m, C = _module(kind)
    m = m.to(dtype)
    m.backend = "triton"
    hw = (5, 4) if kind == "transposed" else (9, 7)
    x = torch.randn(1, C, *hw, dtype=dtype, requires_grad=True)
    guide_hw = (10, 8) if kind == "transposed" else hw
    g = torch.randn(1, 3, *guide_hw, dtype=dtype, requires_grad=True)
    with configs.force_blocks(), sanitize() as s:  # no forced blocks: the defaults
        y = m(x, g)
        y.float().square().sum().backward()
    assert s.findings == [], "\n".join(map(str, s.findings))
    assert s.launches >= 3 and torch.isfinite(x.grad).all() and torch.isfinite(g.grad).all()


@triton.jit
def _scale_index(dst, FACTOR: tl.constexpr):
    i = tl.program_id(0) + 1
    tl.store(dst, (i * FACTOR).to(tl.float32))


def _int32_overflow_raises():
    out = torch.zeros(1)
    try:
        _scale_index[(2,)](out, FACTOR=2 ** 31 - 1)  # program 1: 2 * (2**31 - 1) overflows int32
    except Exception as e:  # noqa: BLE001 (the interpreter's device_assert)
        return "overflow" in str(e)
    return False


@pytest.mark.overflow_checked
def test_overflow_checks_on_where_marked():
    """The marker ``overflow_checked`` (tests/conftest.py) turns the interpreter's int32
    overflow checks on, with ``debug`` so that they fire: an int32 index product past 2**31
    raises."""
    assert _int32_overflow_raises()


def test_overflow_checks_off_elsewhere():
    """Unmarked tests run without them (built and then dropped by triton's default options, they
    cost a third of an interpreted test's time): the same overflow passes silently, as it would
    in a GPU kernel compiled without ``debug``."""
    assert not _int32_overflow_raises()


@triton.jit
def _twice(v):
    return v * 2


@triton.jit
def _helpers(dst, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    v = _twice(_twice(offs.to(tl.float32)))
    tl.store(dst + offs, tl.sum(_twice(v)[None, :], axis=0))


def test_lang_patched_once_per_launch(monkeypatch):
    """tests/conftest.py's ``_patch_lang_once_per_launch`` is in place: a launch whose kernel
    calls three ``@triton.jit`` helpers (and ``tl.sum``, a jit function of ``tl.core``'s
    module) patches ``triton.language`` once for the kernel and once for ``tl.sum``'s module, not
    at every helper call, and computes the same result; a jit function called outside a launch
    is patched as upstream does and does not stop the next launch from patching."""
    from triton.runtime import interpreter
    calls = []
    original = interpreter._patch_lang.original
    monkeypatch.setattr(interpreter._patch_lang, "original", lambda fn: calls.append(fn.__name__) or original(fn))
    _twice(torch.ones(1))  # a jit function called outside a launch: upstream's pass, unrestored
    out = torch.zeros(16)
    _helpers[(1,)](out, BLOCK=16)
    assert calls == ["_twice", "_helpers", "sum"], calls
    assert torch.equal(out, torch.arange(16.0) * 8)
    _helpers[(2,)](out, BLOCK=16)  # a second launch patches again (the first one restored)
    assert calls == ["_twice", "_helpers", "sum", "_helpers", "sum"], calls


@pytest.mark.skipif(HAS_CUDA, reason="the memo is installed only for Triton's interpreter (no CUDA device here)")
def test_np_dtype_memo_in_place():
    """tests/conftest.py's ``_memoise_np_dtypes`` is in place and answers as upstream's
    ``_get_np_dtype`` does for scalar, pointer and block types, the first time and from the memo."""
    import triton.language as tl
    from triton.runtime import interpreter
    memo = interpreter._get_np_dtype
    assert hasattr(memo, "upstream"), "the interpreter's _get_np_dtype is not memoised"
    scalars = [tl.int1, tl.int8, tl.uint8, tl.int16, tl.int32, tl.uint32, tl.int64, tl.float16, tl.bfloat16,
               tl.float32, tl.float64]
    types = scalars + [tl.pointer_type(t) for t in scalars] + [tl.block_type(t, [16, 4]) for t in scalars] + [
        tl.block_type(tl.pointer_type(tl.float32), [8])]
    for _ in range(2):
        for t in types:
            assert memo(t) == memo.upstream(t), t
    assert memo(tl.block_type(tl.bfloat16, [2])) == memo.upstream(tl.bfloat16)  # bf16 held as uint16
