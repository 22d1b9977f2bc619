"""Triton backward against the reference's autograd: every gradient (input, guide through K
incl. the centre feature and the smoothing window, weight, bias, precomputed K, inv_alpha /
inv_lambda, smoothing kernel) of every op, float32 and float64, with small forced tiles (every
axis spans several tiles, ragged edges), NaN-filled gradient buffers, inputs and dL/dy inside
NaN guard bands and the reference forbidden while the Triton path runs. Plus: only requested
gradients, double backward error, opcheck with its autograd checks, a torch.compile training
step, the allocation tracker, and (GPU) bitwise run-to-run reproducibility of all gradients.
"""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from triton_helpers import REF, guarded, guarded_nd, reference_forbidden
from pac_testing import TOL, assert_close_rel, reduction_tol

PT = pytest.importorskip("pac_triton.triton")

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.fixture(autouse=True)
def _setup(small_blocks, monkeypatch):
    from pac_triton.triton import launch
    monkeypatch.setenv("PAC_TRITON_AUTOTUNE", "0")
    monkeypatch.setattr(launch, "allow_tf32", lambda: False)
    yield


def _dev(device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA")
    return torch.device(device)


def _inv(kernel_type, n=None):
    if kernel_type == "gaussian":
        return None, None
    shape = () if n is None else (n,)
    return 0.5 + torch.rand(shape, dtype=torch.float64), -0.5 - 1.5 * torch.rand(shape, dtype=torch.float64)


def _mask(B, H, W):
    m = (torch.rand(B, 1, H, W) > 0.3).double()
    m[0, 0, : H // 2, : W // 2] = 0
    return m


def _run_grads(fn_name, order, tensors, static, grad_names, dtype, device, channels_last=False, seed_gy=None):
    """Reference autograd (float64 on the inputs rounded to ``dtype``) vs the Triton backward
    on ``dtype`` inputs inside NaN guard bands. Returns the Triton gradients."""
    dev = torch.device(device)
    rounded = {k: (None if v is None else v.to(dtype).double().to(dev)) for k, v in tensors.items()}
    leaves = {k: rounded[k].clone().requires_grad_() for k in grad_names if rounded.get(k) is not None}
    args = [leaves.get(k, rounded.get(k)) if k in rounded else static[k] for k in order]
    out = getattr(REF, fn_name)(*args)
    y = out[0] if isinstance(out, tuple) else out
    gy = torch.randn(y.shape, dtype=torch.float64).to(dtype).double().to(dev)
    names = list(leaves)
    exp = torch.autograd.grad(y, [leaves[k] for k in names], gy)

    tri = {}
    for k, v in tensors.items():
        if v is None:
            tri[k] = None
            continue
        v = v.to(dtype).to(dev)
        if v.dim() == 4 and k not in ("weight", "smooth_kernel"):
            v = guarded(v, channels_last and k in ("input", "guide"))
        elif v.dim() == 6:
            v = guarded_nd(v)
        if k in names:
            v = v.requires_grad_()
        tri[k] = v
    targs = [tri[k] if k in tri else static[k] for k in order]
    with reference_forbidden():
        tout = getattr(PT, fn_name)(*targs)
        ty = tout[0] if isinstance(tout, tuple) else tout
        gyt = guarded(gy.to(dtype)) if gy.dim() == 4 else guarded_nd(gy.to(dtype))
        got = torch.autograd.grad(ty, [tri[k] for k in names], gyt)
    for k, g, e in zip(names, got, exp):
        assert g.dtype == tri[k].dtype and g.shape == tri[k].shape, k
        assert not torch.isnan(g).any(), f"d{k}: NaN (unwritten element or stray read)"
        rtol = reduction_tol(dtype, y.numel()) if k in ("inv_alpha", "inv_lambda") else TOL[dtype]
        assert_close_rel(g, e.to(dtype), rtol, f"d{k}")
    return dict(zip(names, got))


# --- pac_conv2d ----------------------------------------------------------------------------

CONV_CASES = [
    # B, C, O, D, H, W, k, s, p, d, kernel_type, normalize, mask, smooth, shared, dtype, channels_last
    (2, 10, 11, 3, 5, 5, (3, 3), (1, 1), (1, 1), (1, 1), "gaussian", False, False, None, False, torch.float32, False),
    (1, 5, 9, 5, 9, 8, (3, 3), (2, 1), (2, 1), (1, 2), "inv_1_-2_asym", True, True, (3, 3), False, torch.float64, True),
    (1, 10, 6, 3, 7, 6, (3, 5), (2, 2), (1, 2), (1, 1), "inv_1_-2", False, True, None, False, torch.float32, False),
    (1, 6, 6, 3, 6, 5, (3, 3), (2, 1), (1, 2), (1, 2), "inv_1_-2", True, True, (1, 3), True, torch.float32, True),
    (1, 5, 5, 2, 6, 6, (3, 3), (1, 1), (1, 1), (1, 1), "gaussian", True, False, None, True, torch.float64, False),
    # D within one forced BLOCK_D: the fused dx / dK pass loads f[q] once per tile (HOIST_F)
    (1, 10, 7, 2, 7, 6, (3, 3), (2, 2), (1, 1), (1, 1), "inv_1_-2_asym", True, True, (3, 3), False, torch.float32,
     False),
    (1, 6, 7, 1, 5, 5, (5, 3), (1, 1), (2, 1), (1, 1), "gaussian", False, False, None, False, torch.float64, True),
    # C, O, D multiples of 16: x, gy and the guide are gathered from channels-last copies
    # (launch._gather_layout)
    (1, 16, 16, 16, 6, 7, (3, 3), (1, 1), (1, 1), (1, 1), "inv_1_-2", False, True, None, False, torch.float32, False),
    (1, 16, 16, 16, 5, 6, (3, 3), (1, 1), (1, 1), (1, 1), "gaussian", True, False, None, True, torch.float32, False),
]


def _conv_tensors(B, C, O, D, H, W, k, kt, use_mask, smooth, shared, Hg=None, Wg=None, transposed=False):
    Hg, Wg = (H, W) if Hg is None else (Hg, Wg)
    alpha, lam = _inv(kt)
    if shared:
        wshape = (1, 1, *k)
    else:
        wshape = (C, O, *k) if transposed else (O, C, *k)
    return dict(input=torch.randn(B, C, H, W, dtype=torch.float64),
                guide=torch.randn(B, D, Hg, Wg, dtype=torch.float64),
                weight=torch.randn(*wshape, dtype=torch.float64),
                bias=torch.randn(C if shared else O, dtype=torch.float64),
                inv_alpha=alpha, inv_lambda=lam,
                smooth_kernel=torch.rand(1, 1, *smooth, dtype=torch.float64) if smooth else None,
                mask=_mask(B, H, W) if use_mask else None)


GRADS = ["input", "guide", "weight", "bias", "inv_alpha", "inv_lambda", "smooth_kernel"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CONV_CASES,
                         ids=lambda c: f"{c[10]}-s{c[7][0]}{c[7][1]}-n{int(c[11])}-m{int(c[12])}-sh{int(c[14])}-{str(c[15])[6:]}")
def test_pac_conv2d_backward(case, device):
    B, C, O, D, H, W, k, s, p, d, kt, norm, use_mask, smooth, shared, dtype, cl = case
    _dev(device)
    tensors = _conv_tensors(B, C, O, D, H, W, k, kt, use_mask, smooth, shared)
    order = ["input", "guide", "weight", "bias", "stride", "padding", "dilation", "kernel_type", "inv_alpha",
             "inv_lambda", "smooth_kernel", "normalize_kernel", "shared_filters", "mask"]
    static = dict(stride=s, padding=p, dilation=d, kernel_type=kt, normalize_kernel=norm, shared_filters=shared)
    _run_grads("pac_conv2d", order, tensors, static, GRADS, dtype, device, cl)


SUBSETS = [("guide",), ("input",), ("weight", "inv_lambda"), ("guide", "smooth_kernel"), ("input", "guide")]


@pytest.mark.parametrize("transposed", [False, True], ids=["conv", "convT"])
@pytest.mark.parametrize("subset", SUBSETS, ids=lambda s: "+".join(s))
def test_conv_backward_gradient_subsets(subset, transposed):
    """Only some inputs require grad: the fused dx / dK pass runs with dx or dK switched off,
    the scale-only guide pass runs ahead of dx (normalised, masked), and each gradient still
    matches the reference. Several channel blocks (dK summed over them in memory)."""
    B, C, O, D, H, W, k = 1, 10, 9, 3, 5, 6, (3, 3)
    s, p, d = (2, 1), (1, 1), (1, 1)
    if transposed:
        op = (1, 0)
        Ho = (H - 1) * s[0] - 2 * p[0] + d[0] * (k[0] - 1) + op[0] + 1
        Wo = (W - 1) * s[1] - 2 * p[1] + d[1] * (k[1] - 1) + op[1] + 1
        tensors = _conv_tensors(B, C, O, D, H, W, k, "inv_1_-2_asym", True, (3, 3), False, Ho, Wo, transposed=True)
        order = ["input", "guide", "weight", "bias", "stride", "padding", "output_padding", "dilation",
                 "kernel_type", "inv_alpha", "inv_lambda", "smooth_kernel", "normalize_kernel", "shared_filters",
                 "mask"]
        static = dict(stride=s, padding=p, output_padding=op, dilation=d, kernel_type="inv_1_-2_asym",
                      normalize_kernel=True, shared_filters=False)
        _run_grads("pac_conv_transpose2d", order, tensors, static, list(subset), torch.float32, "cpu")
    else:
        tensors = _conv_tensors(B, C, O, D, H, W, k, "inv_1_-2_asym", True, (3, 3), False)
        order = ["input", "guide", "weight", "bias", "stride", "padding", "dilation", "kernel_type", "inv_alpha",
                 "inv_lambda", "smooth_kernel", "normalize_kernel", "shared_filters", "mask"]
        static = dict(stride=s, padding=p, dilation=d, kernel_type="inv_1_-2_asym", normalize_kernel=True,
                      shared_filters=False)
        _run_grads("pac_conv2d", order, tensors, static, list(subset), torch.float32, "cpu")


CONVT_CASES = [
    # B, C, O, D, H, W, k, s, p, op, d, kernel_type, normalize, mask, smooth, shared, dtype
    (2, 10, 11, 3, 3, 3, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1), "gaussian", True, True, None, False, torch.float32),
    (1, 5, 6, 4, 3, 2, (3, 5), (2, 3), (0, 1), (1, 2), (2, 1), "inv_1_-2_asym", False, True, (3, 1), False,
     torch.float64),
    (1, 6, 6, 3, 3, 3, (3, 3), (2, 2), (1, 1), (0, 1), (1, 1), "inv_1_-2", True, False, (3, 3), True, torch.float32),
    (1, 16, 16, 3, 3, 4, (3, 3), (2, 2), (1, 1), (1, 0), (1, 1), "gaussian", False, True, None, False, torch.float64),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CONVT_CASES,
                         ids=lambda c: f"{c[11]}-n{int(c[12])}-m{int(c[13])}-sh{int(c[15])}-{str(c[16])[6:]}")
def test_pac_conv_transpose2d_backward(case, device):
    B, C, O, D, H, W, k, s, p, op, d, kt, norm, use_mask, smooth, shared, dtype = case
    _dev(device)
    Ho = (H - 1) * s[0] - 2 * p[0] + d[0] * (k[0] - 1) + op[0] + 1
    Wo = (W - 1) * s[1] - 2 * p[1] + d[1] * (k[1] - 1) + op[1] + 1
    tensors = _conv_tensors(B, C, O, D, H, W, k, kt, use_mask, smooth, shared, Ho, Wo, transposed=True)
    order = ["input", "guide", "weight", "bias", "stride", "padding", "output_padding", "dilation", "kernel_type",
             "inv_alpha", "inv_lambda", "smooth_kernel", "normalize_kernel", "shared_filters", "mask"]
    static = dict(stride=s, padding=p, output_padding=op, dilation=d, kernel_type=kt, normalize_kernel=norm,
                  shared_filters=shared)
    _run_grads("pac_conv_transpose2d", order, tensors, static, GRADS, dtype, device)


POOL_CASES = [
    # B, C, D, H, W, k, s, p, d, kernel_type, normalize, mask, smooth, channel_wise, vec_params, dtype
    (2, 6, 3, 5, 5, (3, 3), (1, 1), (1, 1), (1, 1), "inv_1_-2", True, True, (3, 3), False, False, torch.float32),
    (1, 6, 6, 6, 5, (3, 3), (1, 1), (1, 1), (1, 1), "inv_1_-2_asym", True, True, None, True, True, torch.float64),
    (1, 5, 5, 8, 7, (3, 3), (2, 2), (2, 1), (2, 1), "gaussian", False, True, (3, 3), True, False, torch.float32),
    # C a multiple of 16: x, dL/dy and the guide gathered from channels-last copies
    (1, 16, 16, 5, 6, (3, 3), (1, 1), (1, 1), (1, 1), "inv_1_-2", True, False, None, True, False, torch.float32),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: f"{c[9]}-n{int(c[10])}-m{int(c[11])}-cw{int(c[13])}-{str(c[15])[6:]}")
def test_pac_pool2d_backward(case, device):
    B, C, D, H, W, k, s, p, d, kt, norm, use_mask, smooth, cw, vec, dtype = case
    _dev(device)
    alpha, lam = _inv(kt, C if vec else None)
    if vec and lam is not None:
        lam = lam[0]  # a vector alpha with a 0-d lambda
    tensors = dict(input=torch.randn(B, C, H, W, dtype=torch.float64),
                   guide=torch.randn(B, C if cw else D, H, W, dtype=torch.float64),
                   inv_alpha=alpha, inv_lambda=lam,
                   smooth_kernel=torch.rand(1, 1, *smooth, dtype=torch.float64) if smooth else None,
                   mask=_mask(B, H, W) if use_mask else None)
    order = ["input", "guide", "kernel_size", "stride", "padding", "dilation", "kernel_type", "inv_alpha",
             "inv_lambda", "smooth_kernel", "normalize_kernel", "channel_wise", "mask"]
    static = dict(kernel_size=k, stride=s, padding=p, dilation=d, kernel_type=kt, normalize_kernel=norm,
                  channel_wise=cw)
    _run_grads("pac_pool2d", order, tensors, static, GRADS, dtype, device)


KERNEL_CASES = [
    # B, D, H, W, k, s, p, op, d, kernel_type, normalize, mask, smooth, channel_wise, transposed, dtype
    (2, 3, 5, 5, (3, 3), (1, 1), (1, 1), (0, 0), (1, 1), "inv_1_-2", True, True, (3, 3), False, False, torch.float32),
    (1, 3, 6, 6, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1), "inv_1_-2_asym", False, True, None, True, True,
     torch.float64),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", KERNEL_CASES, ids=lambda c: f"{c[9]}-cw{int(c[13])}-t{int(c[14])}-{str(c[15])[6:]}")
def test_packernel2d_backward(case, device):
    B, D, Hg, Wg, k, s, p, op, d, kt, norm, use_mask, smooth, cw, transposed, dtype = case
    _dev(device)
    if transposed:
        Hm = (Hg - op[0] - 1 - (k[0] - 1) * d[0] + 2 * p[0]) // s[0] + 1
        Wm = (Wg - op[1] - 1 - (k[1] - 1) * d[1] + 2 * p[1]) // s[1] + 1
    else:
        Hm, Wm = Hg, Wg
    alpha, lam = _inv(kt)
    tensors = dict(guide=torch.randn(B, D, Hg, Wg, dtype=torch.float64), mask=_mask(B, Hm, Wm) if use_mask else None,
                   smooth_kernel=torch.rand(1, 1, *smooth, dtype=torch.float64) if smooth else None,
                   inv_alpha=alpha, inv_lambda=lam)
    order = ["guide", "mask", "kernel_size", "stride", "padding", "output_padding", "dilation", "kernel_type",
             "smooth_kernel", "inv_alpha", "inv_lambda", "channel_wise", "normalize_kernel", "transposed"]
    static = dict(kernel_size=k, stride=s, padding=p, output_padding=op, dilation=d, kernel_type=kt,
                  channel_wise=cw, normalize_kernel=norm, transposed=transposed)
    _run_grads("packernel2d", order, tensors, static, GRADS, dtype, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op,shared,dtype", [("pacconv2d", False, torch.float32),
                                             ("pacconv_transpose2d", True, torch.float64),
                                             ("pacpool2d", False, torch.float32)])
