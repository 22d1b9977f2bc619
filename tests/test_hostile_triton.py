"""Hostile inputs on the Triton backend (issue 11, the kernel side), each checked against the
reference on every operator it touches, forward and backward:

* strided parameters (views, stride-0 expansions) read as what they are;
* normalisation of a subnormal K sum (divided, never multiplied by an overflowing reciprocal);
* ``inv_alpha_0`` kernels (lambda = 0) on an overflowing distance (``x ** 0 = 1``);
* the mixed-dtype rule (K math in float64 when the input or the guide is float64);
* 64-bit indexing decided from every buffer a launch touches, and batches beyond CUDA's grid
  limit split.

Runs on CPU through Triton's interpreter (``tests/conftest.py`` switches it on).
"""
from __future__ import annotations

import contextlib

import pytest
import torch

import pac_triton as pac
from pac_testing import assert_close_rel, tol

triton_backend = pytest.importorskip("pac_triton.triton")
if not triton_backend.is_available()[0]:
    pytest.skip(f"Triton backend unavailable: {triton_backend.is_available()[1]}", allow_module_level=True)

from pac_triton.triton import host_common as hc  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _both(fn, *tensors):
    """``fn(backend, *leaves)`` on both backends with fresh leaf copies; returns, per backend,
    the output and the gradients of every floating leaf (a random upstream gradient)."""
    results = []
    for backend in ("reference", "triton"):
        leaves = [t.detach().clone().requires_grad_(t.is_floating_point()) if t is not None else None
                  for t in tensors]
        out = fn(backend, *leaves)
        out = out[0] if isinstance(out, tuple) else out
        torch.manual_seed(1)
        out.backward(torch.randn(out.shape, dtype=out.dtype, device=out.device))
        results.append((out.detach(), [None if t is None else t.grad for t in leaves]))
    return results


def _assert_same(results, dtype, names):
    (ref_out, ref_grads), (tri_out, tri_grads) = results
    assert_close_rel(tri_out, ref_out, tol(dtype), "output")
    for name, rg, tg in zip(names, ref_grads, tri_grads):
        if rg is None and tg is None:
            continue
        assert_close_rel(tg, rg, tol(dtype), f"d {name}")


# --- 1. strided parameters --------------------------------------------------------------------

@pytest.mark.parametrize("bias_kind", ["view", "expand"])
@pytest.mark.parametrize("op", ["conv", "shared", "transposed"])
def test_strided_bias_is_read_as_a_view(op, bias_kind):
    """A bias that is a view (``[1, 100, 2, 200, ..][::2]``) or a stride-0 expansion is read
    through its strides (the kernels once read it as contiguous: channel 1 got 100, or memory
    past a one-element storage); its gradient reaches the base tensor."""
    torch.manual_seed(0)
    C, O = 3, (3 if op == "shared" else 4)
    x = torch.randn(2, C, 5, 6, device=DEV)
    if op == "transposed":
        guide = torch.randn(2, 2, 9, 11, device=DEV)
        weight = torch.randn(C, O, 3, 3, device=DEV)
    else:
        guide = torch.randn(2, 2, 5, 6, device=DEV)
        weight = torch.randn(1, 1, 3, 3, device=DEV) if op == "shared" else torch.randn(O, C, 3, 3, device=DEV)
    base0 = (torch.tensor([1.0, 100.0], device=DEV).repeat(O) * torch.arange(1.0, 2 * O + 1, device=DEV)
             if bias_kind == "view" else torch.tensor([1.5], device=DEV))

    results = []
    for backend in ("reference", "triton"):
        base = base0.clone().requires_grad_()
        bias = base[::2] if bias_kind == "view" else base.expand(O)
        if op == "transposed":
            y = pac.pac_conv_transpose2d(x, guide, weight, bias, stride=2, padding=1, backend=backend)
        else:
            y = pac.pac_conv2d(x, guide, weight, bias, padding=1, shared_filters=op == "shared", backend=backend)
        torch.manual_seed(1)
        y.backward(torch.randn(y.shape, device=DEV))
        results.append((y.detach(), base.grad))
    assert_close_rel(results[1][0], results[0][0], tol(torch.float32), "output")
    assert_close_rel(results[1][1], results[0][1], tol(torch.float32), "d bias base")


