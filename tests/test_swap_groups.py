"""swap_to_pac on grouped, depthwise, string-padded and padding-mode convolutions (issue 14
point 4): the swapped layers keep ``groups`` and ``padding_mode``, a constant guide (K == 1)
reproduces the original network and its gradients, a varying guide changes it. Reference
backend throughout (the grouped Triton kernels are not needed here); float64, tiny sizes."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pac_triton.functional as PF
from pac_triton import PacConv2d
from pac_triton.swap import GuidedPacConv2d, GuidedPacConvTranspose2d, guided, swap_to_pac

TIGHT = dict(rtol=1e-12, atol=1e-12)


def _is_conv(name, module):
    return True


# --------------------------------------------------------------------------- the two blocks

class LayerNorm2d(nn.Module):
    """ConvNeXt's channels-first LayerNorm (normalised over C at each pixel, no permute)."""

    def __init__(self, channels, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x):
        mean = x.mean(1, keepdim=True)
        var = (x - mean).square().mean(1, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight[:, None, None] + self.bias[:, None, None]


class ConvNeXtBlock(nn.Module):
    """depthwise 7x7 (padding 3) -> LayerNorm -> pointwise MLP (4x, GELU) -> layer scale -> residual.
    ``linear=False``: channels-first LayerNorm2d and 1x1 convs; ``linear=True``: the original
    channels-last form (permute, nn.LayerNorm, nn.Linear)."""

    def __init__(self, dim, linear=False):
        super().__init__()
        self.linear = linear
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        if linear:
            self.norm = nn.LayerNorm(dim, eps=1e-6)
            self.pwconv1, self.pwconv2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        else:
            self.norm = LayerNorm2d(dim)
            self.pwconv1, self.pwconv2 = nn.Conv2d(dim, 4 * dim, 1), nn.Conv2d(4 * dim, dim, 1)
        self.act = nn.GELU()
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x):
        y = self.dwconv(x)
        if self.linear:
            y = self.pwconv2(self.act(self.pwconv1(self.norm(y.permute(0, 2, 3, 1))))).permute(0, 3, 1, 2)
        else:
            y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + self.gamma[:, None, None] * y


class RestorationBlock(nn.Module):
    """conv3x3 (padding_mode) -> ReLU -> conv3x3 (padding_mode) -> residual, as in EDSR-style
    restoration networks."""

    def __init__(self, channels, padding_mode="reflect"):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, padding_mode=padding_mode)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, padding_mode=padding_mode)

    def forward(self, x):
        return x + self.conv2(torch.relu(self.conv1(x)))


def _check_constant_guide(net, swapped, x, guide_channels=3):
    """Forward and backward of ``swapped`` under a constant guide equal the original's (output, the
    input's gradient and every parameter's gradient)."""
    guide = torch.full((1, guide_channels, *x.shape[-2:]), 0.4, dtype=x.dtype)
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    expected = net(x1)
    with guided(swapped, guide):
        actual = swapped(x2)
    torch.testing.assert_close(actual, expected, **TIGHT)
    gy = torch.randn_like(expected)
    expected.backward(gy)
    actual.backward(gy)
    torch.testing.assert_close(x2.grad, x1.grad, **TIGHT)
    swapped_parameters = dict(swapped.named_parameters())
    assert swapped_parameters.keys() == dict(net.named_parameters()).keys()
    for name, p in net.named_parameters():
        torch.testing.assert_close(swapped_parameters[name].grad, p.grad, **TIGHT, msg=name)


def _varying_guide_changes(net, swapped, x):
    image = torch.rand(x.shape[0], 3, *x.shape[-2:], dtype=x.dtype) * 4
    with guided(swapped, image), torch.no_grad():
        actual = swapped(x)
        expected = net(x)
    assert actual.shape == expected.shape and torch.isfinite(actual).all()
    assert (actual - expected).abs().max() > 1e-3


@pytest.mark.parametrize("linear", [pytest.param(False, id="convnext-1x1-convs"),
                                    pytest.param(True, id="convnext-linear-mlp")])
