"""Issue 12, point 6: a pacnet checkpoint loaded into a PacConvTranspose2d with plain
``load_state_dict`` warns (once, naming the helper); our own state dicts, the helpers, and layers
swapped in for nn.ConvTranspose2d do not."""
from __future__ import annotations

import warnings
from collections import OrderedDict

import pytest
import torch
from torch import nn

import pac_triton
import pac_triton.modules as modules


@pytest.fixture(autouse=True)
def _fresh_warning(monkeypatch):
    monkeypatch.setattr(modules, "_PACNET_LOAD_WARNED", False)


def _model():
    return nn.Sequential(pac_triton.PacConv2d(2, 2, 3, padding=1),
                         pac_triton.PacConvTranspose2d(2, 2, 3, stride=2, padding=1, output_padding=1))


def _pacnet_like(model):
    """A state dict as pacnet would save it: plain tensors, nn.Module's default version 1."""
    sd = OrderedDict((k, v.clone()) for k, v in model.state_dict().items())
    sd._metadata = OrderedDict((k, {"version": 1}) for k in ("", "0", "1"))
    return sd


def _load_warnings(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return [w for w in caught if issubclass(w.category, UserWarning) and "load_pacnet_state_dict" in str(w.message)]


def test_version_is_bumped():
    assert pac_triton.PacConvTranspose2d._version == 2
    assert _model().state_dict()._metadata["1"]["version"] == 2


@pytest.mark.parametrize("kind", ["pacnet metadata", "no metadata"])
def test_plain_load_of_pacnet_checkpoint_warns_once(kind):
    source = _pacnet_like(_model())
    if kind == "no metadata":
        source = dict(source)
    model = _model()
    caught = _load_warnings(lambda: model.load_state_dict(source))
    assert len(caught) == 1, caught
    assert "1.weight" in str(caught[0].message)
    assert _load_warnings(lambda: _model().load_state_dict(source)) == []  # once per process


def test_own_state_dict_and_helpers_do_not_warn():
    source = _model()
    assert _load_warnings(lambda: _model().load_state_dict(source.state_dict())) == []
    pacnet = _pacnet_like(source)
    target = _model()
    assert _load_warnings(lambda: pac_triton.load_pacnet_state_dict(target, pacnet, strict=True)) == []
    torch.testing.assert_close(target[1].weight, pacnet["1.weight"].flip(-2, -1))
    converted = pac_triton.convert_pacnet_state_dict(pacnet, target)
    assert _load_warnings(lambda: _model().load_state_dict(converted, strict=True)) == []
    assert pacnet._metadata["1"]["version"] == 1  # the source is not modified


def test_swapped_conv_transpose_loads_its_checkpoint_silently():
    net = nn.Sequential(nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1))
    checkpoint = net.state_dict()
    swapped = pac_triton.swap_to_pac(net, ["0"])
    assert _load_warnings(lambda: swapped.load_state_dict(checkpoint, strict=True)) == []


class _Tied(nn.Module):
    """A transposed layer registered under two names (its state dict holds the weight twice)."""

    def __init__(self):
        super().__init__()
        self.a = pac_triton.PacConvTranspose2d(2, 2, 3, stride=2, padding=1, output_padding=1)
        self.b = self.a


def test_tied_transposed_layer_is_flipped_under_every_name():
    """``load_pacnet_state_dict`` / ``convert_pacnet_state_dict`` flip a transposed layer's weight
    under each of its names: with only the first flipped, ``load_state_dict`` loaded the second,
    unflipped copy last (a silent wrong weight, and the plain-load warning besides)."""
    torch.manual_seed(0)
    pacnet_weight = torch.randn(2, 2, 3, 3)
    sd = OrderedDict(_Tied().state_dict())
    sd["a.weight"] = sd["b.weight"] = pacnet_weight
    sd._metadata = OrderedDict((k, {"version": 1}) for k in ("", "a", "b"))
    flipped = pacnet_weight.flip(-2, -1)
    converted = pac_triton.convert_pacnet_state_dict(sd, _Tied())
    assert torch.equal(converted["a.weight"], flipped) and torch.equal(converted["b.weight"], flipped)
    model = _Tied()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pac_triton.load_pacnet_state_dict(model, sd)
    assert torch.equal(model.a.weight.detach(), flipped)


def test_tied_transposed_layer_stored_once_loads_flipped():
    """A checkpoint that kept a tied layer's weight under one of its names only (tools that drop
    duplicate tensors): that copy is flipped and loads through the tie; no "missing weight"
    error while one of the layer's names has it."""
    torch.manual_seed(0)
    pacnet_weight = torch.randn(2, 2, 3, 3)
    sd = OrderedDict((k, v) for k, v in _Tied().state_dict().items() if k.startswith("a."))
    sd["a.weight"] = pacnet_weight
    model = _Tied()
    result = pac_triton.load_pacnet_state_dict(model, sd, strict=False)
    assert sorted(result.missing_keys) == ["b.bias", "b.weight"]
    assert torch.equal(model.b.weight.detach(), pacnet_weight.flip(-2, -1))
    with pytest.raises(ValueError, match="has no 'a.weight'"):
        pac_triton.convert_pacnet_state_dict(OrderedDict(), _Tied())
