"""Dense-CRF mean-field inference (spec section 6) against a step written here with
F.conv2d / F.unfold (not with the library's modules), plus the feature helpers."""
import pytest
import torch
import torch.nn.functional as F

import pac_triton
from pac_testing import assert_close_rel

EXACT = 1e-12


def _ceil_pad(sizes, factor):
    return tuple(((factor - n % factor) % factor + 1) // 2 for n in sizes)


def _blur(t, blur):
    """Average-pool with window and stride `blur`, count_include_pad=False, the spec's padding."""
    if blur == 1:
        return t
    return F.avg_pool2d(t, blur, blur, _ceil_pad(t.shape[-2:], blur), count_include_pad=False)


def _gauss_kernel_unfold(feat, k, d):
    """K[b, t, u, v] = exp(-0.5 * sum_c (f(tap t) - f(centre))^2), zero padding (k//2)*d."""
    B, D, H, W = feat.shape
    cols = F.unfold(feat, k, dilation=d, padding=(k // 2) * d).view(B, D, k * k, H, W)
    centre = cols[:, :, (k * k) // 2:(k * k) // 2 + 1]
    return torch.exp(-0.5 * (cols - centre).pow(2).sum(1))  # [B, k*k, H, W]


def _pac_message(Qb, K, weight, k, d, shared):
    B, C, H, W = Qb.shape
    cols = F.unfold(Qb, k, dilation=d, padding=(k // 2) * d).view(B, C, k * k, H, W) * K[:, None]
    if shared:  # weight [1, 1, k, k]
        return torch.einsum("bcthw,t->bchw", cols, weight.reshape(-1))
    return torch.einsum("bcthw,oct->bohw", cols, weight.reshape(weight.shape[0], C, k * k))


def manual_crf(unary, feat, kernels_spec, params, num_steps, final_output="log_Q", logQ=None):
    """Mean-field with plain torch ops. kernels_spec: list of dicts (kernel_size, dilation, blur,
    compat_type, spatial_filter); params: dict with 'unary_weight', 'weights' (list, None for a
    fixed crf_pool window), 'compat' (list of [C, C, 1, 1] or None) and 'pw' (pairwise factor)."""
    H, W = unary.shape[-2:]
    Ks = []
    for spec in kernels_spec:
        if spec["compat_type"] == "na":
            Ks.append(None)
        else:
            Ks.append(_gauss_kernel_unfold(_blur(feat, spec["blur"]), spec["kernel_size"], spec["dilation"]))
    logQ = unary if logQ is None else logQ
    for _ in range(num_steps):
        Q = F.softmax(logQ, dim=1)
        logQ = unary * params["unary_weight"]
        for i, spec in enumerate(kernels_spec):
            k, d, blur = spec["kernel_size"], spec["dilation"], spec["blur"]
            Qb = _blur(Q, blur)
            w = params["weights"][i]
            if spec["compat_type"] == "na":
                msg = F.conv2d(Qb, w, padding=(k // 2) * d, dilation=d)
            else:
                shared = spec["compat_type"] != "4d"
                msg = _pac_message(Qb, Ks[i], w, k, d, shared)
            if params["compat"][i] is not None:
                msg = F.conv2d(msg, params["compat"][i])
            if blur > 1:
                ph, pw_ = _ceil_pad(Q.shape[-2:], blur)
                msg = F.interpolate(msg, scale_factor=blur, mode="bilinear", align_corners=False)
                msg = msg[:, :, ph:ph + H, pw_:pw_ + W]
            logQ = logQ - msg * params["pw"][i]
    if final_output == "softmax":
        return F.softmax(logQ, dim=1)
    if final_output == "log_softmax":
        return F.log_softmax(logQ, dim=1)
    return logQ


KERNELS = [
    dict(kernel_size=3, dilation=1, blur=1, compat_type="4d", spatial_filter=True),
    dict(kernel_size=3, dilation=2, blur=1, compat_type="2d", spatial_filter=True),
    dict(kernel_size=3, dilation=1, blur=2, compat_type="potts", spatial_filter=False),
    dict(kernel_size=5, dilation=1, blur=3, compat_type="potts", spatial_filter=True),
    dict(kernel_size=3, dilation=1, blur=1, compat_type="na", spatial_filter=True),
]


def _randomise_and_read(crf, kernels_spec, seed=0):
    """Give every learnable CRF parameter a random value; return them for manual_crf."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in crf.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5 + (1.0 if p.dim() == 0 else 0.0))
    weights, compat, pw = [], [], []
    for i, spec in enumerate(kernels_spec):
        weights.append(crf.messengers[i].weight.detach())
        # pacnet keeps None in `compat` for passers without a compatibility conv; any weight-less
        # placeholder is as good
        cw = getattr(crf.compat[i], "weight", None) if crf.compat[i] is not None else None
        assert (cw is not None) == (spec["compat_type"] == "2d")
        compat.append(cw.detach() if cw is not None else None)
        init = -1.0 if spec["compat_type"] == "potts" else 1.0  # pairwise_weight=1.0, negated for potts
        learnable = spec["compat_type"] == "potts" and not spec["spatial_filter"] and not crf.fixed_weighting
        pw.append(crf.pairwise_weights[i].detach() if learnable else init)
    uw = crf.unary_weight.detach() if isinstance(crf.unary_weight, torch.Tensor) else crf.unary_weight
    return dict(unary_weight=uw, weights=weights, compat=compat, pw=pw)


@pytest.mark.parametrize("final_output", ["log_Q", "softmax", "log_softmax"])
def test_paccrf_one_step_matches_manual(final_output):
    C, H, W = 3, 7, 6
    unary = torch.randn(2, C, H, W, dtype=torch.float64)
    feat = torch.randn(2, 3, H, W, dtype=torch.float64) * 0.8
    crf = pac_triton.PacCRF(C, 1, final_output, pairwise_kernels=KERNELS, backend="reference").double()
    params = _randomise_and_read(crf, KERNELS)
    # the crf_pool window of the non-spatial potts passer is the fixed all-ones-but-centre buffer
    expected_pool = torch.ones(1, 1, 3, 3, dtype=torch.float64)
    expected_pool[0, 0, 1, 1] = 0
    assert torch.equal(crf.messengers[2].weight, expected_pool)
    assert "weight" not in dict(crf.messengers[2].named_parameters())
    out = crf(unary, feat)
    ref = manual_crf(unary, feat, KERNELS, params, 1, final_output)
    assert_close_rel(out, ref, EXACT, f"PacCRF(num_steps=1, {final_output})")


def test_paccrf_two_steps_and_given_logQ():
    C, H, W = 3, 6, 7
    unary = torch.randn(1, C, H, W, dtype=torch.float64)
    feat = torch.randn(1, 2, H, W, dtype=torch.float64)
    logQ0 = torch.randn(1, C, H, W, dtype=torch.float64)
    crf = pac_triton.PacCRF(C, 2, "log_softmax", pairwise_kernels=KERNELS[:3], backend="reference").double()
    params = _randomise_and_read(crf, KERNELS[:3], seed=1)
    assert_close_rel(crf(unary, feat), manual_crf(unary, feat, KERNELS[:3], params, 2, "log_softmax"),
                     EXACT, "PacCRF(num_steps=2)")
    assert_close_rel(crf(unary, feat, None, logQ0),
                     manual_crf(unary, feat, KERNELS[:3], params, 2, "log_softmax", logQ=logQ0), EXACT,
                     "PacCRF(logQ=...)")


def test_paccrf_fixed_weighting_and_unary_weight():
    C, H, W = 2, 5, 5
    spec = [dict(kernel_size=3, dilation=1, blur=1, compat_type="potts", spatial_filter=False)]
    crf = pac_triton.PacCRF(C, 1, fixed_weighting=True, unary_weight=0.7, pairwise_kernels=spec[0],
                            backend="reference").double()
    assert "unary_weight" not in crf.state_dict()
    assert "pairwise_weights.0" in crf.state_dict()
    unary = torch.randn(1, C, H, W, dtype=torch.float64)
    feat = torch.randn(1, 2, H, W, dtype=torch.float64)
    with torch.no_grad():  # fixed weighting: the learnable pairwise weight is NOT used
        crf.pairwise_weights[0].fill_(123.0)
    params = dict(unary_weight=0.7, weights=[crf.messengers[0].weight.detach()], compat=[None], pw=[-1.0])
    assert_close_rel(crf(unary, feat), manual_crf(unary, feat, spec, params, 1), EXACT, "fixed_weighting")


def test_paccrf_edge_feat_list_and_edge_kernel():
    C, H, W = 3, 6, 6
    spec = KERNELS[:2]
    crf = pac_triton.PacCRF(C, 1, pairwise_kernels=spec, backend="reference").double()
    params = _randomise_and_read(crf, spec, seed=2)
    unary = torch.randn(1, C, H, W, dtype=torch.float64)
    f0, f1 = torch.randn(1, 2, H, W, dtype=torch.float64), torch.randn(1, 4, H, W, dtype=torch.float64)
    out = crf(unary, [f0, f1])
    ref0 = manual_crf(unary, f0, spec, params, 1)
    ref1 = manual_crf(unary, f1, spec, params, 1)
    assert (out - ref0).abs().max() > 1e-6 and (out - ref1).abs().max() > 1e-6  # both features matter
    # passer i uses feature i: compare by giving precomputed kernels
    K0, _ = crf.messengers[0].compute_kernel(f0)
    K1, _ = crf.messengers[1].compute_kernel(f1)
    assert_close_rel(crf(unary, None, [K0, K1]), out, EXACT, "edge_kernel list == edge_feat list")
    expected_K0 = _gauss_kernel_unfold(f0, 3, 1).view(1, 1, 3, 3, H, W)
    assert_close_rel(K0, expected_K0, EXACT, "compute_kernel")
    # a single kernel tensor is shared by all passers
    K_single, _ = crf.messengers[0].compute_kernel(f0)
    single = crf(unary, None, K_single)
    assert_close_rel(single, crf(unary, None, [K_single, K_single]), EXACT, "edge_kernel tensor")


def test_paccrf_loose_matches_manual_steps():
    C, H, W = 3, 7, 7
    spec = KERNELS  # includes an 'na' passer: pacnet's loose CRF crashed there, ours skips it
    crf = pac_triton.PacCRFLoose(C, 2, "softmax", pairwise_kernels=spec, backend="reference").double()
    assert len(crf.steps) == 2
    unary = torch.randn(1, C, H, W, dtype=torch.float64)
    feat = torch.randn(1, 3, H, W, dtype=torch.float64)
    logQ = unary
    for i, step in enumerate(crf.steps):
        params = _randomise_and_read(step, spec, seed=10 + i)
        logQ = manual_crf(unary, feat, spec, params, 1, "log_Q", logQ=logQ)
    out = crf(unary, feat)
    assert_close_rel(out, F.softmax(logQ, dim=1), EXACT, "PacCRFLoose")


def test_paccrf_gradcheck():
    C, H, W = 2, 4, 4
    spec = [dict(kernel_size=3, dilation=1, blur=1, compat_type="4d", spatial_filter=True),
            dict(kernel_size=3, dilation=1, blur=2, compat_type="potts", spatial_filter=False),
            dict(kernel_size=3, dilation=1, blur=1, compat_type="2d", spatial_filter=True)]
    crf = pac_triton.PacCRF(C, 2, "log_softmax", pairwise_kernels=spec, backend="reference").double()
    unary = torch.randn(1, C, H, W, dtype=torch.float64, requires_grad=True)
    feat = torch.randn(1, 2, H, W, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda u, f: crf(u, f), (unary, feat), eps=1e-6, atol=1e-6, rtol=1e-4,
                                    fast_mode=True)
    out = crf(unary, feat)
    out.pow(2).sum().backward()
    for name, p in crf.named_parameters():
        if name == "pairwise_weights.0" or name == "pairwise_weights.2":
            continue  # not used in the update (spec section 6)
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, f"{name} got no gradient"


def test_create_position_feats():
    f = pac_triton.create_position_feats((3, 4))
    assert f.shape == (1, 2, 3, 4) and f.dtype == torch.float32
    assert torch.equal(f[0, 0], torch.arange(3.0).view(3, 1).expand(3, 4))
    assert torch.equal(f[0, 1], torch.arange(4.0).view(1, 4).expand(3, 4))
    f = pac_triton.create_position_feats((3, 4), scales=(2.0, 4.0), bs=2)
    assert f.shape == (2, 2, 3, 4)
    assert torch.allclose(f[1, 0], torch.arange(3.0).view(3, 1).expand(3, 4) / 2)
    assert torch.allclose(f[1, 1], torch.arange(4.0).view(1, 4).expand(3, 4) / 4)


def test_create_YXRGB():
    img = torch.rand(2, 3, 4, 5)
    f = pac_triton.create_YXRGB(img, yx_scale=(2.0, 2.0), rgb_scale=(0.5, 0.25, 1.0))
    assert f.shape == (2, 5, 4, 5)
    assert torch.allclose(f[:, 0], torch.arange(4.0).view(4, 1).expand(4, 5) / 2)
    assert torch.allclose(f[:, 1], torch.arange(5.0).view(1, 5).expand(4, 5) / 2)
    assert torch.allclose(f[:, 2:], img / torch.tensor([0.5, 0.25, 1.0]).view(1, 3, 1, 1))
    g = pac_triton.create_YXRGB(img, scales=(2.0, 2.0, 0.5, 0.25, 1.0))
    assert torch.allclose(f, g)
    # img is viewed as [-1, C, H, W]
    h = pac_triton.create_YXRGB(img.view(1, 2, 3, 4, 5))
    assert h.shape == (2, 5, 4, 5)
    assert torch.equal(h[:, 2:], img)
