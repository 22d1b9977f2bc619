"""Hostile tests of ``groups`` / depthwise on the Triton backend (docs/semantics.md sections 7, 8,
"Dtypes", "Non-finite values"), each against the float64 reference backend as the oracle.

Tests named ``test_bug_*`` reproduce defects found while reviewing the grouped support (they
failed before the fixes: the depthwise weight gradient's strides, zero-size channel axes); the
others cover corners the suite did not reach (forced
small tiles so that a group's channels span several blocks, mixed dtypes with groups, NaN
locality with groups, precomputed K with NaN at dropped taps, partial requires_grad, fast
gradcheck of the Triton path, padding modes with a varying guide, error parity).
Shapes are tiny: the kernels run in Triton's interpreter on a CPU.
"""
from __future__ import annotations

import contextlib
import pytest
import torch

import pac_triton
import pac_triton.functional as PF
from pac_triton import PacConv2d, PacConvTranspose2d

F64 = torch.float64
HAS_CUDA = torch.cuda.is_available()
DEV = "cuda" if HAS_CUDA else "cpu"
# relative tolerance (max abs diff / max abs reference) per dtype of the result
RTOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2e-2, torch.bfloat16: 2e-2}
# absolute floor: gradients that are exactly 0 in exact arithmetic come out as rounding noise
ATOL = {torch.float64: 1e-12, torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 1e-2}


@pytest.fixture(autouse=True)
def _triton_or_skip():
    avail = pac_triton.triton_available()
    if not avail:
        pytest.skip(avail.reason)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors in the interpreter: threads only add contention under -n 2
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def small_tiles():
    """Small forced tiles (as tests/triton/conftest.py): every axis spans several blocks, and
    outputs start NaN-filled so an unwritten element shows."""
    from pac_triton.triton import configs
    dot = 16 if HAS_CUDA else 8
    old = configs.settings.fill_outputs_with_nan
    configs.settings.fill_outputs_with_nan = True
    try:
        with configs.force_blocks(BLOCK_P=16, BLOCK_O=dot, BLOCK_C=dot, DW_BLOCK_C=4, KER_BLOCK_C=2, BLOCK_D=2):
            yield
    finally:
        configs.settings.fill_outputs_with_nan = old


def _r(*shape, dtype=F64, grad=True):
    return torch.randn(*shape, dtype=dtype, device=DEV).requires_grad_(grad)


def _run(fn, tensors, kwargs, backend, gy_seed=1):
    """Forward, then the gradients of every tensor that requires grad (as leaves)."""
    ts = {k: (v.detach().clone().requires_grad_(v.requires_grad) if isinstance(v, torch.Tensor) else v)
          for k, v in tensors.items()}
    out = fn(**ts, **kwargs, backend=backend)
    y = out[0] if isinstance(out, tuple) else out
    res = {"y": y.detach()}
    if isinstance(out, tuple):
        res["out_mask"] = out[1].detach()
    req = [k for k, v in ts.items() if isinstance(v, torch.Tensor) and v.requires_grad]
    if req:
        gen = torch.Generator().manual_seed(gy_seed)
        gy = torch.randn(y.shape, generator=gen, dtype=F64).to(device=y.device, dtype=y.dtype)
        grads = torch.autograd.grad(y, [ts[k] for k in req], gy, allow_unused=True)
        res.update({"d" + k: g for k, g in zip(req, grads)})
    return res


def _assert_close(got, exp, rtol, atol, name):
    assert got is not None, f"{name}: None"
    assert tuple(got.shape) == tuple(exp.shape), f"{name}: shape {tuple(got.shape)} != {tuple(exp.shape)}"
    a, e = got.detach().double().cpu(), exp.detach().double().cpu()
    fa, fe = torch.isfinite(a), torch.isfinite(e)
    assert torch.equal(fa, fe), f"{name}: non-finite pattern differs ({int((~fa).sum())} vs {int((~fe).sum())})"
    if a.numel() == 0 or not fe.any():
        return
    diff = (a[fe] - e[fe]).abs().max().item()
    scale = e[fe].abs().max().item()
    assert diff <= atol or diff <= rtol * scale, f"{name}: max abs diff {diff:.3g}, max abs ref {scale:.3g}"