def test_given_kernel_backward(op, shared, dtype, device):
    _dev(device)
    B, C, O, H, W, k = 1, 6, 7, 5, 4, (3, 3)
    if op == "pacconv_transpose2d":
        s, p, opad, d = (2, 2), (1, 0), (1, 1), (1, 1)
        Ho, Wo = (H - 1) * 2 - 2 + 2 + 2, (W - 1) * 2 + 2 + 2
    else:
        s, p, d = (2, 1), (1, 2), (1, 2)
        Ho, Wo = (H - 1) // 2 + 1, W
    kc = C if op == "pacpool2d" else 1
    tensors = dict(input=torch.randn(B, C, H, W, dtype=torch.float64),
                   kernel=torch.rand(B, kc, *k, Ho, Wo, dtype=torch.float64))
    if op == "pacpool2d":
        order = ["input", "kernel", "kernel_size", "stride", "padding", "dilation"]
        static = dict(kernel_size=k, stride=s, padding=p, dilation=d)
    else:
        O = C if shared else O
        wshape = (1, 1, *k) if shared else ((C, O, *k) if op == "pacconv_transpose2d" else (O, C, *k))
        tensors.update(weight=torch.randn(*wshape, dtype=torch.float64), bias=torch.randn(O, dtype=torch.float64))
        if op == "pacconv2d":
            order = ["input", "kernel", "weight", "bias", "stride", "padding", "dilation", "shared_filters"]
            static = dict(stride=s, padding=p, dilation=d, shared_filters=shared)
        else:
            order = ["input", "kernel", "weight", "bias", "stride", "padding", "output_padding", "dilation",
                     "shared_filters"]
            static = dict(stride=s, padding=p, output_padding=opad, dilation=d, shared_filters=shared)
    _run_grads(op, order, tensors, static, ["input", "kernel", "weight", "bias"], dtype, device)


