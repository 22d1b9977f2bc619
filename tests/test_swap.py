"""Hot-swapping nn.Conv2d / nn.ConvTranspose2d layers of an existing network for PAC layers
(pac_triton.swap): pretrained parameters and geometry kept, a constant guide reproduces the
original network exactly, a varying guide changes it, and what PAC cannot express is refused."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pac_triton.functional as PF
from pac_triton import PacConv2d
from pac_triton.swap import GuidedPacConv2d, GuidedPacConvTranspose2d, guided, set_guide, swap_to_pac


class TinyVGG(nn.Module):
    """A torchvision-free VGG-like encoder-decoder touching every geometry option."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(),
            nn.Conv2d(6, 6, 3, padding="same", dilation=2), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 8, (3, 5), stride=2, padding=(1, 2), bias=False), nn.ReLU(),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(8, 6, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            nn.ConvTranspose2d(6, 4, 3, stride=2, padding=2, output_padding=1, dilation=2),
        )
        self.head = nn.Conv2d(4, 2, 1, padding="valid")

    def forward(self, x):
        return self.head(self.decoder(self.features(x)))


def _is_conv(name, module):
    return True


def _net():
    torch.manual_seed(0)
    return TinyVGG().double()


def _input(batch=2):
    return torch.randn(batch, 3, 12, 16, dtype=torch.float64)


def test_constant_guide_reproduces_the_original_network():
    net = _net()
    swapped = swap_to_pac(copy.deepcopy(net), predicate=_is_conv, backend="reference")
    kinds = {name: type(m) for name, m in swapped.named_modules()}
    assert kinds["features.0"] is GuidedPacConv2d and kinds["head"] is GuidedPacConv2d
    assert kinds["decoder.0"] is GuidedPacConvTranspose2d and kinds["decoder.2"] is GuidedPacConvTranspose2d
    assert swapped.state_dict().keys() == net.state_dict().keys()
    layer = swapped.features[5]
    assert (layer.stride, layer.padding, layer.bias) == ((2, 2), (1, 2), None)
    assert swapped.features[2].padding == (2, 2) and swapped.features[2].dilation == (2, 2)
    assert swapped.decoder[2].output_padding == (1, 1) and swapped.decoder[2].dilation == (2, 2)

    x = _input()
    guide = torch.full((1, 4, 12, 16), 0.7, dtype=torch.float64)
    expected = net(x)
    with guided(swapped, guide):
        actual = swapped(x)
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)

    # Gradients of the shared-geometry parameters agree too.
    expected.square().sum().backward()
    with guided(swapped, guide):
        swapped(x).square().sum().backward()
    for (name, p), (_, q) in zip(net.named_parameters(), swapped.named_parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-12, atol=1e-12, msg=name)


def test_parameters_are_the_same_objects():
    net = _net()
    before = dict(net.named_parameters())
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    net.features[0].weight.requires_grad_(False)
    swapped = swap_to_pac(net, ["features.0", "decoder.0"])
    assert swapped is net
    for name, p in swapped.named_parameters():
        assert p is before[name], name
    assert not swapped.features[0].weight.requires_grad
    assert isinstance(swapped.features[2], nn.Conv2d) and isinstance(swapped.decoder[2], nn.ConvTranspose2d)
    with guided(swapped, torch.randn(1, 5, 12, 16, dtype=torch.float64)):
        swapped(_input()).sum().backward()
    optimizer.step()  # the optimizer built before the swap still owns the swapped layers' parameters


def test_varying_guide_changes_the_output():
    net = _net()
    swapped = swap_to_pac(copy.deepcopy(net), predicate=lambda name, m: m.kernel_size != (1, 1))
    assert isinstance(swapped.head, nn.Conv2d)
    x = _input()
    image = torch.rand(2, 3, 12, 16, dtype=torch.float64) * 4
    with guided(swapped, image):
        actual = swapped(x)
    assert actual.shape == net(x).shape
    assert (actual - net(x)).abs().max() > 1e-2


