"""The reference backend against closed forms and against a naive transcription of the spec.

- K == 1: pacconv2d == F.conv2d, pacconv_transpose2d == F.conv_transpose2d with the *same*
  weight, pacpool2d == kh*kw*avg_pool2d(count_include_pad=True); a constant guide with
  normalize_kernel gives avg_pool2d(count_include_pad=False).
- the guide-taking functions equal packernel2d followed by the pacnet-style operator;
- everything equals the loop-by-loop oracle of ``pac_testing`` (itself checked against
  pacnet's golden outputs in ``test_oracle_matches_golden``).
"""
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import pac_triton
from pac_testing import (Cfg, assert_close_rel, call_guide_api, call_oracle, call_pacnet_api, conv_out_size,
                         convt_out_size, inv_values, make_tensors, naive_pacconv2d, naive_pacconv_transpose2d,
                         naive_packernel2d, naive_pacpool2d, pair, random_cfg, smooth_values)

GOLDEN = Path(__file__).resolve().parent / "data" / "pacnet_golden.pt"  # copy of shared/golden
EXACT = 1e-12  # float64, same maths in a different order

# (kernel_size, stride, padding, dilation)
CONV_GEOMS = [
    (1, 1, 0, 1),
    (3, 1, 1, 1),
    (3, 2, 1, 1),
    (3, 1, 0, 2),
    (5, 2, 2, 1),
    (5, 3, 3, 2),
    ((3, 5), (2, 1), (1, 2), (1, 2)),
    ((5, 3), 1, (2, 1), (2, 1)),
]
# (kernel_size, stride, padding, output_padding, dilation)
CONVT_GEOMS = [
    (1, 1, 0, 0, 1),
    (3, 1, 1, 0, 1),
    (3, 2, 1, 1, 1),
    (5, 2, 2, 1, 1),
    (3, 3, 0, 2, 1),
    (3, 1, 2, 1, 2),   # output_padding < dilation with stride 1
    (3, 2, 1, 0, 2),
    ((3, 5), (2, 1), (1, 2), (1, 0), (1, 2)),
]


def _ones_kernel(B, k, out_hw, channels=1, dtype=torch.float64):
    kh, kw = pair(k)
    return torch.ones(B, channels, kh, kw, *out_hw, dtype=dtype)


# ----------------------------------------------------------------------------------------------
# The oracle itself, against pacnet's own outputs.
# ----------------------------------------------------------------------------------------------

def test_oracle_matches_golden():
    """Guards the oracle used below: it reproduces every golden layer case of pacnet."""
    golden = torch.load(GOLDEN, weights_only=True)
    n = 0
    for c in golden["cases"]:
        if c["module"] not in ("PacConv2d", "PacConvTranspose2d", "PacPool2d"):
            continue
        init, sd = c["init"], c["state_dict"]
        x, f = c["inputs"][0], c["inputs"][1]
        mask = c["inputs"][3] if len(c["inputs"]) > 3 else None
        k, s, p = init["kernel_size"], init.get("stride", 1), init.get("padding", 0)
        d, op = init.get("dilation", 1), init.get("output_padding", 0)
        transposed = c["module"] == "PacConvTranspose2d"
        K, om = naive_packernel2d(f, mask, k, s, p, op, d, init.get("kernel_type", "gaussian"),
                                  sd.get("smooth_kernel"), sd.get("inv_alpha"), sd.get("inv_lambda"),
                                  init.get("channel_wise", False), init.get("normalize_kernel", False), transposed)
        if c["module"] == "PacConv2d":
            y = naive_pacconv2d(x, K, sd["weight"], sd.get("bias"), s, p, d, init.get("shared_filters", False))
        elif transposed:  # golden weights are in pacnet's (flipped) convention
            y = naive_pacconv_transpose2d(x, K, sd["weight"].flip(-2, -1), sd.get("bias"), s, p, op, d,
                                          init.get("shared_filters", False))
        else:
            y = naive_pacpool2d(x, K, k, s, p, d)
        assert_close_rel(y, c["output"], 1e-12, f"oracle {c['name']}")
        if c["out_mask"] is not None:
            assert torch.equal(om, c["out_mask"].double())
        n += 1
    assert n == 12


