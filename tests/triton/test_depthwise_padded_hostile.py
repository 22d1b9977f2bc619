"""Hostile tests of the depthwise forward's padded path (``pac_dw_kernel`` with ``PADDED``:
``_dw_padded_taps`` over the zero-padded channels-last staging copy of ``host_common.
padded_channels_last``). Every case runs the Triton backend against the float64 reference on
the same rounded inputs, with NaN-filled outputs (the package fixture), and asserts which path
the forward launches took (a spy on ``host_common.checked`` records the ``PADDED`` kwarg of
every ``pac_dw_kernel`` launch).

The package fixture forces BLOCK_D=2 (the padded path needs D <= BLOCK_D), so each test forces
its own blocks (``blocks``: BLOCK_P=16, DW_BLOCK_C=4, BLOCK_D=16 unless a case says otherwise)."""
from __future__ import annotations

import contextlib

import pytest
import torch

import pac_triton
from pac_testing import TOL, assert_close_rel
from triton_helpers import guarded, reference_forbidden

pytest.importorskip("pac_triton.triton")
from pac_triton.triton import configs, depthwise  # noqa: E402

F32, F16, BF16, F64 = torch.float32, torch.float16, torch.bfloat16, torch.float64
NAN, INF = float("nan"), float("inf")
BLOCKS = dict(BLOCK_P=16, DW_BLOCK_C=4, BLOCK_D=16)


# --- helpers ---------------------------------------------------------------------------------

@contextlib.contextmanager
def dw_launches():
    """Records ``PADDED`` (False when absent) of every ``pac_dw_kernel`` forward launch."""
    hc = depthwise.hc
    orig = hc.checked
    rec = []

    class Spy(orig):
        def __getitem__(self, grid):
            launch = super().__getitem__(grid)
            name = getattr(self.kernel, "__name__", None) or self.kernel.fn.__name__

            def run(*a, **kw):
                if name == "pac_dw_kernel":
                    rec.append(bool(kw.get("PADDED", False)))
                return launch(*a, **kw)
            return run
    hc.checked = Spy
    try:
        yield rec
    finally:
        hc.checked = orig


@contextlib.contextmanager
def blocks(**kw):
    with configs.force_blocks(**{**BLOCKS, **kw}):
        yield


def arrange(t, layout):
    """``t`` [B, C, H, W] in a given memory layout (same values)."""
    if layout == "nchw":
        return t.contiguous()
    if layout == "cl":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "slice":  # NCHW view inside a NaN guard band (not dense)
        return guarded(t)
    if layout == "cl_slice":
        return guarded(t, channels_last=True)
    if layout == "hfirst":  # dense, memory order (B, W, C, H): H fastest
        return t.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)
    if layout == "wstride2":  # every other column of a wider tensor
        B, C, H, W = t.shape
        buf = torch.full((B, C, H, 2 * W), NAN, dtype=t.dtype)
        buf[..., ::2] = t
        return buf[..., ::2]
    raise ValueError(layout)


def assert_matches(got, exp, dtype, name):
    """NaN and +-Inf at the same elements, the finite rest within TOL[dtype] (relative RMS)."""
    got = got.detach().double().cpu()
    exp = exp.detach().to(dtype).double().cpu()
    assert tuple(got.shape) == tuple(exp.shape), f"{name}: shape {tuple(got.shape)} != {tuple(exp.shape)}"
    gn, en = torch.isnan(got), torch.isnan(exp)
    assert torch.equal(gn, en), (f"{name}: NaN pattern differs: got NaN at {gn.nonzero().tolist()[:8]}, "
                                 f"expected at {en.nonzero().tolist()[:8]}")
    gi, ei = torch.isinf(got), torch.isinf(exp)
    assert torch.equal(gi, ei) and torch.equal(got[gi], exp[ei]), f"{name}: Inf pattern differs"
    fin = ~(en | ei)
    assert_close_rel(got[fin], exp[fin], TOL[dtype], name)