@pytest.mark.parametrize("what", ["weight_view", "shared_weight_expand", "smooth_view", "mask_expand",
                                  "kernel_expand", "alpha_expand"])
def test_other_strided_parameters(what):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 5, device=DEV)
    guide = torch.randn(2, 2, 6, 5, device=DEV)
    if what == "weight_view":  # a transposed view of a [C, O, k, k] tensor
        weight = torch.randn(3, 4, 3, 3, device=DEV).transpose(0, 1)

        def run(backend, x, guide, weight):
            return pac.pac_conv2d(x, guide, weight, padding=1, normalize_kernel=True, backend=backend)
        _assert_same(_both(run, x, guide, weight), torch.float32, ["input", "guide", "weight"])
    elif what == "shared_weight_expand":
        weight = torch.tensor([[[[0.7]]]], device=DEV).expand(1, 1, 3, 3)

        def run(backend, x, guide):
            return pac.pac_conv2d(x, guide, weight, padding=1, shared_filters=True, backend=backend)
        _assert_same(_both(run, x, guide), torch.float32, ["input", "guide"])
    elif what == "smooth_view":
        smooth = torch.rand(1, 1, 6, 6, device=DEV)[..., ::2, ::2]

        def run(backend, x, guide):
            return pac.pac_pool2d(x, guide, 3, padding=1, smooth_kernel_type="full_3", smooth_kernel=smooth,
                                  backend=backend)
        _assert_same(_both(run, x, guide), torch.float32, ["input", "guide"])
    elif what == "mask_expand":
        mask = (torch.rand(1, 1, 6, 5, device=DEV) > 0.3).float().expand(2, 1, 6, 5)
        weight = torch.randn(4, 3, 3, 3, device=DEV)

        def run(backend, x, guide):
            return pac.pac_conv2d(x, guide, weight, padding=1, mask=mask, backend=backend)
        _assert_same(_both(run, x, guide), torch.float32, ["input", "guide"])
    elif what == "kernel_expand":
        kernel = torch.rand(1, 1, 3, 3, 6, 5, device=DEV).expand(2, 1, 3, 3, 6, 5)
        weight = torch.randn(4, 3, 3, 3, device=DEV)

        def run(backend, x):
            return pac.pacconv2d(x, kernel, weight, padding=1, backend=backend)
        _assert_same(_both(run, x), torch.float32, ["input"])
    else:  # a 0-d inv_alpha seen through an expanded view
        alpha = torch.tensor([0.3], device=DEV).expand(1)[0]
        lam = torch.tensor(-1.0, device=DEV)

        def run(backend, x, guide):
            return pac.pac_pool2d(x, guide, 3, padding=1, kernel_type="inv_0.3_-1", inv_alpha=alpha,
                                  inv_lambda=lam, backend=backend)
        _assert_same(_both(run, x, guide), torch.float32, ["input", "guide"])


# --- 2. normalisation of subnormal sums --------------------------------------------------------

def test_issue_example_normalised_conv_with_mask():
    x = torch.tensor([[[[1., 5., 2.]]]], device=DEV)
    guide = torch.tensor([[[[0., 13.57, 0.]]]], device=DEV)
    weight = torch.ones(1, 1, 1, 3, device=DEV)
    mask = torch.tensor([[[[1., 0., 1.]]]], device=DEV)
    y, _ = pac.pac_conv2d(x, guide, weight, padding=(0, 1), normalize_kernel=True, mask=mask, backend="triton")
    torch.testing.assert_close(y, torch.tensor([[[[1., 1.5, 2.]]]], device=DEV), rtol=1e-4, atol=1e-4)
    k, _ = pac.packernel2d(guide, mask, kernel_size=(1, 3), padding=(0, 1), normalize_kernel=True,
                           backend="triton")
    torch.testing.assert_close(k[0, 0, 0, :, 0, 1], torch.tensor([.5, 0., .5], device=DEV), rtol=1e-4, atol=1e-4)


