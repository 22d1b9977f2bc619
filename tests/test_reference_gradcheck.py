"""torch.autograd.gradcheck (float64) of every operator of the reference backend.

Every option value appears at least once, for the guide-taking functions and for the pacnet-style
``packernel2d`` + operator chain; the guide (through K, the centre feature and the smoothing
window), ``inv_alpha``/``inv_lambda`` (0-d tensors, or vectors for channel-wise pooling), a
learnable smoothing kernel, weight, bias and a precomputed kernel all take part. Random option
combinations from a fixed seed follow. Shapes are tiny to keep this fast.
"""
import random

import pytest
import torch

import pac_triton
from pac_testing import Cfg, call_guide_api, call_pacnet_api, fixed_smooth_kernel, make_tensors, pair, random_cfg

GRAD_KEYS = ("x", "guide", "weight", "bias", "inv_alpha", "inv_lambda", "smooth_kernel")


def _gradcheck(fn, inputs, fast=False):
    assert all(t.dtype == torch.float64 for t in inputs)
    assert torch.autograd.gradcheck(fn, tuple(inputs), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=fast)


def _check_cfg(cfg, api, fast=False, seed=0):
    t = make_tensors(cfg, requires_grad=True, seed=seed)
    smooth_override = None
    if api == "pacnet" and cfg.smooth not in ("none", "full_3"):
        # the pacnet-style packernel2d takes the window as a tensor: let it be learnable too
        smooth_override = fixed_smooth_kernel(cfg.smooth).requires_grad_(True)
    keys = [k for k in GRAD_KEYS if t.get(k) is not None and t[k].requires_grad]
    leaves = [t[k] for k in keys]
    if smooth_override is not None:
        leaves.append(smooth_override)
    # every differentiable input this configuration has must be among the checked ones
    assert "x" in keys and "guide" in keys
    if cfg.is_inv and not cfg.is_fixed:
        assert "inv_alpha" in keys and "inv_lambda" in keys
    if cfg.smooth == "full_3":
        assert "smooth_kernel" in keys

    def fn(*args):
        tt = dict(t)
        tt.update(zip(keys, args[:len(keys)]))
        if api == "guide":
            out = call_guide_api(cfg, tt)
            y = out[0] if cfg.mask else out
        else:
            y, _ = call_pacnet_api(cfg, tt, smooth_kernel=args[len(keys)] if smooth_override is not None else None)
        return y

    _gradcheck(fn, leaves, fast=fast)


def _conv(**kw):
    base = dict(B=1, C=2, Cout=2, D=2, H=5, W=5, k=3, p=1)
    base.update(kw)
    return Cfg("conv", **base)


def _convT(**kw):
    base = dict(B=1, C=2, Cout=2, D=2, H=3, W=3, k=3, s=2, p=1, out_pad=1)
    base.update(kw)
    return Cfg("convT", **base)


def _pool(**kw):
    base = dict(B=1, C=2, D=2, H=5, W=5, k=3, p=1)
    base.update(kw)
    return Cfg("pool", **base)


