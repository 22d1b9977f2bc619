"""The depthwise family (``depthwise.py``): ``pac_pool2d`` / ``pacpool2d``, the
``shared_filters`` convolutions (one ``[1, 1, kh, kw]`` filter for every channel) and the
depthwise convolutions (one ``[C, 1, kh, kw]`` filter per channel, ``groups == C``, against the
grouped reference), forward and backward against the float64 reference, with small forced
tiles, NaN-filled outputs, inputs inside NaN guard bands and the reference forbidden while the
Triton path runs."""
from __future__ import annotations

import contextlib

import pytest
import torch

from test_conv import conv_case, conv_static, conv_tensors, convt_case, given_kernel_tensors
from pac_testing import assert_close_rel
from triton_helpers import (DEVICES, GRADS, ORDER, PT, case, convt_out_hw, device_or_skip, guarded, guide_blocks_of_8,
                            inv_params, make_mask, reference_forbidden, run_backward, run_forward, spy_launches)

pytest.importorskip("pac_triton.triton")

F32, F16, BF16, F64 = torch.float32, torch.float16, torch.bfloat16, torch.float64
POOL_DEFAULTS = dict(B=1, k=(3, 3), s=(1, 1), p=(1, 1), d=(1, 1), kt="gaussian", norm=False, mask=False,
                     smooth=None, cw=False, vec_params=False, cl=False, dtype=F32)


def pool_case(id, **kw):
    return case(id, **{**POOL_DEFAULTS, **kw})


def pool_tensors(c, dev="cpu"):
    alpha, lam = inv_params(c.kt, dev, c.C if c.vec_params else None)
    if c.vec_params and lam is not None:
        lam = lam[0]  # a vector alpha with a 0-d lambda: each broadcast on its own
    r = lambda *s: torch.randn(*s, dtype=torch.float64, device=dev)  # noqa: E731
    return dict(input=r(c.B, c.C, c.H, c.W), guide=r(c.B, c.C if c.cw else c.D, c.H, c.W), inv_alpha=alpha,
                inv_lambda=lam,
                smooth_kernel=torch.rand(1, 1, *c.smooth, dtype=torch.float64, device=dev) if c.smooth else None,
                mask=make_mask(c.B, c.H, c.W, dev) if c.mask else None)


def pool_static(c):
    return dict(kernel_size=c.k, stride=c.s, padding=c.p, dilation=c.d, kernel_type=c.kt, normalize_kernel=c.norm,
                channel_wise=c.cw)


# --- pooling -----------------------------------------------------------------------------------