def test_convnext_block(linear):
    torch.manual_seed(0)
    net = nn.Sequential(ConvNeXtBlock(8, linear), ConvNeXtBlock(8, linear)).double()
    swapped = swap_to_pac(copy.deepcopy(net), predicate=_is_conv, backend="reference")
    dw = swapped[0].dwconv
    assert type(dw) is GuidedPacConv2d
    assert (dw.groups, dw.padding, dw.kernel_size, tuple(dw.weight.shape)) == (8, (3, 3), (7, 7), (8, 1, 7, 7))
    assert "groups=8" in repr(dw)
    if not linear:
        assert type(swapped[1].pwconv1) is GuidedPacConv2d and swapped[1].pwconv1.groups == 1
    assert swapped.state_dict().keys() == net.state_dict().keys()
    x = torch.randn(2, 8, 9, 10, dtype=torch.float64)
    _check_constant_guide(net, swapped, x)
    _varying_guide_changes(net, swapped, x)


@pytest.mark.parametrize("padding_mode", ["reflect", "replicate", "circular"])
def test_restoration_block_padding_modes(padding_mode):
    torch.manual_seed(0)
    net = RestorationBlock(4, padding_mode).double()
    swapped = swap_to_pac(copy.deepcopy(net), ["conv1", "conv2"], backend="reference")
    assert type(swapped.conv1) is GuidedPacConv2d and swapped.conv1.padding_mode == padding_mode
    assert f"padding_mode={padding_mode}" in repr(swapped.conv2)
    x = torch.randn(2, 4, 7, 9, dtype=torch.float64)
    _check_constant_guide(net, swapped, x)
    _varying_guide_changes(net, swapped, x)