def call(op, backend, x, g, *, k=(3, 3), w=None, b=None, mask=None, **kw):
    """op: "pool" (pac_pool2d, kernel k), "dw" (pac_conv2d groups=C, w [C, 1, kh, kw]), "shared"
    (pac_conv2d shared_filters, w [1, 1, kh, kw])."""
    if op == "pool":
        out = pac_triton.pac_pool2d(x, g, k, mask=mask, backend=backend, **kw)
    elif op == "dw":
        out = pac_triton.pac_conv2d(x, g, w, b, mask=mask, groups=x.shape[1], backend=backend, **kw)
    elif op == "shared":
        out = pac_triton.pac_conv2d(x, g, w, b, mask=mask, shared_filters=True, backend=backend, **kw)
    else:
        raise ValueError(op)
    return out if isinstance(out, tuple) else (out, None)


def make_inputs(op, B, C, D, H, W, k, bias=True):
    r = lambda *s: torch.randn(*s, dtype=F64)  # noqa: E731
    x, g = r(B, C, H, W), r(B, D, H, W)
    w = b = None
    if op == "dw":
        w, b = r(C, 1, *k), (r(C) if bias else None)
    elif op == "shared":
        w, b = r(1, 1, *k), (r(C) if bias else None)
    return x, g, w, b


def check(op, x, g, *, w=None, b=None, mask=None, k=(3, 3), dtype=F32, gdtype=None, layout="nchw", padded=True,
          **kw):
    """Triton (``dtype``, the guide and mask in ``gdtype`` (default ``dtype``), x in ``layout``)
    against the float64 reference on the rounded inputs; asserts every forward launch took the
    padded path (``padded``) or none did."""
    gdtype = gdtype or dtype
    rd = lambda t, dt=dtype: None if t is None else t.to(dt).double()  # noqa: E731
    exp_y, exp_m = call(op, "reference", rd(x), rd(g, gdtype), k=k, w=rd(w), b=rd(b), mask=rd(mask, gdtype), **kw)
    td = lambda t, dt=dtype: None if t is None else t.to(dt)  # noqa: E731
    xt = arrange(x.to(dtype), layout)
    with dw_launches() as rec, reference_forbidden():
        y, om = call(op, "triton", xt, td(g, gdtype), k=k, w=td(w), b=td(b), mask=td(mask, gdtype), **kw)
    assert rec and all(p == padded for p in rec), f"pac_dw_kernel launches PADDED={rec}, expected {padded}"
    assert y.dtype == dtype
    if layout in ("cl", "cl_slice") and y.shape[1] > 1 and y.shape[2] * y.shape[3] > 1:
        assert y.is_contiguous(memory_format=torch.channels_last), f"channels-last in, {y.stride()} out"
    assert_matches(y, exp_y, dtype, "y")
    if exp_m is not None:
        assert om is not None and torch.equal(om.double(), exp_m.double()), "out_mask differs"
    return y


# --- 1. the staging copy's layout: every caller layout, padding 0 and > 0 ---------------------

LAYOUT_CASES = [
    # padding 0 with C a multiple of the channel block: F.pad pads nothing and returns a clone
    # that keeps the caller's strides (NCHW: channel stride H*W, not 1)
    pytest.param("pool", 4, (0, 0), "nchw", F32, id="pool-C4-p0-nchw-f32"),
    pytest.param("shared", 8, (0, 0), "nchw", F32, id="shared-C8-p0-nchw-f32"),
    pytest.param("pool", 4, (0, 0), "nchw", BF16, id="pool-C4-p0-nchw-bf16"),
    pytest.param("dw", 4, (0, 0), "nchw", F16, id="dw-C4-p0-nchw-f16"),
    pytest.param("pool", 4, (0, 0), "hfirst", F32, id="pool-C4-p0-hfirst-f32"),
    # padding > 0 but a dense layout whose [B, H, W, C] permute looks channels-last to
    # suggest_memory_format: F.pad's output keeps that format
    pytest.param("dw", 5, (1, 0), "hfirst", BF16, id="dw-C5-p1x0-hfirst-bf16"),
    # the layouts that get a fresh channels-last copy
    pytest.param("dw", 4, (0, 0), "cl_slice", BF16, id="dw-C4-p0-clslice-bf16"),
    pytest.param("pool", 4, (0, 0), "wstride2", F32, id="pool-C4-p0-wstride2-f32"),
    pytest.param("dw", 4, (2, 1), "cl", F16, id="dw-C4-p2x1-cl-f16"),
]