# --- plumbing --------------------------------------------------------------------------------

def test_implemented_backward():
    assert PT.IMPLEMENTED_BACKWARD == PT.IMPLEMENTED


def test_only_requested_gradients(monkeypatch):
    """Guide not requiring grad: no dK pass, no guide kernels run."""
    from pac_triton.triton import kernels_bwd as KB
    ran = []
    for name in ("pac_conv_dxdk_kernel", "pac_guide_pass_kernel", "pac_guide_gather_kernel", "pac_conv_dw_kernel"):
        fn = getattr(KB, name)

        class _Spy:
            def __init__(self, fn, name):
                self.fn, self.name = fn, name

            def __getitem__(self, grid):
                ran.append(self.name)
                return self.fn[grid]
        monkeypatch.setattr(KB, name, _Spy(fn, name))
    x = torch.randn(1, 3, 5, 5, requires_grad=True)
    g = torch.randn(1, 2, 5, 5)
    w = torch.randn(4, 3, 3, 3)
    y, _ = PT.pac_conv2d(x, g, w, None, (1, 1), (1, 1), (1, 1), "gaussian", None, None, None, False, False, None)
    y.sum().backward()
    assert ran == ["pac_conv_dxdk_kernel"], ran
    assert x.grad is not None and w.grad is None