def check_vs_reference(fn, tensors, kwargs, rtol=None, atol=None):
    """Triton on ``tensors`` vs the reference on their float64 copies: output, out_mask and every
    gradient; each result in its tensor's dtype."""
    got = _run(fn, tensors, kwargs, "triton")
    t64 = {k: (v.detach().double().requires_grad_(v.requires_grad)
               if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in tensors.items()}
    exp = _run(fn, t64, kwargs, "reference")
    assert set(got) == set(exp), (sorted(got), sorted(exp))
    assert got["y"].dtype == tensors["input"].dtype
    for k in exp:
        dt = got[k].dtype if got[k] is not None else F64
        if k.startswith("d"):
            assert got[k] is not None and got[k].dtype == tensors[k[1:]].dtype, f"{k}: dtype / None"
        _assert_close(got[k], exp[k], rtol or RTOL[dt], atol or ATOL[dt], k)
    return got


def _conv_tensors(G, C, O, H, W, D=2, k=3, B=1, transposed=False, Hg=None, Wg=None, dtype=F64, gdtype=None,
                  bias=True, mask=False):
    t = dict(input=_r(B, C, H, W, dtype=dtype), guide=_r(B, D, Hg or H, Wg or W, dtype=gdtype or dtype),
             weight=_r(*((C, O // G) if transposed else (O, C // G)), k, k, dtype=dtype))
    if bias:
        t["bias"] = _r(O, dtype=dtype)
    if mask:
        t["mask"] = (torch.rand(B, 1, H, W, device=DEV) > 0.3).to(gdtype or dtype)
    return t


# =========================================================================== regressions

def test_bug_depthwise_weight_grad_strides_differ_from_fake():
    """Depthwise family (groups == C, weight [C, 1, kh, kw]): the Triton backward returns the
    weight gradient as a non-contiguous view (``dw.t().reshape(...)``, strides (1, 36, 12, 4)
    for C=4, 3x3) while the op's fake (``hc.fake_grads``) says contiguous (9, 9, 3, 1).

    Expected: the custom op ``pac_triton::triton_conv_bwd`` passes opcheck's fake-tensor check
    (real and fake outputs have the same metadata), as the grouped-dense and ungrouped cases do.
    Before the fix: ``OpCheckError ... Stride mismatch! Strides are (1, 36, 12, 4) and (9, 9, 3, 1)``
    (pac_triton/triton/depthwise.py, ``dw_backward``: ``out["weight"] = (dw.t() if wt_pc else
    dw).reshape(wtap.shape)`` lacks ``.contiguous()``)."""
    import pac_triton.triton  # noqa: F401  (registers the ops)
    from pac_triton.triton.host_common import KT_GAUSS
    ops = torch.ops.pac_triton
    x, g = torch.randn(1, 4, 5, 5, dtype=F64, device=DEV), torch.randn(1, 2, 5, 5, dtype=F64, device=DEV)
    w, gy = torch.randn(4, 1, 3, 3, dtype=F64, device=DEV), torch.randn(1, 4, 5, 5, dtype=F64, device=DEV)
    needs = [True, True, True, False, False, False, False, False]  # x, weight, bias
    for transposed in (False, True):
        args = (gy, x, w, g, None, None, None, None, None, [1, 1], [1, 1], [0, 0], [1, 1], KT_GAUSS, False, False,
                transposed, needs, 4)
        torch.library.opcheck(ops.triton_conv_bwd, args, test_utils=("test_faketensor",))


def test_bug_torch_compile_depthwise_backward_fails():
    """``torch.compile`` of a depthwise ``PacConv2d`` (groups = in = out channels) on the Triton
    backend: forward+backward.

    Expected: runs and matches eager (it does for groups=2 with a channel multiplier, and for
    the depthwise forward alone).
    Before the fix: ``AssertionError: expected size 4==4, stride 1==9 at dim=0; ...`` from inductor's
    ``assert_size_stride`` on ``torch.ops.pac_triton.triton_conv_bwd.default`` -- the weight
    gradient's strides differ from the fake's (see the opcheck test above; cause
    pac_triton/triton/depthwise.py ``dw_backward``, the per-channel weight gradient
    ``dw.t().reshape(wtap.shape)``)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    layer = PacConv2d(4, 4, 3, padding=1, groups=4, backend="triton", device=DEV)
    x, g = torch.randn(1, 4, 5, 5, device=DEV), torch.randn(1, 2, 5, 5, device=DEV)
    y_eager = layer(x, g)
    (gw_eager,) = torch.autograd.grad(y_eager.sum(), [layer.weight])
    try:
        compiled = torch.compile(layer, fullgraph=False)
        y = compiled(x, g)
        (gw,) = torch.autograd.grad(y.sum(), [layer.weight])
    finally:
        torch._dynamo.reset()
    torch.testing.assert_close(y, y_eager, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gw, gw_eager, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", [
    pytest.param(dict(fn="conv", C=0, O=6, G=2, grads=False), id="conv-C0-G2-forward"),
    pytest.param(dict(fn="conv", C=4, O=0, G=2, grads=True), id="conv-O0-G2-backward"),
    pytest.param(dict(fn="convT", C=4, O=0, G=2, grads=True), id="convT-O0-G2-backward"),
    # channel counts that the blocks "tile" (0 % BLOCK == 0): the channel masks must stay (the
    # unmasked gathers read a 0-element tensor; the sanitizer reports it)
    # (float32: float64 keeps the masks anyway)
    pytest.param(dict(fn="conv", C=0, O=32, G=2, grads=False, dtype=torch.float32), id="conv-C0-O32-G2-forward-f32"),
    pytest.param(dict(fn="conv", C=32, O=0, G=2, grads=True, dtype=torch.float32), id="conv-C32-O0-G2-backward-f32"),
])
def test_bug_zero_channel_grouped_conv_crashes_on_triton(case):
    """Zero-size channel axes with ``groups=2`` (input with 0 channels, or a weight with 0
    output channels): the reference returns the empty / bias-only output and its gradients.

    Expected: the Triton backend does the same (it already handles B == 0, and O == 0 in the
    forward).
    Before the fix: ``RuntimeError: cannot reshape tensor of 0 elements into shape [3, 3, -1, 0]``
    from pac_triton/triton/conv.py ``_weight_tap_major`` (``w.reshape(kh, kw, -1,
    w.shape[-1])`` is ambiguous when the last axis is 0): in ``conv_forward`` for C == 0, in
    ``conv_backward`` (``reduce_over_o=True``) for O == 0. Also with groups=1."""
    C, O, G = case["C"], case["O"], case["G"]
    dt = case.get("dtype", F64)
    if case["fn"] == "conv":
        t = dict(input=_r(1, C, 5, 5, dtype=dt), guide=_r(1, 2, 5, 5, dtype=dt), weight=_r(O, C // G, 3, 3, dtype=dt),
                 bias=_r(O, dtype=dt))
        fn, kw = PF.pac_conv2d, dict(padding=1, groups=G)
    else:
        t = dict(input=_r(1, C, 3, 3), guide=_r(1, 2, 6, 6), weight=_r(C, O // G, 3, 3), bias=_r(O))
        fn, kw = PF.pac_conv_transpose2d, dict(stride=2, padding=1, output_padding=1, groups=G)
    if not case["grads"]:
        t = {k: v.detach() for k, v in t.items()}
    check_vs_reference(fn, t, kw)


# =========================================================================== coverage

# Per-group channel counts that straddle the forced 8-wide blocks (Og = 17 with Cg = 1, a
# channel multiplier; Cg = 9 with Og = 1), and a depthwise transposed conv with every K option
# (asym inv kernel, smoothing, mask, normalisation).
GROUPED = [
    pytest.param(dict(T=False, G=2, C=2, O=34, H=2, W=3, tiles=True,
                      kw=dict(padding=1, kernel_type="inv_1_-2", normalize_kernel=True)), id="conv-G2-Og17-inv-norm"),
    pytest.param(dict(T=False, G=2, C=18, O=2, H=3, W=2, mask=True, tiles=True,
                      kw=dict(stride=2, padding=2, dilation=2, kernel_type="inv_0.5_1.5_asym")),
                 id="conv-G2-Cg9-s2-d2-asym-mask"),
    pytest.param(dict(T=True, G=4, C=4, O=4, H=2, W=2, mask=True,
                      kw=dict(stride=2, padding=1, output_padding=1, smooth_kernel_type="gaussian",
                              kernel_type="inv_0.5_1.5_asym", normalize_kernel=True)),
                 id="convT-depthwise-s2-asym-smooth-mask-norm"),
]


def _out_hw(case):
    kw = case["kw"]
    s, p, d, op = kw.get("stride", 1), kw.get("padding", 0), kw.get("dilation", 1), kw.get("output_padding", 0)
    return tuple((n - 1) * s - 2 * p + d * 2 + op + 1 for n in (case["H"], case["W"]))


@pytest.mark.parametrize("case", GROUPED)
def test_grouped_small_tiles_all_grads(case):
    """Forward, out_mask and every gradient (input, guide, weight, bias) of grouped / depthwise
    convs (``tiles``: with forced 8-wide channel blocks, so that a group's input or output
    channels span several blocks), vs the float64 reference."""
    torch.manual_seed(0)
    T = case["T"]
    Hg, Wg = _out_hw(case) if T else (case["H"], case["W"])
    t = _conv_tensors(case["G"], case["C"], case["O"], case["H"], case["W"], B=case.get("B", 1), transposed=T,
                      Hg=Hg, Wg=Wg, mask=case.get("mask", False))
    with (small_tiles() if case.get("tiles") else contextlib.nullcontext()):
        check_vs_reference(PF.pac_conv_transpose2d if T else PF.pac_conv2d, t, dict(case["kw"], groups=case["G"]))


@pytest.mark.parametrize("xdt,gdt,G,O,T", [
    pytest.param(torch.float32, F64, 2, 6, False, id="conv-G2-x32-guide64-two_step"),
    pytest.param(torch.bfloat16, F64, 4, 4, True, id="convT-dw-xbf16-guide64-two_step"),
])
def test_grouped_mixed_dtype_guide_with_mask(xdt, gdt, G, O, T):
    """docs "Dtypes": a float64 guide with a lower-precision input (the two-step path:
    packernel2d in float64, then the given-K conv with groups / depthwise), with a mask and
    normalisation; y in the input's dtype, out_mask in the guide's, each gradient in its
    tensor's dtype."""
    torch.manual_seed(0)
    H = W = 2 if T else 4
    t = _conv_tensors(G, 4, O, H, W, transposed=T, Hg=4 if T else None, Wg=4 if T else None, dtype=xdt, gdtype=gdt,
                      mask=True)
    kw = dict(groups=G, padding=1, normalize_kernel=True, kernel_type="inv_1_-2")
    if T:
        kw.update(stride=2, output_padding=1)
    # the guide's gradient is only as accurate as the lower-precision input's arithmetic
    got = check_vs_reference(PF.pac_conv_transpose2d if T else PF.pac_conv2d, t, kw, rtol=RTOL[xdt], atol=ATOL[xdt])
    assert got["out_mask"].dtype == gdt


@pytest.mark.parametrize("layout,G,O", [
    pytest.param("channels_last", 4, 4, id="channels_last-depthwise"),
    pytest.param("permuted_weight", 4, 4, id="permuted_weight-depthwise"),
    pytest.param("channel_strided_input", 4, 4, id="channel_strided_input-depthwise"),
])
def test_grouped_layouts(layout, G, O):
    """Depthwise convs on a channels-last input and guide, a permuted (non-contiguous) weight
    view, an input strided along C (``x[:, ::2]``)."""
    torch.manual_seed(0)
    C = 4
    t = _conv_tensors(G, C, O, 4, 3, D=3)
    if layout == "channels_last":
        t["input"] = t["input"].detach().to(memory_format=torch.channels_last).requires_grad_()
        t["guide"] = t["guide"].detach().to(memory_format=torch.channels_last).requires_grad_()
    elif layout == "permuted_weight":
        t["weight"] = torch.randn(3, 3, C // G, O, dtype=F64, device=DEV).permute(3, 2, 0, 1).requires_grad_()
    else:
        t["input"] = torch.randn(1, 2 * C, 4, 3, dtype=F64, device=DEV)[:, ::2].requires_grad_()
    check_vs_reference(PF.pac_conv2d, t, dict(padding=1, groups=G, kernel_type="inv_1_-2", normalize_kernel=True))


@pytest.mark.parametrize("which,G,O,T", [
    pytest.param("inv_lambda", 2, 6, False, id="inv_lambda-conv-G2"),
    pytest.param("inv_alpha", 4, 4, True, id="inv_alpha-convT-dw"),
    pytest.param("weight", 4, 4, True, id="weight-convT-dw"),
    pytest.param("weight", 2, 6, False, id="weight-conv-G2"),
])
def test_grouped_only_one_tensor_requires_grad(which, G, O, T):
    """Only one tensor requires grad (the ``needs`` plumbing: scale-only guide pass, dK without
    dx, ...) with normalisation, a mask, full_3 smoothing and tensor inv parameters."""
    torch.manual_seed(0)
    H = W = 3
    t = _conv_tensors(G, 4, O, H, W, transposed=T, Hg=6 if T else None, Wg=6 if T else None, mask=True)
    t = {k: v.detach() for k, v in t.items()}
    t.update(smooth_kernel=torch.rand(1, 1, 3, 3, dtype=F64, device=DEV),
             inv_alpha=torch.tensor(1.1, dtype=F64, device=DEV), inv_lambda=torch.tensor(-1.9, dtype=F64, device=DEV))
    t[which].requires_grad_()
    kw = dict(groups=G, padding=1, kernel_type="inv_1_-2", normalize_kernel=True, smooth_kernel_type="full_3")
    if T:
        kw.update(stride=2, output_padding=1)
    check_vs_reference(PF.pac_conv_transpose2d if T else PF.pac_conv2d, t, kw)


@pytest.mark.parametrize("G,O,T", [pytest.param(2, 6, False, id="conv-G2"), pytest.param(4, 4, True, id="convT-dw")])
def test_grouped_precomputed_kernel_nan_at_dropped_taps(G, O, T):
    """docs "Non-finite values": a precomputed K holding NaN at every tap that lands on no input
    pixel (padding; between a transposed conv's input pixels) contributes exactly 0 -- to y, dx,
    dW -- and its gradient there is exactly 0, with groups."""
    torch.manual_seed(0)
    C, k, H, W = 4, 3, 2, 2
    if T:
        s, p, d, op = 3, 0, 2, 2
        Ho, Wo = (H - 1) * s - 2 * p + d * (k - 1) + op + 1, (W - 1) * s - 2 * p + d * (k - 1) + op + 1
        z = lambda n: torch.arange(n)[:, None] + torch.arange(k)[None, :] * d - ((k - 1) * d - p)  # noqa: E731
        vh, vw = [(zz >= 0) & (zz % s == 0) & (zz // s < n) for zz, n in ((z(Ho), H), (z(Wo), W))]
        w = _r(C, O // G, k, k)
        fn, kw = PF.pacconv_transpose2d, dict(stride=s, padding=p, output_padding=op, dilation=d, groups=G)
    else:
        s, p, d = 2, 2, 2
        Ho, Wo = (H + 2 * p - d * (k - 1) - 1) // s + 1, (W + 2 * p - d * (k - 1) - 1) // s + 1
        q = lambda n: torch.arange(n)[:, None] * s - p + torch.arange(k)[None, :] * d  # noqa: E731
        vh, vw = (q(Ho) >= 0) & (q(Ho) < H), (q(Wo) >= 0) & (q(Wo) < W)
        w = _r(O, C // G, k, k)
        fn, kw = PF.pacconv2d, dict(stride=s, padding=p, dilation=d, groups=G)
    valid = (vh[:, None, :, None] & vw[None, :, None, :]).permute(2, 3, 0, 1).to(DEV)  # [k, k, Ho, Wo]
    assert not valid.all()
    K = torch.rand(1, 1, k, k, Ho, Wo, dtype=F64, device=DEV)
    K[0, 0][~valid] = float("nan")
    t = dict(input=_r(1, C, H, W), kernel=K.requires_grad_(), weight=w, bias=_r(O))
    got = check_vs_reference(fn, t, kw)
    for name in ("y", "dinput", "dweight", "dbias", "dkernel"):
        assert torch.isfinite(got[name]).all(), f"{name} not finite"
    assert (got["dkernel"][0, 0][~valid] == 0).all()


@pytest.mark.parametrize("G,O,opts", [
    pytest.param(2, 4, dict(normalize_kernel=True), id="G2-gauss-norm"),
    pytest.param(4, 4, dict(kernel_type="inv_1_-2"), id="depthwise-inv"),
    pytest.param(4, 4, dict(normalize_kernel=True, smooth_kernel_type="gaussian"), id="depthwise-smooth-norm"),
])
def test_grouped_nan_guide_at_masked_pixel_is_local(G, O, opts):
    """docs "Non-finite values" (locality): NaN in the guide at a masked-out pixel that is never
    a centre (stride 2 centres on even coordinates; the pixel is odd) is read only by dropped
    taps (without smoothing): every output and gradient stays finite; with smoothing the
    centre windows that read it become NaN exactly as in the reference."""
    torch.manual_seed(0)
    H = W = 5
    t = _conv_tensors(G, 4, O, H, W)
    g = t["guide"].detach().clone()
    g[0, :, 3, 3] = float("nan")
    t["guide"] = g.requires_grad_()
    t["mask"] = torch.ones(1, 1, H, W, dtype=F64, device=DEV)
    t["mask"][0, 0, 3, 3] = 0
    kw = dict(stride=2, padding=1, groups=G, **opts)
    got = check_vs_reference(PF.pac_conv2d, t, kw)
    if "smooth_kernel_type" not in opts:
        for name in ("y", "dinput", "dguide", "dweight", "dbias"):
            assert torch.isfinite(got[name]).all(), f"{name} has non-finite values"


@pytest.mark.parametrize("G,O,T", [pytest.param(4, 4, False, id="conv-dw"),
                                   pytest.param(2, 4, True, id="convT-G2-mult2")])
def test_gradcheck_grouped_triton(G, O, T):
    """torch.autograd.gradcheck (fast mode, float64) of the Triton path with groups: input,
    guide, weight, bias (the existing gradchecks of groups run on the reference)."""
    torch.manual_seed(0)
    if T:
        x, g, w = _r(1, 2, 2, 1), _r(1, 2, 4, 2), _r(2, O // G, 3, 3)
        f = lambda *a: PF.pac_conv_transpose2d(*a, stride=2, padding=1, output_padding=1, groups=G,  # noqa: E731
                                               kernel_type="inv_1_1", smooth_kernel_type="gaussian", backend="triton")
    else:
        x, g, w = _r(1, 4, 3, 3), _r(1, 2, 3, 3), _r(O, 4 // G, 3, 3)
        m = (torch.rand(1, 1, 3, 3, device=DEV) > 0.3).double()
        f = lambda *a: PF.pac_conv2d(*a, stride=(1, 2), padding=1, groups=G,  # noqa: E731
                                     kernel_type="inv_0.5_1.5_asym", normalize_kernel=True, mask=m,
                                     backend="triton")[0]
    assert torch.autograd.gradcheck(f, (x, g, w, _r(O)), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True,
                                     check_undefined_grad=False)


@pytest.mark.parametrize("mode,G,O", [pytest.param("circular", 4, 4, id="circular-depthwise")])
def test_grouped_module_padding_mode_varying_guide(mode, G, O):
    """PacConv2d(groups, padding_mode) on Triton vs the reference with a varying guide (the
    existing padding-mode tests use a constant one): y and the gradients of input, guide,
    weight, bias, inv_alpha, inv_lambda and the full_3 smoothing window."""
    torch.manual_seed(0)
    make = lambda b: PacConv2d(4, O, 3, padding=1, groups=G, padding_mode=mode, kernel_type="inv_0.5_1.5",  # noqa: E731
                               normalize_kernel=True, smooth_kernel_type="full_3", backend=b, dtype=F64,
                               device=DEV)
    ref, tri = make("reference"), make("triton")
    tri.load_state_dict(ref.state_dict())
    x, g = _r(1, 4, 3, 4), _r(1, 3, 3, 4)
    outs = []
    for m in (ref, tri):
        xx, gg = x.detach().clone().requires_grad_(), g.detach().clone().requires_grad_()
        y = m(xx, gg)
        y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(3), dtype=F64).to(DEV))
        outs.append(dict(y=y.detach(), dx=xx.grad, dg=gg.grad, **{n: p.grad for n, p in m.named_parameters()}))
    for k in outs[0]:
        _assert_close(outs[1][k], outs[0][k], 1e-10, 1e-12, k)


def _error_calls(b):
    x, g = torch.randn(1, 4, 5, 5, device=DEV), torch.randn(1, 2, 5, 5, device=DEV)
    gt = torch.randn(1, 2, 7, 7, device=DEV)
    w = lambda *s: torch.randn(*s, device=DEV)  # noqa: E731
    return {
        "weight-Cg": lambda: PF.pac_conv2d(x, g, w(4, 4, 3, 3), groups=2, backend=b),
        "O-not-divisible": lambda: PF.pac_conv2d(x, g, w(3, 2, 3, 3), groups=2, backend=b),
        "C-not-divisible": lambda: PF.pac_conv2d(x, g, w(3, 1, 3, 3), groups=3, backend=b),
        "shared+groups": lambda: PF.pac_conv2d(x, g, w(1, 1, 3, 3), groups=2, shared_filters=True, backend=b),
        "T-weight-C": lambda: PF.pac_conv_transpose2d(x, gt, w(2, 2, 3, 3), groups=2, backend=b),
        "T-C-not-divisible": lambda: PF.pac_conv_transpose2d(x, gt, w(4, 2, 3, 3), groups=3, backend=b),
        "T-bias": lambda: PF.pac_conv_transpose2d(x, gt, w(4, 2, 3, 3), w(2), groups=2, backend=b),
        "pacconvT-shared+groups": lambda: PF.pacconv_transpose2d(
            x, torch.rand(1, 1, 3, 3, 7, 7, device=DEV), w(1, 1, 3, 3), shared_filters=True, groups=4, backend=b),
        "module-input-channels": lambda: PacConv2d(4, 4, 3, groups=2, backend=b, device=DEV)(w(1, 6, 5, 5), g),
        "moduleT-input-channels": lambda: PacConvTranspose2d(4, 4, 3, groups=2, backend=b, device=DEV)(
            w(1, 6, 5, 5), gt),
    }


@pytest.mark.parametrize("name", list(_error_calls("reference")))
def test_grouped_errors_same_on_both_backends(name):
    """Wrong grouped calls raise the same ValueError (naming the user's argument) on both
    backends, before any kernel runs."""
    errs = []
    for b in ("reference", "triton"):
        with pytest.raises(ValueError) as info:
            _error_calls(b)[name]()
        errs.append(str(info.value))
    assert errs[0] == errs[1]
    assert any(word in errs[0] for word in ("input", "weight", "bias", "groups", "shared_filters"))