@pytest.mark.parametrize("op,C,p,layout,dtype", LAYOUT_CASES)
def test_layouts(op, C, p, layout, dtype):
    x, g, w, b = make_inputs(op, 1, C, 2, 5, 6, (3, 3))
    with blocks():
        check(op, x, g, w=w, b=b, k=(3, 3), dtype=dtype, layout=layout, padding=p)


@pytest.mark.parametrize("op,C,k,s,layout", [
    pytest.param("pool", 16, (3, 3), (2, 2), "nchw", id="pool-C16-k3s2-nchw"),
    pytest.param("pool", 16, (3, 3), (2, 2), "cl", id="pool-C16-k3s2-cl"),
    pytest.param("dw", 16, (1, 1), (1, 1), "nchw", id="dw-C16-k1-nchw"),
    pytest.param("dw", 12, (3, 3), (1, 1), "nchw", id="dw-C12-k3-nchw"),
    pytest.param("pool", 3, (3, 3), (1, 1), "nchw", id="pool-C3-k3-nchw"),
])
def test_default_configs_padding0(op, C, k, s, layout):
    """No forced blocks (the default padded config: 64 pixels, the DW_PADDED_BLOCKS channel
    block): padding 0, the most common pooling setup."""
    x, g, w, b = make_inputs(op, 1, C, 3, 4, 6, k)
    with configs.force_blocks():
        check(op, x, g, w=w, b=b, k=k, dtype=F32, layout=layout, stride=s, padding=(0, 0))


def test_padded_copy_is_channels_last():
    """``padded_channels_last`` must return channel stride 1 (the kernel ignores sxc) whatever
    the caller's layout and padding."""
    hc = depthwise.hc
    bad = []
    for layout in ("nchw", "cl", "slice", "hfirst", "wstride2"):
        for pad in ((0, 0), (1, 0), (1, 1)):
            for C, c_pad in ((4, 4), (3, 4)):
                x = arrange(torch.randn(2, C, 3, 5), layout)
                xp = hc.padded_channels_last(x, pad, c_pad)
                ok = (xp.stride(1) == 1 and xp.permute(0, 2, 3, 1).is_contiguous()
                      and torch.equal(xp[:, :C, pad[0]:pad[0] + 3, pad[1]:pad[1] + 5], x))
                if not ok:
                    bad.append((layout, pad, C, c_pad, xp.stride()))
    assert not bad, f"staging copies with a wrong layout: {bad}"


# --- 2. geometry ---------------------------------------------------------------------------------

GEOM_CASES = [
    # id, op, C, D, H, W, k, s, p, d
    ("k1x7-p0x3", "pool", 5, 2, 3, 9, (1, 7), (1, 1), (0, 3), (1, 1)),
    ("k7x1-p3x0", "dw", 3, 1, 9, 3, (7, 1), (1, 1), (3, 0), (1, 1)),
    ("k3-p3x2-beyond-radius", "pool", 5, 2, 4, 5, (3, 3), (1, 1), (3, 2), (1, 1)),
    ("k3-p2x0-asym", "shared", 6, 2, 5, 6, (3, 3), (1, 1), (2, 0), (1, 1)),
    ("k3-s3x1-p1", "pool", 6, 2, 8, 5, (3, 3), (3, 1), (1, 1), (1, 1)),
    ("k3-d1x3-p1x3", "pool", 5, 3, 5, 8, (3, 3), (1, 1), (1, 3), (1, 3)),
    ("k5-larger-than-image-p2", "dw", 5, 2, 2, 2, (5, 5), (1, 1), (2, 2), (1, 1)),
    ("k3-1x1-image-p4-s3", "dw", 2, 1, 1, 1, (3, 3), (3, 3), (4, 4), (1, 1)),
    ("k3-1xW-p1", "dw", 5, 2, 1, 9, (3, 3), (1, 1), (1, 1), (1, 1)),
    ("k3-C1-D1-shared", "shared", 1, 1, 5, 5, (3, 3), (1, 1), (1, 1), (1, 1)),
    ("k3-C3-D16-block", "dw", 3, 16, 4, 4, (3, 3), (1, 1), (1, 1), (1, 1)),
    ("k5-s2-d2-p3-ragged", "dw", 7, 3, 9, 11, (5, 5), (2, 2), (3, 3), (2, 2)),
]