@pytest.mark.parametrize("geom", CONVT_GEOMS[:5])
def test_oracle_convT_with_ones_is_conv_transpose2d(geom):
    k, s, p, op, d = geom
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64)
    w = torch.randn(2, 3, *pair(k), dtype=torch.float64)
    ref = F.conv_transpose2d(x, w, None, s, p, op, 1, d)
    y = naive_pacconv_transpose2d(x, _ones_kernel(1, k, ref.shape[-2:]), w, None, s, p, op, d)
    assert_close_rel(y, ref, EXACT, "oracle convT K=1")


# ----------------------------------------------------------------------------------------------
# K == 1
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("geom", CONV_GEOMS)
@pytest.mark.parametrize("shared", [False, True])
def test_pacconv2d_ones_equals_conv2d(geom, shared):
    k, s, p, d = geom
    B, C, Cout = 2, 3, 4
    x = torch.randn(B, C, 8, 9, dtype=torch.float64)
    b = torch.randn(C if shared else Cout, dtype=torch.float64)
    if shared:
        w = torch.randn(1, 1, *pair(k), dtype=torch.float64)
        ref = F.conv2d(x, w.expand(C, 1, *pair(k)), b, s, p, d, groups=C)
    else:
        w = torch.randn(Cout, C, *pair(k), dtype=torch.float64)
        ref = F.conv2d(x, w, b, s, p, d)
    K = _ones_kernel(B, k, ref.shape[-2:])
    y = pac_triton.pacconv2d(x, K, w, b, s, p, d, shared, backend="reference")
    assert y.dtype == torch.float64
    assert_close_rel(y, ref, EXACT, "pacconv2d(K=1)")
    # without bias, and with keyword arguments
    y = pac_triton.pacconv2d(x, K, w, stride=s, padding=p, dilation=d, shared_filters=shared, backend="reference")
    assert_close_rel(y + b.view(1, -1, 1, 1), ref, EXACT, "pacconv2d(K=1, no bias)")


@pytest.mark.parametrize("geom", CONVT_GEOMS)
@pytest.mark.parametrize("shared", [False, True])
def test_pacconv_transpose2d_ones_equals_conv_transpose2d_same_weight(geom, shared):
    k, s, p, op, d = geom
    B, C, Cout = 2, 3, 2
    x = torch.randn(B, C, 4, 5, dtype=torch.float64)
    b = torch.randn(C if shared else Cout, dtype=torch.float64)
    kh, kw = pair(k)
    w = torch.randn(1, 1, kh, kw, dtype=torch.float64) if shared else torch.randn(C, Cout, kh, kw, dtype=torch.float64)
    if shared:
        ref = F.conv_transpose2d(x, w.expand(C, 1, kh, kw), b, s, p, op, C, d)
    else:
        ref = F.conv_transpose2d(x, w, b, s, p, op, 1, d)
    K = _ones_kernel(B, k, ref.shape[-2:])
    y = pac_triton.pacconv_transpose2d(x, K, w, b, s, p, op, d, shared, backend="reference")
    assert_close_rel(y, ref, EXACT, "pacconv_transpose2d(K=1)")
    # the same with nn.ConvTranspose2d: its weight is usable unchanged
    if not shared:
        m = torch.nn.ConvTranspose2d(C, Cout, k, s, p, op, 1, True, d).double()
        with torch.no_grad():
            m.weight.copy_(w)
            m.bias.copy_(b)
        assert_close_rel(y, m(x), EXACT, "vs nn.ConvTranspose2d")


