"""The depthwise family (``depthwise.py``): ``pac_pool2d`` / ``pacpool2d`` and the
``shared_filters`` convolutions (one ``[1, 1, kh, kw]`` filter for every channel), forward and
backward against the float64 reference, with small forced tiles, NaN-filled outputs, inputs
inside NaN guard bands and the reference forbidden while the Triton path runs."""
from __future__ import annotations

import pytest
import torch

from test_conv import conv_case, conv_static, conv_tensors, convt_case, given_kernel_tensors
from triton_helpers import (DEVICES, GRADS, case, convt_out_hw, device_or_skip, inv_params, make_mask,
                            run_backward, run_forward)

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
