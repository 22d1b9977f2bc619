"""Hot-swapping nn.Conv2d / nn.ConvTranspose2d layers of an existing network for PAC layers
(pac_triton.swap): pretrained parameters and geometry kept, a constant guide reproduces the
original network exactly, a varying guide changes it, and what PAC cannot express is refused."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torch.nn.utils.prune
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


def _transposed_with_padding_mode(mode):
    """nn.ConvTranspose2d refuses padding modes other than 'zeros' when built (and when run): one set
    afterwards must still be refused, not silently dropped."""
    layer = nn.ConvTranspose2d(4, 4, 3, padding=1, groups=2)
    layer.padding_mode = mode
    return layer


@pytest.mark.parametrize("layer, message", [
    pytest.param(_transposed_with_padding_mode("reflect"), "padding_mode='reflect'.*'zeros' only",
                 id="transposed-reflect"),
    pytest.param(_transposed_with_padding_mode("circular"), "padding_mode='circular'.*'zeros' only",
                 id="transposed-circular"),
    pytest.param(nn.Conv2d(4, 4, 2, groups=2), "odd", id="even-grouped"),
    pytest.param(nn.Conv2d(4, 4, (3, 4), groups=4, padding_mode="reflect"), "odd", id="even-depthwise-reflect"),
    pytest.param(nn.Conv2d(4, 4, 2), "odd", id="even"),
    pytest.param(nn.Conv2d(4, 4, (3, 4)), "odd", id="even-width"),
    pytest.param(nn.ConvTranspose2d(4, 4, 4, stride=2, padding=1), "odd", id="even-transposed"),
    pytest.param(_StandardisedConv(4, 4, 3), "overrides forward", id="overrides-forward"),
    pytest.param(nn.LazyConv2d(4, 3), "lazy", id="lazy"),
    pytest.param(nn.Linear(4, 4), "not an nn.Conv2d", id="linear"),
    pytest.param(PacConv2d(4, 4, 3), "already a PAC layer", id="already-pac"),
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


# --------------------------------------------------------------------------- never change what a model computes

class _CircularConv(nn.Conv2d):
    """Circular padding done by hand in _conv_forward (the layer's own padding is 0)."""

    def _conv_forward(self, input, weight, bias):
        return F.conv2d(F.pad(input, (1, 1, 1, 1), mode="circular"), weight, bias, self.stride, 0, self.dilation,
                        self.groups)


class _WeightStandardisedConv(nn.Conv2d):
    def _conv_forward(self, input, weight, bias):
        mean = weight.mean(dim=(1, 2, 3), keepdim=True)
        std = weight.std(dim=(1, 2, 3), keepdim=True) + 1e-5
        return super()._conv_forward(input, (weight - mean) / std, bias)


class _FixedOutputPadding(nn.ConvTranspose2d):
    def _output_padding(self, *args, **kwargs):
        return (1, 1)


def _with_hook(kind):
    conv = nn.Conv2d(4, 4, 3, padding=1)
    if kind == "forward":
        conv.register_forward_hook(lambda module, args, out: out * 2)
    elif kind == "forward_pre":
        conv.register_forward_pre_hook(lambda module, args: (args[0] + 1,))
    else:
        conv.register_full_backward_hook(lambda module, grad_in, grad_out: None)
    return conv


def _plain_tensor_weight():
    conv = nn.Conv2d(4, 4, 3, padding=1)
    weight = conv.weight.detach().clone()
    del conv.weight
    conv.weight = weight * 0.5
    return conv


@pytest.mark.parametrize("make, message", [
    pytest.param(lambda: _CircularConv(4, 4, 3), "overrides _conv_forward", id="conv_forward-circular"),
    pytest.param(lambda: _WeightStandardisedConv(4, 4, 3, padding=1), "overrides _conv_forward",
                 id="conv_forward-weight-standardisation"),
    pytest.param(lambda: _FixedOutputPadding(4, 4, 3, stride=2, padding=1), "overrides _output_padding",
                 id="transposed-output_padding"),
    pytest.param(lambda: _with_hook("forward"), "forward hooks", id="forward-hook"),
    pytest.param(lambda: _with_hook("forward_pre"), "forward pre- hooks", id="forward-pre-hook"),
    pytest.param(lambda: _with_hook("backward"), "backward hooks", id="backward-hook"),
    pytest.param(lambda: nn.utils.weight_norm(nn.Conv2d(4, 4, 3)), "WeightNorm.*parametrizations",
                 id="hook-weight_norm"),
    pytest.param(lambda: nn.utils.spectral_norm(nn.Conv2d(4, 4, 3)), "SpectralNorm.*parametrizations",
                 id="hook-spectral_norm"),
    pytest.param(lambda: torch.nn.utils.prune.l1_unstructured(nn.Conv2d(4, 4, 3), "weight", 0.3),
                 "L1Unstructured.*prune.remove", id="prune"),
    pytest.param(_plain_tensor_weight, "weight is a Tensor, not a Parameter", id="plain-tensor-weight"),
])
@pytest.mark.filterwarnings("ignore:.*is deprecated:FutureWarning")
def test_refuses_layers_whose_behaviour_would_change(make, message):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(4, 4, 1), make()).eval()  # eval: no spectral-norm power iteration
    x = torch.randn(1, 4, 6, 6)
    before = net(x)
    with pytest.raises(ValueError, match=message) as error:
        swap_to_pac(net, ["0", "1"])
    assert "layer '1'" in str(error.value)
    assert type(net[0]) is nn.Conv2d  # nothing changed
    torch.testing.assert_close(net(x), before, rtol=0, atol=0)