@pytest.mark.parametrize("op,C,D,H,W,k,s,p,d", [pytest.param(*c[1:], id=c[0]) for c in GEOM_CASES])
def test_geometry(op, C, D, H, W, k, s, p, d):
    x, g, w, b = make_inputs(op, 1, C, D, H, W, k)
    layout = "cl" if p == (0, 0) else "nchw"  # (padding 0 NCHW: test_layouts)
    with blocks():
        check(op, x, g, w=w, b=b, k=k, dtype=F32, layout=layout, stride=s, padding=p, dilation=d)


def test_D_past_block_takes_general_path():
    x, g, w, b = make_inputs("dw", 1, 3, 17, 4, 4, (3, 3))
    with blocks():
        check("dw", x, g, w=w, b=b, k=(3, 3), padding=(1, 1), padded=False)


# --- 3. dtypes, channel counts, channel blocks -------------------------------------------------

@pytest.mark.parametrize("op,C,bc,dtype", [
    pytest.param("pool", 1, 2, BF16, id="pool-C1-bc2-bf16"),
    pytest.param("dw", 3, 4, BF16, id="dw-C3-bc4-bf16"),
    pytest.param("dw", 12, 8, BF16, id="dw-C12-bc8-bf16"),
    pytest.param("dw", 3, 1, BF16, id="dw-C3-bc1-bf16"),
    pytest.param("shared", 5, 4, F16, id="shared-C5-bc4-f16"),
    pytest.param("dw", 5, 4, F64, id="dw-C5-bc4-f64"),
])
@pytest.mark.parametrize("layout", ["nchw", "cl"])
def test_dtypes_channels(op, C, bc, dtype, layout):
    x, g, w, b = make_inputs(op, 2, C, 3, 4, 5, (3, 3))
    with blocks(DW_BLOCK_C=bc):
        check(op, x, g, w=w, b=b, dtype=dtype, layout=layout, padding=(1, 1))


@pytest.mark.parametrize("op,C,D,dtype,gdtype", [
    pytest.param("pool", 4, 2, BF16, F32, id="pool-bf16-guide-f32"),
    pytest.param("dw", 5, 3, F16, F32, id="dw-f16-guide-f32"),
    pytest.param("pool", 4, 0, F32, F32, id="pool-D0"),
    pytest.param("dw", 3, 0, BF16, BF16, id="dw-D0-bf16"),
])
def test_guide_dtype_and_D0(op, C, D, dtype, gdtype):
    x, g, w, b = make_inputs(op, 1, C, D, 4, 5, (3, 3))
    m = _mask(1, 4, 5)
    with blocks():
        check(op, x, g, w=w, b=b, mask=m, dtype=dtype, gdtype=gdtype, layout="cl", padding=(1, 1),
              normalize_kernel=True)


@pytest.mark.parametrize("op,C,dtype,layout", [
    pytest.param("pool", 20, BF16, "cl", id="pool-C20-bf16-cl"),
    pytest.param("dw", 96, BF16, "nchw", id="dw-C96-bf16-nchw"),
    pytest.param("dw", 17, F32, "cl", id="dw-C17-f32-cl"),
    pytest.param("pool", 6, F64, "nchw", id="pool-C6-f64-nchw"),
])
def test_default_configs_padded(op, C, dtype, layout):
    """The default padded config (no forced blocks): channel blocks of DW_PADDED_BLOCKS (bf16
    channel pairs), 64-pixel tiles (32 in float64), D = 64 (the largest D in one block)."""
    x, g, w, b = make_inputs(op, 1, C, 64, 3, 5, (3, 3))
    with configs.force_blocks():
        check(op, x, g, w=w, b=b, dtype=dtype, layout=layout, padding=(1, 1), stride=(1, 2))