def _far_guide(dtype, far):
    """A guide whose every pixel is ``far`` from its neighbours: the Gaussian of every off-centre
    tap is subnormal, and so is the normaliser where the centre tap is masked or invalid."""
    g = torch.zeros(1, 1, 4, 6, dtype=dtype, device=DEV)
    g[..., ::2, ::2] = far
    g[..., 1::2, 1::2] = far
    return g


SUBNORMAL = [
    pytest.param("conv-norm-mask", torch.float32, id="conv-norm-mask-fp32"),
    pytest.param("conv-mask", torch.float32, id="conv-mask-fp32"),
    pytest.param("shared-norm-mask", torch.float32, id="shared-norm-mask-fp32"),
    pytest.param("transposed-norm", torch.float32, id="transposed-s2-norm-fp32"),
    pytest.param("pool-norm-mask", torch.float32, id="pool-norm-mask-fp32"),
    pytest.param("pool-cw-norm-mask", torch.float32, id="pool-channelwise-norm-mask-fp32"),
    pytest.param("kernel-norm-mask", torch.float32, id="packernel-norm-mask-fp32"),
    pytest.param("conv-norm-mask", torch.float64, id="conv-norm-mask-fp64"),
    pytest.param("pool-norm-mask", torch.float64, id="pool-norm-mask-fp64"),
]


@pytest.mark.parametrize("case,dtype", SUBNORMAL)
def test_subnormal_normaliser_stays_finite(case, dtype):
    """The normaliser of every pixel is a sum of subnormal K values (fp32: guide distance 13.57,
    exp(-92) ~ 1e-40; fp64: 37.8, exp(-714) ~ 1e-310): its reciprocal overflows, the quotient
    does not. Triton equals the reference, forward and backward."""
    torch.manual_seed(0)
    far = 13.57 if dtype == torch.float32 else 37.8
    op = case.split("-")[0]
    transposed = op == "transposed"
    guide = _far_guide(dtype, far)
    if transposed:
        x = torch.randn(1, 2, 2, 3, dtype=dtype, device=DEV)
    else:
        x = torch.randn(1, 2, 4, 6, dtype=dtype, device=DEV)
    mask = None
    if "mask" in case:  # mask the centre of every pixel: only far taps remain
        mask = torch.ones(1, 1, 4, 6, dtype=dtype, device=DEV)
        mask[..., ::2, 1::2] = 0
        mask[..., 1::2, ::2] = 0
    norm = "norm" in case
    channel_wise = "-cw-" in case
    if channel_wise:
        guide = guide.expand(1, 2, 4, 6).contiguous()

    def run(backend, x, guide):
        dt = x.dtype
        m = mask.to(dt) if mask is not None else None
        if op == "conv":
            w = torch.ones(3, 2, 3, 3, dtype=dt, device=DEV)
            out = pac.pac_conv2d(x, guide, w, padding=1, normalize_kernel=norm, mask=m, backend=backend)
        elif op == "shared":
            w = torch.ones(1, 1, 3, 3, dtype=dt, device=DEV)
            out = pac.pac_conv2d(x, guide, w, padding=1, normalize_kernel=norm, mask=m, shared_filters=True,
                                 backend=backend)
        elif op == "transposed":
            w = torch.ones(2, 3, 3, 3, dtype=dt, device=DEV)
            out = pac.pac_conv_transpose2d(x, guide, w, stride=2, padding=1, output_padding=1,
                                           normalize_kernel=norm, backend=backend)
        elif op == "pool":
            out = pac.pac_pool2d(x, guide, 3, padding=1, normalize_kernel=norm, mask=m, channel_wise=channel_wise,
                                 backend=backend)
        else:
            out = pac.packernel2d(guide, m, kernel_size=3, padding=1, normalize_kernel=norm, backend=backend)[0]
            out = out * x.sum()
        return out[0] if isinstance(out, tuple) else out

    (ref_out, ref_grads), (tri_out, tri_grads) = _both(run, x, guide)
    assert torch.isfinite(tri_out).all() and all(torch.isfinite(g).all() for g in tri_grads)
    assert_close_rel(tri_out, ref_out, tol(dtype), "output")
    assert_close_rel(tri_grads[0], ref_grads[0], tol(dtype), "d input")
    if dtype == torch.float32:
        # The reference's autograd chains through dL/dK ~ 1/N, which overflows float32 (its guide
        # gradient is NaN here); the same fp32 inputs in float64 have normal sums: the oracle.
        x64, g64 = x.double().requires_grad_(), guide.double().requires_grad_()
        out64 = run("reference", x64, g64)
        torch.manual_seed(1)
        out64.backward(torch.randn(out64.shape, dtype=torch.float32, device=DEV).double())
        assert_close_rel(tri_grads[1], g64.grad, 1e-4, "d guide")