@pytest.mark.parametrize("geom", [g for g in CONV_GEOMS])
@pytest.mark.parametrize("kernel_channels", ["one", "per_channel"])
def test_pacpool2d_ones_is_sum_pool(geom, kernel_channels):
    k, s, p, d = geom
    kh, kw = pair(k)
    B, C = 2, 3
    x = torch.randn(B, C, 8, 9, dtype=torch.float64)
    # avg_pool2d has no dilation (and limits padding): a depthwise all-ones conv covers the rest
    ref = F.conv2d(x, torch.ones(C, 1, kh, kw, dtype=torch.float64), None, s, p, d, groups=C)
    K = _ones_kernel(B, k, ref.shape[-2:], channels=1 if kernel_channels == "one" else C)
    y = pac_triton.pacpool2d(x, K, k, s, p, d, backend="reference")
    assert_close_rel(y, ref, EXACT, "pacpool2d(K=1) vs depthwise ones conv")
    if pair(d) == (1, 1) and all(pp <= kk // 2 for pp, kk in zip(pair(p), (kh, kw))):
        avg = F.avg_pool2d(x, (kh, kw), s, p, count_include_pad=True)
        assert_close_rel(y, kh * kw * avg, EXACT, "pacpool2d(K=1) vs kh*kw*avg_pool2d")


@pytest.mark.parametrize("geom", [(3, 1, 1), (3, 2, 1), (5, 2, 2), (5, 1, 1), ((3, 5), (1, 2), (1, 2)), (3, 2, 0)])
@pytest.mark.parametrize("kernel_type", ["gaussian", "inv_0.5_1.5", "inv_1.0_0.5_asym_fixed"])
@pytest.mark.parametrize("channel_wise", [False, True])
def test_normalized_pool_constant_guide_is_avg_pool_exclude_pad(geom, kernel_type, channel_wise):
    k, s, p = geom
    B, C = 2, 3
    x = torch.randn(B, C, 7, 8, dtype=torch.float64)
    guide = torch.zeros(B, C if channel_wise else 2, 7, 8, dtype=torch.float64)
    ref = F.avg_pool2d(x, k, s, p, count_include_pad=False)
    y = pac_triton.pac_pool2d(x, guide, k, stride=s, padding=p, kernel_type=kernel_type, normalize_kernel=True,
                              channel_wise=channel_wise, backend="reference")
    assert_close_rel(y, ref, EXACT, "normalised pac_pool2d")
    out_channels = C if (channel_wise and kernel_type.startswith("inv") and not kernel_type.endswith("fixed")) else -1
    pool = pac_triton.PacPool2d(k, s, p, kernel_type=kernel_type, channel_wise=channel_wise, normalize_kernel=True,
                                out_channels=out_channels, backend="reference").double()
    assert_close_rel(pool(x, guide), ref, EXACT, "PacPool2d(normalize_kernel=True)")


@pytest.mark.parametrize("geom", CONV_GEOMS[1:6])
def test_zero_guide_gaussian_conv_is_conv2d(geom):
    """A constant guide makes the gaussian K == 1 everywhere (also outside the image)."""
    k, s, p, d = geom
    x = torch.randn(2, 3, 8, 7, dtype=torch.float64)
    w = torch.randn(4, 3, *pair(k), dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64)
    guide = torch.zeros(2, 2, 8, 7, dtype=torch.float64)
    y = pac_triton.pac_conv2d(x, guide, w, b, stride=s, padding=p, dilation=d, backend="reference")
    assert_close_rel(y, F.conv2d(x, w, b, s, p, d), EXACT, "pac_conv2d(zero guide)")


@pytest.mark.parametrize("geom", CONVT_GEOMS[1:6])
def test_zero_guide_gaussian_convT_is_conv_transpose2d(geom):
    k, s, p, op, d = geom
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    w = torch.randn(3, 2, *pair(k), dtype=torch.float64)
    b = torch.randn(2, dtype=torch.float64)
    ref = F.conv_transpose2d(x, w, b, s, p, op, 1, d)
    guide = torch.zeros(2, 2, *ref.shape[-2:], dtype=torch.float64)
    y = pac_triton.pac_conv_transpose2d(x, guide, w, b, stride=s, padding=p, output_padding=op, dilation=d,
                                        backend="reference")
    assert_close_rel(y, ref, EXACT, "pac_conv_transpose2d(zero guide)")
    m = pac_triton.PacConvTranspose2d(3, 2, k, s, p, op, d, backend="reference").double()
    with torch.no_grad():
        m.weight.copy_(w)
        m.bias.copy_(b)
    assert_close_rel(m(x, guide), ref, EXACT, "PacConvTranspose2d(zero guide)")


# ----------------------------------------------------------------------------------------------
# Against the oracle, with kernels that are not constant.
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("geom", CONV_GEOMS)
def test_pacconv2d_random_kernel_matches_oracle(geom):
    k, s, p, d = geom
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64)
    w = torch.randn(4, 3, *pair(k), dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64)
    Ho, Wo = (conv_out_size(n, kk, ss, pp, dd) for n, kk, ss, pp, dd in zip((7, 8), pair(k), pair(s), pair(p), pair(d)))
    K = torch.rand(2, 1, *pair(k), Ho, Wo, dtype=torch.float64)
    y = pac_triton.pacconv2d(x, K, w, b, s, p, d, backend="reference")
    assert_close_rel(y, naive_pacconv2d(x, K, w, b, s, p, d), EXACT, "pacconv2d")
    ws = torch.randn(1, 1, *pair(k), dtype=torch.float64)
    y = pac_triton.pacconv2d(x, K, ws, None, s, p, d, True, backend="reference")
    assert_close_rel(y, naive_pacconv2d(x, K, ws, None, s, p, d, True), EXACT, "pacconv2d shared")