POOL_CASES = [
    pool_case("pool-k3-gauss-norm-mask-smooth3-f32", B=2, C=6, D=3, H=5, W=5, norm=True, mask=True, smooth=(3, 3)),
    pool_case("pool-cw-invasym-norm-mask-vecparams-f16-cl", C=6, D=6, H=6, W=5, kt="inv_1_-2_asym", norm=True,
              mask=True, cw=True, vec_params=True, dtype=F16, cl=True),
    pool_case("pool-cw-s2-d2x1-gauss-mask-smooth3-bf16", C=5, D=5, H=8, W=7, s=(2, 2), p=(2, 1), d=(2, 1),
              mask=True, smooth=(3, 3), cw=True, dtype=BF16),
    pool_case("pool-inv-f64", C=5, D=3, H=6, W=6, kt="inv_1_-2", dtype=F64),
    # C and D multiples of 16: x and the guide gathered from channels-last copies (2-D tiles)
    pool_case("pool-C16-D16-gauss-bf16", C=16, D=16, H=5, W=9, dtype=BF16),
    pool_case("pool-C16-cw-s2x1-inv-norm-mask-f16", C=16, D=16, H=6, W=7, s=(2, 1), kt="inv_1_-2", norm=True,
              mask=True, cw=True, dtype=F16),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("c", POOL_CASES)
def test_pac_pool2d(c, device):
    dev = device_or_skip(device)
    with guide_blocks_of_8(c.D):
        run_forward("pac_pool2d", pool_tensors(c, dev), pool_static(c), c.dtype, c.cl, ["y", "out_mask"])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kc,dtype", [(1, F32), (6, F16)], ids=["pool-given-k1-f32", "pool-given-kC-f16"])
def test_pacpool2d_given_kernel(kc, dtype, device):
    dev = device_or_skip(device)
    B, C, H, W, k, s, p, d = 1, 6, 6, 6, (3, 3), (1, 1), (1, 1), (1, 1)
    tensors = dict(input=torch.randn(B, C, H, W, dtype=torch.float64, device=dev),
                   kernel=torch.rand(B, kc, *k, H, W, dtype=torch.float64, device=dev))
    run_forward("pacpool2d", tensors, dict(kernel_size=k, stride=s, padding=p, dilation=d), dtype, False, ["y"])


POOL_BWD_CASES = [
    pool_case("pool-inv-norm-mask-smooth3-f32", B=2, C=6, D=3, H=5, W=5, kt="inv_1_-2", norm=True, mask=True,
              smooth=(3, 3)),
    pool_case("pool-cw-invasym-norm-mask-vecparams-f64", C=6, D=6, H=6, W=5, kt="inv_1_-2_asym", norm=True,
              mask=True, cw=True, vec_params=True, dtype=F64),
    pool_case("pool-cw-s2-d2x1-gauss-mask-smooth3-f32", C=5, D=5, H=8, W=7, s=(2, 2), p=(2, 1), d=(2, 1),
              mask=True, smooth=(3, 3), cw=True),
    # C a multiple of 16: x, dL/dy and the guide gathered from channels-last copies
    pool_case("pool-C16-cw-inv-norm-f32", C=16, D=16, H=5, W=6, kt="inv_1_-2", norm=True, cw=True),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("c", POOL_BWD_CASES)
def test_pac_pool2d_backward(c, device):
    device_or_skip(device)
    run_backward("pac_pool2d", pool_tensors(c), pool_static(c), GRADS, c.dtype, device)


# --- shared filters ------------------------------------------------------------------------------

SHARED_CASES = [
    conv_case("shared-conv-k3-inv-norm-mask-f32-cl", C=6, O=6, D=3, H=6, W=5, kt="inv_1_-2", norm=True, mask=True,
              cl=True),
    convt_case("shared-convT-k3-s2-inv-norm-bf16", C=6, O=6, D=3, H=3, W=3, kt="inv_1_-2", norm=True, dtype=BF16),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("c", SHARED_CASES)
def test_shared_filters(c, device):
    dev = device_or_skip(device)
    fn = "pac_conv_transpose2d" if c.transposed else "pac_conv2d"
    run_forward(fn, conv_tensors(c, dev, c.transposed, shared=True), conv_static(c, c.transposed, shared=True),
                c.dtype, c.cl, ["y", "out_mask"])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("transposed,dtype", [(False, F16), (True, BF16)],
                         ids=["shared-conv-given-f16", "shared-convT-given-bf16"])
def test_shared_filters_given_kernel(transposed, dtype, device):
    dev = device_or_skip(device)
    C, k = 10, (3, 3)
    if transposed:
        B, H, W, s, p, op, d = 1, 3, 3, (2, 2), (1, 0), (1, 1), (1, 1)
        Ho, Wo = convt_out_hw(H, W, k, s, p, op, d)
        tensors = given_kernel_tensors(B, C, C, H, W, k, Ho, Wo, (1, 1, *k), False, dev)
        run_forward("pacconv_transpose2d", tensors,
                    dict(stride=s, padding=p, output_padding=op, dilation=d, shared_filters=True), dtype, False, ["y"])
    else:
        B, H, W, s, p, d = 1, 7, 6, (2, 1), (1, 2), (1, 2)
        Ho, Wo = (H + 2 * p[0] - d[0] * 2 - 1) // s[0] + 1, (W + 2 * p[1] - d[1] * 2 - 1) // s[1] + 1
        tensors = given_kernel_tensors(B, C, C, H, W, k, Ho, Wo, (1, 1, *k), True, dev)
        run_forward("pacconv2d", tensors, dict(stride=s, padding=p, dilation=d, shared_filters=True), dtype, False,
                    ["y"])


SHARED_BWD_CASES = [
    conv_case("shared-conv-s2x1-d1x2-inv-norm-mask-smooth1x3-f32-cl", C=6, O=6, D=3, H=6, W=5, s=(2, 1), p=(1, 2),
              d=(1, 2), kt="inv_1_-2", norm=True, mask=True, smooth=(1, 3), cl=True),
    conv_case("shared-conv-k3-gauss-norm-f64", C=5, O=5, D=2, H=6, W=6, norm=True, dtype=F64),
    conv_case("shared-conv-C16-D16-gauss-norm-f32", C=16, O=16, D=16, H=5, W=6, norm=True),
    convt_case("shared-convT-s2-op0x1-inv-norm-smooth3-f32", C=6, O=6, D=3, H=3, W=3, op=(0, 1), kt="inv_1_-2",
               norm=True, smooth=(3, 3)),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("c", SHARED_BWD_CASES)
def test_shared_filters_backward(c, device):
    device_or_skip(device)
    fn = "pac_conv_transpose2d" if c.transposed else "pac_conv2d"
    with guide_blocks_of_8(c.D):
        run_backward(fn, conv_tensors(c, transposed=c.transposed, shared=True),
                     conv_static(c, c.transposed, shared=True), GRADS, c.dtype, device, c.cl)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", ["shared-convT-given-f64", "pool-given-kC-f32"])
def test_given_kernel_backward(op, device):
    device_or_skip(device)
    B, C, H, W, k = 1, 6, 5, 4, (3, 3)
    if op.startswith("shared"):
        s, p, opad, d = (2, 2), (1, 0), (1, 1), (1, 1)
        Ho, Wo = (H - 1) * 2 - 2 + 2 + 2, (W - 1) * 2 + 2 + 2
        tensors = given_kernel_tensors(B, C, C, H, W, k, Ho, Wo, (1, 1, *k), True)
        run_backward("pacconv_transpose2d", tensors,
                     dict(stride=s, padding=p, output_padding=opad, dilation=d, shared_filters=True),
                     ["input", "kernel", "weight", "bias"], F64, device)
    else:
        s, p, d = (2, 1), (1, 2), (1, 2)
        Ho, Wo = (H - 1) // 2 + 1, W
        tensors = dict(input=torch.randn(B, C, H, W, dtype=torch.float64),
                       kernel=torch.rand(B, C, *k, Ho, Wo, dtype=torch.float64))
        run_backward("pacpool2d", tensors, dict(kernel_size=k, stride=s, padding=p, dilation=d),
                     ["input", "kernel"], F32, device)


# --- depthwise conv: one filter per channel (groups == C_in == C_out) ---------------------------
# groups=C with a [C, 1, kh, kw] weight: the op routes it to the depthwise family (per-channel tap
# weights, K computed once per pixel tile for a block of channels), against the float64 grouped
# reference.

def dw_tensors(c, dev="cpu"):
    """float64 inputs of one depthwise case: the shared-filter case's tensors with a per-channel
    weight ``[C, 1, kh, kw]`` (``F.conv2d`` / ``F.conv_transpose2d`` with ``groups=C``)."""
    t = conv_tensors(c, dev, c.transposed, shared=True)
    t["weight"] = torch.randn(c.C, 1, *c.k, dtype=torch.float64, device=dev)
    return t


def dw_run(c, dev, backward=False, grads=GRADS):
    fn = "pac_conv_transpose2d" if c.transposed else "pac_conv2d"
    args = (fn, dw_tensors(c, dev), {**conv_static(c, c.transposed), "groups": c.C})
    if backward:
        return run_backward(*args, grads, c.dtype, dev, c.cl)
    return run_forward(*args, c.dtype, c.cl, ["y", "out_mask"])


# C = 6, 5, 10 with 4-channel blocks (the fixture): ragged channel blocks; 16-pixel tiles over
# images that are no multiple of them
DW_CASES = [
    conv_case("dw-conv-k3-inv-norm-mask-f32-cl", C=6, O=6, D=3, H=6, W=5, kt="inv_1_-2", norm=True, mask=True,
              cl=True),
    conv_case("dw-conv-k3x5-s2x1-d1x2-invasym-mask-smooth1x3-f16", C=5, O=5, D=2, H=7, W=6, k=(3, 5), s=(2, 1),
              p=(1, 3), d=(1, 2), kt="inv_1_-2_asym", mask=True, smooth=(1, 3), dtype=F16),
    conv_case("dw-conv-k3-p2-gauss-norm-bf16", C=10, O=10, D=3, H=5, W=6, p=(2, 2), norm=True, dtype=BF16),
    conv_case("dw-conv-k5-gauss-mask-nobias-f64", C=5, O=5, D=2, H=6, W=6, k=(5, 5), p=(2, 2), mask=True,
              bias=False, dtype=F64),
    # C and D multiples of 16: x and the guide gathered from channels-last copies
    conv_case("dw-conv-C16-D16-s2-gauss-norm-mask-f32", C=16, O=16, D=16, H=6, W=7, s=(2, 2), norm=True,
              mask=True),
    convt_case("dw-convT-k3-s2-op1-inv-norm-mask-bf16", C=6, O=6, D=3, H=3, W=4, op=(1, 1), kt="inv_1_-2",
               norm=True, mask=True, dtype=BF16),
    convt_case("dw-convT-k3x5-s2x3-d2x1-invasym-smooth3x1-f16-cl", C=5, O=5, D=4, H=3, W=2, k=(3, 5), s=(2, 3),
               p=(0, 1), op=(1, 2), d=(2, 1), kt="inv_1_-2_asym", smooth=(3, 1), dtype=F16, cl=True),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("c", DW_CASES)
def test_depthwise(c, device):
    y, _ = dw_run(c, device_or_skip(device))
    if c.cl:
        assert y.is_contiguous(memory_format=torch.channels_last)


DW_BWD_CASES = [
    conv_case("dw-conv-s2x1-d1x2-inv-norm-mask-smooth1x3-f32-cl", C=6, O=6, D=3, H=6, W=5, s=(2, 1), p=(1, 2),
              d=(1, 2), kt="inv_1_-2", norm=True, mask=True, smooth=(1, 3), cl=True),
    conv_case("dw-conv-k3-invasym-mask-f64", C=5, O=5, D=2, H=6, W=6, kt="inv_1_-2_asym", mask=True, dtype=F64),
    # C a multiple of 16: x and dL/dy gathered from channels-last copies
    conv_case("dw-conv-C16-gauss-norm-f32", C=16, O=16, D=3, H=4, W=6, norm=True),
    convt_case("dw-convT-s2-op0x1-inv-norm-smooth3-f32", C=6, O=6, D=3, H=3, W=3, op=(0, 1), kt="inv_1_-2",
               norm=True, smooth=(3, 3)),
    convt_case("dw-convT-k3x5-s2x1-d1x2-gauss-mask-bf16", C=5, O=5, D=2, H=3, W=3, k=(3, 5), s=(2, 1), p=(1, 2),
               d=(1, 2), mask=True, dtype=BF16),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("c", DW_BWD_CASES)
def test_depthwise_backward(c, device):
    dev = device_or_skip(device)
    got = dw_run(c, dev, backward=True)
    assert got["weight"].shape == (c.C, 1, *c.k)


def _dw_given_kernel_case(transposed, dev, nan_at_dropped_taps=False):
    """(function name, tensors, static) of a depthwise conv with a precomputed K. With
    ``nan_at_dropped_taps`` (stride 1, padding (kh-1)/2 only) K is NaN at every tap that reads
    the zero padding of the first / last row and column: dropped taps contribute nothing."""
    C, k = 6, (3, 3)
    if transposed:
        B, H, W, s, p, op, d = 1, 3, 4, (2, 2), (1, 0), (1, 1), (1, 1)
        Ho, Wo = convt_out_hw(H, W, k, s, p, op, d)
        tensors = given_kernel_tensors(B, C, C, H, W, k, Ho, Wo, (C, 1, *k), True, dev)
        return "pacconv_transpose2d", tensors, dict(stride=s, padding=p, output_padding=op, dilation=d,
                                                    shared_filters=False, groups=C)
    B, H, W, s, p, d = 2, 5, 6, (1, 1), (1, 1), (1, 1)
    tensors = given_kernel_tensors(B, C, C, H, W, k, H, W, (C, 1, *k), True, dev)
    if nan_at_dropped_taps:
        K = tensors["kernel"]
        K[:, :, 0, :, 0, :] = K[:, :, -1, :, -1, :] = float("nan")
        K[:, :, :, 0, :, 0] = K[:, :, :, -1, :, -1] = float("nan")
    return "pacconv2d", tensors, dict(stride=s, padding=p, dilation=d, shared_filters=False, groups=C)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("transposed,dtype", [(False, F16), (True, BF16)],
                         ids=["dw-conv-given-nan-dropped-f16", "dw-convT-given-bf16"])
def test_depthwise_given_kernel(transposed, dtype, device):
    fn, tensors, static = _dw_given_kernel_case(transposed, device_or_skip(device), not transposed)
    run_forward(fn, tensors, static, dtype, False, ["y"])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("transposed,dtype", [(False, F32), (True, F64)],
                         ids=["dw-conv-given-nan-dropped-f32", "dw-convT-given-f64"])
def test_depthwise_given_kernel_backward(transposed, dtype, device):
    fn, tensors, static = _dw_given_kernel_case(transposed, device_or_skip(device), not transposed)
    got = run_backward(fn, tensors, static, ["input", "kernel", "weight", "bias"], dtype, device)
    if not transposed:
        # dL/dK is exactly 0 at the dropped (NaN) taps
        dropped = torch.isnan(tensors["kernel"])
        assert dropped.any() and bool((got["kernel"][dropped.to(got["kernel"].device)] == 0).all())


@pytest.mark.parametrize("transposed", [False, True],
                         ids=["dw-conv-K1-equals-F.conv2d", "dw-convT-K1-equals-F.conv_transpose2d"])
def test_depthwise_constant_guide_equals_torch_conv(transposed):
    """A constant guide with the unnormalised Gaussian (K == 1, no mask) is the depthwise conv
    of PyTorch with the same [C, 1, kh, kw] weight (read here through a strided view), and
    the transposed one is ``F.conv_transpose2d(..., groups=C)`` (no flip)."""
    import torch.nn.functional as F
    B, C, D, H, W, k = 2, 6, 2, 5, 7, (3, 5)
    x = torch.randn(B, C, H, W, dtype=F64)
    w = torch.randn(k[0], k[1], C, 1, dtype=F64).permute(2, 3, 0, 1)  # [C, 1, kh, kw], not contiguous
    assert not w.is_contiguous()
    b = torch.randn(C, dtype=F64)
    if transposed:
        s, p, op, d = (2, 3), (1, 2), (1, 2), (2, 1)
        exp = F.conv_transpose2d(x, w, b, s, p, op, C, d)
        guide = torch.full((B, D, *exp.shape[-2:]), 0.7, dtype=F64)
        with reference_forbidden():
            y, om = PT().pac_conv_transpose2d(guarded(x), guide, w, b, s, p, op, d, "gaussian", None, None, None,
                                              False, False, None, C)
    else:
        s, p, d = (2, 1), (1, 4), (1, 2)  # padding <= d*(k-1)/2: every centre feature inside the guide
        exp = F.conv2d(x, w, b, s, p, d, C)
        guide = torch.full((B, D, H, W), 0.7, dtype=F64)
        with reference_forbidden():
            y, om = PT().pac_conv2d(guarded(x), guide, w, b, s, p, d, "gaussian", None, None, None, False, False,
                                    None, C)
    assert om is None
    assert_close_rel(y, exp, 1e-12, "y vs torch (groups=C)")


@pytest.mark.parametrize("transposed", [False, True], ids=["dw-conv-chunked-idx64", "dw-convT-chunked-idx64"])
def test_depthwise_batch_chunks_and_64bit_offsets(transposed, monkeypatch):
    """Every launch with 64-bit offsets (the 32-bit limit lowered to 0) and a batch of 3 run in
    chunks of 2 (the weight and bias gradients summed over the chunks): forward and backward
    as the reference."""
    from pac_triton.triton import host_common as hc
    monkeypatch.setattr(hc, "INDEX32_LIMIT", 0)
    monkeypatch.setattr(hc, "BATCH_CHUNK", 2)
    seen = []
    over_batch = hc.over_batch
    monkeypatch.setattr(hc, "over_batch", lambda impl, args, *a, **k: seen.append(args[0].shape[0])
                        or over_batch(impl, args, *a, **k))
    if transposed:
        c = convt_case("t", B=3, C=5, O=5, D=2, H=2, W=2, kt="inv_1_-2", norm=True, mask=True).values[0]
    else:
        c = conv_case("c", B=3, C=5, O=5, D=2, H=4, W=4, s=(2, 1), kt="inv_1_-2", mask=True,
                      smooth=(3, 3)).values[0]
    dw_run(c, "cpu")
    dw_run(c, "cpu", backward=True)
    assert seen and all(n == 3 for n in seen)  # the ops saw the whole batch and split it


def test_depthwise_weight_shape_error():
    """A weight that is neither the shared filter [1, 1, kh, kw] nor [C, 1, kh, kw] is refused
    with a ValueError naming the shapes (never read as something else)."""
    x, g = torch.randn(1, 5, 4, 4), torch.randn(1, 2, 4, 4)
    for w in (torch.randn(4, 1, 3, 3), torch.randn(5, 2, 3, 3)):
        with pytest.raises(ValueError, match=r"\[C, 1, kh, kw\] with C = 5"):
            PT().pac_conv2d(x, g, w, None, (1, 1), (1, 1), (1, 1), "gaussian", None, None, None, False, True, None)


def test_depthwise_opcheck():
    """The custom op with groups = C and a [C, 1, kh, kw] weight (the depthwise family), and
    with shared=True and that weight (per-channel tap weights): schema, autograd registration,
    fake tensors (the weight gradient's fake has the weight's shape) and AOT dispatch (the
    transposed op's fake shapes do not depend on the weight's rows)."""
    ops = torch.ops.pac_triton
    r = lambda *s: torch.randn(*s, dtype=F64, requires_grad=True)  # noqa: E731
    x, w, b = r(1, 3, 3, 4), r(3, 1, 3, 3), r(3)  # C = 3: per-channel tap weights
    g = r(1, 2, 3, 4)
    m = (torch.rand(1, 1, 3, 4) > 0.3).double()
    a, lm = torch.tensor(1.0, dtype=F64, requires_grad=True), torch.tensor(-2.0, dtype=F64, requires_grad=True)
    from pac_triton.triton.conv import conv_options
    for shared, groups in ((False, 3), (True, 1)):
        torch.library.opcheck(ops.triton_conv_fwd, (x, w, b, g, None, m, None, a, lm,
                                                    *conv_options([1, 1], [1, 1], [0, 0], [1, 1], 1, True, shared,
                                                                  False, groups)),
                              test_utils=("test_schema", "test_autograd_registration", "test_faketensor",
                                          "test_aot_dispatch_dynamic"))


@pytest.mark.parametrize("transposed", [False, True], ids=["conv", "convT"])
@pytest.mark.parametrize("groups,family", [(4, "depthwise"), (2, "dense")], ids=["groups=C", "groups=2"])
def test_groups_route_to_family(groups, family, transposed):
    """groups == C with one output channel per input channel runs the depthwise family's
    kernels (K once per pixel tile for a block of channels) forward and backward; other groups
    the dense family's."""
    from pac_triton.triton import conv, depthwise
    names = {"depthwise": {"pac_dw_kernel", "pac_dw_dx_kernel", "pac_shared_dw_kernel"},
             "dense": {"pac_conv_kernel", "pac_conv_dxdk_kernel", "pac_conv_dw_kernel"}}
    ran = set()
    orig = conv.hc.checked

    class Spy(orig):
        def __getitem__(self, grid):
            ran.add(getattr(self.kernel, "__name__", None) or self.kernel.fn.__name__)
            return super().__getitem__(grid)
    C, O = 4, 4
    x = torch.randn(1, C, 5, 5, requires_grad=True)
    w = torch.randn(*((C, O // groups) if transposed else (O, C // groups)), 3, 3, requires_grad=True)
    g = torch.randn(1, 2, 5, 5)
    try:
        conv.hc.checked = Spy
        fn = PT().pac_conv_transpose2d if transposed else PT().pac_conv2d
        args = ((1, 1), (1, 1), (0, 0), (1, 1)) if transposed else ((1, 1), (1, 1), (1, 1))
        y, _ = fn(x, g, w, None, *args, "gaussian", None, None, None, False, False, None, groups)
        y.sum().backward()
    finally:
        conv.hc.checked = orig
    assert names[family] <= ran and not (names["dense" if family == "depthwise" else "depthwise"] & ran), ran


# --- the padded forward path ---------------------------------------------------------------------
# Conv / pooling with K from the guide per pixel (D in one block): x staged zero-padded and
# channels-last, C padded to a multiple of the channel block, input gathers without masks, bf16
# read as channel pairs (``_dw_padded_taps``). The fixture's BLOCK_D = 2 keeps most cases above on
# the general path; these force a guide block that holds D and check which path ran.

@pytest.fixture
def launches(monkeypatch):
    """The ``PADDED`` flag of every depthwise-family forward launch, in order."""
    from pac_triton.triton import depthwise
    return spy_launches(monkeypatch, lambda fn, k: bool(k.get("PADDED", False))
                        if fn is depthwise.pac_dw_kernel else None)


# (case, forced depthwise channel block): C_pad > C where C is no multiple of the block
PADDED_CASES = [
    (conv_case("dwp-conv-k3-gauss-f32", C=6, O=6, D=3, H=5, W=7), 4),
    (conv_case("dwp-conv-k5x3-s2x1-p2x0-d1x2-inv-norm-mask-bf16-pairs", C=10, O=10, D=4, H=9, W=7, k=(5, 3),
               s=(2, 1), p=(2, 0), d=(1, 2), kt="inv_1_-2", norm=True, mask=True, dtype=BF16), 8),
    (conv_case("dwp-conv-k3-p3-invasym-mask-smooth3-f16-cl", C=5, O=5, D=2, H=4, W=6, p=(3, 3),
               kt="inv_1_-2_asym", mask=True, smooth=(3, 3), dtype=F16, cl=True), 4),
    (conv_case("dwp-conv-k7-p3-gauss-norm-nobias-bf16-cl", C=12, O=12, D=16, H=6, W=5, k=(7, 7), p=(3, 3),
               norm=True, bias=False, dtype=BF16, cl=True), 8),
    (conv_case("dwp-conv-k1x5-p0x2-gauss-mask-f64", C=3, O=3, D=1, H=3, W=6, k=(1, 5), p=(0, 2), mask=True,
               dtype=F64), 2),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("c,bc", [pytest.param(c.values[0], bc, id=c.id) for c, bc in PADDED_CASES])
def test_depthwise_padded(c, bc, device, launches):
    """The padded path against the float64 grouped reference (inputs in NaN guard bands,
    outputs NaN-filled first): ragged channel blocks padded with zero channels, ragged pixel
    tiles (clamped pixels), taps entirely in the padding, stride, dilation, masks,
    normalisation, bf16 channel pairs, channels-last and NCHW inputs."""
    from pac_triton.triton import configs
    with configs.force_blocks(BLOCK_P=16, DW_BLOCK_C=bc, BLOCK_D=16):
        y, _ = dw_run(c, device_or_skip(device))
    assert launches == [True]
    if c.cl:
        assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("cw", [False, True], ids=["pool", "pool-channel-wise"])
def test_pool_padded_path(cw, launches):
    """Pooling takes the padded path (not channel-wise: one K per pixel); channel-wise pooling
    (one K per channel) the general one; both equal the reference."""
    from pac_triton.triton import configs
    c = pool_case("p", B=2, C=6, D=6 if cw else 3, H=5, W=6, k=(3, 3), p=(2, 1), norm=True, mask=True, cw=cw,
                  dtype=BF16).values[0]
    with configs.force_blocks(BLOCK_P=16, DW_BLOCK_C=4, BLOCK_D=8):
        run_forward("pac_pool2d", pool_tensors(c), pool_static(c), c.dtype, c.cl, ["y", "out_mask"])
    assert launches == [not cw]


def test_padded_path_off_without_channels_last_copies(launches, monkeypatch):
    """``PAC_TRITON_CHANNELS_LAST_COPIES=0`` (no staging copies) runs the general path; so do
    the transposed conv and a given K. All equal the reference."""
    from pac_triton.triton import configs
    c = conv_case("c", C=6, O=6, D=3, H=5, W=5, norm=True).values[0]
    with configs.force_blocks(BLOCK_P=16, DW_BLOCK_C=4, BLOCK_D=4):
        monkeypatch.setenv("PAC_TRITON_CHANNELS_LAST_COPIES", "0")
        dw_run(c, "cpu")
        monkeypatch.setenv("PAC_TRITON_CHANNELS_LAST_COPIES", "1")
        dw_run(c, "cpu")
        dw_run(convt_case("t", C=6, O=6, D=3, H=3, W=3).values[0], "cpu")
    assert launches == [False, True, False]


# A given single-channel K on the conv's output grid (pacnet's ``pacpool2d`` / shared-filter
# ``pacconv2d`` with ``packernel2d``'s K; ``PacCRF``'s ``'2d'`` / ``'potts'`` messages) takes the
# padded path too: K read per pixel, 0 at taps outside the input. Before, it ran the general path
# with a [pixels, channels] load of K at channel stride 0 (sm_90 bf16, C = 64: 22.6 warp
# instructions per pixel-tap of 64 channels for pooling, now 7.9).
GIVEN_PADDED = [
    # (id, op, C, H, W, k, stride, padding, dilation, K channels, forced channel block, dtype,
    #  channels-last input, padded forward (and weight gradient) expected, padded dx expected:
    #  stride 1 only)
    ("pool-k1-p2x1-ragged-f32", "pool", 6, 5, 7, (3, 3), (1, 1), (2, 1), (1, 1), 1, 4, F32, False, True, True),
    ("shared-conv-k1-s2x1-d1x2-bf16", "shared", 6, 7, 6, (3, 3), (2, 1), (1, 2), (1, 2), 1, 4, BF16, False, True,
     False),
    ("shared-conv-k1-d2-p3x2-bf16", "shared", 6, 5, 6, (3, 3), (1, 1), (3, 2), (2, 2), 1, 4, BF16, False, True, True),
    ("dw-conv-k1-k5x3-p0x1-f16-cl", "dw", 5, 6, 5, (5, 3), (1, 1), (0, 1), (1, 1), 1, 4, F16, True, True, True),
    ("pool-kC-general-f32", "pool", 6, 5, 5, (3, 3), (1, 1), (1, 1), (1, 1), 6, 4, F32, False, False, False),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case_", [pytest.param(c, id=c[0]) for c in GIVEN_PADDED])
def test_given_kernel_padded_path(case_, device, launches, bwd_launches, dw_launches):
    """Given K, forward and backward, against the float64 reference; K is NaN at every tap that
    reads no input pixel (those taps contribute nothing: the padded loops set K to exactly 0
    there), and which path each forward, dx and dW takes."""
    from pac_triton.triton import configs
    _, op, C, H, W, k, s, p, d, kc, bc, dtype, cl, padded, dx_padded = case_
    dev = device_or_skip(device)
    Ho = (H + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1
    Wo = (W + 2 * p[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1
    wshape = (C, 1, *k) if op == "dw" else (1, 1, *k)
    t = given_kernel_tensors(1, C, C, H, W, k, Ho, Wo, wshape, op != "pool", dev, kc=kc)
    if op == "pool":
        del t["weight"], t["bias"]
    # NaN at the taps that read the zero padding
    K = t["kernel"]
    for i in range(k[0]):
        for j in range(k[1]):
            ih = torch.arange(Ho, device=dev)[:, None] * s[0] - p[0] + i * d[0]
            iw = torch.arange(Wo, device=dev)[None, :] * s[1] - p[1] + j * d[1]
            out = (ih < 0) | (ih >= H) | (iw < 0) | (iw >= W)
            K[:, :, i, j][out.expand_as(K[:, :, i, j])] = float("nan")
    if op == "pool":
        fn, static, grads = "pacpool2d", dict(kernel_size=k, stride=s, padding=p, dilation=d), ["input", "kernel"]
    else:
        fn = "pacconv2d"
        static = dict(stride=s, padding=p, dilation=d, shared_filters=op == "shared", groups=C if op == "dw" else 1)
        grads = ["input", "kernel", "weight", "bias"]
    with configs.force_blocks(BLOCK_P=16, DW_BLOCK_C=bc, BLOCK_D=4):
        run_forward(fn, t, static, dtype, cl, ["y"])
        got = run_backward(fn, t, static, grads, dtype, device, cl)
    assert launches[0] == padded, launches
    assert [pad for name, pad in bwd_launches if name == "dx"] == [dx_padded], bwd_launches
    assert [pad for pad, _, _ in dw_launches] == ([] if op == "pool" else [padded]), dw_launches
    dropped = torch.isnan(t["kernel"])
    assert dropped.any() and bool((got["kernel"][dropped.to(got["kernel"].device)] == 0).all())


@pytest.mark.parametrize("op,kc,copies,padded", [
    ("pool", 1, True, True), ("shared", 1, True, True), ("dw", 1, True, True),
    ("shared", 1, False, False), ("pool", 6, True, False), ("shared-T", 1, True, False)],
    ids=["pool-k1-padded", "shared-k1-padded", "dw-k1-padded", "shared-k1-no-copies", "pool-kC-general",
         "shared-convT-general"])
def test_given_kernel_grad_at_dropped_taps_with_inf_grad_out(op, kc, copies, padded, monkeypatch, bwd_launches):
    """An Inf in dL/dy: dL/dK at the taps that read the zero padding (a transposed conv's: also
    between the input pixels) is exactly 0, as the contract says and the reference computes (the
    dK passes formed Inf * 0 = NaN there), on the padded and the general dK paths alike; the
    NaN / Inf pattern and the finite values elsewhere as the reference's."""
    from triton_helpers import REF
    monkeypatch.setenv("PAC_TRITON_CHANNELS_LAST_COPIES", "1" if copies else "0")
    g = torch.Generator().manual_seed(5)
    C, H, W, k = 6, 5, 6, (3, 3)
    x = torch.randn(1, C, H, W, generator=g, dtype=F64)
    if op == "shared-T":
        s, p, op_, d = (2, 2), (1, 1), (1, 1), (1, 1)
        Ho, Wo = convt_out_hw(H, W, k, s, p, op_, d)
    else:
        s, p, d = (1, 1), (1, 1), (1, 1)
        Ho, Wo = H, W
    K = torch.rand(1, kc, *k, Ho, Wo, generator=g, dtype=F64)
    w = torch.randn(C if op == "dw" else 1, 1, *k, generator=g, dtype=F64)
    gy = torch.randn(1, C, Ho, Wo, generator=g, dtype=F64)
    gy[0, 1, 0, 0] = float("inf")
    gy[0, 2, Ho - 1, 2] = float("inf")

    def call(be, xx, KK, ww):
        if op == "pool":
            return be.pacpool2d(xx, KK, k, s, p, d)
        if op == "shared-T":
            return be.pacconv_transpose2d(xx, KK, ww, None, s, p, op_, d, True, 1)
        return be.pacconv2d(xx, KK, ww, None, s, p, d, op == "shared", C if op == "dw" else 1)
    grads = []
    for be, dt in ((REF, F64), (PT(), F32)):
        leaves = [t.to(dt).requires_grad_() for t in (x, K, w)]
        y = call(be, *leaves)
        with (reference_forbidden() if be is not REF else contextlib.nullcontext()):
            grads.append(torch.autograd.grad(y, leaves[:2] if op == "pool" else leaves, gy.to(dt)))
    assert [pad for name, pad in bwd_launches if name == "dk"] == [padded], bwd_launches
    for name, e, a in zip(("dx", "dK", "dW"), grads[0], grads[1]):
        e, a = e.double(), a.double()
        assert torch.equal(torch.isnan(a), torch.isnan(e)) and torch.equal(torch.isinf(a), torch.isinf(e)), name
        fin = torch.isfinite(e)
        if fin.any():
            assert_close_rel(a[fin], e[fin], 1e-5, name)
    assert (grads[0][1] == 0).any() and bool((grads[1][1][grads[0][1] == 0] == 0).all())


def test_padded_nonfinite_inputs(launches):
    """Non-finite inputs on the padded path: an Inf in x propagates to exactly the outputs whose
    kept taps read it (as the reference), and the zero padding contributes exactly 0 even where
    the guide makes K non-finite at a border."""
    from pac_triton.triton import configs
    C, H, W = 4, 5, 6
    x = torch.randn(1, C, H, W, dtype=F64)
    x[0, 1, 0, 0] = float("inf")
    g = torch.randn(1, 2, H, W, dtype=F64)
    w, b = torch.randn(C, 1, 3, 3, dtype=F64), torch.randn(C, dtype=F64)
    kw = dict(stride=1, padding=1, dilation=1, groups=C)
    import pac_triton
    exp = pac_triton.pac_conv2d(x, g, w, b, **kw, backend="reference")
    with configs.force_blocks(BLOCK_P=16, DW_BLOCK_C=4, BLOCK_D=2), reference_forbidden():
        got = pac_triton.pac_conv2d(x.float(), g.float(), w.float(), b.float(), **kw, backend="triton")
    assert launches == [True]
    assert torch.equal(torch.isfinite(got), torch.isfinite(exp))
    assert not torch.isfinite(got[0, 1, :2, :2]).any() and torch.isfinite(got[0, [0, 2, 3]]).all()
    fin = torch.isfinite(exp)
    assert_close_rel(got[fin].double(), exp[fin], 1e-5, "finite outputs")


def test_padded_path_reads_channels_last_input_in_place(launches, monkeypatch):
    """Padding 0 with C a multiple of the channel block and a channels-last input: nothing to
    stage, the padded path reads the input where it is; an NCHW input (or any padding) is
    staged, whatever its layout (F.pad kept an NCHW layout when it had nothing to pad, which
    the kernel read wrongly)."""
    from pac_triton.triton import configs, depthwise
    staged = []
    orig = depthwise.hc.padded_channels_last
    monkeypatch.setattr(depthwise.hc, "padded_channels_last", lambda *a: staged.append(a[1]) or orig(*a))
    import pac_triton
    x = torch.randn(1, 16, 4, 5, dtype=F64)
    g, w, b = torch.randn(1, 3, 4, 5, dtype=F64), torch.randn(16, 1, 3, 3, dtype=F64), torch.randn(16, dtype=F64)
    exp = pac_triton.pac_conv2d(x.to(BF16).double(), g.to(BF16).double(), w.to(BF16).double(),
                                b.to(BF16).double(), groups=16, backend="reference")
    with configs.force_blocks(BLOCK_P=16, DW_BLOCK_C=16, BLOCK_D=4), reference_forbidden():
        for layout in (torch.channels_last, torch.contiguous_format):
            y = pac_triton.pac_conv2d(x.to(BF16, memory_format=layout), g.to(BF16), w.to(BF16), b.to(BF16),
                                      groups=16, backend="triton")
            assert_close_rel(y.double(), exp, 1e-2, f"y ({layout})")
            assert staged == ([] if layout == torch.channels_last else [(0, 0)])
    assert staged == [(0, 0)] and launches == [True, True]


def test_forced_tile_width_must_divide_the_tile():
    """``PAC_TRITON_FORCE`` with a TILE_W that does not divide BLOCK_P is refused, naming both
    (a TILE_W above BLOCK_P made tiles of zero rows)."""
    from pac_triton.triton import configs
    with configs.force_blocks(BLOCK_P=16, TILE_W=32):
        with pytest.raises(ValueError, match=r"TILE_W=32 must divide the pixel tile BLOCK_P=16"):
            configs.tile_w(64, 16)


# --- the padded weight gradient --------------------------------------------------------------------
# Conv with K from the guide per pixel (D in one block): ``pac_shared_dw_kernel``'s ``PADDED`` path
# (``_shared_dw_padded``): x from the zero-padded channels-last staging copy, tiles along tile rows,
# ragged tiles and taps outside the input at clamped positions (exact zeros), bf16 channel pairs
# (``GY_PAIRS``: dL/dy too, when channels-last with an even C).

@pytest.fixture
def dw_launches(monkeypatch):
    """``(PADDED, GY_PAIRS, NSPLIT)`` of every depthwise weight-gradient launch, in order."""
    from pac_triton.triton import depthwise
    return spy_launches(monkeypatch, lambda fn, k: (bool(k.get("PADDED", False)), bool(k.get("GY_PAIRS", False)),
                                                    k["NSPLIT"]) if fn is depthwise.pac_shared_dw_kernel else None)


# (case, forced blocks, GY_PAIRS expected): ragged channel blocks (C_pad > C), ragged tiles in both
# directions, taps entirely in the padding, a centre outside the image (p > k // 2), stride,
# dilation, masks, normalisation, smoothing, every dtype
DW_PADDED_BWD_CASES = [
    (conv_case("dwpw-conv-C16-k3-gauss-bf16-pairs", C=16, O=16, D=3, H=4, W=5, dtype=BF16),
     dict(BLOCK_P=16, DW_BLOCK_C=4, TILE_W=4), True),
    (conv_case("dwpw-conv-k5x3-s2x1-p2x0-d1x2-inv-norm-mask-bf16", C=10, O=10, D=4, H=7, W=5, k=(5, 3), s=(2, 1),
               p=(2, 0), d=(1, 2), kt="inv_1_-2", norm=True, mask=True, dtype=BF16),
     dict(BLOCK_P=16, DW_BLOCK_C=4, TILE_W=8), False),
    (conv_case("dwpw-conv-k3-p3-invasym-mask-smooth3-f16-cl", C=5, O=5, D=2, H=4, W=6, p=(3, 3),
               kt="inv_1_-2_asym", mask=True, smooth=(3, 3), dtype=F16, cl=True),
     dict(BLOCK_P=8, DW_BLOCK_C=2, TILE_W=2), False),
    (conv_case("dwpw-conv-k3-s2-d2-p2-inv-f32", B=2, C=6, O=6, D=3, H=6, W=7, s=(2, 2), d=(2, 2), p=(2, 2),
               kt="inv_1_-2", cl=True), dict(BLOCK_P=8, DW_BLOCK_C=4, TILE_W=4), False),
    (conv_case("dwpw-conv-k1-p0-gauss-bf16", C=4, O=4, D=2, H=3, W=5, k=(1, 1), p=(0, 0), dtype=BF16),
     dict(BLOCK_P=4, DW_BLOCK_C=2, TILE_W=4), False),
    (conv_case("dwpw-conv-k1x5-p0x2-gauss-mask-f64", C=3, O=3, D=1, H=3, W=6, k=(1, 5), p=(0, 2), mask=True,
               dtype=F64), dict(BLOCK_P=4, DW_BLOCK_C=2, TILE_W=2), False),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("c,blocks,pairs",
                         [pytest.param(c.values[0], b, p, id=c.id) for c, b, p in DW_PADDED_BWD_CASES])
def test_depthwise_padded_weight_grad(c, blocks, pairs, device, dw_launches):
    """The padded weight gradient (per-channel filters) against the float64 grouped reference
    (inputs in NaN guard bands): every option the path takes; which path ran."""
    from pac_triton.triton import configs
    with configs.force_blocks(**blocks):
        dw_run(c, device_or_skip(device), backward=True, grads=["weight"])
    assert [(p, g) for p, g, _ in dw_launches] == [(True, pairs)]


def test_shared_filter_padded_weight_grad(dw_launches):
    """The shared filter ``[1, 1, kh, kw]`` on the padded path: per-channel partials summed over
    channels (and splits) on the host; several tile rows per split (few programs)."""
    from pac_triton.triton import configs
    c = conv_case("s", B=2, C=6, O=6, D=3, H=5, W=6, p=(1, 2), norm=True, mask=True, dtype=BF16).values[0]
    old = configs.WEIGHT_GRAD_PROGRAMS
    configs.WEIGHT_GRAD_PROGRAMS = 9 * 2 * 3  # 3 splits over 2 * 3 tile rows
    configs._shared_dw_default.cache_clear()
    try:
        with configs.force_blocks(BLOCK_P=8, DW_BLOCK_C=4, TILE_W=4):
            run_backward("pac_conv2d", conv_tensors(c, shared=True), conv_static(c, shared=True), ["weight"],
                         c.dtype, "cpu", c.cl)
    finally:
        configs.WEIGHT_GRAD_PROGRAMS = old
        configs._shared_dw_default.cache_clear()
    assert dw_launches == [(True, False, 3)]


def test_padded_weight_grad_off(dw_launches, monkeypatch):
    """The general weight gradient runs for the transposed conv, a given K and without staging
    copies (``PAC_TRITON_CHANNELS_LAST_COPIES=0``); all equal the reference."""
    from pac_triton.triton import configs
    c = conv_case("c", C=6, O=6, D=3, H=5, W=5, norm=True).values[0]
    with configs.force_blocks(BLOCK_P=16, DW_BLOCK_C=4):
        monkeypatch.setenv("PAC_TRITON_CHANNELS_LAST_COPIES", "0")
        dw_run(c, "cpu", backward=True, grads=["weight"])
        monkeypatch.setenv("PAC_TRITON_CHANNELS_LAST_COPIES", "1")
        dw_run(convt_case("t", C=6, O=6, D=3, H=3, W=3).values[0], "cpu", backward=True, grads=["weight"])
    assert [p for p, _, _ in dw_launches] == [False, False]


@pytest.mark.parametrize("dtype", [BF16], ids=["bf16-pairs"])
def test_padded_weight_grad_nonfinite(dtype, dw_launches):
    """Inf in x and in dL/dy at the image's last row and column, which ragged tiles' clamped
    pixels and clamped taps read: the weight gradient is Inf, NaN and finite exactly where the
    reference's is (no NaN from a clamped position's 0 * Inf)."""
    import pac_triton
    from pac_triton.triton import configs
    C, H, W = 16, 5, 7
    torch.manual_seed(0)
    x = torch.randn(1, C, H, W, dtype=F64)
    x[0, 1, H - 1, W - 1] = float("inf")
    g = torch.randn(1, 2, H, W, dtype=F64)
    w, b = torch.randn(C, 1, 3, 3, dtype=F64), torch.randn(C, dtype=F64)
    gy = torch.randn(1, C, H, W, dtype=F64)
    gy[0, 2, H - 1, W - 1] = float("inf")
    gy[0, 3, H - 1, 0] = float("-inf")
    kw = dict(stride=1, padding=1, dilation=1, groups=C)
    x, g, w, b, gy = (t.to(dtype).double() for t in (x, g, w, b, gy))
    wr = w.clone().requires_grad_()
    pac_triton.pac_conv2d(x, g, wr, b, **kw, backend="reference").backward(gy)
    exp = wr.grad
    wt = w.to(dtype).requires_grad_()
    with configs.force_blocks(BLOCK_P=16, DW_BLOCK_C=4, TILE_W=4), reference_forbidden():
        pac_triton.pac_conv2d(x.to(dtype), g.to(dtype), wt, b.to(dtype), **kw, backend="triton").backward(
            gy.to(dtype))
    got = wt.grad.double()
    assert dw_launches == [(True, dtype == BF16, dw_launches[0][2])]
    # Inf where a kept tap reads an Inf; NaN (reference and Triton alike) where a dropped tap's
    # zero meets an Inf dL/dy, or Infs of both signs meet
    assert torch.isinf(exp).any() and torch.isfinite(exp).any()
    assert torch.equal(torch.isnan(got), torch.isnan(exp)) and torch.equal(torch.isinf(got), torch.isinf(exp))
    assert torch.equal(got[torch.isinf(exp)], exp[torch.isinf(exp)])
    fin = torch.isfinite(exp)
    assert_close_rel(got[fin], exp[fin], 2e-2 if dtype == BF16 else 1e-5, "finite dW")


# --- the padded backward paths -------------------------------------------------------------------
# dK (a conv, dK summed over channels) from x's zero-padded channels-last staging copy; dx (a
# stride-1 conv, K from a guide the size of the input per pixel, D in one block) from dL/dy's
# (``_dw_dk_padded``, ``_dw_dx_padded_taps``): unmasked gathers, ragged channel blocks padded
# with zero channels (dK summed over channel blocks in memory), ragged tiles clamped.

@pytest.fixture
def bwd_launches(monkeypatch):
    """``(kernel name, PADDED)`` of every depthwise dK / dx launch, in order."""
    from pac_triton.triton import depthwise
    names = {depthwise.pac_dw_dk_kernel: "dk", depthwise.pac_dw_dx_kernel: "dx"}
    return spy_launches(monkeypatch, lambda fn, k: (names[fn], bool(k.get("PADDED", False))) if fn in names else None)


# (case, forced channel block, padded dx expected): stride 2 keeps dx on the general path
PADDED_BWD_CASES = [
    (conv_case("dwpb-conv-k5x3-p2x1-d1x2-inv-norm-mask-bf16-pairs", C=10, O=10, D=4, H=5, W=5, k=(5, 3),
               p=(2, 1), d=(1, 2), kt="inv_1_-2", norm=True, mask=True, dtype=BF16), 8, True),
    (conv_case("dwpb-conv-k3-p3-invasym-mask-smooth3-f16-cl", C=5, O=5, D=2, H=4, W=6, p=(3, 3),
               kt="inv_1_-2_asym", mask=True, smooth=(3, 3), dtype=F16, cl=True), 4, True),
    (conv_case("dwpb-conv-k7-p3-gauss-norm-nobias-bf16-cl", C=12, O=12, D=16, H=4, W=4, k=(7, 7), p=(3, 3),
               norm=True, bias=False, dtype=BF16, cl=True), 8, True),
    (conv_case("dwpb-conv-k3-p0-invasym-norm-f64", C=3, O=3, D=1, H=5, W=6, p=(0, 0), kt="inv_1_-2_asym",
               norm=True, dtype=F64), 2, True),
    (conv_case("dwpb-conv-s2x1-p2x0-mask-bf16", C=10, O=10, D=3, H=5, W=5, s=(2, 1), p=(2, 0), mask=True,
               dtype=BF16), 8, False),
    # nothing to pad in either staging copy (1x1, padding 0, C a multiple of the block), NCHW input
    (conv_case("dwpb-conv-k1-p0-C8-nothing-to-pad-bf16", C=8, O=8, D=2, H=4, W=5, k=(1, 1), p=(0, 0),
               dtype=BF16), 4, True),
    # an NCHW dL/dy with C a multiple of 16: dK and dW read the interior of dx's padded staging
    # copy of it (64 channels for C = 48 at 32-channel blocks; bf16: dW reads it as channel pairs)
    (conv_case("dwpb-conv-C48-k3-norm-nchw-dy-view-bf16", C=48, O=48, D=4, H=5, W=6,
               norm=True, dtype=BF16), 32, True),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("c,bc,dx_padded", [pytest.param(c.values[0], bc, dxp, id=c.id)
                                            for c, bc, dxp in PADDED_BWD_CASES])
def test_depthwise_padded_backward(c, bc, dx_padded, device, bwd_launches):
    """Every gradient of the padded dK / dx paths against the float64 grouped reference (inputs
    in NaN guard bands, outputs NaN-filled first): taps in the padding, ragged channel blocks,
    several channel blocks, masks, normalisation, inverse kernels, smoothed f0, centre features
    outside the guide (padding 3 at k3), bf16 channel pairs, NCHW and channels-last."""
    from pac_triton.triton import configs
    with configs.force_blocks(BLOCK_P=16, DW_BLOCK_C=bc, BLOCK_D=16):
        dw_run(c, device_or_skip(device), backward=True)
    assert sorted(set(bwd_launches)) == sorted({("dk", True), ("dx", dx_padded)})


@pytest.mark.parametrize("op", ["shared", "pool"])
def test_padded_backward_shared_and_pool(op, bwd_launches):
    """The shared filter and pooling take the padded dK / dx paths too (a scalar tap weight, no
    tap weight); both equal the reference."""
    from pac_triton.triton import configs
    with configs.force_blocks(BLOCK_P=16, DW_BLOCK_C=4, BLOCK_D=4):
        if op == "pool":
            c = pool_case("p", C=6, D=3, H=5, W=6, k=(3, 3), p=(2, 1), mask=True, norm=True, dtype=BF16).values[0]
            run_backward("pac_pool2d", pool_tensors(c), pool_static(c), ["input", "guide"], c.dtype, "cpu")
        else:
            c = conv_case("s", C=6, O=6, D=3, H=5, W=6, k=(3, 5), p=(1, 2), kt="inv_1_-2").values[0]
            run_backward("pac_conv2d", conv_tensors(c, "cpu", False, shared=True), conv_static(c, False, shared=True),
                         GRADS, c.dtype, "cpu")
    assert sorted(set(bwd_launches)) == [("dk", True), ("dx", True)]


def test_padded_backward_off_without_channels_last_copies(bwd_launches, monkeypatch):
    """``PAC_TRITON_CHANNELS_LAST_COPIES=0``, the transposed conv and channel-wise K run the
    general dK / dx; all equal the reference."""
    from pac_triton.triton import configs
    monkeypatch.setenv("PAC_TRITON_CHANNELS_LAST_COPIES", "0")
    with configs.force_blocks(BLOCK_P=16, DW_BLOCK_C=4, BLOCK_D=4):
        dw_run(conv_case("c", C=6, O=6, D=3, H=5, W=5, norm=True).values[0], "cpu", backward=True)
        monkeypatch.setenv("PAC_TRITON_CHANNELS_LAST_COPIES", "1")
        dw_run(convt_case("t", C=6, O=6, D=3, H=3, W=3).values[0], "cpu", backward=True)
    assert bwd_launches and not any(p for _, p in bwd_launches)


def test_padded_backward_makes_no_unused_x_copy(monkeypatch):
    """When dK and dW read x from its padded staging copy (and dx does not read x), an NCHW x is
    not also copied channels-last (a second activation-sized copy nothing would read); nor is
    dL/dy: dK and dW read the interior of the padded dx's staging copy of it (before, they read
    a second, unpadded channels-last copy)."""
    import pac_triton
    from pac_triton.triton import configs, depthwise
    copied = []
    orig = depthwise.hc.gather_layout

    def spy(t, rt=None):
        out = orig(t, rt)
        if out is not t:
            copied.append(tuple(t.shape))
        return out
    monkeypatch.setattr(depthwise.hc, "gather_layout", spy)
    x = torch.randn(1, 16, 5, 5, requires_grad=True)
    g = torch.randn(1, 2, 5, 5, requires_grad=True)
    w = torch.randn(16, 1, 3, 3, requires_grad=True)
    with configs.force_blocks(BLOCK_P=16, DW_BLOCK_C=16, BLOCK_D=2):
        y = pac_triton.pac_conv2d(x, g, w, None, padding=1, groups=16, backend="triton")
        copied.clear()  # the forward's
        y.backward(torch.randn(1, 16, 5, 5))
    assert copied == [], copied


def test_padded_backward_stages_x_once(monkeypatch):
    """A depthwise conv's backward with dK (guide gradient) and dW on their padded paths stages
    x once (zero-padded channels-last, with the larger of their padded channel counts) and
    dL/dy once for dx: three staging copies of activation size would be two too many."""
    import pac_triton
    from pac_triton.triton import configs, depthwise
    staged = []
    orig = depthwise.hc.padded_channels_last
    monkeypatch.setattr(depthwise.hc, "padded_channels_last",
                        lambda t, p, c: staged.append((tuple(t.shape), tuple(p), c)) or orig(t, p, c))
    x = torch.randn(1, 6, 5, 5, requires_grad=True)
    g = torch.randn(1, 2, 5, 5, requires_grad=True)
    w = torch.randn(6, 1, 3, 3, requires_grad=True)
    with configs.force_blocks(BLOCK_P=16, DW_BLOCK_C=4, BLOCK_D=2):
        y = pac_triton.pac_conv2d(x, g, w, None, padding=1, groups=6, backend="triton")
        staged.clear()  # the forward's own copy
        y.sum().backward()
    shapes = [s for s, _, _ in staged]
    assert shapes.count((1, 6, 5, 5)) == 2, staged  # x once (dK and dW), dL/dy once (dx)