def test_padding_mode_pads_the_guide_too():
    """A swapped reflect-padded layer under a varying guide is PacConv2d(padding_mode='reflect')
    with the same weights (the guide reflected at the border, docs/semantics.md section 8)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=(1, 2), padding_mode="reflect", groups=2).double()
    swapped = swap_to_pac(copy.deepcopy(conv), [""], backend="reference")
    pac = PacConv2d(4, 6, 3, padding=(1, 2), padding_mode="reflect", groups=2, backend="reference").double()
    with torch.no_grad():
        pac.weight.copy_(conv.weight)
        pac.bias.copy_(conv.bias)
    x = torch.randn(2, 4, 6, 7, dtype=torch.float64)
    guide = torch.rand(2, 3, 6, 7, dtype=torch.float64) * 3
    torch.testing.assert_close(swapped(x, guide), pac(x, guide), rtol=0, atol=0)
    zeros = PF.pac_conv2d(x, guide, conv.weight, conv.bias, padding=(1, 2), groups=2, backend="reference")
    assert (swapped(x, guide) - zeros).abs().max() > 1e-3


# --------------------------------------------------------------------------- single layers

@pytest.mark.parametrize("make, groups", [
    pytest.param(lambda: nn.Conv2d(4, 8, 3, padding=1, groups=2), 2, id="groups2"),
    pytest.param(lambda: nn.Conv2d(8, 4, 3, padding=1, groups=4, bias=False), 4, id="groups4-no-bias"),
    pytest.param(lambda: nn.Conv2d(4, 4, 5, padding=2, groups=4), 4, id="depthwise"),
    pytest.param(lambda: nn.Conv2d(4, 12, 3, stride=2, padding=1, groups=4), 4, id="depthwise-multiplier3-stride2"),
    pytest.param(lambda: nn.Conv2d(4, 8, 3, padding=2, dilation=2, groups=4, padding_mode="replicate"), 4,
                 id="depthwise-multiplier2-dilated-replicate"),
    pytest.param(lambda: nn.Conv2d(4, 4, 3, padding="same", dilation=2), 1, id="padding-same-dilated"),
    pytest.param(lambda: nn.Conv2d(4, 8, (3, 5), padding="same", groups=4, padding_mode="circular"), 4,
                 id="padding-same-depthwise-circular"),
    pytest.param(lambda: nn.Conv2d(4, 6, 3, padding="valid", groups=2), 2, id="padding-valid-groups2"),
    pytest.param(lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2), 2,
                 id="transposed-groups2"),
    pytest.param(lambda: nn.ConvTranspose2d(4, 8, 5, stride=2, padding=2, output_padding=1, groups=4), 4,
                 id="transposed-depthwise-multiplier2"),
])
def test_single_layer_constant_guide(make, groups):
    torch.manual_seed(0)
    layer = make().double()
    net = nn.Sequential(layer, nn.Tanh()).double()
    swapped = swap_to_pac(copy.deepcopy(net), ["0"], backend="reference")
    pac = swapped[0]
    assert isinstance(pac, (GuidedPacConv2d, GuidedPacConvTranspose2d))
    assert isinstance(pac, GuidedPacConvTranspose2d) == isinstance(layer, nn.ConvTranspose2d)
    assert pac.groups == groups and pac.padding_mode == layer.padding_mode
    assert pac.weight.shape == layer.weight.shape
    x = torch.randn(2, layer.in_channels, 6, 7, dtype=torch.float64)
    _check_constant_guide(net, swapped, x)
    _varying_guide_changes(net, swapped, x)


def test_grouped_transposed_passes_groups():
    """The transposed wrapper computes the grouped PAC transposed conv, guide at the output size."""
    torch.manual_seed(0)
    up = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2).double()
    swapped = swap_to_pac(copy.deepcopy(up), [""], backend="reference")
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    guide = torch.rand(2, 3, 10, 12, dtype=torch.float64) * 3
    expected = PF.pac_conv_transpose2d(x, guide, up.weight, up.bias, stride=2, padding=1, output_padding=1,
                                       groups=2, backend="reference")
    with guided(swapped, guide):
        torch.testing.assert_close(swapped(x), expected, **TIGHT)
        torch.testing.assert_close(swapped(x, output_size=(10, 12)), expected, **TIGHT)
    torch.testing.assert_close(swapped(x, torch.ones(1, 1, 10, 12, dtype=torch.float64).expand(2, -1, -1, -1)),
                               up(x), **TIGHT)


def test_keeps_parameters_parametrizations_dtype_and_mode():
    """Same Parameter objects (an optimizer built before keeps working), parametrizations carried
    over, float32 kept, eval mode kept; a float32 constant guide reproduces the original."""
    torch.manual_seed(0)
    dw = torch.nn.utils.parametrizations.weight_norm(nn.Conv2d(4, 8, 3, padding=1, groups=4,
                                                               padding_mode="reflect"))
    up = nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1, groups=4)
    net = nn.Sequential(dw, nn.ReLU(), up).eval()
    original = copy.deepcopy(net)
    original_list = dw.parametrizations["weight"]
    before = dict(net.named_parameters())
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    swapped = swap_to_pac(net, predicate=_is_conv, backend="reference")
    assert swapped is net and isinstance(swapped[0], GuidedPacConv2d) and type(swapped[2]) is GuidedPacConvTranspose2d
    assert all(p is before[name] for name, p in swapped.named_parameters())
    assert swapped.state_dict().keys() == original.state_dict().keys()
    assert torch.nn.utils.parametrize.is_parametrized(swapped[0], "weight")  # (a Parametrized... subclass)
    assert swapped[0].parametrizations["weight"] is original_list
    assert not swapped[0].training and not swapped[2].training
    assert swapped[0].weight.dtype == torch.float32 and swapped[2].weight.dtype == torch.float32
    x = torch.randn(2, 4, 6, 5)
    with guided(swapped, torch.zeros(1, 2, 6, 5)):
        actual = swapped(x)
        assert actual.dtype == torch.float32
        torch.testing.assert_close(actual, original(x), rtol=1e-5, atol=1e-5)
        actual.square().sum().backward()
    optimizer.step()