OPTION_CASES = {
    # kernel types
    "conv-gaussian": _conv(),
    "conv-inv": _conv(kernel_type="inv_0.5_1.5"),
    "conv-inv-asym": _conv(kernel_type="inv_1.0_0.5_asym"),
    "conv-inv-fixed": _conv(kernel_type="inv_0.3_0.7_fixed"),
    "conv-inv-asym-fixed": _conv(kernel_type="inv_0.2_1.2_asym_fixed"),
    "convT-inv-asym": _convT(kernel_type="inv_1.0_0.5_asym"),
    "pool-inv": _pool(kernel_type="inv_0.5_1.5"),
    # smoothing
    "conv-smooth-gaussian": _conv(smooth="gaussian"),
    "conv-smooth-average3": _conv(smooth="average_3"),
    "conv-smooth-full3": _conv(smooth="full_3", kernel_type="inv_0.5_1.5_asym"),
    "convT-smooth-full3": _convT(smooth="full_3"),
    "pool-smooth-full3": _pool(smooth="full_3"),
    # normalisation and masks
    "conv-normalize": _conv(normalize=True),
    "conv-mask": _conv(mask=True),
    "conv-mask-normalize": _conv(mask=True, normalize=True, kernel_type="inv_0.5_1.5"),
    "convT-normalize": _convT(normalize=True),
    "convT-mask": _convT(mask=True),
    "convT-mask-normalize": _convT(mask=True, normalize=True),
    "pool-normalize": _pool(normalize=True),
    "pool-mask": _pool(mask=True),
    # channel-wise pooling
    "pool-cw": _pool(channel_wise=True),
    "pool-cw-inv-vector": _pool(channel_wise=True, kernel_type="inv_0.3_0.7", normalize=True),
    "pool-cw-inv-fixed-mask": _pool(channel_wise=True, kernel_type="inv_0.3_0.7_fixed", mask=True),
    "pool-cw-mask-normalize": _pool(channel_wise=True, mask=True, normalize=True),
    # shared filters, bias
    "conv-shared": _conv(shared=True),
    "convT-shared": _convT(shared=True),
    "conv-nobias": _conv(bias=False),
    # geometry
    "conv-s2-d2": _conv(H=7, W=6, s=2, p=2, d=2),
    "conv-nonsquare": _conv(H=5, W=6, k=(3, 5), s=(2, 1), p=(1, 2), d=(1, 2), smooth="gaussian"),
    "conv-k1": _conv(k=1, p=0),
    "convT-s1-d2-op1": _convT(s=1, p=2, d=2, out_pad=1),
    "convT-nonsquare": _convT(k=(3, 5), s=(2, 1), p=(1, 2), out_pad=(1, 0)),
    "pool-s2-d2": _pool(H=7, W=7, s=2, d=2, p=1),
}


# Full Jacobians for these (every operator, every kind of differentiable input: the guide
# through K and the smoothing window, the inv parameters as scalars and as channel vectors, the
# mask and normalisation, non-square strided / dilated geometry); gradcheck's fast mode (the
# Jacobian against random vectors on both sides, v^T J u, numerically and analytically) for
# the other cases and for the pacnet-style chain (same maths, other entry point). The reference
# is plain autograd: what these catch is a path that drops a gradient (a detach, an integer
# cast, a non-differentiable mask), which any random projection sees.
FULL_JACOBIAN = ("conv-gaussian", "conv-smooth-full3", "conv-mask-normalize", "conv-nonsquare", "convT-nonsquare",
                 "convT-mask-normalize", "pool-cw-inv-vector", "pool-smooth-full3")


@pytest.mark.parametrize("api", ["guide", "pacnet"])
@pytest.mark.parametrize("name", list(OPTION_CASES))
def test_gradcheck_options(name, api):
    _check_cfg(OPTION_CASES[name], api, fast=(api == "pacnet" or name not in FULL_JACOBIAN))


@pytest.mark.parametrize("seed", range(10))
def test_gradcheck_random_combinations(seed):
    cfg = random_cfg(random.Random(424242 + seed))
    print(cfg)
    _check_cfg(cfg, "guide" if seed % 2 == 0 else "pacnet", fast=True, seed=seed)


# ----------------------------------------------------------------------------------------------
# Operators with a precomputed kernel, and packernel2d alone.
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shared", [False, True])
def test_gradcheck_pacconv2d_precomputed_kernel(shared):
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    K = torch.rand(1, 1, 3, 3, 3, 3, dtype=torch.float64, requires_grad=True)  # s=2, p=1: 3x3 output
    w = torch.randn(1 if shared else 3, 1 if shared else 2, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2 if shared else 3, dtype=torch.float64, requires_grad=True)
    _gradcheck(lambda *a: pac_triton.pacconv2d(*a, stride=2, padding=1, shared_filters=shared, backend="reference"),
               [x, K, w, b])


