"""The dense family (``conv.py``): ``pac_conv2d`` / ``pac_conv_transpose2d`` and the given-K
``pacconv2d`` / ``pacconv_transpose2d`` (shared filters: ``test_depthwise.py``), forward and
backward against the float64 reference, every option and dtype, with small forced tiles,
NaN-filled outputs, inputs inside NaN guard bands and the reference forbidden while the Triton
path runs.

On CPU the kernels run in the Triton interpreter (slow: shapes are tiny). The same cases run
on CUDA under the ``gpu`` marker (autotuning off, TF32 off so float32 stays exact).
"""
from __future__ import annotations

import pytest
import torch

from pac_testing import TOL, assert_close_rel
from triton_helpers import (DEVICES, GRADS, PT, Tracker, case, convt_out_hw, device_or_skip, guide_blocks_of_8,
                            inv_params, make_mask, reference_forbidden, run_backward, run_forward)

pytest.importorskip("pac_triton.triton")

F32, F16, BF16, F64 = torch.float32, torch.float16, torch.bfloat16, torch.float64
DEFAULTS = dict(B=1, k=(3, 3), s=(1, 1), p=(1, 1), op=(0, 0), d=(1, 1), kt="gaussian", norm=False, mask=False,
                smooth=None, bias=True, cl=False, dtype=F32, transposed=False, G=1)


def conv_case(id, **kw):
    return case(id, **{**DEFAULTS, **kw})


def convt_case(id, **kw):
    return case(id, **{**DEFAULTS, "s": (2, 2), "transposed": True, **kw})