# --- 4. tiles: odd forced tiles, ragged edges, NaN-filled outputs -------------------------------

@pytest.mark.parametrize("bp,tw,bc", [
    pytest.param(16, 1, 4, id="P16-TW1"), pytest.param(16, 2, 4, id="P16-TW2"),
    pytest.param(16, 16, 2, id="P16-TW16"), pytest.param(8, 4, 8, id="P8-TW4-C8"),
    pytest.param(32, 8, 4, id="P32-TW8"),
])
@pytest.mark.parametrize("s", [(2, 1)], ids=["s2x1"])
def test_forced_tiles(bp, tw, bc, s):
    x, g, w, b = make_inputs("dw", 1, 6, 2, 7, 5, (3, 3))
    with blocks(BLOCK_P=bp, TILE_W=tw, DW_BLOCK_C=bc):
        check("dw", x, g, w=w, b=b, stride=s, padding=(1, 1))


# --- 5. options: mask, normalisation, inverse kernels, smoothing, batch ------------------------

def _mask(B, H, W):
    m = (torch.rand(B, 1, H, W) > 0.35).double()
    m[0, 0, :2, :2] = 0  # a corner where some pixels have no kept tap
    return m


@pytest.mark.parametrize("op,kt,norm,use_mask,smooth", [
    pytest.param("pool", "gaussian", True, True, "none", id="pool-gauss-norm-mask"),
    pytest.param("pool", "gaussian", False, True, "none", id="pool-gauss-mask"),
    pytest.param("dw", "gaussian", True, False, "none", id="dw-gauss-norm"),
    pytest.param("dw", "inv_1_-2", True, True, "none", id="dw-inv-norm-mask"),
    pytest.param("pool", "inv_1_-2_asym", False, True, "none", id="pool-invasym-mask"),
    pytest.param("shared", "inv_1_-2_asym", True, False, "gaussian", id="shared-invasym-norm-smoothgauss"),
    pytest.param("dw", "gaussian", False, True, "average_3", id="dw-gauss-mask-avg3"),
])
def test_options(op, kt, norm, use_mask, smooth):
    B, C, D, H, W = 2, 5, 3, 5, 6
    x, g, w, b = make_inputs(op, B, C, D, H, W, (3, 3))
    m = _mask(B, H, W) if use_mask else None
    with blocks():
        check(op, x, g, w=w, b=b, mask=m, padding=(1, 1), kernel_type=kt, normalize_kernel=norm,
              smooth_kernel_type=smooth)


@pytest.mark.parametrize("norm", [False, True], ids=["mask", "norm-mask"])
def test_fractional_mask(norm):
    """Mask values other than 0 / 1 (K times the mask; the unnormalised divisor sum m / sum valid)."""
    x, g, w, b = make_inputs("pool", 2, 5, 2, 4, 5, (3, 3))
    m = torch.tensor([0.0, 0.5, 1.0, 2.0], dtype=F64)[torch.randint(0, 4, (2, 1, 4, 5))]
    with blocks():
        check("pool", x, g, mask=m, padding=(1, 1), normalize_kernel=norm, layout="cl")


def test_inv_params_tensors():
    """Explicit 0-d inv_alpha / inv_lambda tensors (non-channel-wise K takes one value each)."""
    x, g, w, b = make_inputs("dw", 1, 4, 2, 5, 5, (3, 3))
    a, lam = torch.tensor(0.7, dtype=F64), torch.tensor(-1.3, dtype=F64)
    with blocks():
        check("dw", x, g, w=w, b=b, padding=(1, 1), kernel_type="inv_1_-2", inv_alpha=a, inv_lambda=lam,
              normalize_kernel=True)


# --- 6. non-finite values ------------------------------------------------------------------------

