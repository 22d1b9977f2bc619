"""Hostile review of the dense family's phased loops (``conv.py``): the transposed forward and the
strided conv's dx + dK pass loop over only their phase's taps (``jit_common._phase_taps``), the
transposed weight gradient over the tiles of its tap's one output phase.

Geometry where phases run no tap at all (kernel smaller than the stride, dilation sharing a factor
with the stride, ``H`` or ``W`` = 1, outputs smaller than the stride), ragged phases, padding past
the kernel's reach, tiny forced tiles (several tiles per phase, several weight-gradient splits),
every option (normalisation, mask, inverse kernels, smoothing, a given K, groups, dtypes,
channels-last, 64-bit indices) and non-finite values at pixels that only skipped taps would read.
Output, out_mask and every gradient are checked against the float64 reference.

CPU only (Triton interpreter): tiny shapes."""
from __future__ import annotations

import types

import pytest
import torch

from triton_helpers import (GRADS, ORDER, PT, REF, TOL, _triton_input, assert_close_rel, case, convt_in_hw,
                            convt_out_hw, guarded, guarded_nd, inv_params, reduction_tol, reference_forbidden,
                            spy_launches)

pytest.importorskip("pac_triton.triton")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from pac_triton.triton.jit_common import _phase_taps, _tile_walk, _tile_walk_next  # noqa: E402

F32, F16, BF16, F64 = torch.float32, torch.float16, torch.bfloat16, torch.float64


# --- helpers -------------------------------------------------------------------------------------

def _taps(phase, k, s, p, d):
    """Kernel rows that a phase runs (transposed forward: output phase u % s; strided conv's dx:
    input phase q % s), by brute force."""
    return [i for i in range(k) if (phase + p - i * d) % s == 0]


def _spy(monkeypatch):
    """Records each dense launch: ``(kernel, NSPLIT or None, TILE_W)``."""
    from pac_triton.triton import conv
    names = {conv.pac_conv_kernel: "forward", conv.pac_conv_dw_kernel: "dW", conv.pac_conv_dxdk_kernel: "dxdk"}
    return spy_launches(monkeypatch, lambda fn, k: (names[fn], k.get("NSPLIT"), k.get("TILE_W"))
                        if fn in names else None)


def _fwd_bwd(fn, tensors, static, grad_names, dtype, channels_last=False):
    """The float64 reference on the inputs rounded to ``dtype`` against the Triton backend on
    ``dtype`` inputs inside NaN guard bands: output, out_mask (exact) and the gradients of
    ``grad_names``. Returns ``(y, out_mask, grads)`` of the Triton run and ``(y, grads)`` of the
    reference."""
    rounded = {k: (None if v is None else v.to(dtype).double()) for k, v in tensors.items()}
    order = ORDER[fn]
    static = {"groups": 1, **static}
    leaves = {k: rounded[k].clone().requires_grad_() for k in grad_names if rounded.get(k) is not None}
    out = getattr(REF, fn)(*[leaves.get(k, rounded.get(k)) if k in rounded else static[k] for k in order])
    y_ref, om_ref = out if isinstance(out, tuple) else (out, None)
    gy = torch.randn(y_ref.shape, dtype=F64).to(dtype).double()
    names = list(leaves)
    exp = torch.autograd.grad(y_ref, [leaves[k] for k in names], gy)

    tri = {}
    for k, v in tensors.items():
        tri[k] = None if v is None else _triton_input(k, v, dtype, channels_last)
        if k in names:
            tri[k].requires_grad_()
    with reference_forbidden():
        tout = getattr(PT(), fn)(*[tri[k] if k in tri else static[k] for k in order])
        y, om = tout if isinstance(tout, tuple) else (tout, None)
        gyt = guarded(gy.to(dtype))
        got = torch.autograd.grad(y, [tri[k] for k in names], gyt)

    assert y.dtype == dtype and y.shape == y_ref.shape
    assert not torch.isnan(y).any(), "y: NaN (unwritten element or stray read)"
    assert_close_rel(y, y_ref.to(dtype), TOL[dtype], "y")
    if om_ref is None:
        assert om is None
    else:
        assert torch.equal(om.double(), om_ref.double()), "out_mask differs"
    for k, g, e in zip(names, got, exp):
        assert g.dtype == tri[k].dtype and g.shape == tri[k].shape, k
        assert not torch.isnan(g).any(), f"d{k}: NaN (unwritten element or stray read)"
        rtol = reduction_tol(dtype, y.numel()) if k in ("inv_alpha", "inv_lambda") else TOL[dtype]
        assert_close_rel(g, e.to(dtype), rtol, f"d{k}")
    return (y, om, dict(zip(names, got))), (y_ref, dict(zip(names, exp)))


