"""Issue 14, backend-independent part: ``groups`` on the PAC convolutions (reference backend),
``padding="same"/"valid"`` and ``padding_mode`` on the layers, ``device=``/``dtype=``, and the
backend choice for grouped calls (docs/semantics.md sections 7 and 8).

Oracles: ``F.conv2d`` / ``F.conv_transpose2d`` / ``nn.Conv2d`` where K == 1 (a constant guide
with the Gaussian unnormalised kernel), and ungrouped PAC run once per group otherwise.
"""
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pac_triton
import pac_triton.dispatch as dispatch
from pac_testing import assert_close_rel
from pac_triton import (PacConv2d, PacConvTranspose2d, pac_conv2d, pac_conv_transpose2d, packernel2d, pacconv2d,
                        pacconv_transpose2d)

F64 = torch.float64


def _rand(*shape, dtype=F64, requires_grad=False):
    return torch.randn(*shape, dtype=dtype).requires_grad_(requires_grad)


def _per_group(x, w, groups, transposed):
    """(input slice, weight slice) of each group."""
    xs = x.chunk(groups, dim=1)
    ws = w.chunk(groups, dim=0)  # conv: output channels; transposed: input channels
    return list(zip(xs, ws))


# --------------------------------------------------------------------------- K == 1: F.conv2d / F.conv_transpose2d