def _nf_inputs(where):
    torch.manual_seed(1)
    B, C, D, H, W = 1, 5, 2, 5, 6
    x, g = torch.randn(B, C, H, W, dtype=F64), torch.randn(B, D, H, W, dtype=F64)
    m = torch.ones(B, 1, H, W, dtype=F64)
    if where == "x-nan-interior":
        x[0, 1, 2, 3] = NAN
    elif where == "x-inf-border":
        x[0, 0, 0, 5] = INF
        x[0, 2, 4, 0] = -INF
    elif where == "x-inf-mixed":  # +Inf and -Inf in one window: NaN
        x[0, 3, 2, 2] = INF
        x[0, 3, 2, 3] = -INF
    elif where == "x-nan-masked":  # the reference gives NaN (0 * NaN) here: match it
        x[0, :, 2, 2] = NAN
        m[0, 0, 2, 2] = 0
    elif where == "guide-nan-masked":  # read only by dropped taps (mask 0), and not a centre
        g[0, 1, 0, 0] = NAN
        m[0, 0, 0, 0] = 0
    elif where == "guide-inf-masked":
        g[0, 0, 4, 5] = INF
        m[0, 0, 4, 5] = 0
    elif where == "guide-nan-kept":
        g[0, 0, 2, 2] = NAN
    elif where == "guide-nan-border":
        g[0, 1, 0, 3] = NAN
    elif where == "guide-far":  # K underflows to exactly 0 at kept taps; normaliser 0
        g[0, :, 2, 2] = 1e30
    elif where == "x-inf-k-zero":  # Inf x where K is exactly 0 at a kept tap: 0 * Inf = NaN
        g[0, :, 2, 2] = 1e30
        x[0, 1, 2, 2] = INF
    elif where == "mask-nan":
        m[0, 0, 1, 4] = NAN
    elif where == "mask-all-zero-rows":
        m[0, 0, :3] = 0
        x[0, :, :2] = 1e38  # large but finite values under mask 0
    else:
        raise ValueError(where)
    return x, g, m


# (the cases' builder knows more: x-inf-mixed, guide-inf-masked, guide-nan-kept, guide-nan-border,
# x-inf-k-zero, mask-nan; these six cover each kind within the CI's time budget)
NF_CASES = ["x-nan-interior", "x-inf-border", "x-nan-masked", "guide-nan-masked", "guide-far", "mask-all-zero-rows"]


@pytest.mark.parametrize("where", NF_CASES)
@pytest.mark.parametrize("op,norm,p,layout", [
    pytest.param("pool", True, (1, 1), "nchw", id="pool-norm-p1"),
    pytest.param("dw", False, (2, 1), "cl", id="dw-p2x1-cl"),
])
def test_nonfinite(where, op, norm, p, layout):
    x, g, m = _nf_inputs(where)
    _, _, w, b = make_inputs(op, 1, x.shape[1], 1, 1, 1, (3, 3))
    use_mask = where.startswith(("x-nan-masked", "guide-nan-masked", "guide-inf-masked", "mask-"))
    with blocks():
        check(op, x, g, w=w, b=b, mask=m if use_mask else None, padding=p, normalize_kernel=norm)


def test_nonfinite_bf16_pairs():
    """Inf / NaN bit patterns survive the int32 channel-pair unpacking (both halves)."""
    x, g, m = _nf_inputs("x-inf-border")
    x[0, 1, 3, 3] = NAN
    x[0, 4, 1, 1] = -INF
    with blocks(DW_BLOCK_C=2):
        check("pool", x, g, dtype=BF16, layout="cl", padding=(1, 1))


def test_nonfinite_nan_dropped_by_padding_only():
    """Padding far past the radius: output pixels none of whose taps read the input are exactly
    0 (pool) / the bias (conv), even with NaN in x and the guide everywhere inside."""
    x, g, w, b = make_inputs("dw", 1, 5, 2, 2, 3, (3, 3))
    x[0, 2, 1, 1] = NAN
    g[0, 0, 0, 0] = NAN
    with blocks():
        y = check("dw", x, g, w=w, b=b, padding=(3, 3), dilation=(1, 1), normalize_kernel=True)
    # rows 0..1 / 6..7 and columns 0..1 / 7..8 read padding only
    assert torch.equal(y[0, :, 0], b.float()[:, None].expand(5, y.shape[3]))


# --- 7. switches ---------------------------------------------------------------------------------