def _parametrized_bias():
    class Doubled(nn.Module):
        def forward(self, bias):
            return 2 * bias

    conv = nn.Conv2d(3, 4, 3, padding=1)
    torch.nn.utils.parametrize.register_parametrization(conv, "bias", Doubled())
    return torch.nn.utils.parametrizations.weight_norm(conv)


@pytest.mark.parametrize("make", [
    pytest.param(lambda: torch.nn.utils.parametrizations.weight_norm(nn.Conv2d(3, 4, 3, padding=1)),
                 id="weight_norm"),
    pytest.param(lambda: torch.nn.utils.parametrizations.spectral_norm(nn.Conv2d(3, 4, 3, padding=1)),
                 id="spectral_norm"),
    pytest.param(lambda: torch.nn.utils.parametrizations.weight_norm(
        nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1)), id="weight_norm-transposed"),
    pytest.param(lambda: torch.nn.utils.parametrizations.spectral_norm(
        nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1)), id="spectral_norm-transposed"),
    pytest.param(_parametrized_bias, id="weight_norm-and-bias-parametrization"),
])
def test_parametrizations_carry_over(make):
    """The PAC layer keeps the layer's parametrization (same modules, original Parameters and
    buffers): a constant guide reproduces the original through training steps (spectral_norm's
    power iteration included), with the same state-dict keys and gradients."""
    torch.manual_seed(0)
    net = nn.Sequential(make(), nn.ReLU()).double()
    original = copy.deepcopy(net)
    parameters = dict(net.named_parameters())
    swapped = swap_to_pac(net, ["0"], backend="reference")
    assert isinstance(swapped[0], (GuidedPacConv2d, GuidedPacConvTranspose2d))
    assert swapped.state_dict().keys() == original.state_dict().keys()
    assert all(p is parameters[name] for name, p in swapped.named_parameters())
    assert dict(swapped.named_parameters()).keys() == parameters.keys()
    for step in range(2):
        x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
        expected = original(x)
        with guided(swapped, torch.full((1, 2, 5, 6), 0.3, dtype=torch.float64)):
            actual = swapped(x)
        torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12, msg=f"step {step}")
        expected.square().sum().backward()
        actual.square().sum().backward()
        swapped_parameters = dict(swapped.named_parameters())
        for name, p in original.named_parameters():
            torch.testing.assert_close(swapped_parameters[name].grad, p.grad, rtol=1e-12, atol=1e-12,
                                       msg=f"{name} step {step}")
    swapped_state = swapped.state_dict()
    for name, a in original.state_dict().items():
        torch.testing.assert_close(swapped_state[name], a, rtol=1e-12, atol=1e-12, msg=name)  # spectral_norm's u, v advanced alike
    swapped.load_state_dict(original.state_dict())  # strict


def test_weight_norm_old_checkpoint_hook_carries_over():
    """parametrizations.weight_norm loads checkpoints saved with the old hook-based weight_norm
    (weight_g / weight_v) through a state-dict hook; the swapped layer keeps it."""
    torch.manual_seed(0)
    old = nn.utils.weight_norm(nn.Conv2d(3, 4, 3, padding=1))
    checkpoint = {"0." + k: v for k, v in old.state_dict().items()}
    net = nn.Sequential(torch.nn.utils.parametrizations.weight_norm(nn.Conv2d(3, 4, 3, padding=1)))
    swapped = swap_to_pac(net, ["0"])
    swapped.load_state_dict(checkpoint)
    torch.testing.assert_close(swapped[0].weight, old.weight.detach())