CONV_CASES = [
    pytest.param(dict(C=4, O=6, groups=2, k=3, stride=1, padding=1, dilation=1), id="g2-k3"),
    pytest.param(dict(C=6, O=6, groups=3, k=3, stride=2, padding=1, dilation=1), id="g3-s2"),
    pytest.param(dict(C=4, O=4, groups=4, k=5, stride=1, padding=4, dilation=2), id="depthwise-k5-d2"),
    pytest.param(dict(C=3, O=6, groups=3, k=3, stride=(2, 1), padding=(0, 2), dilation=(1, 2)),
                 id="depthwise-multiplier2-anisotropic"),
    pytest.param(dict(C=4, O=2, groups=2, k=1, stride=1, padding=0, dilation=1), id="g2-pointwise"),
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_grouped_conv_with_constant_guide_equals_F_conv2d(case):
    x = _rand(2, case["C"], 9, 8)
    w = _rand(case["O"], case["C"] // case["groups"], case["k"], case["k"])
    b = _rand(case["O"])
    geometry = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"])
    expected = F.conv2d(x, w, b, groups=case["groups"], **geometry)
    guide = torch.zeros(2, 3, 9, 8, dtype=F64)  # K == 1 everywhere (the centre may lie in the zero padding)
    y = pac_conv2d(x, guide, w, b, groups=case["groups"], backend="reference", **geometry)
    assert_close_rel(y, expected, 1e-13, "pac_conv2d(groups)")
    out_hw = expected.shape[-2:]
    ones = torch.ones(2, 1, case["k"], case["k"], *out_hw, dtype=F64)
    y = pacconv2d(x, ones, w, b, geometry["stride"], geometry["padding"], geometry["dilation"],
                  groups=case["groups"], backend="reference")
    assert_close_rel(y, expected, 1e-13, "pacconv2d(groups)")


TRANSPOSED_CASES = [
    pytest.param(dict(C=4, O=6, groups=2, k=3, stride=2, padding=1, output_padding=1, dilation=1), id="g2-s2"),
    pytest.param(dict(C=6, O=3, groups=3, k=3, stride=1, padding=0, output_padding=0, dilation=2), id="g3-d2"),
    pytest.param(dict(C=4, O=4, groups=4, k=5, stride=2, padding=2, output_padding=1, dilation=1),
                 id="depthwise-k5-s2"),
    pytest.param(dict(C=2, O=4, groups=2, k=3, stride=(3, 2), padding=(1, 0), output_padding=(2, 0),
                      dilation=(1, 2)), id="g2-anisotropic"),
]


@pytest.mark.parametrize("case", TRANSPOSED_CASES)
def test_grouped_transposed_conv_with_constant_guide_equals_F_conv_transpose2d(case):
    x = _rand(2, case["C"], 4, 5)
    w = _rand(case["C"], case["O"] // case["groups"], case["k"], case["k"])
    b = _rand(case["O"])
    geometry = dict(stride=case["stride"], padding=case["padding"], output_padding=case["output_padding"],
                    dilation=case["dilation"])
    expected = F.conv_transpose2d(x, w, b, groups=case["groups"], **geometry)
    guide = torch.full((2, 2, *expected.shape[-2:]), 0.4, dtype=F64)
    y = pac_conv_transpose2d(x, guide, w, b, groups=case["groups"], backend="reference", **geometry)
    assert_close_rel(y, expected, 1e-13, "pac_conv_transpose2d(groups)")
    ones = torch.ones(2, 1, case["k"], case["k"], *expected.shape[-2:], dtype=F64)
    y = pacconv_transpose2d(x, ones, w, b, geometry["stride"], geometry["padding"], geometry["output_padding"],
                            geometry["dilation"], groups=case["groups"], backend="reference")
    assert_close_rel(y, expected, 1e-13, "pacconv_transpose2d(groups)")


# --------------------------------------------------------------------------- per-group equivalence (any K)

KERNEL_OPTIONS = [
    pytest.param(dict(), id="gaussian"),
    pytest.param(dict(kernel_type="inv_0.5_1.5_asym", smooth_kernel_type="gaussian"), id="inv-asym-smooth"),
    pytest.param(dict(normalize_kernel=True), id="normalised"),
    pytest.param(dict(normalize_kernel=True, mask=True), id="normalised-mask"),
    pytest.param(dict(kernel_type="inv_1_0.5", mask=True), id="inv-mask"),
]


def _options(opts, batch, hw):
    opts = dict(opts)
    if opts.pop("mask", False):
        opts["mask"] = (torch.rand(batch, 1, *hw) > 0.3).to(F64)
    return opts


@pytest.mark.parametrize("groups", [pytest.param(2, id="g2"), pytest.param(4, id="depthwise")])
@pytest.mark.parametrize("opts", KERNEL_OPTIONS)
def test_grouped_conv_equals_ungrouped_per_group(groups, opts):
    x, guide = _rand(2, 4, 7, 6), _rand(2, 3, 7, 6)
    w, b = _rand(8, 4 // groups, 3, 3), _rand(8)
    opts = _options(opts, 2, (7, 6))
    geometry = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2))
    y = pac_conv2d(x, guide, w, b, groups=groups, backend="reference", **geometry, **opts)
    parts = [pac_conv2d(xg, guide, wg, bg, backend="reference", **geometry, **opts)
             for (xg, wg), bg in zip(_per_group(x, w, groups, False), b.chunk(groups))]
    if "mask" in opts:
        (y, out_mask), out_masks = y, [p[1] for p in parts]
        parts = [p[0] for p in parts]
        for om in out_masks:
            assert torch.equal(out_mask, om)
    assert_close_rel(y, torch.cat(parts, dim=1), 1e-13, "grouped vs per-group pac_conv2d")


@pytest.mark.parametrize("groups", [pytest.param(2, id="g2"), pytest.param(4, id="depthwise")])
@pytest.mark.parametrize("opts", KERNEL_OPTIONS)
def test_grouped_transposed_conv_equals_ungrouped_per_group(groups, opts):
    x, guide = _rand(2, 4, 4, 3), _rand(2, 3, 8, 6)
    w, b = _rand(4, 6 // groups if groups == 2 else 1, 3, 3), _rand(6 if groups == 2 else 4)
    opts = _options(opts, 2, (4, 3))
    geometry = dict(stride=2, padding=1, output_padding=1)
    y = pac_conv_transpose2d(x, guide, w, b, groups=groups, backend="reference", **geometry, **opts)
    parts = [pac_conv_transpose2d(xg, guide, wg, bg, backend="reference", **geometry, **opts)
             for (xg, wg), bg in zip(_per_group(x, w, groups, True), b.chunk(groups))]
    if "mask" in opts:
        y, parts = y[0], [p[0] for p in parts]
    assert_close_rel(y, torch.cat(parts, dim=1), 1e-13, "grouped vs per-group pac_conv_transpose2d")


def test_grouped_precomputed_kernel_equals_per_group():
    x, guide = _rand(1, 6, 6, 6), _rand(1, 2, 6, 6)
    K, _ = packernel2d(guide, kernel_size=3, padding=1, kernel_type="inv_0.5_2", backend="reference")
    w = _rand(3, 2, 3, 3)
    y = pacconv2d(x, K, w, None, 1, 1, groups=3, backend="reference")
    parts = [pacconv2d(xg, K, wg, None, 1, 1, backend="reference") for xg, wg in _per_group(x, w, 3, False)]
    assert_close_rel(y, torch.cat(parts, dim=1), 1e-13, "pacconv2d groups")
    Kt, _ = packernel2d(guide, kernel_size=3, stride=2, padding=1, output_padding=1, transposed=True,
                        backend="reference")
    xs, wt = _rand(1, 6, 3, 3), _rand(6, 1, 3, 3)
    y = pacconv_transpose2d(xs, Kt, wt, None, 2, 1, 1, groups=6, backend="reference")
    parts = [pacconv_transpose2d(xg, Kt, wg, None, 2, 1, 1, backend="reference")
             for xg, wg in _per_group(xs, wt, 6, True)]
    assert_close_rel(y, torch.cat(parts, dim=1), 1e-13, "pacconv_transpose2d groups")


# --------------------------------------------------------------------------- depthwise modules

def test_depthwise_module_is_per_channel_pac():
    layer = PacConv2d(3, 3, 5, padding=2, groups=3, kernel_type="inv_0.5_1", dtype=F64)
    assert tuple(layer.weight.shape) == (3, 1, 5, 5)
    x, guide = _rand(2, 3, 8, 7), _rand(2, 4, 8, 7)
    y = layer(x, guide)
    for c in range(3):
        one = pac_conv2d(x[:, c:c + 1], guide, layer.weight[c:c + 1], layer.bias[c:c + 1], padding=2,
                         kernel_type="inv_0.5_1", backend="reference")
        assert_close_rel(y[:, c:c + 1], one, 1e-13, f"channel {c}")


def test_depthwise_transposed_module_with_constant_guide_equals_nn_ConvTranspose2d():
    ref = nn.ConvTranspose2d(4, 8, 3, stride=2, padding=1, output_padding=1, groups=4, dtype=F64)
    layer = PacConvTranspose2d(4, 8, 3, stride=2, padding=1, output_padding=1, groups=4, dtype=F64)
    with torch.no_grad():  # (load_state_dict would warn: an nn.ConvTranspose2d dict carries no pac_triton version)
        layer.weight.copy_(ref.weight)
        layer.bias.copy_(ref.bias)
    x = _rand(2, 4, 5, 4)
    y = layer(x, torch.ones(2, 3, 10, 8, dtype=F64))
    assert_close_rel(y, ref(x), 1e-13, "depthwise PacConvTranspose2d")


# --------------------------------------------------------------------------- gradcheck (float64, reference)

def _gradcheck(fn, inputs):
    assert torch.autograd.gradcheck(fn, tuple(inputs), eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("opts", [
    pytest.param(dict(), id="gaussian"),
    pytest.param(dict(kernel_type="inv_0.5_1.5", smooth_kernel_type="gaussian", normalize_kernel=True),
                 id="inv-smooth-normalised"),
])
@pytest.mark.parametrize("groups", [pytest.param(2, id="g2"), pytest.param(4, id="depthwise")])
def test_gradcheck_grouped_pac_conv2d(groups, opts):
    x, guide = _rand(1, 4, 5, 4, requires_grad=True), _rand(1, 2, 5, 4, requires_grad=True)
    w, b = _rand(4, 4 // groups, 3, 3, requires_grad=True), _rand(4, requires_grad=True)
    _gradcheck(lambda *t: pac_conv2d(*t, stride=(1, 2), padding=1, groups=groups, backend="reference", **opts),
               (x, guide, w, b))


@pytest.mark.parametrize("groups", [pytest.param(2, id="g2"), pytest.param(4, id="depthwise")])
def test_gradcheck_grouped_pac_conv_transpose2d(groups):
    x, guide = _rand(1, 4, 3, 3, requires_grad=True), _rand(1, 2, 6, 6, requires_grad=True)
    w, b = _rand(4, 4 // groups, 3, 3, requires_grad=True), _rand(4, requires_grad=True)
    _gradcheck(lambda *t: pac_conv_transpose2d(*t, stride=2, padding=1, output_padding=1, groups=groups,
                                               kernel_type="inv_1_1", backend="reference"), (x, guide, w, b))


def test_gradcheck_grouped_precomputed_kernel():
    x, w = _rand(1, 4, 4, 4, requires_grad=True), _rand(2, 2, 3, 3, requires_grad=True)
    K = torch.rand(1, 1, 3, 3, 4, 4, dtype=F64, requires_grad=True)
    _gradcheck(lambda *t: pacconv2d(*t, None, 1, 1, groups=2, backend="reference"), (x, K, w))
    xs, wt = _rand(1, 4, 2, 2, requires_grad=True), _rand(4, 1, 3, 3, requires_grad=True)
    Kt = torch.rand(1, 1, 3, 3, 4, 4, dtype=F64, requires_grad=True)
    _gradcheck(lambda *t: pacconv_transpose2d(*t, None, 2, 1, 1, groups=4, backend="reference"), (xs, Kt, wt))


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_gradcheck_padding_mode_reaches_input_and_guide(mode):
    layer = PacConv2d(2, 2, 3, padding=1, groups=2, padding_mode=mode, dtype=F64, backend="reference")
    x, guide = _rand(1, 2, 4, 4, requires_grad=True), _rand(1, 2, 4, 4, requires_grad=True)
    _gradcheck(lambda a, b: layer(a, b), (x, guide))


# --------------------------------------------------------------------------- padding modes and string padding

MODES = ["zeros", "reflect", "replicate", "circular"]
PADDINGS = [pytest.param(1, id="p1"), pytest.param(2, id="p2"), pytest.param((2, 1), id="p21"),
            pytest.param("same", id="same"), pytest.param("valid", id="valid")]


@pytest.mark.parametrize("groups", [pytest.param(1, id="g1"), pytest.param(3, id="g3")])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("mode", MODES)
def test_padding_modes_with_constant_guide_equal_nn_Conv2d(mode, padding, groups):
    dilation = (1, 2)
    ref = nn.Conv2d(3, 6, 3, padding=padding, dilation=dilation, groups=groups, padding_mode=mode, dtype=F64)
    layer = PacConv2d(3, 6, 3, padding=padding, dilation=dilation, groups=groups, padding_mode=mode, dtype=F64)
    layer.load_state_dict(ref.state_dict())
    x = _rand(2, 3, 7, 8)
    # A non-zero constant guide: K == 1 only if the guide is padded as the input is (with 'zeros' the
    # centre of a border pixel may lie in the zero padding when padding > (k-1)*d/2: use a zero guide).
    value = 0.0 if mode == "zeros" else 0.7
    guide = torch.full((2, 2, 7, 8), value, dtype=F64)
    expected = ref(x)
    assert_close_rel(layer(x, guide), expected, 1e-13, f"PacConv2d padding_mode={mode}")
    K, _ = layer.compute_kernel(guide)
    assert_close_rel(layer(x, None, kernel=K), expected, 1e-13, "compute_kernel + kernel path")


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_padding_mode_pads_input_guide_and_mask_then_runs_unpadded(mode):
    layer = PacConv2d(2, 3, 3, padding=(2, 1), padding_mode=mode, normalize_kernel=True, dtype=F64,
                      kernel_type="inv_0.5_1", smooth_kernel_type="average_3")
    x, guide = _rand(2, 2, 6, 5), _rand(2, 2, 6, 5)
    mask = (torch.rand(2, 1, 6, 5) > 0.3).to(F64)
    y, out_mask = layer(x, guide, mask=mask)

    def pad(t):
        return F.pad(t, (1, 1, 2, 2), mode=mode)

    y_manual, om_manual = pac_conv2d(pad(x), pad(guide), layer.weight, layer.bias, padding=0,
                                     kernel_type="inv_0.5_1", smooth_kernel_type="average_3",
                                     normalize_kernel=True, mask=pad(mask), backend="reference")
    assert_close_rel(y, y_manual, 1e-13, "padded then unpadded op")
    assert torch.equal(out_mask, om_manual)
    # the padded taps are valid taps: with a mask of ones every pixel keeps all k*k taps
    y_zeros = PacConv2d(2, 3, 3, padding=(2, 1), normalize_kernel=True, dtype=F64, kernel_type="inv_0.5_1",
                        smooth_kernel_type="average_3")
    y_zeros.load_state_dict(layer.state_dict())
    assert not torch.allclose(y_zeros(x, guide), layer(x, guide)), "padding_mode had no effect"


def test_padding_mode_runs_on_the_triton_backend():
    if not pac_triton.triton_available():
        pytest.skip(pac_triton.triton_available().reason)
    layer = PacConv2d(2, 2, 3, padding=1, padding_mode="reflect", dtype=F64)
    x, guide = _rand(1, 2, 5, 4), _rand(1, 2, 5, 4)
    layer.backend = "reference"
    expected = layer(x, guide)
    layer.backend = "triton"
    assert_close_rel(layer(x, guide), expected, 1e-12, "reflect padding on Triton")


def test_padding_same_keeps_size_and_valid_is_zero():
    layer = PacConv2d(2, 2, (3, 5), padding="same", dilation=(2, 1))
    assert layer.padding == (2, 2)
    x = torch.randn(1, 2, 6, 7)
    assert layer(x, x).shape == x.shape
    assert PacConv2d(2, 2, 3, padding="valid").padding == (0, 0)
    w = torch.randn(2, 2, 3, 3)
    assert pac_conv2d(x, x, w, padding="same").shape == x.shape
    assert pac_conv2d(x, x, w, padding="valid").shape == (1, 2, 4, 5)
    K = torch.ones(1, 1, 3, 3, 6, 7)
    assert_close_rel(pacconv2d(x, K, w, None, 1, "same"), F.conv2d(x, w, padding="same"), 1e-6, "pacconv2d same")


@pytest.mark.parametrize("make", [
    pytest.param(lambda: PacConv2d(2, 2, 3, stride=2, padding="same"), id="module"),
    pytest.param(lambda: pac_conv2d(torch.randn(1, 2, 6, 6), torch.randn(1, 1, 6, 6), torch.randn(2, 2, 3, 3),
                                    stride=(1, 2), padding="same"), id="pac_conv2d"),
    pytest.param(lambda: pacconv2d(torch.randn(1, 2, 6, 6), torch.ones(1, 1, 3, 3, 3, 3), torch.randn(2, 2, 3, 3),
                                   None, 2, "same"), id="pacconv2d"),
])
def test_padding_same_with_stride_is_refused(make):
    with pytest.raises(ValueError, match="padding='same' is not supported for strided convolutions"):
        make()


@pytest.mark.parametrize("make,match", [
    pytest.param(lambda: PacConv2d(2, 2, 3, padding="full"), "invalid padding string 'full'", id="bad-string"),
    pytest.param(lambda: PacConv2d(2, 2, 4, padding="same"), "odd", id="same-even-kernel"),
    pytest.param(lambda: PacConv2d(2, 2, 3, padding_mode="mirror"), "padding_mode must be one of", id="bad-mode"),
    pytest.param(lambda: PacConvTranspose2d(2, 2, 3, padding_mode="reflect"), "only 'zeros' padding mode",
                 id="transposed-reflect"),
    pytest.param(lambda: PacConvTranspose2d(2, 2, 3, padding="same"), "string padding is not supported",
                 id="transposed-same"),
    pytest.param(lambda: pac_conv_transpose2d(torch.randn(1, 2, 3, 3), torch.randn(1, 1, 5, 5),
                                              torch.randn(2, 2, 3, 3), padding="valid"),
                 "string padding is not supported", id="pac_conv_transpose2d-valid"),
])
def test_bad_padding_arguments_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_reflect_padding_too_large_names_the_input():
    layer = PacConv2d(1, 1, 5, padding=4, dilation=2, padding_mode="reflect")
    with pytest.raises(ValueError, match="padding_mode='reflect'.*input_2d"):
        layer(torch.randn(1, 1, 3, 9), torch.randn(1, 1, 3, 9))
    with pytest.raises(ValueError, match="input_for_kernel"):
        layer.compute_kernel(torch.randn(1, 1, 3, 9))


def test_padding_mode_guide_shape_error_names_the_guide():
    layer = PacConv2d(1, 1, 3, padding=1, padding_mode="replicate")
    with pytest.raises(ValueError, match=r"input_for_kernel \(guide\) spatial size"):
        layer(torch.randn(1, 1, 6, 6), torch.randn(1, 1, 5, 6))


# --------------------------------------------------------------------------- errors for groups

@pytest.mark.parametrize("make,match", [
    pytest.param(lambda: PacConv2d(3, 4, 3, groups=2), "in_channels must be divisible by groups", id="module-in"),
    pytest.param(lambda: PacConv2d(4, 3, 3, groups=2), "out_channels must be divisible by groups", id="module-out"),
    pytest.param(lambda: PacConvTranspose2d(4, 6, 3, groups=4), "out_channels must be divisible by groups",
                 id="transposed-out"),
    pytest.param(lambda: PacConv2d(4, 4, 3, groups=2, shared_filters=True), "shared_filters", id="module-shared"),
    pytest.param(lambda: PacConv2d(4, 4, 3, groups=0), "groups must be a positive int", id="module-zero"),
    pytest.param(lambda: pac_conv2d(torch.randn(1, 6, 5, 5), torch.randn(1, 1, 5, 5), torch.randn(4, 2, 3, 3),
                                    groups=4), "input has 6 channels, which groups=4 does not divide",
                 id="pac_conv2d-input"),
    pytest.param(lambda: pac_conv2d(torch.randn(1, 6, 5, 5), torch.randn(1, 1, 5, 5), torch.randn(4, 3, 3, 3),
                                    groups=3), r"weight \[C_out, C_in/groups = 2, kh, kw\] has shape \(4, 3, 3, 3\)",
                 id="pac_conv2d-weight-shape"),
    pytest.param(lambda: pac_conv2d(torch.randn(1, 6, 5, 5), torch.randn(1, 1, 5, 5), torch.randn(5, 2, 3, 3),
                                    groups=3), "weight has 5 output channels", id="pac_conv2d-weight-out"),
    pytest.param(lambda: pac_conv_transpose2d(torch.randn(1, 6, 3, 3), torch.randn(1, 1, 5, 5),
                                              torch.randn(3, 2, 3, 3), groups=3),
                 r"input has 6 channels but weight \[C_in, C_out/groups", id="pac_conv_transpose2d-weight"),
    pytest.param(lambda: pacconv_transpose2d(torch.randn(1, 6, 3, 3), torch.ones(1, 1, 3, 3, 5, 5),
                                             torch.randn(6, 2, 3, 3), groups=4), "groups=4 does not divide",
                 id="pacconv_transpose2d-input"),
    pytest.param(lambda: pacconv2d(torch.randn(1, 2, 5, 5), torch.ones(1, 1, 3, 3, 3, 3), torch.randn(1, 1, 3, 3),
                                   shared_filters=True, groups=2), "shared_filters=True cannot be combined",
                 id="pacconv2d-shared"),
])
def test_bad_groups_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("groups", [pytest.param(1.5, id="float"), pytest.param(True, id="bool"),
                                    pytest.param("2", id="str")])
def test_groups_must_be_an_int(groups):
    with pytest.raises(TypeError, match="groups must be a positive int"):
        PacConv2d(2, 2, 3, groups=groups)
    with pytest.raises(TypeError, match="groups must be a positive int"):
        pac_conv2d(torch.randn(1, 2, 5, 5), torch.randn(1, 1, 5, 5), torch.randn(2, 1, 3, 3), groups=groups)


def test_module_forward_errors_name_the_module_weight():
    layer = PacConv2d(4, 4, 3, groups=2)
    with pytest.raises(ValueError, match="input_2d has 6 channels"):
        layer(torch.randn(1, 6, 5, 5), torch.randn(1, 1, 5, 5))


# --------------------------------------------------------------------------- backends

def _grouped_calls(backend):
    x, xs, guide = torch.randn(1, 4, 6, 6), torch.randn(1, 4, 3, 3), torch.randn(1, 2, 6, 6)
    K = torch.ones(1, 1, 3, 3, 6, 6)
    return {
        "pac_conv2d": lambda: pac_conv2d(x, guide, torch.randn(4, 2, 3, 3), padding=1, groups=2, backend=backend),
        "pac_conv_transpose2d": lambda: pac_conv_transpose2d(xs, guide, torch.randn(4, 1, 3, 3), stride=2,
                                                             padding=1, output_padding=1, groups=4,
                                                             backend=backend),
        "pacconv2d": lambda: pacconv2d(x, K, torch.randn(4, 2, 3, 3), None, 1, 1, groups=2, backend=backend),
        "pacconv_transpose2d": lambda: pacconv_transpose2d(xs, K, torch.randn(4, 2, 3, 3), None, 2, 1, 1, groups=2,
                                                           backend=backend),
        "PacConv2d": lambda: PacConv2d(4, 4, 3, padding=1, groups=4, backend=backend)(x, guide),
        "PacConvTranspose2d": lambda: PacConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1, groups=2,
                                                         backend=backend)(xs, guide),
    }


@pytest.mark.parametrize("name", list(_grouped_calls("reference")))
def test_grouped_calls_run_on_triton(name):
    """Grouped calls run on the Triton backend (``backend='triton'`` never falls back) and match
    the reference; the kernels' own tests are tests/triton/test_conv.py (groups) and
    test_depthwise.py (depthwise)."""
    if not pac_triton.triton_available():
        pytest.skip(pac_triton.triton_available().reason)  # the interpreter is on in this suite
    torch.manual_seed(0)
    got = _grouped_calls("triton")[name]()
    torch.manual_seed(0)
    torch.testing.assert_close(got, _grouped_calls("reference")[name](), rtol=1e-5, atol=1e-5)


def test_grouped_calls_choose_triton():
    if not pac_triton.triton_available():
        pytest.skip(pac_triton.triton_available().reason)
    x = torch.randn(1, 4, 5, 5, dtype=F64)
    assert dispatch.explain("triton", "pac_conv2d", (x,)).backend == "triton"
    assert dispatch.explain("auto", "pac_conv2d", (x,)).backend == "reference"  # CPU tensors under 'auto'


# --------------------------------------------------------------------------- device / dtype, fillers, repr

@pytest.mark.parametrize("cls", [pytest.param(PacConv2d, id="PacConv2d"),
                                 pytest.param(PacConvTranspose2d, id="PacConvTranspose2d")])
def test_device_and_dtype_keywords(cls):
    layer = cls(4, 6, 3, groups=2, kernel_type="inv_0.5_1", smooth_kernel_type="gaussian", dtype=F64)
    for name, tensor in list(layer.named_parameters()) + list(layer.named_buffers()):
        assert tensor.dtype == F64, name
    conv = (nn.ConvTranspose2d if cls is PacConvTranspose2d else nn.Conv2d)(4, 6, 3, groups=2)
    assert layer.weight.shape == conv.weight.shape and layer.bias.shape == conv.bias.shape
    meta = cls(4, 6, 3, groups=2, smooth_kernel_type="full_3", device="meta")
    assert all(t.device.type == "meta" for t in list(meta.parameters()) + list(meta.buffers()))
    cpu = cls(4, 6, 3, device=torch.device("cpu"), dtype=torch.float32)
    assert cpu.weight.device.type == "cpu" and cpu.weight.dtype == torch.float32
    with pytest.raises(TypeError, match="dtype must be a floating-point"):
        cls(4, 6, 3, dtype=torch.int64)


def test_grouped_fillers():
    layer = PacConv2d(6, 6, 3, groups=3)
    bound = 1.0 / (2 * 9) ** 0.5  # the fan-in in_channels/groups * kh * kw, as nn.Conv2d
    assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > bound / 2
    crf = PacConv2d(4, 4, 3, groups=2, filler="crf")
    # weight [4, 2]: output o joins input channel (o // 2) * 2 + c'; zero where that is o itself
    assert torch.equal(crf.weight[:, :, 0, 0] == 0, torch.tensor([[True, False], [False, True]] * 2))
    assert torch.equal(PacConv2d(3, 3, 3, filler="crf").weight[:, :, 0, 0] == 0, torch.eye(3, dtype=torch.bool))
    up = PacConvTranspose2d(3, 3, 5, stride=2, groups=3, filler="linear")
    dense = PacConvTranspose2d(3, 3, 5, stride=2, filler="linear")
    for c in range(3):
        assert torch.equal(up.weight[c, 0], dense.weight[c, c])


def test_extra_repr_and_nn_conv_state_dict():
    layer = PacConv2d(4, 4, 3, padding="same", groups=4, padding_mode="circular")
    text = repr(layer)
    assert "groups=4" in text and "padding_mode=circular" in text and "padding=(1, 1)" in text
    assert "groups" not in repr(PacConv2d(4, 4, 3)) and "padding_mode" not in repr(PacConv2d(4, 4, 3))
    layer.load_state_dict(nn.Conv2d(4, 4, 3, padding="same", groups=4, padding_mode="circular").state_dict())


def test_transposed_channel_mismatch_names_groups():
    """The transposed conv's channel-mismatch error names ``groups`` as the conv's does."""
    with pytest.raises(ValueError, match=r"has shape \(6, 2, 3, 3\) \(groups=2\)"):
        pac_conv_transpose2d(torch.randn(1, 4, 3, 3), torch.randn(1, 1, 6, 6), torch.randn(6, 2, 3, 3), stride=2,
                             padding=1, output_padding=1, groups=2, backend="reference")