# --- 3. inv_alpha_0: x ** 0 = 1 for an infinite distance --------------------------------------

@pytest.mark.parametrize("op", ["conv", "transposed", "pool", "kernel"])
def test_inv_lambda_zero_with_overflowing_distance(op):
    """One guide value 1e20 makes its taps' distance inf in float32; with lambda = 0 the
    reference gives K = alpha + inf ** 0 = alpha + 1 there (torch.pow), not NaN."""
    torch.manual_seed(0)
    guide = torch.randn(1, 1, 5, 5, device=DEV)
    guide[0, 0, 2, 2] = 1e20
    kt = "inv_0.5_0"

    def run(backend, x, guide):
        if op == "conv":
            return pac.pac_conv2d(x, guide, torch.ones(2, 2, 3, 3, device=DEV), padding=1, kernel_type=kt,
                                  backend=backend)
        if op == "transposed":
            return pac.pac_conv_transpose2d(x[..., :3, :3], guide, torch.ones(2, 2, 3, 3, device=DEV), stride=2,
                                            padding=1, kernel_type=kt, backend=backend)
        if op == "pool":
            return pac.pac_pool2d(x, guide, 3, padding=1, kernel_type=kt, backend=backend)
        k, _ = pac.packernel2d(guide, kernel_size=3, padding=1, kernel_type=kt, backend=backend)
        return k * x.sum()

    x = torch.randn(1, 2, 5, 5, device=DEV)
    results = _both(run, x, guide)
    for out, grads in results:
        assert torch.isfinite(out).all()
        assert torch.isfinite(grads[0]).all()
    _assert_same(results, torch.float32, ["input", "guide"])


def _nan_guide_run(op, kt):
    def run(backend, x, guide):
        if op == "conv":
            return pac.pac_conv2d(x, guide, torch.linspace(-1, 1, 36, device=DEV, dtype=x.dtype).reshape(2, 2, 3, 3), padding=1,
                                  kernel_type=kt, backend=backend)
        if op == "depthwise":
            return pac.pac_conv2d(x, guide, torch.linspace(-1, 1, 18, device=DEV, dtype=x.dtype).reshape(2, 1, 3, 3), padding=1,
                                  groups=2, kernel_type=kt, backend=backend)
        if op == "transposed":
            return pac.pac_conv_transpose2d(x[..., :3, :3], guide, torch.ones(2, 2, 3, 3, device=DEV, dtype=x.dtype),
                                            stride=2, padding=1, kernel_type=kt, backend=backend)
        if op == "pool":
            return pac.pac_pool2d(x, guide, 3, padding=1, kernel_type=kt, backend=backend)
        k, _ = pac.packernel2d(guide, kernel_size=3, padding=1, kernel_type=kt, backend=backend)
        return k * x.sum()
    return run


@pytest.mark.parametrize("op", ["conv", "depthwise", "transposed", "pool", "kernel"])
def test_asym_kernel_propagates_a_nan_guide_value(op):
    """An ``_asym`` kernel passes the guide difference through relu. ``tl.maximum(d, 0)`` returns
    0 for a NaN, so a NaN guide value gave a finite K and finite outputs and gradients, silently,
    where the reference (``torch.relu``: NaN stays NaN) gives NaN at the pixels whose taps read
    it. Now the NaN patterns and values agree, forward and backward (relu's backward as
    torch's: exactly 0 where its output is <= 0, a NaN passed on)."""
    torch.manual_seed(0)
    guide = torch.randn(1, 2, 5, 5, device=DEV, dtype=torch.float64)
    guide[0, 1, 2, 2] = float("nan")
    x = torch.randn(1, 2, 5, 5, device=DEV, dtype=torch.float64)
    results = _both(_nan_guide_run(op, "inv_1_-2_asym"), x, guide)
    assert torch.isnan(results[0][0]).any()  # the case reaches the NaN
    _assert_same(results, torch.float64, ["input", "guide"])


