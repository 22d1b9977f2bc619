"""The kernel map (``kernel_map.py``): ``packernel2d`` forward and backward (the guide pass and
guide gather with dL/dK given) against the float64 reference."""
from __future__ import annotations

import pytest
import torch

from pac_testing import assert_close_rel
from triton_helpers import DEVICES, GRADS, case, convt_in_hw, device_or_skip, inv_params, make_mask, run_backward, \
    run_forward

pytest.importorskip("pac_triton.triton")

F32, F16, BF16, F64 = torch.float32, torch.float16, torch.bfloat16, torch.float64
DEFAULTS = dict(B=1, D=3, k=(3, 3), s=(1, 1), p=(1, 1), op=(0, 0), d=(1, 1), kt="gaussian", norm=False,
                mask=False, smooth=None, cw=False, transposed=False, dtype=F32)


def kernel_case(id, **kw):
    return case(id, **{**DEFAULTS, **kw})


def kernel_tensors(c, dev="cpu"):
    Hm, Wm = convt_in_hw(c.H, c.W, c.k, c.s, c.p, c.op, c.d) if c.transposed else (c.H, c.W)
    alpha, lam = inv_params(c.kt, dev)
    return dict(guide=torch.randn(c.B, c.D, c.H, c.W, dtype=torch.float64, device=dev),
                mask=make_mask(c.B, Hm, Wm, dev) if c.mask else None,
                smooth_kernel=torch.rand(1, 1, *c.smooth, dtype=torch.float64, device=dev) if c.smooth else None,
                inv_alpha=alpha, inv_lambda=lam)


def kernel_static(c):
    return dict(kernel_size=c.k, stride=c.s, padding=c.p, output_padding=c.op, dilation=c.d, kernel_type=c.kt,
                channel_wise=c.cw, normalize_kernel=c.norm, transposed=c.transposed)