class _TiedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(3, 3, 3, padding=1)
        self.dec = self.enc


@pytest.mark.parametrize("how", ["names", "predicate"])
def test_tied_layer_is_chosen_by_any_of_its_names(how):
    """A layer registered under two names is found by either (``named_modules`` drops the second
    by default: "model has no submodule named 'dec'", a predicate never asked about it)."""
    net = _TiedNet()
    asked = []

    def predicate(name, module):
        asked.append(name)
        return name == "dec"
    swapped = swap_to_pac(net, ["dec"]) if how == "names" else swap_to_pac(net, predicate=predicate)
    assert isinstance(swapped.dec, GuidedPacConv2d) and swapped.enc is swapped.dec
    if how == "predicate":
        assert asked == ["enc", "dec"]


@pytest.mark.parametrize("layer", [
    pytest.param(nn.Conv2d(2, 2, 3, padding=2), id="conv-p2-k3"),
    pytest.param(nn.Conv2d(2, 2, (3, 5), padding=(1, 3)), id="conv-rect"),
    pytest.param(nn.Conv2d(2, 2, 3, padding=3, dilation=2), id="conv-dilated"),
    pytest.param(nn.ConvTranspose2d(2, 2, 3, stride=1, padding=2), id="transposed-s1"),
    pytest.param(nn.ConvTranspose2d(2, 2, 3, stride=2, padding=2, output_padding=1), id="transposed-s2"),
])
def test_padding_past_the_kernels_reach_is_refused(layer):
    """With zero padding wider than ``dilation * (kernel_size - 1) / 2`` even a constant (non-zero)
    guide would not reproduce the layer (the guide reads 0 in the padding: the outermost output
    pixels' centre feature, or a transposed conv's taps past the output): refused, naming the
    layer, instead of a swapped model that computes something else (it differed by up to 0.5)."""
    with pytest.raises(ValueError, match=r"cannot swap layer '0'.*wider than the kernel's half reach"):
        swap_to_pac(nn.Sequential(layer), ["0"])


@pytest.mark.parametrize("layer", [
    pytest.param(nn.Conv2d(2, 2, 3, padding=1), id="conv-p1"),
    pytest.param(nn.Conv2d(2, 2, 3, padding=2, dilation=2), id="conv-dilated-p2"),
    pytest.param(nn.Conv2d(2, 2, 5, padding=1, stride=2), id="conv-narrow"),
    pytest.param(nn.Conv2d(2, 2, 3, padding=2, padding_mode="replicate"), id="conv-replicate-p2"),
    pytest.param(nn.ConvTranspose2d(2, 2, 3, stride=2, padding=1, output_padding=1), id="transposed-s2"),
    pytest.param(nn.ConvTranspose2d(2, 2, 5, stride=2, padding=0), id="transposed-p0"),
])
def test_constant_nonzero_guide_reproduces_the_layer(layer):
    """Within the kernel's reach (or with a padding mode that pads the guide with its own values)
    a constant guide of 1, not only of 0, gives exactly the original layer."""
    layer = layer.double()
    x = torch.randn(1, 2, 6, 7, dtype=torch.float64)
    expected = layer(x)
    model = swap_to_pac(nn.Sequential(copy.deepcopy(layer)), ["0"])
    with guided(model, torch.full((1, 2, 13, 15), 1.0, dtype=torch.float64)):
        torch.testing.assert_close(model(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layer", [
    pytest.param(nn.Conv2d(2, 3, 3, padding=1), id="conv"),
    pytest.param(nn.Conv2d(2, 2, 3, padding="same", groups=2, padding_mode="reflect"), id="depthwise-reflect"),
    pytest.param(nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1), id="transposed"),
])
def test_unbatched_input_as_nn_conv(layer):
    """A swapped layer takes an unbatched ``[C, H, W]`` input as ``nn.Conv2d`` does (a model that
    ran unbatched still runs after the swap); the guide then has a batch of one, or is passed
    unbatched."""
    layer = layer.double()
    x = torch.randn(2, 6, 7, dtype=torch.float64)
    expected = layer(x)
    swapped = swap_to_pac(copy.deepcopy(layer), [""])
    guide = torch.zeros(1, 2, 6, 7, dtype=torch.float64)
    with guided(swapped, guide):
        torch.testing.assert_close(swapped(x), expected, rtol=1e-12, atol=1e-12)
    out_hw = expected.shape[-2:]
    torch.testing.assert_close(swapped(x, torch.zeros(2, *out_hw, dtype=torch.float64)) if
                               isinstance(layer, nn.ConvTranspose2d) else swapped(x, guide[0]),
                               expected, rtol=1e-12, atol=1e-12)
    if isinstance(layer, nn.ConvTranspose2d):
        with guided(swapped, guide):
            torch.testing.assert_close(swapped(x, output_size=(12, 14)), layer(x, output_size=(12, 14)),
                                       rtol=1e-12, atol=1e-12)