@pytest.mark.parametrize("shared", [False, True])
def test_gradcheck_pacconv_transpose2d_precomputed_kernel(shared):
    x = torch.randn(1, 2, 3, 2, dtype=torch.float64, requires_grad=True)
    # s=2, p=1, op=1, k=3: 6x4 output
    K = torch.rand(1, 1, 3, 3, 6, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(1 if shared else 2, 1 if shared else 3, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2 if shared else 3, dtype=torch.float64, requires_grad=True)
    _gradcheck(lambda *a: pac_triton.pacconv_transpose2d(*a, stride=2, padding=1, output_padding=1,
                                                         shared_filters=shared, backend="reference"),
               [x, K, w, b])


@pytest.mark.parametrize("kernel_channels", [1, 2])
def test_gradcheck_pacpool2d_precomputed_kernel(kernel_channels):
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    K = torch.rand(1, kernel_channels, 3, 3, 3, 3, dtype=torch.float64, requires_grad=True)  # d=2, p=1
    _gradcheck(lambda a, k: pac_triton.pacpool2d(a, k, 3, 1, 1, 2, backend="reference"), [x, K])


@pytest.mark.parametrize("case", [
    dict(kernel_type="gaussian", channel_wise=True),
    dict(kernel_type="inv_0.5_1.5_asym", smooth_kernel_type="full_3", normalize_kernel=True),
    dict(kernel_type="inv_0.3_0.7", channel_wise=True, normalize_kernel=True, mask=True, vector=True),
    dict(kernel_type="gaussian", transposed=True, mask=True, stride=2, output_padding=1),
    dict(kernel_type="inv_1.0_0.5", transposed=True, normalize_kernel=True, stride=2, dilation=2,
         output_padding=1, smooth_kernel_type="average_3"),
], ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_gradcheck_packernel2d(case):
    case = dict(case)
    use_mask, vector = case.pop("mask", False), case.pop("vector", False)
    transposed = case.get("transposed", False)
    D = 2
    Hg, Wg = (6, 4) if transposed else (5, 5)
    guide = (0.7 * torch.randn(1, D, Hg, Wg, dtype=torch.float64)).requires_grad_(True)
    leaves, names = [guide], ["guide"]
    if case["kernel_type"].startswith("inv_"):
        shape = (D,) if vector else ()
        leaves += [torch.full(shape, 0.4, dtype=torch.float64, requires_grad=True),
                   torch.full(shape, 1.3, dtype=torch.float64, requires_grad=True)]
        names += ["inv_alpha", "inv_lambda"]
    if case.get("smooth_kernel_type", "none") != "none":
        leaves.append((fixed_smooth_kernel(case["smooth_kernel_type"]) * (1 + 0.2 * torch.rand(1, 1, 3, 3,
                      dtype=torch.float64))).requires_grad_(True))
        names.append("smooth_kernel")
    mask = None
    if use_mask:
        in_hw = (3, 2) if transposed else (Hg, Wg)
        mask = (torch.rand(1, 1, *in_hw) > 0.3).double()

    def fn(*args):
        kw = dict(case)
        kw.update(zip(names[1:], args[1:]))
        K, _ = pac_triton.packernel2d(args[0], mask, kernel_size=3, padding=1, backend="reference", **kw)
        return K

    _gradcheck(fn, leaves)


def test_gradcheck_packernel2d_nonsquare_geometry():
    guide = torch.randn(1, 2, 6, 7, dtype=torch.float64, requires_grad=True)
    _gradcheck(lambda g: pac_triton.packernel2d(g, kernel_size=(3, 5), stride=(2, 1), padding=(1, 2),
                                                dilation=(2, 1), backend="reference")[0], [guide])


def test_gradcheck_covers_every_option_value():
    """Bookkeeping: each option value of the spec occurs in OPTION_CASES."""
    cases = list(OPTION_CASES.values())
    kernel_types = {c.kernel_type.replace("0.5_1.5", "A").replace("1.0_0.5", "A").replace("0.3_0.7", "A")
                    .replace("0.2_1.2", "A") for c in cases}
    assert {"gaussian", "inv_A", "inv_A_asym", "inv_A_fixed", "inv_A_asym_fixed"} <= kernel_types
    assert {"none", "gaussian", "average_3", "full_3"} <= {c.smooth for c in cases}
    for op in ("conv", "convT", "pool"):
        assert any(c.op == op and c.mask for c in cases)
        assert any(c.op == op and c.normalize for c in cases)
        assert any(c.op == op and c.mask and c.normalize for c in cases)
    assert any(c.channel_wise for c in cases)
    assert any(c.shared and c.op == "conv" for c in cases) and any(c.shared and c.op == "convT" for c in cases)
    assert any(pair(c.s) != (1, 1) for c in cases) and any(pair(c.d) != (1, 1) for c in cases)
    assert any(c.out_pad != (0, 0) for c in cases) and any(c.p == (0, 0) for c in cases)
