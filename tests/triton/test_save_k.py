"""``PAC_TRITON_SAVE_K`` (``configs.settings.save_k``): a dense-family conv or transposed conv
with a guide whose backward will run computes K once (``packernel2d``'s kernel, in the K math's
dtype), reads it in the forward and in the backward's dx / dK and dW passes, and chains dL/dK
through ``packernel2d``'s backward to the guide, smoothing and inv parameters.

Against the float64 reference (output, out-mask and every gradient; inputs inside NaN guard
bands, outputs NaN-filled first, small forced tiles) and against the fused path, with the
launches that show which route ran. Default off: the fused path's tests cover it."""
from __future__ import annotations

import pytest
import torch

from pac_testing import TOL, assert_close_rel, reduction_tol
from triton_helpers import (DEVICES, GRADS, ORDER, PT, REF, STATIC_DEFAULTS, _triton_input, device_or_skip, guarded,
                            reference_forbidden, spy_launches)
from test_conv import BF16, F16, F64, conv_case, conv_static, conv_tensors, convt_case

pytest.importorskip("pac_triton.triton")


@pytest.fixture
def routes(monkeypatch):
    """``(kernel, K_MODE)`` of every conv launch and ``("packernel", k dtype)`` of every
    ``packernel2d`` kernel launch, in order."""
    from pac_triton.triton import conv, kernel_map
    convs = {conv.pac_conv_kernel: "fwd", conv.pac_conv_dxdk_kernel: "dxdk", conv.pac_conv_dw_kernel: "dw"}

    def record(fn, k):
        if fn in convs:
            return convs[fn], int(k["K_MODE"])
        if fn is kernel_map.pac_kernel_kernel:
            return "packernel", k["k_ptr"].dtype
        return None
    return spy_launches(monkeypatch, record)


@pytest.fixture
def save_k(monkeypatch):
    from pac_triton.triton import configs
    monkeypatch.setattr(configs.settings, "save_k", True)


def _run(fn_name, tensors, static, dtype, device, channels_last):
    """Output, out-mask and every gradient of the Triton call against the float64 reference on
    the inputs rounded to ``dtype``; returns the Triton results by name."""
    order = ORDER[fn_name]
    static = {**STATIC_DEFAULTS, **static}
    dev = torch.device(device)
    rounded = {k: (None if v is None else v.to(dtype).double().to(dev)) for k, v in tensors.items()}
    names = [k for k in GRADS if rounded.get(k) is not None]
    leaves = {k: rounded[k].clone().requires_grad_() for k in names}
    y, om = getattr(REF, fn_name)(*[leaves.get(k, rounded.get(k)) if k in rounded else static[k] for k in order])
    gy = torch.randn(y.shape, dtype=torch.float64).to(dtype).double().to(dev)
    exp = torch.autograd.grad(y, [leaves[k] for k in names], gy)
    tri = {}
    for k, v in tensors.items():
        tri[k] = None if v is None else _triton_input(k, v.to(dev), dtype, channels_last)
        if k in names:
            tri[k].requires_grad_()
    with reference_forbidden():
        ty, tom = getattr(PT(), fn_name)(*[tri[k] if k in tri else static[k] for k in order])
        got = torch.autograd.grad(ty, [tri[k] for k in names], guarded(gy.to(dtype)))
    assert ty.dtype == dtype and not torch.isnan(ty).any()
    assert_close_rel(ty, y.to(dtype), TOL[dtype], "y")
    if om is None:
        assert tom is None
    else:
        assert tom.dtype == tri["guide"].dtype and torch.equal(tom.double(), om), "out_mask"
    out = {"y": ty}
    for k, g, e in zip(names, got, exp):
        assert g.dtype == tri[k].dtype and g.shape == tri[k].shape, k
        assert not torch.isnan(g).any(), f"d{k}: NaN (unwritten element or stray read)"
        rtol = reduction_tol(dtype, y.numel()) if k in ("inv_alpha", "inv_lambda") else TOL[dtype]
        assert_close_rel(g, e.to(dtype), rtol, f"d{k}")
        out[k] = g
    return out


