"""Hostile inputs on the reference backend, the swap and the backend flag (issue 11).

- NaN / Inf locality: a NaN (or an overflow) in the guide or in a precomputed kernel reaches
  only the outputs and gradients whose *valid* taps read it. Taps that land on no input pixel
  (zero padding, the holes between the input pixels of a transposed conv) and masked taps
  contribute nothing, even when K is NaN or Inf there (select, never ``K * 0``).
- Mixed dtypes: the K math is float64 when the input or the guide is float64, else float32;
  ``packernel2d`` returns K in the guide's dtype, outputs are in the input's dtype, every
  gradient in its tensor's dtype.
- A batch past CUDA's 65535 grid-z limit on the reference path.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import pac_triton
import pac_triton.functional as PF

REF = dict(backend="reference")
NAN = float("nan")


# --------------------------------------------------------------------------- NaN locality

def _grads(out, tensors):
    """Gradients of ``sum(out * fixed random weights)`` for the tensors needing one."""
    upstream = torch.linspace(0.5, 1.5, out.numel(), dtype=out.dtype).view_as(out)
    needed = [t for t in tensors.values() if t.requires_grad]
    grads = iter(torch.autograd.grad(out, needed, upstream, allow_unused=True))
    return {name: next(grads) for name, t in tensors.items() if t.requires_grad}


def _transposed(stride=2, padding=1, output_padding=1, dilation=1, k=3, in_hw=(4, 4)):
    return dict(stride=stride, padding=padding, output_padding=output_padding, dilation=dilation, k=k,
                in_hw=in_hw)


def _run_guided(op, guide, options, seed=0):
    """``op`` on fixed random data with ``guide``; returns the output and every gradient."""
    gen = torch.Generator().manual_seed(seed)
    opts = dict(options)
    k = opts.pop("k", 3)
    shared = opts.pop("shared_filters", False)
    use_mask = opts.pop("mask", False)
    in_hw = opts.pop("in_hw", None)
    B, C, O = guide.shape[0], 2, 3
    if op == "conv_transpose":
        x = torch.randn(B, C, *in_hw, generator=gen, dtype=torch.float64)
        w = torch.randn(*((1, 1) if shared else (C, O)), k, k, generator=gen, dtype=torch.float64)
    else:
        x = torch.randn(B, C, *guide.shape[-2:], generator=gen, dtype=torch.float64)
        w = torch.randn(*((1, 1) if shared else (O, C)), k, k, generator=gen, dtype=torch.float64)
    b = torch.randn(C if shared else O, generator=gen, dtype=torch.float64)
    mask = None
    if use_mask:
        mask = (torch.rand(B, 1, *x.shape[-2:], generator=gen) > 0.3).double()
    x.requires_grad_(True)
    w.requires_grad_(True)
    b.requires_grad_(True)
    g = guide.clone().requires_grad_(True)
    if op == "conv":
        y = PF.pac_conv2d(x, g, w, b, mask=mask, shared_filters=shared, **opts, **REF)
        tensors = dict(input=x, guide=g, weight=w, bias=b)
    elif op == "conv_transpose":
        y = PF.pac_conv_transpose2d(x, g, w, b, mask=mask, shared_filters=shared, **opts, **REF)
        tensors = dict(input=x, guide=g, weight=w, bias=b)
    else:
        y = PF.pac_pool2d(x, g, k, mask=mask, **opts, **REF)
        tensors = dict(input=x, guide=g)
    if mask is not None:
        y = y[0]
    return dict(y=y.detach(), **_grads(y, tensors))


def _run_kernel(guide, options, seed=0):
    """Standalone ``packernel2d`` (transposed, masked or normalised): K and the guide gradient."""
    gen = torch.Generator().manual_seed(seed)
    opts = dict(options)
    k = opts.pop("k", 3)
    in_hw = opts.pop("in_hw")
    mask = None
    if opts.pop("mask", False):
        mask = (torch.rand(guide.shape[0], 1, *in_hw, generator=gen) > 0.3).double()
    g = guide.clone().requires_grad_(True)
    K, _ = PF.packernel2d(g, mask, k, transposed=True, **opts, **REF)
    return dict(K=K.detach(), **_grads(K, dict(guide=g)))


# (operator, guide size, options, NaN position). The expected NaN pattern is what moves when
# the guide pixel moves; that is exact where no output's *centre* tap reads the NaN pixel
# unsmoothed (r = (f(p) - f(p))^2 is 0 for every finite value but NaN for a NaN), so positions
# are chosen off the centres, or the centre feature is smoothed. Transposed, k3 s2 p1: a guide
# pixel at odd (row, col) sits between input pixels, so no valid tap reads it; only its own
# output pixel depends on it (through the centre feature). With k3 s2 d2 p2 odd output pixels
# have no valid tap at all and stay at the bias.
NAN_CASES = [
    pytest.param("conv_transpose", (8, 8), _transposed(), (3, 3), id="transposed-s2-between-pixels"),
    pytest.param("conv_transpose", (8, 8), dict(_transposed(), smooth_kernel_type="gaussian"), (4, 2),
                 id="transposed-s2-on-a-pixel"),
    pytest.param("conv_transpose", (8, 8), dict(_transposed(), normalize_kernel=True), (3, 5),
                 id="transposed-s2-normalised"),
    pytest.param("conv_transpose", (8, 8), dict(_transposed(), mask=True), (5, 3), id="transposed-s2-mask"),
    pytest.param("conv_transpose", (8, 8), dict(_transposed(), mask=True, normalize_kernel=True), (3, 3),
                 id="transposed-s2-mask-normalised"),
    pytest.param("conv_transpose", (8, 8), dict(_transposed(), smooth_kernel_type="average_3"), (3, 3),
                 id="transposed-s2-smoothed"),
    pytest.param("conv_transpose", (8, 8), dict(_transposed(), shared_filters=True), (3, 3),
                 id="transposed-s2-shared"),
    pytest.param("conv_transpose", (8, 8), dict(_transposed(), kernel_type="inv_0.5_-1.5"), (3, 3),
                 id="transposed-s2-inv"),
    pytest.param("conv_transpose", (9, 9),
                 _transposed(stride=2, padding=2, output_padding=0, dilation=2, in_hw=(5, 5)), (3, 3),
                 id="transposed-s2-d2-no-valid-tap"),
    pytest.param("conv_transpose", (9, 12), _transposed(stride=3, padding=0, output_padding=0, in_hw=(3, 4)),
                 (5, 5), id="transposed-s3"),
    pytest.param("conv", (6, 7), dict(padding=1, smooth_kernel_type="gaussian"), (0, 3), id="conv-padded-border"),
    pytest.param("conv", (6, 7), dict(padding=2, stride=2, normalize_kernel=True), (3, 1),
                 id="conv-strided-normalised"),
    pytest.param("conv", (6, 7), dict(padding=1, mask=True, smooth_kernel_type="gaussian"), (5, 0),
                 id="conv-mask-smoothed"),
    pytest.param("pool", (6, 7), dict(padding=1, stride=2, normalize_kernel=True), (1, 3), id="pool-normalised"),
    pytest.param("pool", (6, 7), dict(padding=1, channel_wise=True, mask=True, smooth_kernel_type="average_3"),
                 (3, 6), id="pool-channel-wise"),
]


@pytest.mark.parametrize("op, guide_hw, options, pos", NAN_CASES)
def test_nan_in_guide_reaches_only_what_its_valid_taps_read(op, guide_hw, options, pos):
    torch.manual_seed(0)
    channels = 2
    guide = torch.randn(1, channels, *guide_hw, dtype=torch.float64)
    # What depends on guide pixel `pos` at all: the entries that move when it moves.
    base = _run_guided(op, guide, options)
    moved_guide = guide.clone()
    moved_guide[..., pos[0], pos[1]] += 0.37
    moved = _run_guided(op, moved_guide, options)
    nan_guide = guide.clone()
    nan_guide[..., pos[0], pos[1]] = NAN
    out = _run_guided(op, nan_guide, options)
    for name in base:
        depends = base[name] != moved[name]
        nan = torch.isnan(out[name])
        if name == "guide":
            # The NaN pixel's own gradient may be NaN; every other one only if it depends on it.
            depends[..., pos[0], pos[1]] = True
            stray = nan & ~depends
            assert not stray.any(), f"{name}: NaN at {stray.nonzero().tolist()} that do not depend on {pos}"
        else:
            assert torch.equal(nan, depends), (
                f"{name}: NaN at {nan.nonzero().tolist()}, but only {depends.nonzero().tolist()} depend on {pos}")
        assert torch.equal(torch.where(depends, 0.0, out[name]), torch.where(depends, 0.0, base[name])), name


MASKED_X_CASES = [
    pytest.param("conv", "gaussian", True, id="conv-normalised"),
    pytest.param("conv", "inv_0.5_2_asym", True, id="conv-inv-asym-normalised"),
    pytest.param("conv", "inv_0.5_2", False, id="conv-inv-mask-only"),
    pytest.param("dw", "gaussian", True, id="depthwise-normalised"),
    pytest.param("pool", "inv_0.5_2", True, id="pool-inv-normalised"),
    pytest.param("conv_transpose", "gaussian", True, id="transposed-normalised"),
]


@pytest.mark.parametrize("bad", [NAN, math.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("op, kernel_type, normalize", MASKED_X_CASES)
def test_nonfinite_input_at_a_masked_pixel_leaves_the_guide_side_gradients_alone(op, kernel_type, normalize, bad):
    """docs/semantics.md, "Non-finite values": the input is not masked, so a NaN / Inf in x at a
    pixel whose mask is 0 makes NaN the outputs whose taps land there (``K * m = 0`` times it);
    but those taps are dropped, so the gradients of the guide, ``inv_alpha`` and ``inv_lambda``
    (which reach x only through dL/dK at a tap) equal those of the same call with x = 0 there.
    The Triton backend's guide pass summed ``dK_s K_s m_s`` over the taps with ``0 * NaN`` at
    the masked one: under normalisation the guide gradient was NaN over all 25 pixels around."""
    gen = torch.Generator().manual_seed(3)
    B, C, O, D, H, W = 1, 3, 2, 2, 6, 8  # a transposed conv: 3 x 4 input, 6 x 8 output and guide
    f64 = torch.float64
    x = torch.randn(B, C, H, W, generator=gen, dtype=f64)
    guide = torch.randn(B, C if op == "pool" else D, H, W, generator=gen, dtype=f64)
    mask = torch.ones(B, 1, H, W, dtype=f64)
    mask[0, 0, 2, 3] = 0
    if op == "conv_transpose":
        x, mask = x[..., :3, :4].contiguous(), mask[..., :3, :4].contiguous()
        mask[0, 0, 1, 2] = 0
    w = torch.randn(*{"conv": (O, C), "conv_transpose": (C, O), "dw": (C, 1)}.get(op, (1, 1)), 3, 3,
                    generator=gen, dtype=f64)
    inv = {}
    if kernel_type.startswith("inv"):
        inv = dict(inv_alpha=torch.tensor([0.7], dtype=f64), inv_lambda=torch.tensor([1.6], dtype=f64))

    def grads(x_at_masked):
        xx = x.clone()
        xx[0, :, *((1, 2) if op == "conv_transpose" else (2, 3))] = x_at_masked
        g = guide.clone().requires_grad_(True)
        params = {k: v.clone().requires_grad_(True) for k, v in inv.items()}
        opts = dict(kernel_type=kernel_type, normalize_kernel=normalize, mask=mask, **params, **REF)
        if op == "conv":
            y, _ = PF.pac_conv2d(xx, g, w, None, padding=1, **opts)
        elif op == "dw":
            y, _ = PF.pac_conv2d(xx, g, w, None, padding=1, groups=C, **opts)
        elif op == "conv_transpose":
            y, _ = PF.pac_conv_transpose2d(xx, g, w, None, stride=2, padding=1, output_padding=1, **opts)
        else:
            y, _ = PF.pac_pool2d(xx, g, 3, padding=1, **opts)
        upstream = torch.linspace(0.5, 1.5, y.numel(), dtype=f64).view_as(y)
        # the outputs whose taps read the bad pixel are NaN; the upstream gradient there is kept
        # finite (as a loss's is), so every NaN below comes from the backward itself
        tensors = [g, *params.values()]
        return y, torch.autograd.grad(y, tensors, upstream)

    y_bad, bad_grads = grads(bad)
    y_ok, ok_grads = grads(0.0)
    assert torch.isnan(y_bad).any()  # the input is not masked (the contract's other half)
    for name, got, want in zip(["guide", *inv], bad_grads, ok_grads):
        assert torch.isfinite(got).all(), (name, torch.isnan(got).nonzero().tolist()[:8])
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12, msg=name)


KERNEL_NAN_CASES = [
    pytest.param(dict(_transposed(), normalize_kernel=True), (3, 3), id="transposed-normalised"),
    pytest.param(dict(_transposed(), mask=True), (3, 5), id="transposed-mask"),
    pytest.param(dict(_transposed(), mask=True, normalize_kernel=True), (5, 5),
                 id="transposed-mask-normalised"),
    pytest.param(dict(_transposed(stride=2, padding=2, output_padding=0, dilation=2, in_hw=(5, 5)),
                      normalize_kernel=True), (3, 3), id="transposed-d2-normalised"),
]


@pytest.mark.parametrize("options, pos", KERNEL_NAN_CASES)
def test_nan_in_guide_stays_local_in_a_normalised_or_masked_transposed_kernel(options, pos):
    torch.manual_seed(0)
    s, p, op, d, k = (options[name] for name in ("stride", "padding", "output_padding", "dilation", "k"))
    guide_hw = [(n - 1) * s - 2 * p + d * (k - 1) + op + 1 for n in options["in_hw"]]
    guide = torch.randn(1, 2, *guide_hw, dtype=torch.float64)
    base = _run_kernel(guide, options)
    moved_guide = guide.clone()
    moved_guide[..., pos[0], pos[1]] += 0.37
    moved = _run_kernel(moved_guide, options)
    nan_guide = guide.clone()
    nan_guide[..., pos[0], pos[1]] = NAN
    out = _run_kernel(nan_guide, options)
    depends = base["K"] != moved["K"]
    assert torch.equal(torch.isnan(out["K"]), depends), (
        f"K: NaN at {torch.isnan(out['K']).nonzero().tolist()}, depending: {depends.nonzero().tolist()}")
    depends = base["guide"] != moved["guide"]
    depends[..., pos[0], pos[1]] = True
    stray = torch.isnan(out["guide"]) & ~depends
    assert not stray.any(), f"guide gradient: NaN at {stray.nonzero().tolist()}"


def _valid_taps(in_hw, out_hw, k, stride, padding, dilation, transposed):
    """``[1, 1, k, k, Ho, Wo]``: 1 where tap (i, j) of output pixel (u, v) lands on an input pixel
    (section 1 of the contract, written out per pixel)."""
    valid = torch.zeros(1, 1, k, k, *out_hw, dtype=torch.bool)
    for i in range(k):
        for j in range(k):
            for u in range(out_hw[0]):
                for v in range(out_hw[1]):
                    ok = True
                    for pos, t, n, s, p, d in ((u, i, in_hw[0], stride, padding, dilation),
                                               (v, j, in_hw[1], stride, padding, dilation)):
                        if transposed:
                            z = pos + t * d - ((k - 1) * d - p)
                            ok = ok and z >= 0 and z % s == 0 and z // s < n
                        else:
                            q = pos * s - p + t * d
                            ok = ok and 0 <= q < n
                    valid[0, 0, i, j, u, v] = ok
    return valid


@pytest.mark.parametrize("op", [
    pytest.param("pacconv_transpose2d", id="transposed-s2"),
    pytest.param("pacconv2d", id="conv-padded"),
    pytest.param("pacpool2d", id="pool-padded"),
])
@pytest.mark.parametrize("bad", [pytest.param(NAN, id="nan"), pytest.param(float("inf"), id="inf")])
def test_precomputed_kernel_nan_at_invalid_taps_contributes_nothing(op, bad):
    torch.manual_seed(0)
    k, B, C, O = 3, 2, 2, 3
    if op == "pacconv_transpose2d":
        stride, padding, in_hw = 2, 1, (4, 5)
        out_hw = tuple((n - 1) * stride - 2 * padding + (k - 1) + 1 + 1 for n in in_hw)
        w = torch.randn(C, O, k, k, dtype=torch.float64, requires_grad=True)
    else:
        stride, padding, in_hw = 1, 1, (5, 6)
        out_hw = in_hw
        w = torch.randn(O, C, k, k, dtype=torch.float64, requires_grad=True)
    valid = _valid_taps(in_hw, out_hw, k, stride, padding, 1, op == "pacconv_transpose2d")
    assert valid.any() and not valid.all()
    x = torch.randn(B, C, *in_hw, dtype=torch.float64, requires_grad=True)
    kernel = torch.rand(B, 1, k, k, *out_hw, dtype=torch.float64)
    clean = torch.where(valid, kernel, 0.0).requires_grad_(True)
    hostile = torch.where(valid, kernel, bad).requires_grad_(True)

    def run(K):
        if op == "pacconv_transpose2d":
            return PF.pacconv_transpose2d(x, K, w, None, stride, padding, 1, **REF)
        if op == "pacconv2d":
            return PF.pacconv2d(x, K, w, None, stride, padding, **REF)
        return PF.pacpool2d(x, K, k, stride, padding, **REF)

    results = []
    for K in (clean, hostile):
        y = run(K)
        tensors = dict(input=x, kernel=K) if op == "pacpool2d" else dict(input=x, weight=w, kernel=K)
        results.append(dict(y=y.detach(), **_grads(y, tensors)))
    for name in results[0]:
        assert torch.isfinite(results[1][name]).all(), f"{op}: non-finite {name}"
        assert torch.equal(results[1][name], results[0][name]), f"{op}: {name} differs"
    # no gradient reaches K at the taps that read nothing
    assert torch.equal(results[1]["kernel"].ne(0) & ~valid, torch.zeros_like(results[1]["kernel"], dtype=torch.bool))


@pytest.mark.parametrize("op", [pytest.param("conv", id="conv"), pytest.param("pool", id="pool"),
                                pytest.param("conv_transpose", id="transposed")])
@pytest.mark.parametrize("kernel_type", [pytest.param("inv_0.5_2", id="lambda2"),
                                         pytest.param("inv_0.5_4", id="lambda4")])
def test_kernel_overflow_at_padded_taps_contributes_nothing(op, kernel_type):
    """A float32 guide of constant 1e20: at valid taps r = 0 and K = alpha + eps^(lambda/2); at the
    padded taps (guide 0) r = 1e40 overflows and K = inf. Those taps read nothing: the output is
    the plain conv scaled by the finite K, and every gradient is finite."""
    torch.manual_seed(0)
    x = torch.randn(1, 2, 5, 6, requires_grad=True)
    w = torch.randn(2, 2, 3, 3, requires_grad=True)
    lam = float(kernel_type.split("_")[2])
    k_valid = 0.5 + 1e-4 ** (lam / 2)
    inv = dict(kernel_type=kernel_type, inv_alpha=torch.tensor(0.5, requires_grad=True),
               inv_lambda=torch.tensor(lam, requires_grad=True))
    if op == "conv_transpose":
        guide = torch.full((1, 3, 10, 12), 1e20, requires_grad=True)
        y = PF.pac_conv_transpose2d(x, guide, w, stride=2, padding=1, output_padding=1, **inv, **REF)
        expected = F.conv_transpose2d(x.double(), w.double() * k_valid, stride=2, padding=1, output_padding=1)
    else:
        guide = torch.full((1, 3, 5, 6), 1e20, requires_grad=True)
        if op == "conv":
            y = PF.pac_conv2d(x, guide, w, padding=1, **inv, **REF)
            expected = F.conv2d(x.double(), w.double() * k_valid, padding=1)
        else:
            y = PF.pac_pool2d(x, guide, 3, padding=1, **inv, **REF)
            expected = F.avg_pool2d(x.double(), 3, 1, 1, count_include_pad=True) * 9 * k_valid
    assert torch.isfinite(y).all(), f"{op}: {y}"
    torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-5)
    tensors = dict(input=x, guide=guide, inv_alpha=inv["inv_alpha"], inv_lambda=inv["inv_lambda"])
    if op != "pool":
        tensors["weight"] = w
    for name, grad in _grads(y, tensors).items():
        assert torch.isfinite(grad).all(), f"{op}: non-finite gradient for {name}"


# --------------------------------------------------------------------------- mixed dtypes

def test_float64_guide_with_float32_input_computes_k_in_float64():
    """Issue 11's case: guide values 1e8, 1e8+1, 1e8+2 are distinct only in float64. K math in
    float64 gives neighbour weights exp(-1/2); float32 math would see a constant guide (K = 1)."""
    x = torch.ones(1, 1, 1, 3)
    w = torch.ones(1, 1, 1, 3)
    guide = torch.tensor([[[[1e8, 1e8 + 1, 1e8 + 2]]]], dtype=torch.float64)
    y = PF.pac_conv2d(x, guide, w, padding=(0, 1), **REF)
    assert y.dtype == torch.float32
    e = math.exp(-0.5)
    torch.testing.assert_close(y, torch.tensor([[[[1 + e, 1 + 2 * e, 1 + e]]]]), rtol=1e-6, atol=0)
    pooled = PF.pac_pool2d(x, guide, (1, 3), padding=(0, 1), **REF)
    torch.testing.assert_close(pooled, torch.tensor([[[[1 + e, 1 + 2 * e, 1 + e]]]]), rtol=1e-6, atol=0)


def _mixed_call(op, x, guide, w, kernel_type):
    options = dict(kernel_type=kernel_type)
    if kernel_type.startswith("inv_"):  # explicit parameters: the defaults are made in the guide's dtype
        options.update(inv_alpha=torch.tensor(0.3, dtype=torch.float64, requires_grad=True),
                       inv_lambda=torch.tensor(-1.2, dtype=torch.float64, requires_grad=True))
    if op == "conv":
        return PF.pac_conv2d(x, guide, w, padding=1, normalize_kernel=True, **options, **REF), options
    if op == "conv_transpose":
        return PF.pac_conv_transpose2d(x, guide, w, stride=2, padding=1, output_padding=1, **options, **REF), options
    return PF.pac_pool2d(x, guide, 3, padding=1, smooth_kernel_type="gaussian", **options, **REF), options


@pytest.mark.parametrize("op", [pytest.param("conv", id="conv"), pytest.param("conv_transpose", id="transposed"),
                                pytest.param("pool", id="pool")])
@pytest.mark.parametrize("kernel_type", [pytest.param("gaussian", id="gaussian"),
                                         pytest.param("inv_0.3_-1.2", id="inv")])
@pytest.mark.parametrize("input_dtype, guide_dtype", [
    pytest.param(torch.float64, torch.float32, id="f64-input-f32-guide"),
    pytest.param(torch.float32, torch.float64, id="f32-input-f64-guide"),
    pytest.param(torch.float16, torch.float64, id="f16-input-f64-guide"),
])
def test_mixed_dtypes_follow_one_rule(op, kernel_type, input_dtype, guide_dtype):
    """K math in float64 when the input or the guide is float64: the result equals the run with
    the guide made float64 (an exact conversion), output in the input's dtype, each gradient in
    its tensor's dtype and equal to the float64-guide run's gradient rounded to that dtype."""
    torch.manual_seed(0)
    transposed = op == "conv_transpose"
    x = torch.randn(2, 3, 4, 5).to(input_dtype)
    guide_hw = (8, 10) if transposed else (4, 5)
    guide = (3 * torch.randn(2, 2, *guide_hw)).to(guide_dtype)  # values exact in the lower dtype
    w = None if op == "pool" else torch.randn(*((3, 2) if transposed else (2, 3)), 3, 3).to(input_dtype)
    runs = []
    for g in (guide, guide.double()):
        leaves = dict(input=x.clone().requires_grad_(True), guide=g.clone().requires_grad_(True))
        if w is not None:
            leaves["weight"] = w.clone().requires_grad_(True)
        y, options = _mixed_call(op, leaves["input"], leaves["guide"], leaves.get("weight"), kernel_type)
        leaves.update({k: v for k, v in options.items() if isinstance(v, torch.Tensor)})
        runs.append((y, leaves, _grads(y.float(), leaves)))
    (y, leaves, grads), (y64, _, grads64) = runs
    assert y.dtype == input_dtype
    assert torch.equal(y, y64), f"{op}: output differs from the float64-guide run"
    for name, grad in grads.items():
        assert grad.dtype == leaves[name].dtype, f"{op}: gradient of {name} is {grad.dtype}"
        assert torch.equal(grad, grads64[name].to(grad.dtype)), f"{op}: gradient of {name} differs"


def test_packernel2d_returns_k_in_the_guide_dtype():
    guide = torch.randn(1, 2, 5, 5, dtype=torch.float16)
    K, _ = PF.packernel2d(guide, kernel_size=3, padding=1, **REF)
    assert K.dtype == torch.float16
    K64, _ = PF.packernel2d(guide.double(), kernel_size=3, padding=1, **REF)
    assert K64.dtype == torch.float64
    torch.testing.assert_close(K, K64.half(), rtol=1e-3, atol=1e-3)


# --------------------------------------------------------------------------- a batch past CUDA's grid-z limit

BIG_BATCH = 70000  # > 65535, the CUDA grid's y/z limit


def _big_batch_call(op, x, guide, w, backend):
    if op == "conv":
        return PF.pac_conv2d(x, guide, w, padding=1, backend=backend)
    if op == "conv_transpose":
        return PF.pac_conv_transpose2d(x, guide, w, stride=2, padding=1, output_padding=1, backend=backend)
    return PF.pac_pool2d(x, guide, 3, padding=1, normalize_kernel=True, backend=backend)


@pytest.mark.parametrize("backend", [pytest.param("reference", id="reference"),
                                     pytest.param("triton", id="triton", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("op", [pytest.param("conv", id="conv"), pytest.param("conv_transpose", id="transposed"),
                                pytest.param("pool", id="pool")])
def test_batch_past_65535(op, backend):
    """B = 70000 at a tiny size (1 channel, 3x3, k3): every sample's output and input/guide
    gradients equal those of the sample run alone (the ones past 65535 included), and the
    weight gradient is the sum over the batch."""
    device = "cuda" if backend == "triton" else "cpu"
    gen = torch.Generator().manual_seed(0)
    transposed = op == "conv_transpose"
    x = torch.randn(BIG_BATCH, 1, 3, 3, generator=gen).to(device).requires_grad_(True)
    guide = torch.randn(BIG_BATCH, 1, *((6, 6) if transposed else (3, 3)), generator=gen).to(device)
    guide.requires_grad_(True)
    w = None if op == "pool" else torch.randn(1, 1, 3, 3, generator=gen).to(device).requires_grad_(True)
    y = _big_batch_call(op, x, guide, w, backend)
    assert y.shape[0] == BIG_BATCH
    upstream = torch.randn(y.shape, generator=gen).to(device)
    leaves = [x, guide] + ([] if w is None else [w])
    grads = torch.autograd.grad(y, leaves, upstream)
    assert all(torch.isfinite(g).all() for g in grads)
    for b in (0, 1, 65534, 65535, 65536, BIG_BATCH - 1):
        one = [t[b:b + 1].detach().requires_grad_(True) for t in (x, guide)]
        w_one = None if w is None else w.detach().requires_grad_(True)
        y_one = _big_batch_call(op, one[0], one[1], w_one, backend)
        torch.testing.assert_close(y[b:b + 1], y_one, rtol=1e-5, atol=1e-5, msg=f"output of sample {b}")
        grads_one = torch.autograd.grad(y_one, one, upstream[b:b + 1])
        for name, g, g_one in zip(("input", "guide"), grads[:2], grads_one):
            torch.testing.assert_close(g[b:b + 1], g_one, rtol=1e-5, atol=1e-5, msg=f"{name} gradient of sample {b}")
    if w is not None:
        # the weight gradient sums every sample: the last 4465 (past 65535) included
        head = _big_batch_call(op, x[:65535].detach(), guide[:65535].detach(), w, backend)
        tail = _big_batch_call(op, x[65535:].detach(), guide[65535:].detach(), w, backend)
        expected = torch.autograd.grad([head, tail], [w], [upstream[:65535], upstream[65535:]])[0]
        torch.testing.assert_close(grads[2], expected, rtol=1e-4, atol=1e-3, msg="weight gradient")


@pytest.mark.parametrize("backend", [pytest.param("reference", id="reference"), pytest.param("triton", id="triton")])
@pytest.mark.parametrize("options", [pytest.param(dict(kernel_type="inv_0.1_-1.3"), id="inv-defaults"),
                                     pytest.param(dict(smooth_kernel_type="average_3"), id="average-window")])
def test_float64_input_builds_kernel_defaults_in_float64(backend, options):
    """The defaults the functions build (inv_alpha / inv_lambda from the kernel name, a fixed
    smoothing window) follow the dtype rule too: with a float64 input and a float32 guide they
    are float64 (0.1 and 1/9 not rounded to float32), so the result equals the float64 guide's."""
    torch.manual_seed(0)
    guide = torch.randn(1, 2, 5, 5) * 3
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    y = PF.pac_conv2d(x, guide, w, padding=1, backend=backend, **options)
    y64 = PF.pac_conv2d(x, guide.double(), w, padding=1, backend=backend, **options)
    torch.testing.assert_close(y, y64, rtol=1e-12, atol=1e-12)