def conv_tensors(c, dev="cpu", transposed=False, shared=False):
    """float64 inputs of one case (``shared``: a ``[1, 1, kh, kw]`` weight, bias over C)."""
    Hg, Wg = convt_out_hw(c.H, c.W, c.k, c.s, c.p, c.op, c.d) if transposed else (c.H, c.W)
    if shared:
        wshape, nb = (1, 1, *c.k), c.C
    else:
        wshape, nb = ((c.C, c.O // c.G, *c.k) if transposed else (c.O, c.C // c.G, *c.k)), c.O
    alpha, lam = inv_params(c.kt, dev)
    r = lambda *s: torch.randn(*s, dtype=torch.float64, device=dev)  # noqa: E731
    return dict(input=r(c.B, c.C, c.H, c.W), guide=r(c.B, c.D, Hg, Wg), weight=r(*wshape),
                bias=r(nb) if c.bias else None, inv_alpha=alpha, inv_lambda=lam,
                smooth_kernel=torch.rand(1, 1, *c.smooth, dtype=torch.float64, device=dev) if c.smooth else None,
                mask=make_mask(c.B, c.H, c.W, dev) if c.mask else None)


def conv_static(c, transposed=False, shared=False):
    st = dict(stride=c.s, padding=c.p, dilation=c.d, kernel_type=c.kt, normalize_kernel=c.norm,
              shared_filters=shared, groups=c.G)
    if transposed:
        st["output_padding"] = c.op
    return st


# --- forward -----------------------------------------------------------------------------------

CONV_CASES = [
    conv_case("conv-k3-gauss-f32", B=2, C=10, O=11, D=3, H=5, W=5),
    conv_case("conv-k3-s2x1-d1x2-invasym-norm-mask-smooth3-f32-cl", C=5, O=6, D=5, H=9, W=8, s=(2, 1), p=(2, 1),
              d=(1, 2), kt="inv_1_-2_asym", norm=True, mask=True, smooth=(3, 3), bias=False, cl=True),
    conv_case("conv-k3x5-inv-mask-f16", C=10, O=11, D=3, H=6, W=5, k=(3, 5), p=(1, 2), kt="inv_1_-2", mask=True,
              dtype=F16),
    conv_case("conv-k3-d2-d1-gauss-norm-smooth1x3-bf16", C=5, O=6, D=1, H=6, W=6, p=(2, 2), d=(2, 2), norm=True,
              smooth=(1, 3), dtype=BF16),
    conv_case("conv-k5-gauss-norm-mask-f64", C=4, O=5, D=3, H=6, W=6, k=(5, 5), p=(2, 2), norm=True, mask=True,
              bias=False, dtype=F64),
    conv_case("conv-k3-s2-p3-gauss-mask-f32", C=4, O=5, D=2, H=7, W=7, s=(2, 2), p=(3, 3), mask=True),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("c", CONV_CASES)
def test_pac_conv2d(c, device):
    dev = device_or_skip(device)
    y, om = run_forward("pac_conv2d", conv_tensors(c, dev), conv_static(c), c.dtype, c.cl, ["y", "out_mask"])
    if c.cl:
        assert y.is_contiguous(memory_format=torch.channels_last)


# The forward's fast paths: channel counts that are multiples of 16 (NCHW input and guide are
# then gathered from channels-last copies), all input channels in one block (C_SINGLE: the tap
# loop is the innermost loop), rectangular pixel tiles of several rows; and the plain
# per-element NCHW gather for the same shapes. Tiles still span several blocks on every axis.
FAST_CASES = [
    conv_case("conv-C16-D16-k3-gauss-f32", C=16, O=20, D=16, H=7, W=11),
    conv_case("conv-C16-D16-k5-invasym-norm-mask-bf16", B=2, C=16, O=16, D=16, H=6, W=9, k=(5, 5), p=(2, 2),
              kt="inv_1_-2_asym", norm=True, mask=True, dtype=BF16),
    conv_case("conv-C32-D3-s2x1-d1x2-gauss-norm-f16", C=32, O=16, D=3, H=9, W=6, s=(2, 1), d=(1, 2), norm=True,
              dtype=F16),
    convt_case("convT-C16-D16-s2-gauss-norm-mask-f32", C=16, O=16, D=16, H=4, W=5, norm=True, mask=True),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cl_gather", [True, False], ids=["clgather", "nchwgather"])
@pytest.mark.parametrize("c", FAST_CASES)
def test_pac_conv_fast_paths(c, cl_gather, device, monkeypatch):
    from pac_triton.triton import configs
    dev = device_or_skip(device)
    monkeypatch.setattr(configs.settings, "channels_last_copies", cl_gather)
    fn = "pac_conv_transpose2d" if c.transposed else "pac_conv2d"
    with configs.force_blocks(BLOCK_P=32, BLOCK_O=16, BLOCK_C=min(c.C, 32), BLOCK_D=16, TILE_W=8):
        y, _ = run_forward(fn, conv_tensors(c, dev, c.transposed), conv_static(c, c.transposed), c.dtype, False,
                           ["y", "out_mask"])
    assert y.is_contiguous()  # NCHW in, NCHW out (the channels-last copies are internal)


CONVT_CASES = [
    convt_case("convT-k3-s2-op1-gauss-norm-mask-f32", B=2, C=10, O=11, D=3, H=3, W=3, op=(1, 1), norm=True,
               mask=True),
    convt_case("convT-k3x5-s2x3-d2x1-invasym-mask-smooth3x1-f16-cl", C=5, O=6, D=4, H=3, W=2, k=(3, 5), s=(2, 3),
               p=(0, 1), op=(1, 2), d=(2, 1), kt="inv_1_-2_asym", mask=True, smooth=(3, 1), bias=False, dtype=F16,
               cl=True),
    convt_case("convT-k3-s2-d2-op1-gauss-mask-f64", C=4, O=5, D=2, H=3, W=3, op=(1, 1), d=(2, 2), mask=True,
               dtype=F64),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("c", CONVT_CASES)
def test_pac_conv_transpose2d(c, device):
    dev = device_or_skip(device)
    run_forward("pac_conv_transpose2d", conv_tensors(c, dev, True), conv_static(c, True), c.dtype, c.cl,
                ["y", "out_mask"])


def given_kernel_tensors(B, C, O, H, W, k, Ho, Wo, wshape, bias, dev="cpu", kc=1):
    r = lambda *s: torch.randn(*s, dtype=torch.float64, device=dev)  # noqa: E731
    return dict(input=r(B, C, H, W), kernel=torch.rand(B, kc, *k, Ho, Wo, dtype=torch.float64, device=dev),
                weight=r(*wshape), bias=r(O) if bias else None)


@pytest.mark.parametrize("device", DEVICES)
def test_pacconv2d_given_kernel(device):
    dev = device_or_skip(device)
    B, C, O, H, W, k, s, p, d = 1, 10, 11, 7, 6, (3, 3), (2, 1), (1, 2), (1, 2)
    Ho, Wo = (H + 2 * p[0] - d[0] * 2 - 1) // s[0] + 1, (W + 2 * p[1] - d[1] * 2 - 1) // s[1] + 1
    tensors = given_kernel_tensors(B, C, O, H, W, k, Ho, Wo, (O, C, *k), True, dev)
    run_forward("pacconv2d", tensors, dict(stride=s, padding=p, dilation=d, shared_filters=False), F32, True, ["y"])


@pytest.mark.parametrize("device", DEVICES)
def test_pacconv_transpose2d_given_kernel(device):
    dev = device_or_skip(device)
    B, C, O, H, W, k, s, p, op, d = 1, 10, 11, 3, 3, (3, 3), (2, 2), (1, 0), (1, 1), (1, 1)
    Ho, Wo = convt_out_hw(H, W, k, s, p, op, d)
    tensors = given_kernel_tensors(B, C, O, H, W, k, Ho, Wo, (C, O, *k), False, dev)
    run_forward("pacconv_transpose2d", tensors,
                dict(stride=s, padding=p, output_padding=op, dilation=d, shared_filters=False), F32, False, ["y"])


# --- backward ----------------------------------------------------------------------------------

CONV_BWD_CASES = [
    conv_case("conv-k3-gauss-f32", B=2, C=10, O=11, D=3, H=5, W=5),
    conv_case("conv-k3-s2x1-d1x2-invasym-norm-mask-smooth3-f64-cl", C=5, O=9, D=5, H=9, W=8, s=(2, 1), p=(2, 1),
              d=(1, 2), kt="inv_1_-2_asym", norm=True, mask=True, smooth=(3, 3), dtype=F64, cl=True),
    conv_case("conv-k3x5-s2-inv-mask-f32", C=10, O=6, D=3, H=7, W=6, k=(3, 5), s=(2, 2), p=(1, 2), kt="inv_1_-2",
              mask=True),
    # D within one forced BLOCK_D: the fused dx / dK pass loads f[q] once per tile (HOIST_F)
    conv_case("conv-D2-hoistf-s2-invasym-norm-mask-smooth3-f32", C=10, O=7, D=2, H=7, W=6, s=(2, 2),
              kt="inv_1_-2_asym", norm=True, mask=True, smooth=(3, 3)),
    conv_case("conv-D1-k5x3-gauss-f64-cl", C=6, O=7, D=1, H=5, W=5, k=(5, 3), p=(2, 1), dtype=F64, cl=True),
    # C, O, D multiples of 16: x, gy and the guide are gathered from channels-last copies
    # (host_common.gather_layout)
    conv_case("conv-C16-D16-inv-mask-f32", C=16, O=16, D=16, H=6, W=7, kt="inv_1_-2", mask=True),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("c", CONV_BWD_CASES)
def test_pac_conv2d_backward(c, device):
    device_or_skip(device)
    with guide_blocks_of_8(c.D):
        run_backward("pac_conv2d", conv_tensors(c), conv_static(c), GRADS, c.dtype, device, c.cl)


# A conv whose x is NCHW with C a multiple of 16 (x would be copied channels-last anyway)
# gathers x from a zero-padded channels-last staging copy (PADDED: no input-bounds masks), in
# the forward and in the weight gradient; the dx / dK pass reads x[q] from that copy's interior
DW_PADDED_CASES = [
    conv_case("dwpad-C16-k3-gauss-norm-f32", C=16, O=16, D=3, H=5, W=7, norm=True),
    # O > 64: dx + dK loops over output-channel blocks of the padded dL/dy
    conv_case("dwpad-C16-O80-k3x1-p0-gauss-mask-f32", C=16, O=80, D=3, H=4, W=5, k=(3, 1), p=(0, 0), mask=True),
    conv_case("dwpad-C16-k5x3-s1x2-d2x1-p0x1-invasym-mask-f64", C=16, O=16, D=2, H=9, W=5, k=(5, 3), s=(1, 2),
              p=(0, 1), d=(2, 1), kt="inv_1_-2_asym", mask=True, dtype=F64),
    # groups of 8 input channels: the 16-channel block runs past a group's channels (into the
    # next group's, and past C_all into the copy's zero channels for the last group)
    conv_case("dwpad-C16-G2-k3-p2-d2-gauss-smooth3-f32", C=16, O=12, G=2, D=4, H=6, W=5, p=(2, 2), d=(2, 2),
              smooth=(3, 3)),
    conv_case("dwpad-C16-k3-p0-s2-inv-bf16", C=16, O=16, D=3, H=7, W=8, p=(0, 0), s=(2, 2), kt="inv_1_-2",
              dtype=BF16),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("c", DW_PADDED_CASES)
def test_padded_paths(c, device, monkeypatch):
    """x (forward, dW) and dL/dy (dx + dK) from zero-padded staging copies: against the
    reference, and which path ran, at the default blocks (fewer interpreter programs than the
    suite's small ones). Non-finite values, layouts and more geometry:
    ``test_dense_padded_hostile.py``."""
    device_or_skip(device)
    from triton_helpers import spy_launches
    from pac_triton.triton import configs, conv
    names = {conv.pac_conv_kernel: ("forward", "PADDED"), conv.pac_conv_dw_kernel: ("dW", "PADDED"),
             conv.pac_conv_dxdk_kernel: ("dx + dK", "GY_PADDED")}
    seen = spy_launches(monkeypatch, lambda fn, k: (names[fn][0], bool(k[names[fn][1]])) if fn in names else None)
    with configs.force_blocks():
        run_backward("pac_conv2d", conv_tensors(c), conv_static(c), GRADS, c.dtype, device)
    # dL/dy is staged (padded) for a conv with 16k output channels (an NCHW dL/dy); a strided
    # conv's copy is padded by host_common.transposed_halo
    gy_padded = c.O % 16 == 0
    assert seen == [("forward", True), ("dx + dK", gy_padded), ("dW", True)], seen


def test_transposed_halo_covers_every_read():
    """``host_common.transposed_halo`` against brute force, one dimension at a time (the kernel's
    gathers are separable): every output row of every phase tile (rows past the output clamped to
    the phase's last one, as the PADDED transposed forward does) and every tap the phase runs
    read inside ``[-top, H - 1 + bottom]``, for output sizes the input gives and others (a given
    K's grid); the halo is also the smallest that does (each side is reached, or zero)."""
    from pac_triton.triton import host_common as hc
    checked = 0
    for k in range(1, 8, 2):  # kernels are odd (K needs a centre tap)
        for s in range(1, 4):
            for d in range(1, 4):
                for p in range(0, (k - 1) * d + 3):
                    for H in (1, 2, 5):
                        for Ho in range(1, (H - 1) * s + (k - 1) * d + s + 2):
                            top, bottom, _, _ = hc.transposed_halo((H, 1), (Ho, 1), (k, 1), (s, 1), (p, 0), (d, 1))
                            lo, hi = 0, H - 1
                            for ph in range(s):
                                n_rows = -(-Ho // s) + 4  # the phase grid plus ragged tile rows
                                last = max(Ho - 1 - ph, 0) // s
                                for uu in range(n_rows):
                                    uc = min(uu, last)
                                    for i in range(k):
                                        z = ph + p - i * d
                                        if z % s == 0:
                                            ih = uc + z // s
                                            assert -top <= ih <= H - 1 + bottom, (k, s, d, p, H, Ho, ph, uu, i)
                                            lo, hi = min(lo, ih), max(hi, ih)
                            assert top == -lo and bottom == hi - (H - 1), (k, s, d, p, H, Ho, top, bottom, lo, hi)
                            checked += 1
    assert checked > 1000


def test_conv_pattern_halo_covers_every_read():
    """``host_common.conv_pattern_halo`` (a transposed conv's dL/dy in its input gradient: row q,
    tap i reads ``q*s - p + i*d``, rows past the input clamped to the last) against brute force,
    and the smallest such halo."""
    from pac_triton.triton import host_common as hc
    for k in range(1, 8, 2):
        for s in range(1, 4):
            for d in range(1, 4):
                for p in range(0, (k - 1) * d + 3):
                    for n_in in (1, 2, 5):
                        for n_out in range(1, (n_in - 1) * s + (k - 1) * d + 3):
                            top, bottom, _, _ = hc.conv_pattern_halo((n_in, 1), (n_out, 1), (k, 1), (s, 1), (p, 0),
                                                                     (d, 1))
                            rows = [min(q, n_in - 1) * s - p + i * d for q in range(n_in + 3) for i in range(k)]
                            assert top == max(0, -min(rows)) and bottom == max(0, max(rows) - (n_out - 1)), (
                                k, s, d, p, n_in, n_out, top, bottom)


# A transposed conv whose x is NCHW with C a multiple of 16 gathers x from a zero-padded
# channels-last copy sized by host_common.transposed_halo (PADDED: no input-bounds masks)
CONVT_PADDED_CASES = [
    convt_case("convTpad-C16-k5-s2-p2-op1-gauss-bf16", C=16, O=16, D=3, H=4, W=5, k=(5, 5), p=(2, 2), op=(1, 1),
               dtype=BF16),
    # phases that run no tap (s2 d2), a padding past the kernel's reach, ragged phase tiles
    convt_case("convTpad-C16-s2-d2-p3-invasym-norm-mask-f32", C=16, O=8, D=2, H=3, W=4, p=(3, 3), d=(2, 2),
               op=(1, 0), kt="inv_1_-2_asym", norm=True, mask=True),
    # a kernel smaller than the stride, (3, 2) strides, groups (blocks past a group's channels)
    convt_case("convTpad-C32-G2-k1x3-s3x2-op2x1-gauss-smooth3-f64", C=32, O=6, G=2, D=2, H=3, W=2, k=(1, 3),
               s=(3, 2), p=(0, 1), op=(2, 1), smooth=(3, 3), dtype=F64),
    # O a multiple of 16 too: dL/dy staged for the input gradient (host_common.conv_pattern_halo),
    # padding past the kernel's reach (rows above the output), dilation
    convt_case("convTpad-C16-O32-k3-s2-d2-p3-op1-inv-mask-f32", C=16, O=32, D=2, H=3, W=4, p=(3, 1), d=(2, 1),
               op=(1, 1), kt="inv_1_-2", mask=True),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("c", CONVT_PADDED_CASES)
def test_padded_transposed_forward(c, device, monkeypatch):
    """The transposed forward from its zero-padded staging copy of x and the input gradient from
    one of dL/dy: against the reference (outputs and every gradient), and which paths ran."""
    device_or_skip(device)
    from triton_helpers import spy_launches
    from pac_triton.triton import configs, conv
    names = {conv.pac_conv_kernel: "PADDED", conv.pac_conv_dxdk_kernel: "GY_PADDED"}
    seen = spy_launches(monkeypatch, lambda fn, k: bool(k[names[fn]]) if fn in names else None)
    with configs.force_blocks():
        run_backward("pac_conv_transpose2d", conv_tensors(c, transposed=True), conv_static(c, True), GRADS,
                     c.dtype, device)
    # the forward's x always staged; dL/dy where it has 16k channels (copied channels-last anyway)
    assert seen == [True, c.O % 16 == 0], seen


SUBSET_CASE = conv_case("subset", C=10, O=9, D=3, H=5, W=6, s=(2, 1), op=(1, 0), kt="inv_1_-2_asym", norm=True,
                        mask=True, smooth=(3, 3)).values[0]
SUBSETS = [("guide",), ("input",), ("weight", "inv_lambda"), ("guide", "smooth_kernel"), ("input", "guide")]


@pytest.mark.parametrize("transposed", [False, True], ids=["conv", "convT"])
@pytest.mark.parametrize("subset", SUBSETS, ids=lambda s: "+".join(s))
def test_conv_backward_gradient_subsets(subset, transposed):
    """Only some inputs require grad: the fused dx / dK pass runs with dx or dK switched off,
    the scale-only guide pass runs ahead of dx (normalised, masked), and each gradient still
    matches the reference. Several channel blocks (dK summed over them in memory)."""
    c = SUBSET_CASE
    fn = "pac_conv_transpose2d" if transposed else "pac_conv2d"
    run_backward(fn, conv_tensors(c, transposed=transposed), conv_static(c, transposed), list(subset), F32, "cpu")


CONVT_BWD_CASES = [
    convt_case("convT-k3-s2-op1-gauss-norm-mask-f32", B=2, C=10, O=11, D=3, H=3, W=3, op=(1, 1), norm=True,
               mask=True),
    convt_case("convT-k3x5-s2x3-d2x1-invasym-mask-smooth3x1-f64", C=5, O=6, D=4, H=3, W=2, k=(3, 5), s=(2, 3),
               p=(0, 1), op=(1, 2), d=(2, 1), kt="inv_1_-2_asym", mask=True, smooth=(3, 1), dtype=F64),
    convt_case("convT-C16-s2-op1x0-gauss-mask-f64", C=16, O=16, D=3, H=3, W=4, op=(1, 0), mask=True, dtype=F64),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("c", CONVT_BWD_CASES)
def test_pac_conv_transpose2d_backward(c, device):
    device_or_skip(device)
    run_backward("pac_conv_transpose2d", conv_tensors(c, transposed=True), conv_static(c, True), GRADS, c.dtype,
                 device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("transposed", [False, True], ids=["conv", "convT"])
def test_given_kernel_backward(transposed, device):
    device_or_skip(device)
    B, C, O, H, W, k = 1, 6, 7, 5, 4, (3, 3)
    if transposed:
        s, p, op, d = (2, 2), (1, 0), (1, 1), (1, 1)
        Ho, Wo = (H - 1) * 2 - 2 + 2 + 2, (W - 1) * 2 + 2 + 2
        tensors = given_kernel_tensors(B, C, O, H, W, k, Ho, Wo, (C, O, *k), True)
        fn, static = "pacconv_transpose2d", dict(stride=s, padding=p, output_padding=op, dilation=d,
                                                 shared_filters=False)
    else:
        s, p, d = (2, 1), (1, 2), (1, 2)
        Ho, Wo = (H - 1) // 2 + 1, W
        tensors = given_kernel_tensors(B, C, O, H, W, k, Ho, Wo, (O, C, *k), True)
        fn, static = "pacconv2d", dict(stride=s, padding=p, dilation=d, shared_filters=False)
    run_backward(fn, tensors, static, ["input", "kernel", "weight", "bias"], F32, device)


# --- groups ------------------------------------------------------------------------------------
# ``groups`` G (docs/semantics.md section 7): output channel o reads the input channels of its
# group only. The conftest's forced tiles (16 channels per block) give per-group channel
# counts that span two blocks (Cg = 20: dK summed over blocks and groups in memory), fit one
# with room to spare, or are 1 (one input channel per group, a channel multiplier of 2).

GROUPED_CASES = [
    conv_case("conv-G2-k3-gauss-f32", B=2, C=8, O=6, G=2, D=3, H=5, W=6),
    conv_case("conv-G3-s2x1-invasym-norm-mask-smooth3-bf16-cl", C=6, O=9, G=3, D=3, H=7, W=6, s=(2, 1),
              kt="inv_1_-2_asym", norm=True, mask=True, smooth=(3, 3), dtype=BF16, cl=True),
    conv_case("conv-G2-Cg20-k3x5-inv-mask-f16", C=40, O=4, G=2, D=2, H=4, W=5, k=(3, 5), p=(1, 2), kt="inv_1_-2",
              mask=True, dtype=F16),
    conv_case("conv-G4-mult2-d2-gauss-norm-f64", C=4, O=8, G=4, D=2, H=6, W=5, p=(2, 2), d=(2, 2), norm=True,
              dtype=F64),
    convt_case("convT-G2-s2-op1-gauss-norm-mask-f32", C=4, O=6, G=2, D=3, H=3, W=3, op=(1, 1), norm=True,
               mask=True),
    convt_case("convT-G3-Cg20-s2x1-invasym-smooth3-f32", C=60, O=3, G=3, D=2, H=3, W=3, s=(2, 1), op=(1, 0),
               kt="inv_1_-2_asym", smooth=(3, 3), bias=False),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("c", GROUPED_CASES)
def test_grouped_forward(c, device):
    dev = device_or_skip(device)
    fn = "pac_conv_transpose2d" if c.transposed else "pac_conv2d"
    run_forward(fn, conv_tensors(c, dev, c.transposed), conv_static(c, c.transposed), c.dtype, c.cl,
                ["y", "out_mask"])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("c", GROUPED_CASES)
def test_grouped_backward(c, device):
    device_or_skip(device)
    fn = "pac_conv_transpose2d" if c.transposed else "pac_conv2d"
    dtype = F32 if c.dtype in (F16, BF16) else c.dtype  # low-precision gradients: the fast-path cases
    run_backward(fn, conv_tensors(c, transposed=c.transposed), conv_static(c, c.transposed), GRADS, dtype, device,
                 c.cl)


@pytest.mark.parametrize("transposed", [False, True], ids=["conv", "convT"])
def test_grouped_given_kernel(transposed):
    """The given-K functions with groups, forward and the input / kernel / weight / bias gradients."""
    B, C, O, G, H, W, k = 1, 6, 4, 2, 5, 4, (3, 3)
    if transposed:
        s, p, op, d = (2, 2), (1, 0), (1, 1), (1, 1)
        Ho, Wo = (H - 1) * 2 - 2 + 2 + 2, (W - 1) * 2 + 2 + 2
        tensors = given_kernel_tensors(B, C, O, H, W, k, Ho, Wo, (C, O // G, *k), True)
        fn, static = "pacconv_transpose2d", dict(stride=s, padding=p, output_padding=op, dilation=d,
                                                 shared_filters=False, groups=G)
    else:
        s, p, d = (2, 1), (1, 2), (1, 2)
        Ho, Wo = (H - 1) // 2 + 1, W
        tensors = given_kernel_tensors(B, C, O, H, W, k, Ho, Wo, (O, C // G, *k), True)
        fn, static = "pacconv2d", dict(stride=s, padding=p, dilation=d, shared_filters=False, groups=G)
    run_forward(fn, tensors, static, F32, False, ["y"])
    run_backward(fn, tensors, static, ["input", "kernel", "weight", "bias"], F32, "cpu")


# --- plumbing of the dense family ------------------------------------------------------------------

def test_only_requested_gradients(monkeypatch):
    """Guide not requiring grad: no dK pass, no guide kernels run."""
    from pac_triton.triton import conv, kernel_map
    ran = []

    class _Spy:
        def __init__(self, fn, name):
            self.fn, self.name = fn, name

        def __getitem__(self, grid):
            ran.append(self.name)
            return self.fn[grid]
    for mod, name in ((conv, "pac_conv_dxdk_kernel"), (kernel_map, "pac_guide_pass_kernel"),
                      (kernel_map, "pac_guide_gather_kernel"), (conv, "pac_conv_dw_kernel")):
        monkeypatch.setattr(mod, name, _Spy(getattr(mod, name), name))
    x = torch.randn(1, 3, 5, 5, requires_grad=True)
    g = torch.randn(1, 2, 5, 5)
    w = torch.randn(4, 3, 3, 3)
    y, _ = PT().pac_conv2d(x, g, w, None, (1, 1), (1, 1), (1, 1), "gaussian", None, None, None, False, False, None)
    y.sum().backward()
    assert ran == ["pac_conv_dxdk_kernel"], ran
    assert x.grad is not None and w.grad is None


@pytest.mark.parametrize("transposed", [False, True], ids=["conv", "convT"])
def test_empty_batch_backward(transposed):
    """B = 0: an empty output and zero gradients, as the reference gives; no weight-gradient
    program runs (its kernel assumes a pixel tile per split: the interpreter checks
    ``tl.assume`` and failed here before the launcher skipped the empty launch)."""
    from triton_helpers import REF
    grads = []
    for be in (PT(), REF):
        x = torch.randn(0, 3, 5, 5, requires_grad=True)
        g = torch.randn(0, 2, *((10, 10) if transposed else (5, 5)), requires_grad=True)
        w = torch.randn(*((3, 4) if transposed else (4, 3)), 3, 3, requires_grad=True)
        b = torch.randn(4, requires_grad=True)
        if transposed:
            y = be.pac_conv_transpose2d(x, g, w, b, (2, 2), (1, 1), (1, 1), (1, 1), "gaussian", None, None, None,
                                        False, False, None)[0]
        else:
            y = be.pac_conv2d(x, g, w, b, (1, 1), (1, 1), (1, 1), "gaussian", None, None, None, False, False, None)[0]
        y.sum().backward()
        grads.append((y.shape, x.grad, g.grad, w.grad, b.grad))
    (ys, *got), (yrs, *want) = grads
    assert ys == yrs and ys[0] == 0
    for a, e in zip(got, want):
        assert a.shape == e.shape and torch.equal(a, torch.zeros_like(a)), (a, e)


def test_no_kernel_sized_buffer():
    """The fused conv never materialises K or im2col (k*k*Ho*Wo elements per image)."""
    from triton_helpers import REF
    B, C, O, D, H, W, k = 1, 2, 2, 2, 6, 6, 5
    x = torch.randn(B, C, H, W)
    g = torch.randn(B, D, H, W)
    w = torch.randn(O, C, k, k)
    m = (torch.rand(B, 1, H, W) > 0.3).float()
    tracker = Tracker()
    with reference_forbidden(), tracker:
        y, _ = PT().pac_conv2d(x, g, w, None, (1, 1), (2, 2), (1, 1), "gaussian", None, None,
                               torch.rand(1, 1, 3, 3), True, False, m)
    # the largest: a zero-padded channels-last staging copy of x (~(H+4)(W+4)C floats); K or
    # im2col would be k*k*Ho*Wo (*C) per image
    assert H * W * C * 4 < tracker.max_bytes < k * k * B * H * W * 4, tracker.max_bytes
    yr, _ = REF.pac_conv2d(x, g, w, None, (1, 1), (2, 2), (1, 1), "gaussian", None, None, None, True, False, m)
    assert y.shape == yr.shape


def test_backward_allocations():
    """No C*k*k*H*W buffer: the largest allocation of the backward is dK (k*k*Ho*Wo per image)
    or a gradient / input."""
    B, C, O, D, H, W, k = 1, 4, 4, 2, 6, 6, 5
    x = torch.randn(B, C, H, W, requires_grad=True)
    g = torch.randn(B, D, H, W, requires_grad=True)
    w = torch.randn(O, C, k, k, requires_grad=True)
    m = (torch.rand(B, 1, H, W) > 0.3).float()
    y, _ = PT().pac_conv2d(x, g, w, None, (1, 1), (2, 2), (1, 1), "gaussian", None, None,
                           torch.rand(1, 1, 3, 3), True, False, m)
    tracker = Tracker()
    with reference_forbidden(), tracker:
        y.backward(torch.randn_like(y))
    limit = 4 * max(k * k * B * H * W, w.numel(), x.numel())
    assert 0 < tracker.max_bytes <= limit, (tracker.max_bytes, limit)
    assert tracker.max_bytes < 4 * C * k * k * B * H * W


@pytest.mark.gpu
def test_backward_bitwise_reproducible():
    """Two runs give the same bits for every gradient (no atomics; fixed-order split sums),
    also under torch.use_deterministic_algorithms(True)."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA")
    dev = torch.device("cuda")
    torch.manual_seed(0)
    B, C, O, D, H, W, k = 2, 32, 32, 8, 33, 29, (5, 5)
    base = dict(x=torch.randn(B, C, H, W, device=dev), g=torch.randn(B, D, H, W, device=dev),
                w=torch.randn(O, C, *k, device=dev), b=torch.randn(O, device=dev),
                a=torch.tensor(1.0, device=dev), lm=torch.tensor(-2.0, device=dev),
                sk=torch.full((1, 1, 3, 3), 1 / 9, device=dev))
    m = (torch.rand(B, 1, H, W, device=dev) > 0.3).float()
    gy = None

    def run():
        nonlocal gy
        t = {k_: v.clone().requires_grad_() for k_, v in base.items()}
        y, _ = PT().pac_conv2d(t["x"], t["g"], t["w"], t["b"], (1, 1), (2, 2), (1, 1), "inv_1_-2", t["a"], t["lm"],
                               t["sk"], True, False, m)
        if gy is None:
            gy = torch.randn_like(y)
        return torch.autograd.grad(y, list(t.values()), gy)

    old = torch.are_deterministic_algorithms_enabled()
    try:
        for det in (False, True):
            torch.use_deterministic_algorithms(det)
            r1, r2 = run(), run()
            for a, b in zip(r1, r2):
                assert torch.equal(a, b)
    finally:
        torch.use_deterministic_algorithms(old)


class _Copies(torch.utils._python_dispatch.TorchDispatchMode):
    """The copies (clone / _to_copy / copy_) of ``numel`` elements made inside the block."""

    OPS = {torch.ops.aten.clone.default, torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default}

    def __init__(self, numels):
        super().__init__()
        self.numels, self.seen = set(numels), []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in self.OPS and isinstance(out, torch.Tensor) and out.numel() in self.numels:
            self.seen.append((str(func), tuple(out.shape)))
        return out


@pytest.mark.parametrize("layout", ["channels_last", "nchw"])
def test_nhwc_inputs_are_read_in_place(layout, monkeypatch):
    """Channels-last input, guide and dL/dy are read in place: no copy of them in the forward or
    the backward launchers (the custom ops' bodies: a dispatch mode sees a custom op as one
    op), neither PyTorch's nor a staging launch, and the output and dL/dx are channels-last, as
    ``nn.Conv2d`` gives. NCHW ones with 16 channels are gathered from channels-last staging
    copies (the control: the probe sees those launches)."""
    from pac_triton.triton import conv, host_common, jit_common
    from pac_triton.triton.host_common import KT_GAUSS
    B, C, D, H, W = 1, 16, 16, 5, 7
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.randn(B, C, H, W).contiguous(memory_format=fmt)
    g = torch.randn(B, D, H, W).contiguous(memory_format=fmt)
    gy = torch.randn(B, C, H, W).contiguous(memory_format=fmt)
    w = torch.randn(C, C, 3, 3)
    geom = ([1, 1], [1, 1], [0, 0], [1, 1])
    staged = []
    orig = host_common.checked

    class Spy(orig):
        def __getitem__(self, grid):
            launch = super().__getitem__(grid)

            def run(*a, **k):
                if self.kernel is jit_common.pac_stage_kernel:
                    staged.append(tuple(a[0].shape))
                return launch(*a, **k)
            return run
    monkeypatch.setattr(host_common, "checked", Spy)
    probe = _Copies({x.numel()})
    from pac_triton.triton import configs
    with probe, configs.force_blocks():  # default tiles: the copies are the host's choice
        y, _ = conv._conv_fwd(x, w, None, g, None, None, None, None, None, *geom, KT_GAUSS, False, False, False, 1)
        dx, dw, _, dg = conv._conv_bwd(gy, x, w, g, None, None, None, None, None, *geom, KT_GAUSS, False, False, False,
                                       [True, True, False, True, False, False, False, False], 1)[:4]
    assert y.is_contiguous(memory_format=fmt) and dx.is_contiguous(memory_format=fmt)
    assert probe.seen == [], probe.seen  # staging copies are Triton launches, never PyTorch copies
    if layout == "channels_last":
        assert staged == [], staged
    else:
        assert len(staged) >= 4, staged  # x and the guide in each pass, dL/dy


@pytest.mark.gpu
@pytest.mark.parametrize("groups", [1, 2], ids=["dense", "groups2"])
def test_cuda_graph_capture_forward_backward(groups):
    """A forward + backward captured in a CUDA graph (no host sync, no allocation outside the
    graph's pool, autotuning done in the warm-up) replays correctly after the inputs and the
    weight change in place: every output and gradient equals an eager run on the new values."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA")
    from pac_triton import PacConv2d
    dev = torch.device("cuda")
    torch.manual_seed(0)
    layer = PacConv2d(16, 16, 5, padding=2, kernel_type="inv_1_-2", normalize_kernel=True, groups=groups,
                      backend="triton").to(dev)
    x = torch.randn(2, 16, 20, 24, device=dev, requires_grad=True)
    g = torch.randn(2, 8, 20, 24, device=dev, requires_grad=True)
    gy = torch.randn(2, 16, 20, 24, device=dev)
    leaves = [x, g] + list(layer.parameters())

    def step():
        y = layer(x, g)
        return (y,) + torch.autograd.grad(y, leaves, gy)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # compile, autotune, allocator warm-up
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    with torch.no_grad():
        x.copy_(torch.randn_like(x))
        g.copy_(torch.randn_like(g))
        gy.copy_(torch.randn_like(gy))
        layer.weight.mul_(-0.5)
    graph.replay()
    torch.cuda.synchronize()
    eager = step()
    for i, (a, b) in enumerate(zip(captured, eager)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=lambda m: f"output {i}: {m}")


def test_launch_runs_on_the_tensors_device(monkeypatch):
    """Triton launches on the current CUDA device: every launch (``host_common.checked``) enters
    ``torch.cuda.device`` of its tensors when they live on another one, and nothing otherwise
    (logic checked here with a stand-in device; two real GPUs: the next test)."""
    import types

    from pac_triton.triton import host_common as hc
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    guard = hc.device_guard(types.SimpleNamespace(device=torch.device("cuda", 1)))
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    assert hc.device_guard(types.SimpleNamespace(device=torch.device("cuda", 0))) is None
    assert hc.device_guard(torch.zeros(1)) is None and hc.device_guard(None) is None

    events = []

    class Guard:
        def __enter__(self):
            events.append("enter")

        def __exit__(self, *exc):
            events.append("exit")

    class Kernel:
        def __getitem__(self, grid):
            return lambda *a, **k: events.append(("launch", k["IDX64"]))

    x = torch.zeros(3)
    monkeypatch.setattr(hc, "device_guard", lambda t: Guard() if t is x else None)
    hc.checked(Kernel())[(1,)](x_ptr=x, n=3)
    hc.checked(Kernel())[(1,)](x_ptr=torch.zeros(2), n=2)
    assert events == ["enter", ("launch", False), "exit", ("launch", False)]


@pytest.mark.gpu
def test_tensors_on_a_non_current_device():
    """A layer and its tensors on ``cuda:1`` while ``cuda:0`` is current: forward and backward
    run there and equal the reference."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    from pac_triton import PacConv2d
    torch.manual_seed(0)
    dev = torch.device("cuda", 1)
    torch.cuda.set_device(0)
    layer = PacConv2d(16, 16, 3, padding=1, backend="triton").to(dev)
    x = torch.randn(2, 16, 12, 10, device=dev, requires_grad=True)
    g = torch.randn(2, 4, 12, 10, device=dev, requires_grad=True)
    y = layer(x, g)
    grads = torch.autograd.grad(y.square().sum(), [x, g, layer.weight])
    layer.backend = "reference"
    y_ref = layer(x, g)
    ref = torch.autograd.grad(y_ref.square().sum(), [x, g, layer.weight])
    assert torch.cuda.current_device() == 0 and y.device == dev
    assert_close_rel(y, y_ref, TOL[F32], "y")
    for name, a, b in zip(("dx", "dguide", "dweight"), grads, ref):
        assert_close_rel(a, b, TOL[F32], name)