@pytest.mark.parametrize("geom", CONVT_GEOMS)
def test_pacconv_transpose2d_random_kernel_matches_oracle(geom):
    """Catches a wrong pairing of weight taps with K taps (spec section 3)."""
    k, s, p, op, d = geom
    x = torch.randn(2, 3, 4, 3, dtype=torch.float64)
    w = torch.randn(3, 2, *pair(k), dtype=torch.float64)
    b = torch.randn(2, dtype=torch.float64)
    Ho, Wo = (convt_out_size(n, kk, ss, pp, oo, dd)
              for n, kk, ss, pp, oo, dd in zip((4, 3), pair(k), pair(s), pair(p), pair(op), pair(d)))
    K = torch.rand(2, 1, *pair(k), Ho, Wo, dtype=torch.float64)
    y = pac_triton.pacconv_transpose2d(x, K, w, b, s, p, op, d, backend="reference")
    assert_close_rel(y, naive_pacconv_transpose2d(x, K, w, b, s, p, op, d), EXACT, "pacconv_transpose2d")
    ws = torch.randn(1, 1, *pair(k), dtype=torch.float64)
    y = pac_triton.pacconv_transpose2d(x, K, ws, None, s, p, op, d, True, backend="reference")
    assert_close_rel(y, naive_pacconv_transpose2d(x, K, ws, None, s, p, op, d, True), EXACT,
                     "pacconv_transpose2d shared")


@pytest.mark.parametrize("geom", CONV_GEOMS)
@pytest.mark.parametrize("kernel_channels", [1, 3])
def test_pacpool2d_random_kernel_matches_oracle(geom, kernel_channels):
    k, s, p, d = geom
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64)
    Ho, Wo = (conv_out_size(n, kk, ss, pp, dd) for n, kk, ss, pp, dd in zip((7, 8), pair(k), pair(s), pair(p), pair(d)))
    K = torch.rand(2, kernel_channels, *pair(k), Ho, Wo, dtype=torch.float64)
    y = pac_triton.pacpool2d(x, K, k, s, p, d, backend="reference")
    assert_close_rel(y, naive_pacpool2d(x, K, k, s, p, d), EXACT, "pacpool2d")