@pytest.mark.parametrize("op", ["conv", "depthwise", "transposed", "pool", "kernel"])
def test_inv_lambda_zero_with_a_nan_guide_channel(op):
    """lambda = 0: K = alpha + 1 whatever the distance, so its gradient through the distance is
    exactly 0 (torch.pow's backward for a zero exponent). The Triton guide pass formed
    0 * (r + eps)^-1, NaN for a NaN distance, and spread it to the pixel's other, finite guide
    channels."""
    torch.manual_seed(0)
    guide = torch.randn(1, 2, 5, 5, device=DEV, dtype=torch.float64)
    guide[0, 1, 2, 2] = float("nan")
    x = torch.randn(1, 2, 5, 5, device=DEV, dtype=torch.float64)
    results = _both(_nan_guide_run(op, "inv_0.5_0"), x, guide)
    assert torch.isfinite(results[0][0]).all()
    assert torch.isfinite(results[0][1][1][0, 0]).all()  # the reference's finite channel
    _assert_same(results, torch.float64, ["input", "guide"])


# --- 4. mixed dtypes ---------------------------------------------------------------------------

def test_issue_example_float64_guide_with_float32_input():
    x = torch.ones(1, 1, 1, 3, device=DEV)
    guide = torch.tensor([[[[1e8, 1e8 + 1, 1e8 + 2]]]], dtype=torch.float64, device=DEV)
    y = pac.pac_conv2d(x, guide, torch.ones(1, 1, 1, 3, device=DEV), padding=(0, 1), backend="triton")
    e = torch.exp(torch.tensor(-0.5)).item()
    expected = torch.tensor([[[[1 + e, 1 + 2 * e, 1 + e]]]], device=DEV)
    torch.testing.assert_close(y, expected)


MIXED = [
    pytest.param("conv", torch.float32, torch.float64, id="conv-x32-g64"),
    pytest.param("conv", torch.float64, torch.float32, id="conv-x64-g32"),
    pytest.param("conv-norm-mask", torch.float32, torch.float64, id="conv-norm-mask-x32-g64"),
    pytest.param("conv-smooth", torch.float64, torch.float32, id="conv-smooth-x64-g32"),
    pytest.param("transposed", torch.float32, torch.float64, id="transposed-x32-g64"),
    pytest.param("pool", torch.float32, torch.float64, id="pool-x32-g64"),
    pytest.param("pool", torch.float64, torch.float32, id="pool-x64-g32"),
]


@pytest.mark.parametrize("op,xdt,gdt", MIXED)
def test_mixed_dtypes_follow_one_rule(op, xdt, gdt):
    """Large guide values whose differences float32 K math rounds away: both backends compute
    K in float64 (the rule), and every gradient comes back in its tensor's dtype."""
    torch.manual_seed(0)
    x = torch.randn(1, 2, 4, 5, dtype=xdt, device=DEV)
    guide = (1e4 + torch.randn(1, 2, 4, 5, dtype=torch.float64, device=DEV) * 3).to(gdt)
    mask = torch.ones(1, 1, 4, 5, dtype=xdt, device=DEV) if "mask" in op else None
    smooth = "full_3" if "smooth" in op else "none"
    sk = torch.rand(1, 1, 3, 3, dtype=gdt, device=DEV) if smooth != "none" else None

    def run(backend, x, guide):
        if op.startswith("conv"):
            w = torch.ones(3, 2, 3, 3, dtype=xdt, device=DEV)
            return pac.pac_conv2d(x, guide, w, padding=1, kernel_type="inv_0_-1", normalize_kernel="norm" in op,
                                  mask=mask, smooth_kernel_type=smooth, smooth_kernel=sk, backend=backend)
        if op == "transposed":
            w = torch.ones(2, 3, 3, 3, dtype=xdt, device=DEV)
            return pac.pac_conv_transpose2d(x[..., :2, :3], guide, w, stride=2, padding=1, output_padding=(1, 0),
                                            kernel_type="inv_0_-1", backend=backend)
        return pac.pac_pool2d(x, guide, 3, padding=1, kernel_type="inv_0_-1", backend=backend)

    results = _both(run, x, guide)
    (ref_out, ref_grads), (tri_out, tri_grads) = results
    assert tri_out.dtype == xdt
    assert tri_grads[0].dtype == xdt and tri_grads[1].dtype == gdt
    _assert_same(results, torch.float32, ["input", "guide"])
    # float32 K math would differ by far more than float32 output rounding here
    assert_close_rel(tri_out, ref_out, 1e-6, "output (float64 K math)")