def _guide_tensors(c, transposed):
    """float64 inputs of a guide case ``c``."""
    G = getattr(c, "G", 1)
    if transposed:
        Ho, Wo = convt_out_hw(c.H, c.W, c.k, c.s, c.p, c.op, c.d)
        wshape = (c.C, c.O // G, *c.k)
    else:
        Ho, Wo = c.H, c.W
        wshape = (c.O, c.C // G, *c.k)
    assert Ho >= 1 and Wo >= 1
    if transposed:
        assert all(o < max(s_, d_) for o, s_, d_ in zip(c.op, c.s, c.d)), "output_padding"
        assert convt_in_hw(Ho, Wo, c.k, c.s, c.p, c.op, c.d) == (c.H, c.W)
    alpha, lam = inv_params(c.kt)
    m = None
    if c.mask:
        m = (torch.rand(c.B, 1, c.H, c.W) > 0.3).double()
        m[0, 0, 0, 0] = 0
    r = lambda *s: torch.randn(*s, dtype=F64)  # noqa: E731
    return dict(input=r(c.B, c.C, c.H, c.W), guide=r(c.B, c.D, Ho, Wo), weight=r(*wshape), bias=r(c.O),
                inv_alpha=alpha, inv_lambda=lam,
                smooth_kernel=torch.rand(1, 1, *c.smooth, dtype=F64) if c.smooth else None, mask=m)


def _guide_static(c, transposed):
    st = dict(stride=c.s, padding=c.p, dilation=c.d, kernel_type=c.kt, normalize_kernel=c.norm,
              shared_filters=False, groups=getattr(c, "G", 1))
    if transposed:
        st["output_padding"] = c.op
    return st


def _force(c):
    from pac_triton.triton import configs
    return configs.force_blocks(**c.force)


# the suite's small blocks, plus tiny pixel tiles: several tiles per phase, ragged last tiles
TINY = dict(BLOCK_P=4, TILE_W=2, BLOCK_O=8, BLOCK_C=8, DW_BLOCK_C=4, KER_BLOCK_C=2, BLOCK_D=2)
ROW = dict(TINY, TILE_W=1)  # 4 x 1 tiles


XWB = ["input", "weight", "bias"]  # the gradients of the changed passes (no guide-side pass)


def _g(id, **kw):
    base = dict(B=1, C=3, O=4, D=2, G=1, k=(3, 3), s=(2, 2), p=(1, 1), op=(0, 0), d=(1, 1), kt="gaussian",
                norm=False, mask=False, smooth=None, dtype=F32, cl=False, force=TINY, idx64=False, grads=GRADS)
    return case(id, **{**base, **kw})


# --- _phase_taps against the brute-force tap set ---------------------------------------------------

@triton.jit
def _probe_phase_taps(out_ptr, K: tl.constexpr, S: tl.constexpr, P: tl.constexpr, D: tl.constexpr):
    ph = tl.program_id(0)
    f, c, st = _phase_taps(ph, K, S, P, D)
    tl.store(out_ptr + ph * 3, f)
    tl.store(out_ptr + ph * 3 + 1, c)
    tl.store(out_ptr + ph * 3 + 2, st)


def test_phase_taps_exhaustive():
    """``_phase_taps``'s ``(first, count, step)`` spans exactly the taps ``i`` with
    ``(phase + P - i*D) % S == 0``, for every phase: count 0 (step must still give a zero-trip
    loop), count 1, steps S / gcd(S, D) > 1, P past the kernel reach."""
    geoms = [(K, S, P, D) for K in (1, 3, 5, 7) for S, D in ((2, 2), (3, 1), (3, 2), (4, 2), (4, 6), (3, 9), (5, 3))
             for P in (0, 1, 7)]
    bad = []
    for K, S, P, D in geoms:
        out = torch.full((S * 3,), -99, dtype=torch.int32)
        _probe_phase_taps[(S,)](out, K, S, P, D)
        for ph, (f, c, st) in enumerate(out.view(S, 3).tolist()):
            want = _taps(ph, K, S, P, D)
            got = [f + n * st for n in range(c)]
            if got != want or st < 1:
                bad.append(((K, S, P, D, ph), (f, c, st), want))
    assert not bad, bad[:5]


@triton.jit
def _probe_tile_walk(out_ptr, par_ptr, TRIPS: tl.constexpr):
    q = tl.program_id(0)
    start = tl.load(par_ptr + q * 4)
    step = tl.load(par_ptr + q * 4 + 1)
    n_th = tl.load(par_ptr + q * 4 + 2)
    n_tw = tl.load(par_ptr + q * 4 + 3)
    b, row, col, db, drow, dcol = _tile_walk(start, step, n_th, n_tw)
    for k in range(TRIPS):
        tl.store(out_ptr + (q * TRIPS + k) * 3, b)
        tl.store(out_ptr + (q * TRIPS + k) * 3 + 1, row)
        tl.store(out_ptr + (q * TRIPS + k) * 3 + 2, col)
        b, row, col = _tile_walk_next(b, row, col, db, drow, dcol, n_th, n_tw)


def test_tile_walk_matches_division():
    """The weight gradient's carried tile walk (``_tile_walk`` / ``_tile_walk_next``) visits
    tile ``start + k * step`` as ``(image, tile row, tile column)`` = the divisions it replaces,
    for ragged grids, steps below, at and past one image's tiles, and starts in later images."""
    par = [(start, step, n_th, n_tw) for n_th in (1, 2, 3, 5) for n_tw in (1, 2, 4, 7)
           for step in sorted({1, 2, 3, n_th * n_tw - 1, n_th * n_tw, n_th * n_tw + 1, 2 * n_th * n_tw + 3} - {0})
           for start in (0, n_tw, n_th * n_tw + 2)]
    trips = 6
    out = torch.full((len(par) * trips * 3,), -99, dtype=torch.int32)
    _probe_tile_walk[(len(par),)](out, torch.tensor(par, dtype=torch.int32).flatten(), trips)
    got = out.view(len(par), trips, 3).tolist()
    bad = []
    for (start, step, n_th, n_tw), walk in zip(par, got):
        n = n_th * n_tw
        want = [[t // n, t % n // n_tw, t % n % n_tw] for t in (start + k * step for k in range(trips))]
        if walk != want:
            bad.append(((start, step, n_th, n_tw), walk, want))
    assert not bad, bad[:3]


# --- transposed: forward (phase taps) and weight gradient (one phase's tiles) ---------------------

CONVT = [
    # kernel 1 on rows with stride 3: two of three row phases run no tap; columns: stride 2,
    # dilation 2, so a column phase has all taps or none; B = 2, 2 x 2 tiles, ragged phases
    _g("k1x3-s3x2-d1x2-op2x1-B2", B=2, H=3, W=3, k=(1, 3), s=(3, 2), p=(0, 1), op=(2, 1), d=(1, 2)),
    # stride 2, dilation 2: even output rows / columns have no tap at all; normalised (a zero
    # normaliser divides by 1: the bias); the inverse kernel (alpha + r^(lambda/2) > 0 everywhere)
    _g("k3-s2-d2-p1-norm-inv-f64", H=3, W=2, s=(2, 2), d=(2, 2), p=(1, 1), op=(1, 0), kt="inv_1_-2", norm=True,
       dtype=F64),
    # stride (2, 3) against dilation (3, 2): row taps {0, 2} (step 2) or {1}, exactly one tap
    # per column phase; mask, asymmetric inverse kernel, smoothing, float64
    _g("k3-s2x3-d3x2-p2x1-op1x2-mask-invasym-smooth-f64", H=3, W=2, s=(2, 3), d=(3, 2), p=(2, 1), op=(1, 2),
       kt="inv_1_-2_asym", mask=True, smooth=(3, 3), dtype=F64),
    # kernel smaller than the stride, dilation past it: each row phase at most one tap, phase 1
    # none; padding past the kernel's reach on the columns (p = 3 > (k - 1) d = 2), stride 3
    _g("k3-s4x3-d5x1-p2x3-mask", H=2, W=4, s=(4, 3), d=(5, 1), p=(2, 3), op=(3, 0), mask=True, force=ROW,
       grads=XWB),
    # k5 with stride 3 and dilation 2: taps {0, 3}, {1, 4}, {2} by phase (step 3); one input row
    # (H = 1): every row tile ragged; groups 2, channels-last, float16
    _g("k5x3-s3x2-d2x1-H1-G2-cl-f16", C=4, O=6, G=2, H=1, W=4, k=(5, 3), s=(3, 2), d=(2, 1), p=(1, 1),
       op=(2, 1), cl=True, dtype=F16, grads=XWB),
    # one input column (W = 1) with an output narrower than the stride (Wo = 2 < 3): a tap whose
    # column phase has no pixel at all; bfloat16, masked, 20 input channels (two channel blocks)
    _g("k3-s2x3-W1-Wo2-C20-mask-bf16", C=20, O=5, H=3, W=1, s=(2, 3), d=(1, 1), p=(1, 1), op=(1, 1), mask=True,
       dtype=BF16, force=dict(TINY, TILE_W=4), grads=XWB + ["guide"]),
    # 64-bit indices (the IDX64 branch of the loop-carried taps and the dW first tile);
    # dilation 3 = stride 3 on rows: two row phases of three have no tap (normalised and
    # masked: out_mask 0, output the bias there)
    _g("k3-s3x2-d3x1-p2-idx64-norm-mask", H=3, W=2, s=(3, 2), d=(3, 1), p=(2, 2), op=(1, 1), norm=True,
       mask=True, idx64=True),
]


def _cdiv(a, b):
    return -(-a // b)


@pytest.mark.parametrize("c", CONVT)
def test_transposed_phased(c, monkeypatch):
    """``pac_conv_transpose2d``: output and every gradient against the float64 reference; the
    weight gradient ran with at most one phase's tiles per split; output pixels of a phase
    that runs no tap are exactly the bias."""
    from pac_triton.triton import host_common as hc
    if c.idx64:
        monkeypatch.setattr(hc, "INDEX32_LIMIT", 64)
    seen = _spy(monkeypatch)
    t = _guide_tensors(c, True)
    with _force(c):
        (y, _, _), _ = _fwd_bwd("pac_conv_transpose2d", t, _guide_static(c, True), c.grads, c.dtype, c.cl)
    dw = [r for r in seen if r[0] == "dW"]
    assert len(dw) == 1, seen
    Ho, Wo = y.shape[-2:]
    tw = dw[0][2]
    per_phase = _cdiv(_cdiv(Ho, c.s[0]), c.force["BLOCK_P"] // tw) * _cdiv(_cdiv(Wo, c.s[1]), tw)
    assert 1 <= dw[0][1] <= c.B * per_phase, (dw, per_phase)
    empty_rows = [u for u in range(Ho) if not _taps(u % c.s[0], c.k[0], c.s[0], c.p[0], c.d[0])]
    empty_cols = [v for v in range(Wo) if not _taps(v % c.s[1], c.k[1], c.s[1], c.p[1], c.d[1])]
    bias = t["bias"].to(c.dtype)[None, :, None, None]
    for part in (y[:, :, empty_rows], y[:, :, :, empty_cols]):
        assert torch.equal(part, bias.expand_as(part)), "a pixel of a zero-tap phase is not the bias"


def test_transposed_dw_many_splits(monkeypatch):
    """The transposed weight gradient with B = 2, 4 x 1 tiles, Ho = 11, Wo = 7 (ragged phases of
    4 / 4 / 3 rows and 4 / 3 columns, stride (3, 2)) and 25 channel pairs: fewer splits than the
    one phase's 8 tiles, so a split sums tiles of both images; every tap's sum matches."""
    from pac_triton.triton import configs
    seen = _spy(monkeypatch)
    torch.manual_seed(3)
    c = types.SimpleNamespace(B=2, C=5, O=5, D=1, H=4, W=3, k=(3, 3), s=(3, 2), p=(2, 2), op=(1, 0), d=(2, 3), kt="gaussian",
                 norm=False, mask=False, smooth=None)
    assert convt_out_hw(c.H, c.W, c.k, c.s, c.p, c.op, c.d) == (11, 7)
    with configs.force_blocks(**ROW):
        _fwd_bwd("pac_conv_transpose2d", _guide_tensors(c, True), _guide_static(c, True), ["weight"], F64)
    dw = [r for r in seen if r[0] == "dW"]
    assert len(dw) == 1 and 1 < dw[0][1] < 2 * 4, dw


def _nan_at_dropped_taps(B, kh, kw, Ho, Wo, H, W, s, p, d, transposed):
    """A given K ``[B, 1, kh, kw, Ho, Wo]`` (uniform in [0, 1)) holding NaN at every tap that lands
    on no input pixel (padding; transposed: also between input pixels): dropped taps, which must
    contribute exactly 0 and get a zero gradient (docs/semantics.md, Non-finite values)."""
    def ok(u, a, kk, n, s_, p_, d_):
        if transposed:  # K tap a pairs with conv tap kk - 1 - a
            z = u + p_ - (kk - 1 - a) * d_
            return z % s_ == 0 and 0 <= z // s_ < n
        return 0 <= u * s_ - p_ + a * d_ < n
    kern = torch.rand(B, 1, kh, kw, Ho, Wo, dtype=F64)
    for a in range(kh):
        for u in range(Ho):
            if not ok(u, a, kh, H, s[0], p[0], d[0]):
                kern[:, :, a, :, u, :] = float("nan")
    for b in range(kw):
        for v in range(Wo):
            if not ok(v, b, kw, W, s[1], p[1], d[1]):
                kern[:, :, :, b, :, v] = float("nan")
    assert kern.isnan().any() and not kern.isnan().all()
    return kern


def test_transposed_given_kernel_phases():
    """``pacconv_transpose2d`` with a given K (K_LOAD): k = 5 on rows with stride 3 and dilation 2
    (taps {0, 3}, {1, 4}, {2} by phase), k = 1 on columns with stride 2 (odd output columns run
    no tap); K is NaN at every dropped tap. Output, dx, dK (exactly 0 at the dropped taps), dW,
    bias against the reference."""
    torch.manual_seed(5)
    B, C, O, H, W, k, s, p, op, d = 2, 3, 4, 3, 4, (5, 1), (3, 2), (2, 0), (1, 1), (2, 1)
    Ho, Wo = convt_out_hw(H, W, k, s, p, op, d)
    kern = _nan_at_dropped_taps(B, *k, Ho, Wo, H, W, s, p, d, True)
    tensors = dict(input=torch.randn(B, C, H, W, dtype=F64), kernel=kern, weight=torch.randn(C, O, *k, dtype=F64),
                   bias=torch.randn(O, dtype=F64))
    static = dict(stride=s, padding=p, output_padding=op, dilation=d, shared_filters=False)
    (y, _, g), _ = _fwd_bwd("pacconv_transpose2d", tensors, static, ["input", "kernel", "weight", "bias"], F32)
    assert torch.equal(g["kernel"][kern.isnan()], torch.zeros_like(g["kernel"][kern.isnan()]))
    assert torch.equal(y[..., 1::2], tensors["bias"].float()[None, :, None, None].expand_as(y[..., 1::2]))


# --- strided conv: dx + dK over the input phase's taps --------------------------------------------

CONV = [
    # stride 2, dilation 2 on rows: odd input rows are read by no tap (dx = 0 there), even ones
    # by all three; dilation 1 on columns: taps {1} or {0, 2} (the loop-carried column wraps to
    # a first tap > 0); normalised, masked, smoothed
    _g("s2-d2x1-p2x1-norm-mask-smooth", B=2, C=3, O=4, H=7, W=6, s=(2, 2), d=(2, 1), p=(2, 1), norm=True,
       mask=True, smooth=(3, 3), force=TINY),
    # stride (3, 1) with dilation (3, 2): a row phase has all taps or none; 20 input channels
    # (two channel blocks: dK accumulated in memory over the tap loop), the inverse kernel
    _g("s3x1-d3x2-p1x2-C20-inv", C=20, O=5, H=8, W=5, s=(3, 1), d=(3, 2), p=(1, 2), kt="inv_1_-2", force=TINY),
    # stride (1, 2), dilation (1, 3), k 3 x 5: column taps {1, 3} or {0, 2, 4} (step 2), three
    # row taps each; groups 2, channels-last, float16
    _g("s1x2-d1x3-k3x5-G2-cl-f16", C=4, O=6, G=2, H=4, W=9, k=(3, 5), s=(1, 2), d=(1, 3), p=(1, 3),
       cl=True, dtype=F16, force=TINY),
    # k 5 x 3, stride (2, 3), dilation (1, 3): row taps {0, 2, 4} or {1, 3} (step 2), column
    # phases all taps or none; padding past the reach (5 > 4 on rows); 64-bit indices; mask
    _g("k5x3-s2x3-d1x3-p5x4-mask-idx64-f64", B=2, H=6, W=7, k=(5, 3), s=(2, 3), d=(1, 3), p=(5, 4), mask=True,
       dtype=F64, idx64=True, force=ROW),
]


@pytest.mark.parametrize("c", CONV)
def test_strided_backward_phased(c, monkeypatch):
    """``pac_conv2d`` with a stride: output and every gradient against the float64 reference; dx
    exactly 0 at input pixels that no tap reads."""
    from pac_triton.triton import host_common as hc
    if c.idx64:
        monkeypatch.setattr(hc, "INDEX32_LIMIT", 64)
    with _force(c):
        (_, _, g), _ = _fwd_bwd("pac_conv2d", _guide_tensors(c, False), _guide_static(c, False), GRADS, c.dtype,
                                c.cl)
    unread_h = [q for q in range(c.H) if not _taps(q % c.s[0], c.k[0], c.s[0], c.p[0], c.d[0])]
    unread_w = [q for q in range(c.W) if not _taps(q % c.s[1], c.k[1], c.s[1], c.p[1], c.d[1])]
    dx = g["input"]
    for rows in (dx[:, :, unread_h], dx[:, :, :, unread_w]):
        assert torch.equal(rows, torch.zeros_like(rows)), "dx at pixels no tap reads"


def test_strided_given_kernel_k1_s3():
    """``pacconv2d`` with a given K, k = 1 x 3 with stride (3, 2) and dilation (1, 2): two of
    three input row phases and every odd column run no tap; K is NaN at the taps that read the
    padding. Output, dL/dK (exactly 0 there), dx (0 at unread pixels), dW, bias."""
    from pac_triton.triton import configs
    torch.manual_seed(6)
    B, C, O, H, W, k, s, p, d = 2, 3, 4, 7, 6, (1, 3), (3, 2), (0, 2), (1, 2)
    Ho, Wo = (H - 1) // 3 + 1, (W + 4 - 4 - 1) // 2 + 1
    kern = _nan_at_dropped_taps(B, *k, Ho, Wo, H, W, s, p, d, False)
    tensors = dict(input=torch.randn(B, C, H, W, dtype=F64), kernel=kern, weight=torch.randn(O, C, *k, dtype=F64),
                   bias=torch.randn(O, dtype=F64))
    with configs.force_blocks(**TINY):
        (_, _, g), _ = _fwd_bwd("pacconv2d", tensors, dict(stride=s, padding=p, dilation=d, shared_filters=False),
                                ["input", "kernel", "weight", "bias"], F32)
    assert torch.equal(g["kernel"][kern.isnan()], torch.zeros_like(g["kernel"][kern.isnan()]))
    assert torch.equal(g["input"][:, :, [1, 2, 4, 5]], torch.zeros_like(g["input"][:, :, [1, 2, 4, 5]]))
    assert torch.equal(g["input"][..., 1::2], torch.zeros_like(g["input"][..., 1::2]))


# --- non-finite values at pixels only skipped taps would read ---------------------------------------

def _nonfinite_run(fn, t, static, dtype):
    """Triton and the reference in ``dtype`` on the same (non-finite) inputs; returns both
    ``(y, dx, dguide, dweight, dbias)``."""
    order = ORDER[fn]
    static = {"groups": 1, **static}
    res = []
    for be in (PT(), REF):
        leaves = {n: t[n].to(dtype).clone().requires_grad_() for n in ("input", "guide", "weight", "bias")}
        args = [leaves[n] if n in leaves else (t[n].to(dtype) if t.get(n) is not None else None) if n in t
                else static[n] for n in order]
        out = getattr(be, fn)(*args)
        y = out[0] if isinstance(out, tuple) else out
        torch.manual_seed(11)
        gy = torch.randn(y.shape, dtype=F64).to(dtype)
        res.append((y.detach(), *torch.autograd.grad(y, list(leaves.values()), gy)))
    return res


def _assert_same_nonfinite(got, exp, dtype):
    for name, a, e in zip(("y", "dx", "dguide", "dweight", "dbias"), got, exp):
        assert torch.isfinite(e).all(), f"{name}: the reference is not finite (test setup)"
        assert torch.isfinite(a).all(), (name, int(a.isnan().sum()), int(a.isinf().sum()))
        assert_close_rel(a, e, 4 * TOL[dtype], name)


def test_transposed_nonfinite_at_skipped_positions():
    """Transposed, normalised. Rows: k 3, stride 2, dilation 2, padding 1: even output rows run
    no tap. Columns: k 1, stride 2, padding 2: odd output columns run no tap, and input columns 0
    and W - 1 land outside the output (cropped). NaN / Inf in the guide at even rows (read only
    as the centre feature of tap-less pixels) and in x at the cropped columns: the reference
    keeps every output and gradient finite; so must Triton."""
    from pac_triton.triton import configs
    torch.manual_seed(7)
    B, C, O, D, H, W = 2, 3, 4, 2, 3, 5
    k, s, p, op, d = (3, 1), (2, 2), (1, 2), (1, 1), (2, 1)
    Ho, Wo = convt_out_hw(H, W, k, s, p, op, d)
    assert (Ho, Wo) == (8, 6) and convt_in_hw(Ho, Wo, k, s, p, op, d) == (H, W)
    x = torch.randn(B, C, H, W, dtype=F64)
    x[0, 1, 1, 0] = float("nan")  # input column 0 lands on output column -2: cropped
    x[1, 2, 2, W - 1] = float("inf")  # and column W - 1 on Wo
    g = torch.randn(B, D, Ho, Wo, dtype=F64)
    g[0, 0, 2, 3] = float("nan")  # even row: no tap there, the centre of tap-less pixels only
    g[1, 1, 4, :] = float("-inf")
    g[0, 1, 0, 5] = float("inf")
    t = dict(input=x, guide=g, weight=torch.randn(C, O, *k, dtype=F64), bias=torch.randn(O, dtype=F64),
             inv_alpha=None, inv_lambda=None, smooth_kernel=None, mask=None)
    static = dict(stride=s, padding=p, output_padding=op, dilation=d, kernel_type="gaussian",
                  normalize_kernel=True, shared_filters=False)
    with configs.force_blocks(**TINY):
        got, exp = _nonfinite_run("pac_conv_transpose2d", t, static, F32)
    _assert_same_nonfinite(got, exp, F32)


def test_strided_nonfinite_at_unread_pixels():
    """Strided conv, stride 3 on rows with k = 1 (rows 1, 2 mod 3 never read), stride 2 and
    dilation 2 on columns (odd columns never read): NaN / Inf in x and in the guide there reach
    neither the output nor any gradient (the dx + dK pass of those phases runs no tap)."""
    from pac_triton.triton import configs
    torch.manual_seed(8)
    B, C, O, D, H, W = 2, 3, 4, 2, 7, 7
    k, s, p, d = (1, 3), (3, 2), (0, 2), (1, 2)
    x = torch.randn(B, C, H, W, dtype=F64)
    g = torch.randn(B, D, H, W, dtype=F64)
    x[0, 0, 1, 2] = float("nan")
    x[1, 2, 5, 4] = float("inf")
    x[0, 1, 3, 3] = float("-inf")  # odd column
    g[0, 1, 2, 0] = float("nan")
    g[1, 0, 6, 5] = float("inf")
    g[1, 1, 4, 2] = float("nan")
    t = dict(input=x, guide=g, weight=torch.randn(O, C, *k, dtype=F64), bias=torch.randn(O, dtype=F64),
             inv_alpha=None, inv_lambda=None, smooth_kernel=None, mask=None)
    static = dict(stride=s, padding=p, dilation=d, kernel_type="gaussian", normalize_kernel=False,
                  shared_filters=False)
    with configs.force_blocks(**TINY):
        got, exp = _nonfinite_run("pac_conv2d", t, static, F32)
    _assert_same_nonfinite(got, exp, F32)
    # the poisoned pixels are read by no tap: their dx is exactly 0
    for b, c_, i, j in ((0, 0, 1, 2), (1, 2, 5, 4), (0, 1, 3, 3)):
        assert got[1][b, c_, i, j] == 0