def _check_against_oracle(cfg, t):
    y_ref, K_ref, om_ref = call_oracle(cfg, t)
    alpha, lam = inv_values(cfg, t)
    smooth = smooth_values(cfg, t)
    K, om = pac_triton.packernel2d(t["guide"], t["mask"], cfg.k, cfg.s, cfg.p, cfg.out_pad, cfg.d, cfg.kernel_type,
                                   cfg.smooth, smooth, alpha, lam, cfg.channel_wise, cfg.normalize,
                                   cfg.op == "convT", backend="reference")
    assert_close_rel(K, K_ref, EXACT, f"K {cfg}")
    if cfg.mask:
        assert om is not None, "out_mask must be returned when a mask is given"
        assert om.dtype == t["guide"].dtype
        assert torch.equal(om.double(), om_ref), f"out_mask differs for {cfg}"
    else:
        assert om is None, "out_mask must be None without a mask"
    out = call_guide_api(cfg, t)
    y = out[0] if cfg.mask else out
    if cfg.mask:
        assert torch.equal(out[1].double(), om_ref)
    assert_close_rel(y, y_ref, EXACT, f"y {cfg}")
    assert not torch.isnan(y).any()


@pytest.mark.parametrize("seed", range(16))
def test_random_configs_match_oracle(seed):
    cfg = random_cfg(random.Random(7000 + seed))
    t = make_tensors(cfg, seed=seed)
    _check_against_oracle(cfg, t)


@pytest.mark.parametrize("cfg", [
    # transposed, stride larger than the kernel: pixels with no valid tap (pacnet: NaN, ours: 0)
    Cfg("convT", B=1, C=2, Cout=2, D=2, H=3, W=3, k=1, s=2, out_pad=1, mask=True),
    Cfg("convT", B=1, C=2, Cout=2, D=2, H=3, W=4, k=3, s=2, d=2, out_pad=1, mask=True),
    Cfg("convT", B=1, C=2, Cout=2, D=2, H=3, W=4, k=3, s=2, d=2, out_pad=1, normalize=True),
    Cfg("convT", B=2, C=2, Cout=3, D=1, H=4, W=3, k=5, s=2, p=2, out_pad=1, mask=True, normalize=True),
    Cfg("convT", B=1, C=2, Cout=3, D=2, H=4, W=4, k=3, s=2, p=1, out_pad=1, smooth="gaussian",
        kernel_type="inv_0.5_1.5_asym"),
    # smoothing window centred on the centre tap under dilation (a Differs of the spec)
    Cfg("conv", B=1, C=2, Cout=2, D=2, H=8, W=7, k=3, s=1, p=2, d=2, smooth="average_3"),
    Cfg("conv", B=1, C=2, Cout=2, D=2, H=8, W=7, k=3, s=2, p=1, d=2, smooth="full_3", normalize=True),
    Cfg("pool", B=1, C=3, D=3, H=7, W=6, k=3, s=2, p=1, channel_wise=True, normalize=True, mask=True,
        kernel_type="inv_0.3_0.7"),
    Cfg("pool", B=1, C=3, D=3, H=7, W=6, k=3, s=1, p=1, channel_wise=True, mask=True),
    # explicit inv_alpha / inv_lambda vs the defaults from the name
    Cfg("conv", B=1, C=2, Cout=2, D=2, H=6, W=6, k=3, p=1, kernel_type="inv_0.5_1.5", explicit_inv=False),
    Cfg("conv", B=1, C=2, Cout=2, D=3, H=6, W=6, k=3, p=1, kernel_type="inv_0.5_1.5_asym", mask=True,
        normalize=True),
], ids=lambda c: f"{c.op}-k{c.k}-s{c.s}-d{c.d}-{c.kernel_type}-{c.smooth}-m{int(c.mask)}-n{int(c.normalize)}")
def test_targeted_configs_match_oracle(cfg):
    t = make_tensors(cfg, seed=3)
    _check_against_oracle(cfg, t)