# --- 6. 64-bit indexing per buffer; batches beyond the grid limit ------------------------------

@contextlib.contextmanager
def _captured_launches():
    """Every kernel launch (grid, tensor arguments, meta-parameters) below the backend's own
    launch code: the Triton runtime's ``run``."""
    if torch.cuda.is_available():
        from triton.runtime.jit import JITFunction as Fn
    else:
        from triton.runtime.interpreter import InterpretedFunction as Fn
    launches = []
    original = Fn.run

    def run(self, *args, grid, warmup, **kwargs):
        launches.append((getattr(self, "__name__", str(self)), grid, args, kwargs))
        return original(self, *args, grid=grid, warmup=warmup, **kwargs)

    Fn.run = run
    try:
        yield launches
    finally:
        Fn.run = original


def _all_ops(B=2):
    """(name, thunk) per operator and option family that reaches distinct kernels; each thunk
    runs the forward and a backward asking for every gradient."""
    def make(name, fn, *tensors):
        def thunk():
            leaves = [t.detach().clone().requires_grad_() for t in tensors]
            out = fn(*leaves)
            out = out[0] if isinstance(out, tuple) else out
            out.backward(torch.ones_like(out))
            return out, [t.grad for t in leaves]
        return name, thunk

    torch.manual_seed(0)
    x = torch.randn(B, 2, 5, 4, device=DEV)
    g = torch.randn(B, 2, 5, 4, device=DEV)
    xt = torch.randn(B, 2, 3, 2, device=DEV)
    w = torch.randn(3, 2, 3, 3, device=DEV)
    wt = torch.randn(2, 3, 3, 3, device=DEV)
    ws = torch.randn(1, 1, 3, 3, device=DEV)
    bias = torch.randn(3, device=DEV)
    mask = (torch.rand(B, 1, 5, 4, device=DEV) > 0.2).float()
    alpha, lam = torch.tensor(0.2, device=DEV), torch.tensor(-1.0, device=DEV)
    kern = torch.rand(B, 1, 3, 3, 5, 4, device=DEV)
    kern_cw = torch.rand(B, 2, 3, 3, 5, 4, device=DEV)
    inv = dict(kernel_type="inv_0.2_-1")
    return [
        make("conv-norm-mask", lambda x, g, w, b: pac.pac_conv2d(x, g, w, b, padding=1, normalize_kernel=True,
                                                                 mask=mask, backend="triton"), x, g, w, bias),
        make("conv-inv", lambda x, g, w, a, l: pac.pac_conv2d(x, g, w, padding=1, inv_alpha=a, inv_lambda=l,
                                                              backend="triton", **inv), x, g, w, alpha, lam),
        make("shared-smooth", lambda x, g, w: pac.pac_conv2d(x, g, w, padding=1, shared_filters=True,
                                                             smooth_kernel_type="gaussian", backend="triton"),
             x, g, ws),
        make("transposed-norm", lambda x, g, w: pac.pac_conv_transpose2d(x, g, w, stride=2, padding=1,
                                                                         output_padding=(0, 1),
                                                                         normalize_kernel=True, backend="triton"),
             xt, g, wt),
        make("pool-cw-inv", lambda x, g, a, l: pac.pac_pool2d(x, g, 3, padding=1, channel_wise=True, inv_alpha=a,
                                                              inv_lambda=l, backend="triton", **inv),
             x, g, alpha.expand(2).clone(), lam.expand(2).clone()),
        make("packernel-cw-norm", lambda g: pac.packernel2d(g, mask, kernel_size=3, padding=1, channel_wise=True,
                                                            normalize_kernel=True, backend="triton")[0], g),
        make("pacconv-kernel", lambda x, k, w: pac.pacconv2d(x, k, w, padding=1, backend="triton"), x, kern, w),
        make("pacpool-kernel-cw", lambda x, k: pac.pacpool2d(x, k, 3, padding=1, backend="triton"), x, kern_cw),
    ]