CASES = [
    conv_case("conv-k3-gauss-f32", B=2, C=10, O=11, D=3, H=5, W=5),
    conv_case("conv-k3-s2x1-d1x2-invasym-norm-mask-smooth3-f64-cl", C=5, O=9, D=5, H=9, W=8, s=(2, 1), p=(2, 1),
              d=(1, 2), kt="inv_1_-2_asym", norm=True, mask=True, smooth=(3, 3), dtype=F64, cl=True),
    # C multiple of 16, NCHW: the padded paths (x and dL/dy from zero-padded staging copies)
    conv_case("conv-C16-D3-k5-inv-mask-norm-bf16", C=16, O=16, D=3, H=6, W=7, k=(5, 5), p=(2, 2), kt="inv_1_-2",
              mask=True, norm=True, dtype=BF16),
    conv_case("conv-C16-G2-k3-p2-d2-gauss-smooth3-f16", C=16, O=12, G=2, D=4, H=6, W=5, p=(2, 2), d=(2, 2),
              smooth=(3, 3), dtype=F16),
    convt_case("convT-k3-s2-op1-gauss-norm-mask-f32", B=2, C=10, O=11, D=3, H=3, W=3, op=(1, 1), norm=True,
               mask=True),
    convt_case("convT-k3x5-s2x3-d2x1-invasym-mask-smooth3x1-G2-f64", C=6, O=4, G=2, D=4, H=3, W=2, k=(3, 5),
               s=(2, 3), p=(0, 1), op=(1, 2), d=(2, 1), kt="inv_1_-2_asym", mask=True, smooth=(3, 1), dtype=F64),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("c", CASES)
def test_saved_k_route(c, device, save_k, routes):
    """The saved-K route against the reference: one K (in the K math's dtype) from
    ``packernel2d``'s kernel, every conv pass reading it (K_LOAD), none computing K."""
    from pac_triton.triton.host_common import K_LOAD
    device_or_skip(device)
    fn = "pac_conv_transpose2d" if c.transposed else "pac_conv2d"
    _run(fn, conv_tensors(c, transposed=c.transposed), conv_static(c, c.transposed), c.dtype, device, c.cl)
    kdt = torch.float64 if c.dtype == F64 else torch.float32
    assert routes[0] == ("packernel", kdt), routes
    assert [r for r in routes if r[0] == "packernel"] == [routes[0]], routes
    passes = [r for r in routes if r[0] != "packernel"]
    assert {p for p, _ in passes} == {"fwd", "dxdk", "dw"} and all(m == K_LOAD for _, m in passes), routes


def test_saved_k_equals_fused():
    """The two routes of one call agree to rounding (float32: K stored in float32, as the fused
    path computes it), and the switch changes nothing else: same dtypes, layouts, gradients."""
    from pac_triton.triton import configs
    c = conv_case("conv-k3-inv-mask-norm-smooth3-f32", C=6, O=5, D=3, H=5, W=6, kt="inv_1_-2", mask=True, norm=True,
                  smooth=(3, 3)).values[0]
    t = {k: (None if v is None else v.float()) for k, v in conv_tensors(c).items()}
    static = {**STATIC_DEFAULTS, **conv_static(c)}
    res = {}
    for on in (False, True):
        configs.settings.save_k = on
        try:
            leaves = {k: t[k].clone().requires_grad_() for k in GRADS if t.get(k) is not None}
            y, om = PT().pac_conv2d(*[leaves.get(k, t.get(k)) if k in t else static[k] for k in ORDER["pac_conv2d"]])
            y.backward(torch.ones_like(y))
            res[on] = dict(y=y.detach(), om=om, **{k: v.grad for k, v in leaves.items()})
        finally:
            configs.settings.save_k = None
    for k, v in res[False].items():
        w = res[True][k]
        assert w.dtype == v.dtype and w.shape == v.shape and w.stride() == v.stride(), k
        assert_close_rel(w, v, TOL[torch.float32], k)


# (bad guide value, kernel type, transposed): with the route's packernel2d backward reading every
# tap (as packernel2d's own does without a mask or normalisation), every transposed case and the
# constant-1e20 conv case gave NaN gradients where the fused path's are finite; the conv NaN / Inf
# cases check that the route keeps the fused path's NaN / Inf patterns
NON_FINITE = [("nan", "gaussian", True), ("inf", "gaussian", True), ("const-1e20", "inv_1_-4", False),
              ("nan", "gaussian", False), ("inf", "gaussian", False), ("1e20", "inv_1_-2_asym", True)]


@pytest.mark.parametrize("bad,kt,transposed", NON_FINITE,
                         ids=[f"{b}-{k}-{'convT' if t else 'conv'}" for b, k, t in NON_FINITE])
def test_saved_k_non_finite_guide(bad, kt, transposed):
    """A non-finite (or huge) guide value gives the fused path's gradients: the taps that read no
    input pixel (padding; a transposed conv's taps between input pixels) contribute exactly 0 to
    every gradient (docs/semantics.md), so ``packernel2d``'s backward skips them on this route
    (without a mask or normalisation it reads every tap, where K is live: 0 * NaN there)."""
    from pac_triton.triton import configs
    g = torch.Generator().manual_seed(3)
    dt = torch.float64 if bad in ("nan", "inf") else torch.float32
    if transposed:
        x, guide, w = torch.randn(1, 2, 3, 3, generator=g), torch.randn(1, 1, 6, 6, generator=g), \
            torch.randn(2, 2, 3, 3, generator=g)
    else:
        x, guide, w = torch.randn(1, 2, 5, 5, generator=g), torch.randn(1, 1, 5, 5, generator=g), \
            torch.randn(2, 2, 3, 3, generator=g)
    if bad == "const-1e20":
        guide.fill_(1e20)
    else:
        guide[0, 0, 1, 1] = {"nan": float("nan"), "inf": float("inf"), "1e20": 1e20}[bad]
    inv = kt != "gaussian"
    alpha, lam = torch.tensor(1.0, dtype=dt), torch.tensor(-4.0 if bad == "const-1e20" else -2.0, dtype=dt)
    res = {}
    for on in (False, True):
        configs.settings.save_k = on
        try:
            leaves = [t.detach().to(dt, copy=True).requires_grad_() for t in (x, guide, w, alpha, lam)]
            xa, ga, wa, aa, la = leaves
            params = (aa, la) if inv else (None, None)
            if transposed:
                y, _ = PT().pac_conv_transpose2d(xa, ga, wa, None, (2, 2), (1, 1), (1, 1), (1, 1), kt, *params,
                                                 None, False, False, None)
            else:
                y, _ = PT().pac_conv2d(xa, ga, wa, None, (1, 1), (1, 1), (1, 1), kt, *params, None, False, False,
                                       None)
            y.sum().backward()
            res[on] = [y.detach()] + [t.grad for t in leaves[:3]] + ([aa.grad, la.grad] if inv else [])
        finally:
            configs.settings.save_k = None
    for name, a, b in zip(["y", "dx", "dguide", "dweight", "dalpha", "dlambda"], res[False], res[True]):
        assert torch.equal(torch.isnan(a), torch.isnan(b)) and torch.equal(torch.isinf(a), torch.isinf(b)), \
            (name, a, b)
        fin = torch.isfinite(a)
        if fin.any():
            assert_close_rel(b[fin], a[fin], TOL[dt], name)


def _conv_call(groups=1, C=4, requires_grad=True):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, C, 5, 5, generator=g, requires_grad=requires_grad)
    guide = torch.randn(1, 2, 5, 5, generator=g, requires_grad=requires_grad)
    w = torch.randn(C, C // groups, 3, 3, generator=g, requires_grad=requires_grad)
    return lambda: PT().pac_conv2d(x, guide, w, None, (1, 1), (1, 1), (1, 1), "gaussian", None, None, None,
                                   False, False, None, groups)


@pytest.mark.parametrize("why", ["no_grad", "no_input_requires_grad", "inference_mode", "depthwise", "off"])
def test_fused_route_kept(why, routes, monkeypatch):
    """Nothing stores K where no backward will run, for the depthwise family (K computed once
    per pixel tile for all channels), or with the switch off (the default)."""
    from pac_triton.triton import configs
    from pac_triton.triton.host_common import K_GUIDE
    monkeypatch.setattr(configs.settings, "save_k", why != "off")
    call = _conv_call(groups=4 if why == "depthwise" else 1, requires_grad=why != "no_input_requires_grad")
    if why == "no_grad":
        with torch.no_grad():
            call()
    elif why == "inference_mode":
        with torch.inference_mode():
            call()
    else:
        call()
    assert not any(r[0] == "packernel" for r in routes), routes
    if why != "depthwise":
        assert routes == [("fwd", K_GUIDE)], routes


def test_environment_variable(routes, monkeypatch):
    """``PAC_TRITON_SAVE_K``: "1" on, "0" off, anything else a ValueError naming it; read only
    by a call that would use it (autograd recording), and ``settings.save_k`` overrides it."""
    from pac_triton.triton import configs
    monkeypatch.setattr(configs.settings, "save_k", None)
    monkeypatch.setenv(configs.SAVE_K_ENV, "1")
    _conv_call()()
    assert routes[0][0] == "packernel"
    routes.clear()
    monkeypatch.setenv(configs.SAVE_K_ENV, "0")
    _conv_call()()
    assert not any(r[0] == "packernel" for r in routes)
    monkeypatch.setenv(configs.SAVE_K_ENV, "yes")
    with pytest.raises(ValueError, match="PAC_TRITON_SAVE_K.*'yes'"):
        _conv_call()()
    with torch.no_grad():
        _conv_call()()  # not read: no backward to serve
    monkeypatch.setattr(configs.settings, "save_k", False)
    _conv_call()()


def test_saved_k_memory():
    """The route's cost, as documented: one K-sized float32 buffer (k*k*Ho*Wo per image) kept
    from the forward to the backward; the fused path keeps none."""
    from triton_helpers import Tracker
    from pac_triton.triton import configs
    B, C, D, H, W, k = 1, 2, 2, 12, 12, 5
    x = torch.randn(B, C, H, W, requires_grad=True)
    g = torch.randn(B, D, H, W, requires_grad=True)
    w = torch.randn(C, C, k, k, requires_grad=True)
    kbytes = 4 * k * k * B * H * W
    for on in (False, True):
        configs.settings.save_k = on
        try:
            with reference_forbidden(), Tracker() as tracker:
                PT().pac_conv2d(x, g, w, None, (1, 1), (2, 2), (1, 1), "gaussian", None, None, None, False, False,
                                None)
        finally:
            configs.settings.save_k = None
        if on:
            assert tracker.max_bytes == kbytes, (tracker.max_bytes, kbytes)
        else:
            assert tracker.max_bytes < kbytes, tracker.max_bytes