@pytest.mark.parametrize("layout,p", [("nchw", (0, 0)), ("cl", (1, 1))], ids=["nchw-p0", "cl-p1"])
def test_channels_last_copies_off(monkeypatch, layout, p):
    monkeypatch.setenv(configs.CHANNELS_LAST_ENV, "0")
    x, g, w, b = make_inputs("dw", 1, 4, 2, 5, 5, (3, 3))
    with blocks():
        check("dw", x, g, w=w, b=b, layout=layout, padding=p, padded=False)


def test_transposed_and_channel_wise_not_padded():
    x, g, _, _ = make_inputs("pool", 1, 4, 4, 4, 4, (3, 3))
    with blocks():
        check("pool", x, g, padding=(1, 1), channel_wise=True, padded=False)
    wt = torch.randn(4, 1, 3, 3, dtype=F64)
    with blocks(), dw_launches() as rec:
        pac_triton.pac_conv_transpose2d(x.float(), g.float(), wt.float(), None, padding=1, groups=4,
                                        backend="triton")
    assert rec and not any(rec)


# --- 8. 64-bit offsets, batch chunks, weights ---------------------------------------------------

@pytest.mark.parametrize("op,dtype,bc", [
    pytest.param("dw", BF16, 4, id="dw-bf16-pairs"),
    pytest.param("dw", F32, 4, id="dw-f32"),
    pytest.param("pool", F16, 2, id="pool-f16-mask"),
])
def test_idx64(monkeypatch, op, dtype, bc):
    """The IDX64 specialisation (int64 pixel / channel / tap offsets, the int32 pair pointer in
    64 bits), forced by lowering the 32-bit index limit."""
    hc = depthwise.hc
    monkeypatch.setattr(hc, "INDEX32_LIMIT", 8)
    x, g, w, b = make_inputs(op, 2, 5, 2, 4, 5, (3, 3))
    m = _mask(2, 4, 5) if op == "pool" else None
    seen = []
    orig = hc._need_idx64_call
    monkeypatch.setattr(hc, "_need_idx64_call", lambda a, k: seen.append(orig(a, k)) or seen[-1])
    with blocks(DW_BLOCK_C=bc):
        check(op, x, g, w=w, b=b, mask=m, dtype=dtype, layout="cl", padding=(1, 2), stride=(2, 1))
    assert seen and all(seen)


def test_batch_chunks(monkeypatch):
    monkeypatch.setattr(depthwise.hc, "BATCH_CHUNK", 2)
    x, g, w, b = make_inputs("pool", 5, 4, 2, 3, 4, (3, 3))
    m = _mask(5, 3, 4)
    with blocks():
        check("pool", x, g, mask=m, layout="cl", padding=(1, 1), normalize_kernel=True)


@pytest.mark.parametrize("where", ["nan-centre", "inf-corner"])
def test_nonfinite_weight(where):
    """A non-finite tap weight: the reference's conv multiplies it with K * x at every tap,
    dropped taps included (0 * NaN); match it."""
    x, g, w, b = make_inputs("dw", 1, 5, 2, 4, 4, (3, 3))
    if where == "nan-centre":
        w[2, 0, 1, 1] = NAN
    else:
        w[3, 0, 0, 0] = INF
    with blocks():
        check("dw", x, g, w=w, b=b, layout="cl", padding=(1, 1))


# --- 9. modules ---------------------------------------------------------------------------------

@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate"])
def test_module_depthwise_padding_modes(padding_mode):
    """PacConv2d(groups=C) with a non-zero padding mode pads x itself (NCHW) and runs the op with
    padding 0."""
    torch.manual_seed(0)
    C = 4
    tri = pac_triton.PacConv2d(C, C, 3, padding=1, groups=C, padding_mode=padding_mode, backend="triton")
    ref = pac_triton.PacConv2d(C, C, 3, padding=1, groups=C, padding_mode=padding_mode, backend="reference").double()
    ref.load_state_dict({k: v.double() for k, v in tri.state_dict().items()})
    x, g = torch.randn(1, C, 5, 6), torch.randn(1, 2, 5, 6)
    with blocks(), dw_launches() as rec:
        y = tri(x, g)
    assert rec and all(rec), rec
    assert_matches(y, ref(x.double(), g.double()), F32, "y")


