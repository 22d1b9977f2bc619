"""The non-finite-value locality cases of ``test_hostile_inputs.py`` on the Triton backend
(through the interpreter on CPU): a NaN or Inf in the guide, in a precomputed K or in K itself
at a dropped tap (outside the input, between a transposed conv's input pixels, mask 0) reaches
nothing that does not read it, in the output and in every gradient.

The same test functions run with the module's backend switched to ``"triton"``, on a subset
of the cases that keeps CI's interpreter time down (between-pixel and masked-normalised
transposed taps, masked and smoothed conv, channel-wise pooling; NaN in a precomputed K, an
overflowing K at padded taps).
"""
from __future__ import annotations

import pytest

import test_hostile_inputs as base

triton_backend = pytest.importorskip("pac_triton.triton")
if not triton_backend.is_available()[0]:
    pytest.skip(f"Triton backend unavailable: {triton_backend.is_available()[1]}", allow_module_level=True)

TRITON_GUIDE_CASES = {
    "transposed-s2-between-pixels", "transposed-s2-mask-normalised", "conv-mask-smoothed", "pool-channel-wise",
}
TRITON_KERNEL_CASES = {"transposed-normalised", "transposed-mask-normalised"}


@pytest.fixture(autouse=True)
def _on_triton(monkeypatch):
    monkeypatch.setattr(base, "REF", dict(backend="triton"))


@pytest.mark.parametrize("op, guide_hw, options, pos",
                         [c for c in base.NAN_CASES if c.id in TRITON_GUIDE_CASES])
def test_nan_in_guide_reaches_only_what_its_valid_taps_read(op, guide_hw, options, pos):
    base.test_nan_in_guide_reaches_only_what_its_valid_taps_read(op, guide_hw, options, pos)


@pytest.mark.parametrize("options, pos", [c for c in base.KERNEL_NAN_CASES if c.id in TRITON_KERNEL_CASES])
def test_nan_in_guide_stays_local_in_a_normalised_or_masked_transposed_kernel(options, pos):
    base.test_nan_in_guide_stays_local_in_a_normalised_or_masked_transposed_kernel(options, pos)


@pytest.mark.parametrize("bad", [base.NAN, float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("op, kernel_type, normalize", base.MASKED_X_CASES)
def test_nonfinite_input_at_a_masked_pixel_leaves_the_guide_side_gradients_alone(op, kernel_type, normalize, bad):
    base.test_nonfinite_input_at_a_masked_pixel_leaves_the_guide_side_gradients_alone(op, kernel_type, normalize, bad)


@pytest.mark.parametrize("op", ["pacconv_transpose2d", "pacconv2d", "pacpool2d"])
def test_precomputed_kernel_nan_at_invalid_taps_contributes_nothing(op):
    base.test_precomputed_kernel_nan_at_invalid_taps_contributes_nothing(op, base.NAN)


@pytest.mark.parametrize("op", ["conv", "pool", "conv_transpose"])
def test_kernel_overflow_at_padded_taps_contributes_nothing(op):
    base.test_kernel_overflow_at_padded_taps_contributes_nothing(op, "inv_0.5_2")


def test_transposed_inf_weight_differs_from_the_reference_as_documented():
    """docs/semantics.md, "Non-finite weights": an Inf weight in a transposed conv (constant
    guide, so K = 1): the Triton output is exactly F.conv_transpose2d's non-finite pattern (no
    NaN here) and equal elsewhere; the reference, a conv over the zero-inserted input, gives NaN
    where the weight meets an inserted zero."""
    import torch
    import torch.nn.functional as F
    import pac_triton

    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 2, 4, 4, generator=g, dtype=torch.float64) + 0.1
    w = torch.randn(2, 2, 3, 3, generator=g, dtype=torch.float64)
    w[0, 0, 0, 0] = float("inf")
    guide = torch.ones(1, 1, 7, 7, dtype=torch.float64)
    exp = F.conv_transpose2d(x, w, stride=2, padding=1)
    got = pac_triton.pac_conv_transpose2d(x.float(), guide.float(), w.float(), stride=2, padding=1,
                                          backend="triton").double()
    ref = pac_triton.pac_conv_transpose2d(x, guide, w, stride=2, padding=1, backend="reference")
    assert not exp.isnan().any() and torch.isinf(exp).any()
    assert torch.equal(torch.isinf(got), torch.isinf(exp)) and not got.isnan().any()
    fin = torch.isfinite(exp)
    torch.testing.assert_close(got[fin], exp[fin], rtol=1e-5, atol=1e-5)
    assert ref.isnan().any()


def test_infinite_kernel_at_a_kept_tap_differs_from_the_reference_as_documented():
    """docs/semantics.md, "An infinite K at a kept tap": a given K of +Inf at one kept tap of a
    dense ``pacconv2d``: the Triton output there is ``Inf`` with the sign of the tap's channel
    sum ``W_t x`` (the kernels scale the sum by K), the reference's is NaN (it scales each
    channel by K before the weight sum: ``Inf - Inf``); every other pixel agrees."""
    import torch
    import pac_triton

    g = torch.Generator().manual_seed(0)
    B, C, O, H, W = 1, 3, 2, 5, 5
    x = torch.randn(B, C, H, W, generator=g, dtype=torch.float64)
    w = torch.randn(O, C, 3, 3, generator=g, dtype=torch.float64)
    K = torch.rand(B, 1, 3, 3, H, W, generator=g, dtype=torch.float64)
    K[0, 0, 1, 1, 2, 2] = float("inf")  # pixel (2, 2)'s centre tap, which reads x[:, 2, 2]
    tap_sum = torch.einsum("oc,c->o", w[:, :, 1, 1], x[0, :, 2, 2])
    prods = w[:, :, 1, 1] * x[0, :, 2, 2]
    assert ((prods > 0).any(1) & (prods < 0).any(1)).all()  # each output channel mixes signs
    got = pac_triton.pacconv2d(x, K, w, padding=1, backend="triton")
    ref = pac_triton.pacconv2d(x, K, w, padding=1, backend="reference")
    assert torch.equal(got[0, :, 2, 2], torch.sign(tap_sum) * float("inf"))
    assert ref[0, :, 2, 2].isnan().all()
    rest = torch.ones_like(got, dtype=torch.bool)
    rest[0, :, 2, 2] = False
    torch.testing.assert_close(got[rest], ref[rest], rtol=1e-9, atol=1e-12)