def test_double_backward_raises():
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    g = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    y, _ = PT.pac_conv2d(x, g, w, None, (1, 1), (1, 1), (1, 1), "gaussian", None, None, None, False, False, None)
    (dx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError, match="double backward"):
        dx.sum().backward()


def test_opcheck_backward():
    ops = torch.ops.pac_triton
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    g = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    m = (torch.rand(1, 1, 4, 4) > 0.3).double()
    a = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    lm = torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)
    tests = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    torch.library.opcheck(ops.triton_conv_fwd, (x, w, b, g, None, m, None, a, lm, [1, 1], [1, 1], [0, 0], [1, 1],
                                                1, True, False, False), test_utils=tests)
    gp = torch.randn(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(ops.triton_pool_fwd, (x, gp, None, None, None, None, None, [3, 3], [1, 1], [1, 1], [1, 1],
                                                0, False, True), test_utils=tests)
    torch.library.opcheck(ops.triton_kernel_fwd, (g, m, None, None, None, [3, 3], [1, 1], [1, 1], [0, 0], [1, 1],
                                                  0, False, True, False), test_utils=tests)


def test_torch_compile_training_step():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 5, 5)
    g0 = torch.randn(1, 2, 5, 5)
    w0 = torch.randn(4, 3, 3, 3)
    sk0 = torch.full((1, 1, 3, 3), 1 / 9)

    def loss_fn(x, g, w, sk):
        y, _ = PT.pac_conv2d(x, g, w, None, (1, 1), (1, 1), (1, 1), "gaussian", None, None, sk, True, False, None)
        p, _ = PT.pac_pool2d(y, y, (3, 3), (1, 1), (1, 1), (1, 1), "gaussian", None, None, None, False, True, None)
        return p.square().mean()

    def step(fn):
        leaves = g0.clone().requires_grad_(), w0.clone().requires_grad_(), sk0.clone().requires_grad_()
        fn(x, *leaves).backward()
        return [t.grad for t in leaves]

    exp = step(loss_fn)
    torch._dynamo.reset()
    got = step(torch.compile(loss_fn, fullgraph=True, backend="aot_eager"))
    for a, b in zip(got, exp):
        torch.testing.assert_close(a, b)