def test_guide_is_resized_to_each_layers_resolution():
    """Conv layers get it at their input size, transposed ones at their output size, as documented."""
    net = _net()
    swapped = swap_to_pac(net, ["features.5", "decoder.0"], backend="reference")
    guide = torch.rand(2, 3, 12, 16, dtype=torch.float64)
    x = torch.randn(2, 6, 6, 8, dtype=torch.float64)
    conv = swapped.features[5]
    with guided(swapped, guide):
        y = conv(x)
    small = F.interpolate(guide, size=(6, 8), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(y, PF.pac_conv2d(x, small, conv.weight, None, stride=2, padding=(1, 2)),
                               rtol=1e-12, atol=1e-12)
    up = swapped.decoder[0]
    x = torch.randn(2, 8, 3, 4, dtype=torch.float64)
    with guided(swapped, guide):
        y = up(x)
    mid = F.interpolate(guide, size=(6, 8), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(y, PF.pac_conv_transpose2d(x, mid, up.weight, up.bias, stride=2, padding=1,
                                                          output_padding=1), rtol=1e-12, atol=1e-12)
    # A guide passed per call is used as it is; one of batch 1 is broadcast.
    torch.testing.assert_close(up(x, mid), y, rtol=0, atol=0)
    with guided(swapped, guide[:1]):
        torch.testing.assert_close(up(x)[1], up(x, mid[:1].expand(2, -1, -1, -1))[1], rtol=0, atol=0)


def test_guide_mode_nearest_and_output_size():
    reference = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1).double()
    swapped = swap_to_pac(copy.deepcopy(reference), [""], guide_mode="nearest")
    assert isinstance(swapped, GuidedPacConvTranspose2d) and "guide_mode=nearest" in repr(swapped)
    x = torch.randn(1, 2, 4, 5, dtype=torch.float64)
    set_guide(swapped, torch.ones(1, 1, 3, 3, dtype=torch.float64))
    for size in [(7, 9), (8, 10)]:
        torch.testing.assert_close(swapped(x, output_size=size), reference(x, output_size=size),
                                   rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="output_size"):
        swapped(x, output_size=(11, 9))
    set_guide(swapped, None)


def test_guide_lifecycle():
    swapped = swap_to_pac(_net(), "head")
    x = torch.randn(1, 4, 12, 16, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="set_guide"):
        swapped.head(x)
    guide = torch.zeros(1, 1, 12, 16)
    with guided(swapped, guide):
        assert swapped.head.guide is guide
        swapped.head(x)  # a float32 guide is converted to the layer's dtype
    assert swapped.head.guide is None
    set_guide(swapped, guide)
    assert swapped.head.guide is guide
    set_guide(swapped, None)
    with pytest.raises(ValueError, match="4-d"):
        set_guide(swapped, torch.zeros(12, 16))
    with pytest.raises(ValueError, match="no swapped PAC layers"):
        set_guide(_net(), guide)


def test_shared_layer_is_replaced_everywhere():
    conv = nn.Conv2d(2, 2, 3, padding=1)
    net = nn.Sequential(conv, nn.ReLU(), conv)
    swapped = swap_to_pac(net, ["0"])
    assert isinstance(swapped[0], GuidedPacConv2d) and swapped[0] is swapped[2]


class _StandardisedConv(nn.Conv2d):
    def forward(self, x):
        return super().forward(x - x.mean())


@pytest.mark.parametrize("layer, message", [
    (nn.Conv2d(4, 4, 3, groups=2), "groups=2"),
    (nn.Conv2d(4, 4, 3, groups=4), "groups=4"),
    (nn.ConvTranspose2d(4, 4, 3, groups=2), "groups=2"),
    (nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), "padding_mode='reflect'"),
    (nn.Conv2d(4, 4, 3, padding=1, padding_mode="circular"), "padding_mode='circular'"),
    (nn.Conv2d(4, 4, 2), "odd"),
    (nn.Conv2d(4, 4, (3, 4)), "odd"),
    (nn.ConvTranspose2d(4, 4, 4, stride=2, padding=1), "odd"),
    (_StandardisedConv(4, 4, 3), "overrides forward"),
    (nn.LazyConv2d(4, 3), "lazy"),
    (nn.Linear(4, 4), "not an nn.Conv2d"),
    (PacConv2d(4, 4, 3), "already a PAC layer"),
])
def test_refuses_what_pac_cannot_express(layer, message):
    net = nn.Sequential(nn.Conv2d(4, 4, 1), layer)
    with pytest.raises(ValueError, match=message) as error:
        swap_to_pac(net, ["0", "1"])
    assert "'1'" in str(error.value)
    assert isinstance(net[0], nn.Conv2d) and not isinstance(net[0], GuidedPacConv2d)  # nothing changed


def test_selection_errors():
    net = _net()
    with pytest.raises(ValueError, match="exactly one"):
        swap_to_pac(net)
    with pytest.raises(ValueError, match="exactly one"):
        swap_to_pac(net, ["head"], predicate=_is_conv)
    with pytest.raises(ValueError, match="no submodule named 'features.9'.*features.0"):
        swap_to_pac(net, ["features.9"])
    with pytest.raises(ValueError, match="selected no"):
        swap_to_pac(net, predicate=lambda name, m: False)
    with pytest.raises(ValueError, match="guide_mode"):
        swap_to_pac(net, ["head"], guide_mode="linear")
    with pytest.raises(TypeError, match="nn.Module"):
        swap_to_pac(torch.zeros(1), ["head"])