KERNEL_CASES = [
    kernel_case("kernel-k3-inv-norm-mask-smooth3-f32", B=2, H=5, W=5, kt="inv_1_-2", norm=True, mask=True,
                smooth=(3, 3)),
    kernel_case("kernel-cw-s2x1-d1x2-gauss-norm-mask-f16", H=6, W=5, s=(2, 1), p=(1, 2), d=(1, 2), norm=True,
                mask=True, cw=True, dtype=F16),
    kernel_case("kernelT-s2-op1-invasym-mask-f32", H=6, W=6, s=(2, 2), op=(1, 1), kt="inv_1_-2_asym", mask=True,
                transposed=True),
    kernel_case("kernelT-cw-k3x5-s2-op0x1-gauss-norm-smooth1x3-bf16", H=7, W=6, k=(3, 5), s=(2, 2), p=(1, 2),
                op=(0, 1), norm=True, smooth=(1, 3), cw=True, transposed=True, dtype=BF16),
    kernel_case("kernel-k5x3-gauss-f64", H=5, W=5, k=(5, 3), p=(2, 1), dtype=F64),
    # D a multiple of 16: the single-channel K gathers the guide from a channels-last copy
    kernel_case("kernel-D16-k3-invasym-norm-mask-smooth3-bf16", D=16, H=5, W=6, kt="inv_1_-2_asym", norm=True,
                mask=True, smooth=(3, 3), dtype=BF16),
    kernel_case("kernelT-D32-s2-op1-gauss-mask-f32", D=32, H=6, W=6, s=(2, 2), op=(1, 1), mask=True, transposed=True),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("c", KERNEL_CASES)
def test_packernel2d(c, device):
    dev = device_or_skip(device)
    run_forward("packernel2d", kernel_tensors(c, dev), kernel_static(c), c.dtype, False, ["K", "out_mask"])


KERNEL_BWD_CASES = [
    kernel_case("kernel-k3-inv-norm-mask-smooth3-f32", B=2, H=5, W=5, kt="inv_1_-2", norm=True, mask=True,
                smooth=(3, 3)),
    kernel_case("kernelT-cw-s2-op1-invasym-mask-f64", H=6, W=6, s=(2, 2), op=(1, 1), kt="inv_1_-2_asym", mask=True,
                cw=True, transposed=True, dtype=F64),
    # No mask, not normalised: K is live at the taps that read no input pixel (computed there from
    # the zero-padded guide), so dL/dK there reaches f0, inv_alpha / inv_lambda and (transposed:
    # between the input pixels) the guide. The Triton backward dropped those taps, as the
    # convolutions may (their dK is 0 there): wrong guide gradients, silently.
    kernel_case("kernel-k3-p1-gauss-f32", B=2, H=5, W=4),
    kernel_case("kernel-k5x3-s2-p2x1-inv-smooth3-f64", H=7, W=5, k=(5, 3), s=(2, 2), p=(2, 1), kt="inv_0.5_1.5",
                smooth=(3, 3), dtype=F64),
    kernel_case("kernel-cw-d2-invasym-f32", H=6, W=5, p=(2, 2), d=(2, 2), kt="inv_1_-2_asym", cw=True),
    kernel_case("kernelT-s2-op1-gauss-f32", H=6, W=6, s=(2, 2), op=(1, 1), transposed=True),
    # D a multiple of 16: the backward gathers the guide from a channels-last copy too, every
    # tap live (no mask, not normalised) or not
    kernel_case("kernel-D16-k3-p2-d2-inv-smooth3-f32", D=16, H=5, W=6, p=(2, 2), d=(2, 2), kt="inv_0.5_1.5",
                smooth=(3, 3)),
    kernel_case("kernelT-D16-s2-op1-invasym-norm-mask-bf16", D=16, H=6, W=6, s=(2, 2), op=(1, 1),
                kt="inv_1_-2_asym", norm=True, mask=True, transposed=True, dtype=BF16),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("c", KERNEL_BWD_CASES)
def test_packernel2d_backward(c, device):
    device_or_skip(device)
    run_backward("packernel2d", kernel_tensors(c), kernel_static(c), GRADS, c.dtype, device)


@pytest.mark.parametrize("cw", [False, True], ids=["single", "channel_wise"])
def test_guide_gathered_channels_last(cw, monkeypatch):
    """The single-channel K gathers a D16 NCHW guide from its channels-last copy (guide channel
    stride 1 at the launch); channel-wise K reads the guide as given."""
    from triton_helpers import PT, spy_launches
    from pac_triton.triton import kernel_map
    strides = spy_launches(monkeypatch, lambda fn, k: k["sgd"] if fn is kernel_map.pac_kernel_kernel else None)
    guide = torch.randn(1, 16, 4, 5)
    PT().packernel2d(guide, None, (3, 3), (1, 1), (1, 1), (0, 0), (1, 1), "gaussian", None, None, None, cw,
                     False, False)
    assert strides == ([20] if cw else [1]), strides


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_guide_gradient_keeps_the_guide_layout(layout):
    """At the default tiles (128 pixels per program for the single-channel K: one ragged tile
    here), K and the D16 guide's gradient equal the reference's, the gradient in the guide's
    memory layout whichever copy the kernels read."""
    from triton_helpers import PT, REF
    from pac_triton.triton import configs
    guide = torch.randn(1, 16, 4, 5) * 0.3
    if layout == "channels_last":
        guide = guide.contiguous(memory_format=torch.channels_last)
    args = ((3, 3), (1, 1), (1, 1), (0, 0), (1, 1), "gaussian", None, None, None, False, False, False)
    res = []
    for backend, dt in ((PT(), torch.float32), (REF, torch.float64)):
        g = guide.detach().to(dt, copy=True).requires_grad_()
        with configs.force_blocks():  # no forced tiles: the defaults
            k, _ = backend.packernel2d(g, None, *args)
        (k * torch.arange(k.numel(), dtype=k.dtype).reshape(k.shape).cos()).sum().backward()
        res.append((k.detach(), g.grad))
    assert res[0][1].stride() == guide.stride(), (res[0][1].stride(), guide.stride())
    assert_close_rel(res[0][0], res[1][0].float(), 1e-5, "K")
    assert_close_rel(res[0][1], res[1][1].float(), 1e-5, "d guide")