class _Tracker(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.max_numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor):
                self.max_numel = max(self.max_numel, t.numel())
        return out


def test_backward_allocations():
    """No C*k*k*H*W buffer: the largest allocation of the backward is dK (k*k*Ho*Wo per image)
    or a gradient / input."""
    B, C, O, D, H, W, k = 1, 4, 4, 2, 6, 6, 5
    x = torch.randn(B, C, H, W, requires_grad=True)
    g = torch.randn(B, D, H, W, requires_grad=True)
    w = torch.randn(O, C, k, k, requires_grad=True)
    m = (torch.rand(B, 1, H, W) > 0.3).float()
    y, _ = PT.pac_conv2d(x, g, w, None, (1, 1), (2, 2), (1, 1), "gaussian", None, None,
                         torch.rand(1, 1, 3, 3), True, False, m)
    tracker = _Tracker()
    with reference_forbidden(), tracker:
        y.backward(torch.randn_like(y))
    limit = max(k * k * B * H * W, w.numel(), x.numel())
    assert tracker.max_numel <= limit, (tracker.max_numel, limit)
    assert tracker.max_numel < C * k * k * B * H * W


@pytest.mark.gpu
def test_backward_bitwise_reproducible():
    """Two runs give the same bits for every gradient (no atomics; fixed-order split sums),
    also under torch.use_deterministic_algorithms(True)."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA")
    dev = torch.device("cuda")
    torch.manual_seed(0)
    B, C, O, D, H, W, k = 2, 32, 32, 8, 33, 29, (5, 5)
    base = dict(x=torch.randn(B, C, H, W, device=dev), g=torch.randn(B, D, H, W, device=dev),
                w=torch.randn(O, C, *k, device=dev), b=torch.randn(O, device=dev),
                a=torch.tensor(1.0, device=dev), lm=torch.tensor(-2.0, device=dev),
                sk=torch.full((1, 1, 3, 3), 1 / 9, device=dev))
    m = (torch.rand(B, 1, H, W, device=dev) > 0.3).float()
    gy = None

    def run():
        nonlocal gy
        t = {k_: v.clone().requires_grad_() for k_, v in base.items()}
        y, _ = PT.pac_conv2d(t["x"], t["g"], t["w"], t["b"], (1, 1), (2, 2), (1, 1), "inv_1_-2", t["a"], t["lm"],
                             t["sk"], True, False, m)
        if gy is None:
            gy = torch.randn_like(y)
        return torch.autograd.grad(y, list(t.values()), gy)

    old = torch.are_deterministic_algorithms_enabled()
    try:
        for det in (False, True):
            torch.use_deterministic_algorithms(det)
            r1, r2 = run(), run()
            for a, b in zip(r1, r2):
                assert torch.equal(a, b)
    finally:
        torch.use_deterministic_algorithms(old)