def test_module_pool_default_padding():
    torch.manual_seed(0)
    x, g = torch.randn(2, 8, 6, 6), torch.randn(2, 2, 6, 6)
    with blocks(), dw_launches() as rec:
        y = pac_triton.PacPool2d(3, stride=2, backend="triton")(x, g)
    assert rec and all(rec), rec
    exp = pac_triton.PacPool2d(3, stride=2, backend="reference")(x.double(), g.double())
    assert_matches(y, exp, F32, "y")


# --- 10. autograd, custom op ---------------------------------------------------------------------

@pytest.mark.parametrize("p,layout", [((0, 0), "nchw")], ids=["p0-nchw"])
def test_gradcheck_depthwise_conv(p, layout):
    torch.manual_seed(0)
    C = 2  # = DW_BLOCK_C (forced below): no channel padding
    x = arrange(torch.randn(1, C, 3, 3, dtype=F64), layout).requires_grad_()
    g = torch.randn(1, 1, 3, 3, dtype=F64, requires_grad=True)
    w = torch.randn(C, 1, 3, 3, dtype=F64, requires_grad=True)
    b = torch.randn(C, dtype=F64, requires_grad=True)

    def f(x, g, w, b):
        return pac_triton.pac_conv2d(x, g, w, b, padding=p, groups=C, normalize_kernel=True, backend="triton")

    with blocks(DW_BLOCK_C=2), dw_launches() as rec:
        torch.autograd.gradcheck(f, (x, g, w, b), fast_mode=True, atol=1e-6, rtol=1e-5,
                                 check_undefined_grad=False)
    assert rec and all(rec), rec


def test_grads_match_reference_pool():
    torch.manual_seed(0)
    x0, g0, m = torch.randn(2, 5, 4, 5, dtype=F64), torch.randn(2, 2, 4, 5, dtype=F64), _mask(2, 4, 5)
    gy = torch.randn(2, 5, 2, 5, dtype=F64)
    grads = []
    for backend in ("reference", "triton"):
        x, g = x0.clone().requires_grad_(), g0.clone().requires_grad_()
        with blocks(), dw_launches() as rec:
            y, _ = pac_triton.pac_pool2d(x, g, 3, padding=1, stride=(2, 1), mask=m, normalize_kernel=True,
                                         kernel_type="inv_1_-2", backend=backend)
            grads.append((y.detach(), *torch.autograd.grad(y, (x, g), gy)))
        if backend == "triton":
            assert rec and all(rec), rec
    for name, a, e in zip(("y", "dx", "dguide"), grads[1], grads[0]):
        assert_close_rel(a, e, TOL[F64], name)


@pytest.mark.parametrize("p", [(0, 0)], ids=["p0"])
def test_opcheck_pool_fwd_padded(p):
    from pac_triton.triton.depthwise import pool_options
    from pac_triton.triton.host_common import KT_GAUSS
    x = torch.randn(1, 4, 4, 4, dtype=F64, requires_grad=True)
    g = torch.randn(1, 2, 4, 4, dtype=F64, requires_grad=True)
    m = (torch.rand(1, 1, 4, 4) > 0.3).double()
    args = (x, g, None, m, None, None, None, *pool_options([3, 3], [1, 1], list(p), [1, 1], KT_GAUSS, True, False))
    with blocks(), dw_launches() as rec:
        torch.library.opcheck(torch.ops.pac_triton.triton_pool_fwd, args,
                              test_utils=("test_schema", "test_autograd_registration", "test_faketensor",
                                          "test_aot_dispatch_dynamic"))
        y, om = torch.ops.pac_triton.triton_pool_fwd(*args)
    assert rec and all(rec), rec
    exp, exp_m = pac_triton.pac_pool2d(x.detach(), g.detach(), 3, padding=p, mask=m, normalize_kernel=True,
                                       backend="reference")
    assert_matches(y, exp, F64, "y")
    assert torch.equal(om, exp_m)
