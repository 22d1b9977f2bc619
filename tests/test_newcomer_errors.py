"""Issue 12, point 5: every public entry point reports errors in its own argument names, never in
the name of an internal function it calls (``pacconv2d``, ``packernel2d``) or of an argument the
user did not pass (``kernel`` when they passed ``edge_feat``)."""
from __future__ import annotations

import re

import pytest
import torch

import pac_triton
import pac_triton.functional as PF

INTERNAL = ("pacconv2d", "pacconv_transpose2d", "pacpool2d", "packernel2d", "pac_conv2d",
            "pac_conv_transpose2d", "pac_pool2d")


def x_(B=1, C=2, H=8, W=8):
    return torch.randn(B, C, H, W)


def _message(fn, exc=ValueError):
    with pytest.raises(exc) as info:
        fn()
    return str(info.value)


def _no_internal_name(msg, allowed=()):
    for name in INTERNAL:
        if name in allowed:
            continue
        assert not re.search(rf"(?<![\w.]){name}(?!\w)", msg), f"{msg!r} names the internal function {name}"


def _crf(**extra):
    return pac_triton.PacCRF(3, 2, pairwise_kernels=[dict(kernel_size=3), dict(kernel_size=5, blur=2)], **extra)


CASES = {
    # PacCRF: the user passes unary, edge_feat, edge_kernel, logQ.
    "crf edge_feat size": (lambda: _crf()(x_(C=3, H=16, W=16), x_(C=5, H=15, W=17)), ["edge_feat", r"15, 17"]),
    "crf edge_feat batch": (lambda: _crf()(x_(C=3, H=16, W=16), x_(B=2, C=5, H=16, W=16)), ["edge_feat", "batch"]),
    "crf edge_feat list item": (lambda: _crf()(x_(C=3, H=16, W=16), [x_(C=5, H=16, W=16), x_(C=5, H=9, W=16)]),
                                [r"edge_feat\[1\]"]),
    "crf edge_feat rank": (lambda: _crf()(x_(C=3, H=16, W=16), torch.randn(5, 16, 16)), ["edge_feat", "4-d"]),
    "crf edge_kernel": (lambda: _crf()(x_(C=3, H=16, W=16), None, torch.rand(1, 1, 3, 3, 15, 17)),
                        ["edge_kernel", "PacCRF.forward", r"15, 17"]),
    "crf unary channels": (lambda: _crf()(x_(C=4, H=16, W=16), x_(C=5, H=16, W=16)), ["unary", "3 channels"]),
    "crf logQ": (lambda: _crf()(x_(C=3, H=16, W=16), x_(C=5, H=16, W=16), None, x_(C=3, H=8, W=8)), ["logQ"]),
    "crf compute_edge_kernels": (lambda: _crf().compute_edge_kernels(torch.randn(5, 16, 16)), ["edge_feat"]),
    "crf loose edge_feat": (lambda: pac_triton.PacCRFLoose(3, 2, pairwise_kernels=dict(kernel_size=3))(
        x_(C=3, H=16, W=16), x_(C=5, H=15, W=17)), ["edge_feat"]),
    "crf loose edge_kernel": (lambda: pac_triton.PacCRFLoose(3, 2, pairwise_kernels=dict(kernel_size=3))(
        x_(C=3, H=16, W=16), None, torch.rand(1, 1, 3, 3, 15, 17)), ["edge_kernel", "PacCRFLoose.forward"]),
    # Modules: forward(input_2d, input_for_kernel, kernel, mask), compute_kernel(input_for_kernel, input_mask).
    "conv guide size": (lambda: pac_triton.PacConv2d(2, 3, 3, padding=1)(x_(), x_(H=7)), ["input_for_kernel", "input_2d"]),
    "conv channels": (lambda: pac_triton.PacConv2d(4, 3, 3, padding=1)(x_(), x_()), ["input_2d", "PacConv2d.weight"]),
    "conv kernel": (lambda: pac_triton.PacConv2d(2, 3, 3, padding=1)(x_(), None, torch.rand(1, 1, 3, 3, 8, 7)),
                    ["kernel", "PacConv2d.forward", "input_2d"]),
    "conv mask": (lambda: pac_triton.PacConv2d(2, 3, 3, padding=1)(x_(), x_(), None, torch.ones(1, 1, 8, 7)),
                  ["mask", "input_2d"]),
    "conv input rank": (lambda: pac_triton.PacConv2d(2, 3, 3, padding=1)(torch.randn(2, 8, 8), x_()), ["input_2d"]),
    "conv guide dtype": (lambda: pac_triton.PacConv2d(2, 3, 3, padding=1)(x_(), x_().long()), ["input_for_kernel"],
                         TypeError),
    "conv too small": (lambda: pac_triton.PacConv2d(2, 3, 5)(x_(H=3, W=3), x_(H=3, W=3)), ["input_2d"]),
    "compute_kernel mask": (lambda: pac_triton.PacConv2d(2, 3, 3, padding=1).compute_kernel(x_(), torch.ones(1, 1, 7, 7)),
                            ["input_mask", "input_for_kernel"]),
    "compute_kernel rank": (lambda: pac_triton.PacConv2d(2, 3, 3).compute_kernel(torch.randn(8, 8)),
                            ["input_for_kernel"]),
    "transposed guide size": (lambda: pac_triton.PacConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1)(
        x_(), x_(H=15, W=16)), ["input_for_kernel", "input_2d"]),
    "transposed kernel": (lambda: pac_triton.PacConvTranspose2d(2, 3, 3, padding=1)(x_(), None, torch.rand(1, 2, 3, 3, 8, 8)),
                          ["kernel", "PacConvTranspose2d.forward"]),
    "pool guide size": (lambda: pac_triton.PacPool2d(3, padding=1)(x_(), x_(W=9)), ["input_for_kernel", "input_2d"]),
    "pool kernel": (lambda: pac_triton.PacPool2d(3, padding=1)(x_(), None, torch.rand(1, 1, 3, 3, 8, 9)),
                    ["kernel", "PacPool2d.forward"]),
    "pool channel_wise": (lambda: pac_triton.PacPool2d(3, padding=1, channel_wise=True)(x_(C=2), x_(C=3)),
                          ["input_for_kernel", "input_2d"]),
    "pool out_channels": (lambda: pac_triton.PacPool2d(3, padding=1, out_channels=4)(x_(C=2), x_(C=2)), ["input_2d"]),
    # Functions: their own argument names.
    "pacconv2d kernel": (lambda: PF.pacconv2d(x_(), torch.rand(1, 1, 3, 3, 8, 7), torch.randn(3, 2, 3, 3), padding=1),
                         ["kernel", "pacconv2d"]),
    "packernel2d guide": (lambda: PF.packernel2d(torch.randn(8, 8), kernel_size=3), ["input"]),
    "pac_conv2d guide": (lambda: PF.pac_conv2d(x_(), x_(H=7), torch.randn(3, 2, 3, 3), padding=1), ["guide", "input"]),
    # an even kernel read from the weight (no kernel_size given): the weight and its shape
    "pac_conv2d even weight": (lambda: PF.pac_conv2d(x_(), x_(), torch.randn(3, 2, 2, 3), padding="same"),
                               ["weight", r"\(3, 2, 2, 3\)", "odd"]),
    "pac_conv_transpose2d even weight": (lambda: PF.pac_conv_transpose2d(x_(), x_(H=16, W=16), torch.randn(2, 3, 3, 4),
                                                                         stride=2), ["weight", r"\(2, 3, 3, 4\)"]),
    "pacconv2d even weight": (lambda: PF.pacconv2d(x_(), torch.rand(1, 1, 2, 2, 8, 8), torch.randn(3, 2, 2, 2)),
                              ["weight", r"\(3, 2, 2, 2\)"]),
    "create_YXRGB scales": (lambda: pac_triton.create_YXRGB(torch.rand(1, 3, 4, 4), scales=[1.0, 2.0, 3.0]),
                            ["scales", "2 \\+ 3"]),
    "convert source": (lambda: pac_triton.convert_pacnet_state_dict([1, 2], torch.nn.Linear(1, 1)), ["source"],
                       TypeError),
    "convert model": (lambda: pac_triton.convert_pacnet_state_dict({}, "model"), ["model"], TypeError),
    "load model": (lambda: pac_triton.load_pacnet_state_dict({}, {}), ["model"], TypeError),
    "load state_dict": (lambda: pac_triton.load_pacnet_state_dict(torch.nn.Linear(1, 1), [1]), ["state_dict"],
                        TypeError),
    "crf channels": (lambda: pac_triton.PacCRF(0, 1), ["channels"]),
    "crf pairwise_kernels int": (lambda: pac_triton.PacCRF(3, 1, pairwise_kernels=5), ["pairwise_kernels", "int"],
                                 TypeError),
    "crf pairwise_kernels item": (lambda: pac_triton.PacCRF(3, 1, pairwise_kernels=[dict(kernel_size=3), 5]),
                                  [r"pairwise_kernels\[1\]", "int"], TypeError),
    "crf loose pairwise_kernels str": (lambda: pac_triton.PacCRFLoose(3, 1, pairwise_kernels="gaussian"),
                                       ["pairwise_kernels", "str"], TypeError),
    "crf num_steps bool": (lambda: pac_triton.PacCRF(3, True), ["num_steps", "True"]),
    "crf loose num_steps": (lambda: pac_triton.PacCRFLoose(3, -1), ["num_steps", "-1"]),
    "crf loose channels": (lambda: pac_triton.PacCRFLoose(0, 1), ["channels"]),
    "crf backend without passers": (lambda: pac_triton.PacCRF(3, 1, backend="bogus"), ["backend", "bogus"]),
    "crf loose backend": (lambda: pac_triton.PacCRFLoose(3, 0, backend="bogus"), ["backend", "bogus"]),
    "kernel_type nan": (lambda: PF.pac_conv2d(x_(), x_(), torch.randn(3, 2, 3, 3), padding=1,
                                              kernel_type="inv_nan_1"), ["kernel_type", "finite", "nan"]),
    "kernel_type inf": (lambda: pac_triton.PacConv2d(2, 3, 3, kernel_type="inv_1_inf"), ["kernel_type", "finite"]),
    "position feats shape": (lambda: pac_triton.create_position_feats(5), ["shape"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_errors_name_the_users_arguments(case):
    fn, patterns, *exc = CASES[case]
    msg = _message(fn, *(exc or [ValueError]))
    for pattern in patterns:
        assert re.search(pattern, msg), f"{case}: {msg!r} does not mention {pattern!r}"
    entry = [p for p in patterns if p in INTERNAL]
    _no_internal_name(msg, allowed=entry)


def test_swapped_layer_errors_name_input_and_guide():
    """``GuidedPacConv2d.forward(input, guide)`` (what ``swap_to_pac`` makes) names its own
    arguments, as ``GuidedPacConvTranspose2d`` does, not ``PacConv2d``'s pacnet names."""
    from pac_triton.swap import GuidedPacConv2d, GuidedPacConvTranspose2d
    for layer in (GuidedPacConv2d(2, 3, 3, padding=1), GuidedPacConvTranspose2d(2, 3, 3, padding=1)):
        msg = _message(lambda: layer(x_(), x_(H=7)))
        assert re.search(r"\bguide\b", msg) and re.search(r"\binput\b", msg), msg
        assert "input_2d" not in msg and "input_for_kernel" not in msg, msg