def test_no_valid_tap_gives_zero_and_out_mask_zero():
    """Transposed, s=2 > k=1: every other output row/col has no valid tap at all."""
    cfg = Cfg("convT", B=1, C=2, Cout=2, D=2, H=3, W=3, k=1, s=2, out_pad=1, mask=True)
    t = make_tensors(cfg, seed=1)
    t["mask"] = torch.ones_like(t["mask"])
    y, om = call_guide_api(cfg, t)
    assert not torch.isnan(y).any()
    assert om[0, 0, 0, 0, 1::2, :].eq(0).all() and om[0, 0, 0, 0, :, 1::2].eq(0).all()
    assert om[0, 0, 0, 0, ::2, ::2].eq(1).all()
    assert torch.equal(y[:, :, 1::2, :], t["bias"].view(1, -1, 1, 1).expand_as(y[:, :, 1::2, :]))


@pytest.mark.parametrize("seed", range(10))
def test_guide_api_equals_packernel_then_operator(seed):
    cfg = random_cfg(random.Random(9100 + seed))
    t = make_tensors(cfg, seed=seed)
    out = call_guide_api(cfg, t)
    y_p, om_p = call_pacnet_api(cfg, t)
    if cfg.mask:
        assert isinstance(out, tuple) and len(out) == 2
        y, om = out
        assert torch.equal(om, om_p)
    else:
        assert isinstance(out, torch.Tensor)
        y = out
        assert om_p is None
    assert_close_rel(y, y_p, EXACT, f"guide api vs pacnet api {cfg}")


def test_guide_api_gradients_equal_pacnet_api_gradients():
    cfg = Cfg("conv", B=2, C=2, Cout=3, D=2, H=6, W=5, k=3, p=1, kernel_type="inv_0.5_1.5", smooth="full_3",
              normalize=True, mask=True)
    grads = []
    for call in (lambda t: call_guide_api(cfg, t)[0], lambda t: call_pacnet_api(cfg, t)[0]):
        t = make_tensors(cfg, requires_grad=True, seed=4)
        y = call(t)
        keys = ["x", "guide", "weight", "bias", "inv_alpha", "inv_lambda", "smooth_kernel"]
        gs = torch.autograd.grad((y * torch.arange(y.numel(), dtype=y.dtype).view_as(y).sin()).sum(),
                                 [t[k] for k in keys])
        grads.append(dict(zip(keys, gs)))
    for k in grads[0]:
        assert_close_rel(grads[0][k], grads[1][k], EXACT, f"grad {k}")


def test_mask_gets_no_gradient():
    cfg = Cfg("conv", B=1, C=2, Cout=2, D=2, H=6, W=6, k=3, p=1, mask=True)
    t = make_tensors(cfg, requires_grad=True)
    mask = t["mask"].clone().requires_grad_(True)
    t["mask"] = mask
    y, om = call_guide_api(cfg, t)
    y.sum().backward()
    leaked = 0 if mask.grad is None else int(torch.count_nonzero(mask.grad))
    assert leaked == 0, f"the mask received a gradient at {leaked} pixels (spec section 1: the mask is a constant)"
    assert t["guide"].grad is not None and torch.count_nonzero(t["guide"].grad) > 0
    K, om2 = pac_triton.packernel2d(t["guide"], mask, 3, padding=1, backend="reference")
    assert not om2.requires_grad


def test_auto_backend_on_cpu_equals_reference():
    cfg = Cfg("conv", B=1, C=2, Cout=2, D=2, H=6, W=6, k=3, p=1, kernel_type="inv_0.5_1.5", normalize=True)
    t = make_tensors(cfg)
    assert torch.equal(call_guide_api(cfg, t, backend="auto"), call_guide_api(cfg, t, backend="reference"))
    assert torch.equal(call_guide_api(cfg, t, backend=None), call_guide_api(cfg, t, backend="reference"))