def test_output_size_range_is_nn_conv_transposes():
    """``output_size`` reaches what ``nn.ConvTranspose2d`` reaches (``stride - 1`` extra rows), not
    ``max(stride, dilation) - 1`` (the functional ``output_padding`` rule): with stride 2 and
    dilation 3, 17 x 17 from 6 x 6 is refused as torch refuses it."""
    layer = nn.ConvTranspose2d(2, 2, 3, stride=2, dilation=3, padding=1).double()
    swapped = swap_to_pac(copy.deepcopy(layer), [""])
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    with guided(swapped, torch.zeros(1, 1, 16, 16, dtype=torch.float64)):
        for size in [(15, 15), (16, 16)]:
            torch.testing.assert_close(swapped(x, output_size=size), layer(x, output_size=size),
                                       rtol=1e-12, atol=1e-12)
        with pytest.raises(ValueError):
            layer(x, output_size=(17, 17))
        with pytest.raises(ValueError, match="output_size"):
            swapped(x, output_size=(17, 17))


def test_set_guide_refuses_an_integer_guide_with_a_type_error():
    """Wrong dtypes raise TypeError (README, "Errors"), wrong shapes ValueError."""
    swapped = swap_to_pac(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1)), ["0"])
    with pytest.raises(TypeError, match="floating-point"):
        set_guide(swapped, torch.ones(1, 1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="4-d"):
        set_guide(swapped, torch.ones(4, 4))


class _Owner(nn.Module):
    """A child that keeps a reference to its parent (registered as a submodule: a cycle)."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1))
        self.inner.owner = self


def test_a_module_cycle_does_not_recurse_forever():
    """Walking every name of every module stops at a module already on its path (a
    back-reference to a parent made the all-names walk recurse until RecursionError)."""
    model = _Owner()
    swapped = swap_to_pac(model, ["inner.0"])
    assert isinstance(swapped.inner[0], GuidedPacConv2d)
    assert swap_to_pac(_Owner(), predicate=lambda name, m: True).inner[0].__class__ is GuidedPacConv2d


@pytest.mark.parametrize("options, added", [
    ({}, set()),
    (dict(normalize_kernel=True), set()),
    (dict(smooth_kernel_type="gaussian"), {"smooth_kernel"}),
    (dict(kernel_type="inv_0.5_-1_fixed"), {"inv_alpha", "inv_lambda"}),
    (dict(kernel_type="inv_0.5_-1"), {"inv_alpha", "inv_lambda"}),
], ids=["default", "normalized", "smoothed", "inv-fixed", "inv-learned"])
def test_swapped_state_dict_keys(options, added):
    """As README's "Upgrading an existing network" says: the default options keep the original
    state-dict keys (the original checkpoint loads strictly); options that add tensors add exactly
    their keys, so the original checkpoint loads with ``strict=False`` and misses only those."""
    net = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1))
    original = copy.deepcopy(net.state_dict())
    swapped = swap_to_pac(copy.deepcopy(net), ["0"], backend="reference", **options)
    assert set(swapped.state_dict()) == set(original) | {f"0.{k}" for k in added}
    if not added:
        swapped.load_state_dict(original)
        return
    with pytest.raises(RuntimeError, match="Missing key"):
        swapped.load_state_dict(original)
    result = swapped.load_state_dict(original, strict=False)
    assert set(result.missing_keys) == {f"0.{k}" for k in added} and not result.unexpected_keys
    assert torch.equal(swapped[0].weight, original["0.weight"])