@pytest.mark.parametrize("name", [n for n, _ in _all_ops()])
def test_index_width_is_decided_by_every_buffer(name, monkeypatch):
    """With the 32-bit limit lowered between the inputs' size (B*C*H*W = 80 elements) and dL/dK's
    (B*k*k*Ho*Wo = 360; channel-wise K more), every launch that touches a buffer above it
    indexes in 64 bits and no other launch does."""
    limit = 150
    monkeypatch.setattr(hc, "INDEX32_LIMIT", limit)
    with _captured_launches() as launches:
        dict(_all_ops())[name]()
    wide = 0
    for kname, _, args, kw in launches:
        big = [hc._span(a) for a in (*args, *kw.values()) if isinstance(a, torch.Tensor)
               and hc._span(a) > limit]
        assert kw["IDX64"] == bool(big), f"{kname}: IDX64={kw['IDX64']} with buffer spans above {limit}: {big}"
        wide += bool(big)
    assert wide, "the lowered limit made no launch 64-bit: the test checks nothing"


# one operator per custom-op pair (conv, pooling, packernel2d): the split is in the op layer
BATCH_SPLIT_OPS = ["conv-norm-mask", "pool-cw-inv", "packernel-cw-norm"]


@pytest.mark.parametrize("name", BATCH_SPLIT_OPS)
def test_batch_beyond_the_grid_limit_is_split(name, monkeypatch):
    """CUDA caps grid axes 1 and 2 at 65535 and the kernels put the batch there: with the chunk
    lowered to 2, a batch of 3 runs in chunks (2 + 1; no launch takes the whole batch) and
    gives the reference's output and gradients, parameter gradients summed over the chunks."""
    B = 3  # no other grid extent of these shapes is 3 (taps: 9; channel blocks: 1)
    monkeypatch.setattr(hc, "BATCH_CHUNK", 2)
    with _captured_launches() as launches:
        out, grads = dict(_all_ops(B=B))[name]()
    assert any(2 in tuple(grid)[1:] for _, grid, _, _ in launches if not callable(grid))
    for kname, grid, _, _ in launches:
        assert callable(grid) or B not in tuple(grid)[1:], f"{kname}: grid {grid} launches the whole batch"
    monkeypatch.setattr(pac.dispatch, "check_backend", lambda backend: "reference")
    out_ref, grads_ref = dict(_all_ops(B=B))[name]()
    torch.testing.assert_close(out, out_ref, rtol=1e-4, atol=1e-5)
    for g, gr in zip(grads, grads_ref):
        torch.testing.assert_close(g, gr, rtol=1e-4, atol=1e-4)


def test_grid_limit_is_refused_not_wrapped():
    """The launch helper refuses a grid past the limit (an internal error, never a silent
    wrap-around on the device)."""
    with pytest.raises(RuntimeError, match="axis 1 or 2"):
        hc.checked(object())[(1, 1, hc.GRID_YZ_LIMIT + 1)]


def test_callable_grid_limit_is_refused_at_the_launched_config():
    """An autotuned launch passes a grid of the config (a callable): the helper checks what it
    returns for the config being launched, as it checks a fixed grid."""
    class FakeKernel:
        def __getitem__(self, grid):
            return lambda **meta: grid(meta)

    launch = hc.checked(FakeKernel())[lambda meta: (1, -(-(hc.GRID_YZ_LIMIT * 64 + 1) // meta["BLOCK_C"]), 1)]
    with pytest.raises(RuntimeError, match="axis 1 or 2"):
        launch(BLOCK_C=32)
    assert hc.checked(FakeKernel())[lambda meta: (1, 2, 3)](BLOCK_C=32) == (1, 2, 3)
