"""PAC under ``torch.autocast`` follows ``nn.Conv2d``'s policy: input, weight and bias run in the
autocast dtype (the output has it), the adapting kernel K is computed from a float32 guide, and
float64 is left alone. Checked on CPU with bfloat16 and the reference backend."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pac_triton.functional as PF
from pac_testing import assert_close_rel
from pac_triton import PacConv2d, PacConvTranspose2d, PacCRF, PacPool2d

BF16_TOL = 2e-2  # inputs rounded to bfloat16, output rounded once more


def autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def _data():
    x = torch.randn(2, 4, 8, 8)
    guide = torch.randn(2, 3, 8, 8) * 3
    return x, guide


@pytest.mark.parametrize("normalize_kernel", [False, True])
def test_conv_follows_nn_conv2d(normalize_kernel):
    x, guide = _data()
    pac = PacConv2d(4, 6, 3, padding=1, normalize_kernel=normalize_kernel, backend="reference")
    plain = nn.Conv2d(4, 6, 3, padding=1)
    expected = pac(x, guide)
    with autocast():
        actual = pac(x, guide)
        policy = plain(x).dtype
    assert policy == torch.bfloat16 and actual.dtype == policy
    assert_close_rel(actual, expected, BF16_TOL, "autocast pac_conv2d")
    # Exactly: x, W, b rounded to bfloat16, K from the float32 guide.
    rounded = PF.pac_conv2d(x.bfloat16(), guide, pac.weight.bfloat16(), pac.bias.bfloat16(), padding=1,
                            normalize_kernel=normalize_kernel, backend="reference")
    torch.testing.assert_close(actual, rounded, rtol=0, atol=0)


def test_transposed_follows_nn_conv_transpose2d():
    x = torch.randn(2, 4, 4, 4)
    guide = torch.randn(2, 3, 8, 8) * 3
    pac = PacConvTranspose2d(4, 5, 5, stride=2, padding=2, output_padding=1, backend="reference")
    plain = nn.ConvTranspose2d(4, 5, 5, stride=2, padding=2, output_padding=1)
    expected = pac(x, guide)
    with autocast():
        actual = pac(x, guide.bfloat16())  # a bfloat16 guide is computed with in float32 too
        policy = plain(x).dtype
    assert actual.dtype == policy == torch.bfloat16
    assert_close_rel(actual, expected, BF16_TOL, "autocast pac_conv_transpose2d")
    rounded = PF.pac_conv_transpose2d(x.bfloat16(), guide.bfloat16().float(), pac.weight.bfloat16(),
                                      pac.bias.bfloat16(), stride=2, padding=2, output_padding=1,
                                      backend="reference")
    torch.testing.assert_close(actual, rounded, rtol=0, atol=0)


def test_gradients_reach_float32_parameters():
    x, guide = _data()
    guide.requires_grad_(True)
    pac = PacConv2d(4, 6, 3, padding=1, kernel_type="inv_0.5_1.5", backend="reference")
    with autocast():
        y = pac(x, guide)
    y.float().square().mean().backward()
    for name, p in [("weight", pac.weight), ("bias", pac.bias), ("inv_alpha", pac.inv_alpha), ("guide", guide)]:
        assert p.grad is not None and p.grad.dtype == torch.float32, name
    reference = [p.grad.clone() for p in (pac.weight, guide)]
    for p in (pac.weight, pac.bias, pac.inv_alpha, pac.inv_lambda, guide):
        p.grad = None
    pac(x, guide).square().mean().backward()
    assert_close_rel(reference[0], pac.weight.grad, 5e-2, "weight grad")
    assert_close_rel(reference[1], guide.grad, 5e-2, "guide grad")


def test_float64_is_left_alone():
    x, guide = (t.double() for t in _data())
    pac = PacConv2d(4, 6, 3, padding=1, backend="reference").double()
    expected = pac(x, guide)
    with autocast():
        actual = pac(x, guide)
        assert nn.Conv2d(4, 6, 3).double()(x).dtype == torch.float64
    assert actual.dtype == torch.float64
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_pacnet_functions_two_step():
    x, guide = _data()
    pac = PacConv2d(4, 6, 3, padding=1, backend="reference")
    with autocast():
        kernel, _ = pac.compute_kernel(guide.bfloat16())
        y = pac(x, None, kernel=kernel)
    assert kernel.dtype == torch.float32  # K math in float32
    assert y.dtype == torch.bfloat16
    assert_close_rel(y, pac(x, guide), BF16_TOL, "autocast pacconv2d")


def test_pooling_keeps_the_input_dtype_like_avg_pool2d():
    x, guide = _data()
    pool = PacPool2d(3, padding=1, normalize_kernel=True, backend="reference")
    expected = pool(x, guide)
    with autocast():
        actual = pool(x, guide.bfloat16())
        assert F.avg_pool2d(x, 3).dtype == torch.float32
    assert actual.dtype == torch.float32
    assert_close_rel(actual, expected, BF16_TOL, "autocast pac_pool2d")


def test_crf_runs_under_autocast():
    torch.manual_seed(0)
    unary = torch.randn(1, 3, 8, 8)
    edge = torch.randn(1, 5, 8, 8)
    crf = PacCRF(3, num_steps=2, final_output="log_softmax",
                 pairwise_kernels=dict(kernel_size=3, dilation=1, blur=1, compat_type="4d",
                                       spatial_filter=False, pairwise_weight=1.0),
                 backend="reference")
    expected = crf(unary, edge)
    with autocast():
        actual = crf(unary, edge)
    assert torch.isfinite(actual).all()
    assert_close_rel(actual, expected, 5e-2, "autocast PacCRF")


def test_swapped_network_under_autocast():
    from pac_triton.swap import guided, swap_to_pac
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1,
                                                                                     output_padding=1))
    swapped = swap_to_pac(copy.deepcopy(net), predicate=lambda name, m: True, backend="reference")
    x = torch.randn(2, 3, 8, 8)
    with autocast():
        expected = net(x)
        with guided(swapped, torch.zeros(1, 1, 16, 16)):
            actual = swapped(x)
    assert actual.dtype == expected.dtype == torch.bfloat16
    assert_close_rel(actual, expected, BF16_TOL, "swapped network under autocast")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("transposed", [False, True])
def test_cuda_autocast_triton(dtype, transposed):
    """The same policy on CUDA through the Triton backend (run by the GPU check)."""
    device = "cuda"
    x = torch.randn(2, 8, 16, 16, device=device)
    if transposed:
        guide = torch.randn(2, 3, 32, 32, device=device, requires_grad=True)
        pac = PacConvTranspose2d(8, 8, 5, stride=2, padding=2, output_padding=1, normalize_kernel=True,
                                 backend="triton").to(device)
        plain = nn.ConvTranspose2d(8, 8, 5, stride=2, padding=2, output_padding=1).to(device)
    else:
        guide = torch.randn(2, 3, 16, 16, device=device, requires_grad=True)
        pac = PacConv2d(8, 8, 3, padding=1, kernel_type="inv_0.5_1.5", backend="triton").to(device)
        plain = nn.Conv2d(8, 8, 3, padding=1).to(device)
    expected = pac(x, guide)
    with torch.autocast("cuda", dtype=dtype):
        actual = pac(x, guide)
        policy = plain(x).dtype
    assert actual.dtype == policy == dtype
    assert_close_rel(actual, expected, 2e-2 if dtype == torch.bfloat16 else 3e-3, f"cuda autocast {dtype}")
    pac.backend = "reference"
    with torch.autocast("cuda", dtype=dtype):
        oracle = pac(x, guide)
    assert_close_rel(actual, oracle, 2e-2 if dtype == torch.bfloat16 else 3e-3, "triton vs reference")
    pac.backend = "triton"
    with torch.autocast("cuda", dtype=dtype):
        pac(x, guide).float().square().mean().backward()
    assert pac.weight.grad.dtype == torch.float32 and guide.grad.dtype == torch.float32
    assert torch.isfinite(pac.weight.grad).all() and torch.isfinite(guide.grad).all()
