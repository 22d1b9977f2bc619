"""Triton forwards against the reference (a float64 run of the reference on the same rounded
inputs), every option and dtype, with small forced tiles, NaN-filled outputs, inputs inside
NaN guard bands and the reference forbidden while the Triton path runs.

On CPU the kernels run in the Triton interpreter (slow: shapes are tiny). The same cases run
on CUDA under the ``gpu`` marker (autotuning off, TF32 off so float32 stays exact).
"""
from __future__ import annotations

import pytest
import torch

from triton_helpers import REF, guarded, guarded_nd, reference_forbidden
from pac_testing import TOL, assert_close_rel

PT = pytest.importorskip("pac_triton.triton")

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.fixture(autouse=True)
def _setup(small_blocks, monkeypatch, request):
    from pac_triton.triton import launch
    monkeypatch.setenv("PAC_TRITON_AUTOTUNE", "0")
    monkeypatch.setattr(launch, "allow_tf32", lambda: False)
    yield


def _dev(device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA")
    return torch.device(device)


def _inv_params(kernel_type, device, n=None):
    if kernel_type == "gaussian":
        return None, None
    shape = () if n is None else (n,)
    alpha = (0.5 + torch.rand(shape)).to(device)
    lam = (-0.5 - 1.5 * torch.rand(shape)).to(device)
    return alpha, lam


def _mask(B, H, W, device):
    m = (torch.rand(B, 1, H, W) > 0.3).double()
    m[0, 0, : H // 2, : W // 2] = 0  # a corner with no valid tap for some pixels
    return m.to(device)


def _cast(v, dtype):
    return v.to(dtype) if isinstance(v, torch.Tensor) else v


def _compare(name, got, exp, dtype, exact_names=("out_mask",)):
    if exp is None:
        assert got is None, f"{name}: expected None"
        return
    assert got.dtype == dtype, f"{name}: dtype {got.dtype} != {dtype}"
    if name in exact_names:
        assert tuple(got.shape) == tuple(exp.shape), f"{name}: shape {tuple(got.shape)} != {tuple(exp.shape)}"
        assert torch.equal(got.double().cpu(), exp.double().cpu()), f"{name} differs"
    else:
        assert not torch.isnan(got).any(), f"{name}: NaN in output (unwritten element or stray read)"
        assert_close_rel(got, exp, TOL[dtype], name)


def _run(fn_name, tensors, static, dtype, channels_last, out_names):
    """``tensors``: dict name -> float64 tensor or None (positional order given by the
    function's signature via ``static``'s companion list)."""
    order = static["order"]
    # Oracle: float64 reference on the inputs rounded to dtype.
    rounded = {k: (None if v is None else v.to(dtype).double()) for k, v in tensors.items()}
    args_ref = [rounded[k] if k in rounded else static[k] for k in order]
    exp = getattr(REF, fn_name)(*args_ref)
    exp = exp if isinstance(exp, tuple) else (exp,)
    # Triton: inputs in dtype inside NaN guard bands (4-D ones in the requested layout).
    tri = {}
    for k, v in tensors.items():
        if v is None:
            tri[k] = None
        elif v.dim() == 4 and k not in ("weight", "smooth_kernel"):
            tri[k] = guarded(v.to(dtype), channels_last and k in ("input", "guide"))
        elif v.dim() == 6:
            tri[k] = guarded_nd(v.to(dtype))
        else:
            tri[k] = v.to(dtype)
    args = [tri[k] if k in tri else static[k] for k in order]
    with reference_forbidden():
        got = getattr(PT, fn_name)(*args)
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == len(exp)
    for name, g, e in zip(out_names, got, exp):
        _compare(name, g, None if e is None else e.to(dtype), dtype)
    return got


# --- pac_conv2d ------------------------------------------------------------------------------

CONV_CASES = [
    # B, C, O, D, H, W, k, s, p, d, kernel_type, normalize, mask, smooth, shared, bias, dtype, channels_last
    (2, 10, 11, 3, 5, 5, (3, 3), (1, 1), (1, 1), (1, 1), "gaussian", False, False, None, False, True, torch.float32, False),
    (1, 5, 6, 5, 9, 8, (3, 3), (2, 1), (2, 1), (1, 2), "inv_1_-2_asym", True, True, (3, 3), False, False, torch.float32, True),
    (1, 10, 11, 3, 6, 5, (3, 5), (1, 1), (1, 2), (1, 1), "inv_1_-2", False, True, None, False, True, torch.float16, False),
    (1, 5, 6, 1, 6, 6, (3, 3), (1, 1), (2, 2), (2, 2), "gaussian", True, False, (1, 3), False, True, torch.bfloat16, False),
    (1, 6, 6, 3, 6, 5, (3, 3), (1, 1), (1, 1), (1, 1), "inv_1_-2", True, True, None, True, True, torch.float32, True),
    (1, 4, 5, 3, 6, 6, (5, 5), (1, 1), (2, 2), (1, 1), "gaussian", True, True, None, False, False, torch.float64, False),
    (1, 4, 5, 2, 7, 7, (3, 3), (2, 2), (3, 3), (1, 1), "gaussian", False, True, None, False, True, torch.float32, False),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{c[10]}-n{int(c[11])}-m{int(c[12])}-sh{int(c[14])}-{str(c[16])[6:]}")
def test_pac_conv2d(case, device):
    B, C, O, D, H, W, k, s, p, d, kt, norm, use_mask, smooth, shared, use_bias, dtype, cl = case
    dev = _dev(device)
    x = torch.randn(B, C, H, W, dtype=torch.float64, device=dev)
    guide = torch.randn(B, D, H, W, dtype=torch.float64, device=dev)
    weight = torch.randn(1 if shared else O, 1 if shared else C, *k, dtype=torch.float64, device=dev)
    bias = torch.randn(C if shared else O, dtype=torch.float64, device=dev) if use_bias else None
    alpha, lam = _inv_params(kt, dev)
    sk = torch.rand(1, 1, *smooth, dtype=torch.float64, device=dev) if smooth else None
    mask = _mask(B, H, W, dev) if use_mask else None
    tensors = dict(input=x, guide=guide, weight=weight, bias=bias, inv_alpha=alpha, inv_lambda=lam,
                   smooth_kernel=sk, mask=mask)
    static = dict(order=["input", "guide", "weight", "bias", "stride", "padding", "dilation", "kernel_type",
                         "inv_alpha", "inv_lambda", "smooth_kernel", "normalize_kernel", "shared_filters", "mask"],
                  stride=s, padding=p, dilation=d, kernel_type=kt, normalize_kernel=norm, shared_filters=shared)
    y, om = _run("pac_conv2d", tensors, static, dtype, cl, ["y", "out_mask"])
    if cl:
        assert y.is_contiguous(memory_format=torch.channels_last)


# The v2 forward's fast paths: channel counts that are multiples of 16 (NCHW input and guide are
# then gathered from channels-last copies), all input channels in one block (C_SINGLE: the tap
# loop is the innermost loop), rectangular pixel tiles of several rows; and the plain
# per-element NCHW gather for the same shapes. Tiles still span several blocks on every axis.
FAST_CASES = [
    # B, C, O, D, H, W, k, s, p, d, kernel_type, normalize, mask, transposed, dtype
    (1, 16, 20, 16, 7, 11, (3, 3), (1, 1), (1, 1), (1, 1), "gaussian", False, False, False, torch.float32),
    (2, 16, 16, 16, 6, 9, (5, 5), (1, 1), (2, 2), (1, 1), "inv_1_-2_asym", True, True, False, torch.bfloat16),
    (1, 32, 16, 3, 9, 6, (3, 3), (2, 1), (1, 1), (1, 2), "gaussian", True, False, False, torch.float16),
    (1, 16, 16, 16, 4, 5, (3, 3), (2, 2), (1, 1), (1, 1), "gaussian", True, True, True, torch.float32),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cl_gather", [True, False], ids=["clgather", "nchwgather"])
@pytest.mark.parametrize("case", FAST_CASES, ids=lambda c: f"{c[10]}-C{c[1]}-D{c[3]}-T{int(c[13])}-{str(c[14])[6:]}")
def test_pac_conv_fast_paths(case, cl_gather, device, monkeypatch):
    from pac_triton.triton import launch, tuning
    B, C, O, D, H, W, k, s, p, d, kt, norm, use_mask, transposed, dtype = case
    dev = _dev(device)
    monkeypatch.setattr(launch, "GATHER_CHANNELS_LAST", cl_gather)
    x = torch.randn(B, C, H, W, dtype=torch.float64, device=dev)
    alpha, lam = _inv_params(kt, dev)
    mask = _mask(B, H, W, dev) if use_mask else None
    if transposed:
        Ho = (H - 1) * s[0] - 2 * p[0] + d[0] * (k[0] - 1) + 1
        Wo = (W - 1) * s[1] - 2 * p[1] + d[1] * (k[1] - 1) + 1
        guide = torch.randn(B, D, Ho, Wo, dtype=torch.float64, device=dev)
        weight = torch.randn(C, O, *k, dtype=torch.float64, device=dev)
        fn = "pac_conv_transpose2d"
        static = dict(order=["input", "guide", "weight", "bias", "stride", "padding", "output_padding", "dilation",
                             "kernel_type", "inv_alpha", "inv_lambda", "smooth_kernel", "normalize_kernel",
                             "shared_filters", "mask"],
                      stride=s, padding=p, output_padding=(0, 0), dilation=d, kernel_type=kt,
                      normalize_kernel=norm, shared_filters=False)
    else:
        guide = torch.randn(B, D, H, W, dtype=torch.float64, device=dev)
        weight = torch.randn(O, C, *k, dtype=torch.float64, device=dev)
        fn = "pac_conv2d"
        static = dict(order=["input", "guide", "weight", "bias", "stride", "padding", "dilation", "kernel_type",
                             "inv_alpha", "inv_lambda", "smooth_kernel", "normalize_kernel", "shared_filters",
                             "mask"],
                      stride=s, padding=p, dilation=d, kernel_type=kt, normalize_kernel=norm, shared_filters=False)
    bias = torch.randn(O, dtype=torch.float64, device=dev)
    tensors = dict(input=x, guide=guide, weight=weight, bias=bias, inv_alpha=alpha, inv_lambda=lam,
                   smooth_kernel=None, mask=mask)
    with tuning.force_blocks(BLOCK_P=32, BLOCK_O=16, BLOCK_C=min(C, 32), BLOCK_D=16, TILE_W=8):
        y, _ = _run(fn, tensors, static, dtype, False, ["y", "out_mask"])
    assert y.is_contiguous()  # NCHW in, NCHW out (the channels-last copies are internal)


# --- pac_conv_transpose2d --------------------------------------------------------------------

CONVT_CASES = [
    # B, C, O, D, H, W, k, s, p, op, d, kernel_type, normalize, mask, smooth, shared, bias, dtype, cl
    (2, 10, 11, 3, 3, 3, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1), "gaussian", True, True, None, False, True, torch.float32, False),
    (1, 5, 6, 4, 3, 2, (3, 5), (2, 3), (0, 1), (1, 2), (2, 1), "inv_1_-2_asym", False, True, (3, 1), False, False, torch.float16, True),
    (1, 6, 6, 3, 3, 3, (3, 3), (2, 2), (1, 1), (0, 0), (1, 1), "inv_1_-2", True, False, None, True, True, torch.bfloat16, False),
    (1, 4, 5, 2, 3, 3, (3, 3), (2, 2), (1, 1), (1, 1), (2, 2), "gaussian", False, True, None, False, True, torch.float64, False),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CONVT_CASES, ids=lambda c: f"{c[11]}-s{c[7][0]}{c[7][1]}-n{int(c[12])}-m{int(c[13])}-sh{int(c[15])}-{str(c[17])[6:]}")
def test_pac_conv_transpose2d(case, device):
    B, C, O, D, H, W, k, s, p, op, d, kt, norm, use_mask, smooth, shared, use_bias, dtype, cl = case
    dev = _dev(device)
    Ho = (H - 1) * s[0] - 2 * p[0] + d[0] * (k[0] - 1) + op[0] + 1
    Wo = (W - 1) * s[1] - 2 * p[1] + d[1] * (k[1] - 1) + op[1] + 1
    x = torch.randn(B, C, H, W, dtype=torch.float64, device=dev)
    guide = torch.randn(B, D, Ho, Wo, dtype=torch.float64, device=dev)
    weight = torch.randn(1 if shared else C, 1 if shared else O, *k, dtype=torch.float64, device=dev)
    bias = torch.randn(C if shared else O, dtype=torch.float64, device=dev) if use_bias else None
    alpha, lam = _inv_params(kt, dev)
    sk = torch.rand(1, 1, *smooth, dtype=torch.float64, device=dev) if smooth else None
    mask = _mask(B, H, W, dev) if use_mask else None
    tensors = dict(input=x, guide=guide, weight=weight, bias=bias, inv_alpha=alpha, inv_lambda=lam,
                   smooth_kernel=sk, mask=mask)
    static = dict(order=["input", "guide", "weight", "bias", "stride", "padding", "output_padding", "dilation",
                         "kernel_type", "inv_alpha", "inv_lambda", "smooth_kernel", "normalize_kernel",
                         "shared_filters", "mask"],
                  stride=s, padding=p, output_padding=op, dilation=d, kernel_type=kt, normalize_kernel=norm,
                  shared_filters=shared)
    _run("pac_conv_transpose2d", tensors, static, dtype, cl, ["y", "out_mask"])


# --- pac_pool2d ------------------------------------------------------------------------------

POOL_CASES = [
    # B, C, D, H, W, k, s, p, d, kernel_type, normalize, mask, smooth, channel_wise, vec_params, dtype, cl
    (2, 6, 3, 5, 5, (3, 3), (1, 1), (1, 1), (1, 1), "gaussian", True, True, (3, 3), False, False, torch.float32, False),
    (1, 6, 6, 6, 5, (3, 3), (1, 1), (1, 1), (1, 1), "inv_1_-2_asym", True, True, None, True, True, torch.float16, True),
    (1, 5, 5, 8, 7, (3, 3), (2, 2), (2, 1), (2, 1), "gaussian", False, True, (3, 3), True, False, torch.bfloat16, False),
    (1, 5, 3, 6, 6, (3, 3), (1, 1), (1, 1), (1, 1), "inv_1_-2", False, False, None, False, False, torch.float64, False),
    # C and D multiples of 16: x and the guide gathered from channels-last copies (2-D tiles)
    (1, 16, 16, 5, 9, (3, 3), (1, 1), (1, 1), (1, 1), "gaussian", False, False, None, False, False, torch.bfloat16,
     False),
    (1, 16, 16, 6, 7, (3, 3), (2, 1), (1, 1), (1, 1), "inv_1_-2", True, True, None, True, False, torch.float16, False),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: f"{c[9]}-n{int(c[10])}-m{int(c[11])}-cw{int(c[13])}-{str(c[15])[6:]}")
def test_pac_pool2d(case, device):
    B, C, D, H, W, k, s, p, d, kt, norm, use_mask, smooth, cw, vec, dtype, cl = case
    dev = _dev(device)
    x = torch.randn(B, C, H, W, dtype=torch.float64, device=dev)
    guide = torch.randn(B, C if cw else D, H, W, dtype=torch.float64, device=dev)
    alpha, lam = _inv_params(kt, dev, C if vec else None)
    if vec and alpha is not None:
        lam = lam[0]  # a vector alpha with a 0-d lambda: each broadcast on its own
    sk = torch.rand(1, 1, *smooth, dtype=torch.float64, device=dev) if smooth else None
    mask = _mask(B, H, W, dev) if use_mask else None
    tensors = dict(input=x, guide=guide, inv_alpha=alpha, inv_lambda=lam, smooth_kernel=sk, mask=mask)
    static = dict(order=["input", "guide", "kernel_size", "stride", "padding", "dilation", "kernel_type",
                         "inv_alpha", "inv_lambda", "smooth_kernel", "normalize_kernel", "channel_wise", "mask"],
                  kernel_size=k, stride=s, padding=p, dilation=d, kernel_type=kt, normalize_kernel=norm,
                  channel_wise=cw)
    _run("pac_pool2d", tensors, static, dtype, cl, ["y", "out_mask"])


# --- packernel2d -----------------------------------------------------------------------------

KERNEL_CASES = [
    # B, D, H, W, k, s, p, op, d, kernel_type, normalize, mask, smooth, channel_wise, transposed, dtype
    (2, 3, 5, 5, (3, 3), (1, 1), (1, 1), (0, 0), (1, 1), "inv_1_-2", True, True, (3, 3), False, False, torch.float32),
    (1, 3, 6, 5, (3, 3), (2, 1), (1, 2), (0, 0), (1, 2), "gaussian", True, True, None, True, False, torch.float16),
    (1, 3, 6, 6, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1), "inv_1_-2_asym", False, True, None, False, True, torch.float32),
    (1, 3, 7, 6, (3, 5), (2, 2), (1, 2), (0, 1), (1, 1), "gaussian", True, False, (1, 3), True, True, torch.bfloat16),
    (1, 3, 5, 5, (5, 3), (1, 1), (2, 1), (0, 0), (1, 1), "gaussian", False, False, None, False, False, torch.float64),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", KERNEL_CASES, ids=lambda c: f"{c[9]}-n{int(c[10])}-m{int(c[11])}-cw{int(c[13])}-t{int(c[14])}-{str(c[15])[6:]}")
def test_packernel2d(case, device):
    B, D, Hg, Wg, k, s, p, op, d, kt, norm, use_mask, smooth, cw, transposed, dtype = case
    dev = _dev(device)
    guide = torch.randn(B, D, Hg, Wg, dtype=torch.float64, device=dev)
    if transposed:
        Hm = (Hg - op[0] - 1 - (k[0] - 1) * d[0] + 2 * p[0]) // s[0] + 1
        Wm = (Wg - op[1] - 1 - (k[1] - 1) * d[1] + 2 * p[1]) // s[1] + 1
    else:
        Hm, Wm = Hg, Wg
    alpha, lam = _inv_params(kt, dev)
    sk = torch.rand(1, 1, *smooth, dtype=torch.float64, device=dev) if smooth else None
    mask = _mask(B, Hm, Wm, dev) if use_mask else None
    tensors = dict(guide=guide, mask=mask, smooth_kernel=sk, inv_alpha=alpha, inv_lambda=lam)
    static = dict(order=["guide", "mask", "kernel_size", "stride", "padding", "output_padding", "dilation",
                         "kernel_type", "smooth_kernel", "inv_alpha", "inv_lambda", "channel_wise",
                         "normalize_kernel", "transposed"],
                  kernel_size=k, stride=s, padding=p, output_padding=op, dilation=d, kernel_type=kt,
                  channel_wise=cw, normalize_kernel=norm, transposed=transposed)
    _run("packernel2d", tensors, static, dtype, False, ["K", "out_mask"])


# --- precomputed kernel path -----------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shared,dtype,cl", [(False, torch.float32, True), (True, torch.float16, False)])
def test_pacconv2d_given_kernel(shared, dtype, cl, device):
    dev = _dev(device)
    B, C, O, H, W, k, s, p, d = 1, 10, 11, 7, 6, (3, 3), (2, 1), (1, 2), (1, 2)
    Ho, Wo = (H + 2 * p[0] - d[0] * 2 - 1) // s[0] + 1, (W + 2 * p[1] - d[1] * 2 - 1) // s[1] + 1
    if shared:
        O = C
    tensors = dict(input=torch.randn(B, C, H, W, dtype=torch.float64, device=dev),
                   kernel=torch.rand(B, 1, *k, Ho, Wo, dtype=torch.float64, device=dev),
                   weight=torch.randn(1 if shared else O, 1 if shared else C, *k, dtype=torch.float64, device=dev),
                   bias=torch.randn(O, dtype=torch.float64, device=dev))
    static = dict(order=["input", "kernel", "weight", "bias", "stride", "padding", "dilation", "shared_filters"],
                  stride=s, padding=p, dilation=d, shared_filters=shared)
    _run("pacconv2d", tensors, static, dtype, cl, ["y"])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shared,dtype", [(False, torch.float32), (True, torch.bfloat16)])
def test_pacconv_transpose2d_given_kernel(shared, dtype, device):
    dev = _dev(device)
    B, C, O, H, W, k, s, p, op, d = 1, 10, 11, 3, 3, (3, 3), (2, 2), (1, 0), (1, 1), (1, 1)
    Ho, Wo = (H - 1) * 2 - 2 * p[0] + 2 + op[0] + 1, (W - 1) * 2 - 2 * p[1] + 2 + op[1] + 1
    if shared:
        O = C
    tensors = dict(input=torch.randn(B, C, H, W, dtype=torch.float64, device=dev),
                   kernel=torch.rand(B, 1, *k, Ho, Wo, dtype=torch.float64, device=dev),
                   weight=torch.randn(1 if shared else C, 1 if shared else O, *k, dtype=torch.float64, device=dev),
                   bias=None)
    static = dict(order=["input", "kernel", "weight", "bias", "stride", "padding", "output_padding", "dilation",
                         "shared_filters"],
                  stride=s, padding=p, output_padding=op, dilation=d, shared_filters=shared)
    _run("pacconv_transpose2d", tensors, static, dtype, False, ["y"])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kc,dtype", [(1, torch.float32), (6, torch.float16)])
def test_pacpool2d_given_kernel(kc, dtype, device):
    dev = _dev(device)
    B, C, H, W, k, s, p, d = 1, 6, 6, 6, (3, 3), (1, 1), (1, 1), (1, 1)
    tensors = dict(input=torch.randn(B, C, H, W, dtype=torch.float64, device=dev),
                   kernel=torch.rand(B, kc, *k, H, W, dtype=torch.float64, device=dev))
    static = dict(order=["input", "kernel", "kernel_size", "stride", "padding", "dilation"],
                  kernel_size=k, stride=s, padding=p, dilation=d)
    _run("pacpool2d", tensors, static, dtype, False, ["y"])
