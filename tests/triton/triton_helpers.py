"""Helpers of the Triton-backend tests (imported by conftest.py and the test files): the oracle,
guard bands, named cases, the forward / backward runners (Triton against the float64
reference) and the allocation tracker."""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
import types

import pytest
import torch

from pac_testing import TOL, assert_close_rel, reduction_tol

HAS_CUDA = torch.cuda.is_available()
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_reference():
    """The oracle: ``pac_triton.reference`` when installed, else the top-level folder by path."""
    try:
        return importlib.import_module("pac_triton.reference")
    except ImportError:
        if ROOT not in sys.path:
            sys.path.insert(0, ROOT)
        return importlib.import_module("reference")


REF = load_reference()
REF_NAMES = ["packernel2d", "pacconv2d", "pacconv_transpose2d", "pacpool2d",
             "pac_conv2d", "pac_conv_transpose2d", "pac_pool2d"]


@contextlib.contextmanager
def reference_forbidden():
    """Every reference entry point (package and submodules) raises inside this block."""
    def boom(*a, **k):
        raise AssertionError("the Triton path called the reference backend")
    mods = [REF] + [importlib.import_module(REF.__name__ + "." + m) for m in ("kernel", "conv", "pool")]
    saved = []
    for mod in mods:
        for name in REF_NAMES:
            if hasattr(mod, name):
                saved.append((mod, name, getattr(mod, name)))
                setattr(mod, name, boom)
    try:
        yield
    finally:
        for mod, name, fn in saved:
            setattr(mod, name, fn)


def guarded(t: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """``t`` (4-D) copied into a strided view of a larger NaN-filled buffer: any read outside
    the view, or of the wrong element, shows up as NaN."""
    if t is None:
        return None
    assert t.dim() == 4
    B, C, H, W = t.shape
    if channels_last:
        buf = torch.full((B + 1, H + 3, W + 2, C + 2), float("nan"), dtype=t.dtype, device=t.device)
        view = buf[1:, 2:H + 2, 1:W + 1, 1:C + 1].permute(0, 3, 1, 2)
    else:
        buf = torch.full((B + 1, C + 2, H + 3, W + 2), float("nan"), dtype=t.dtype, device=t.device)
        view = buf[1:, 1:C + 1, 2:H + 2, 1:W + 1]
    view.copy_(t)
    return view


def guarded_nd(t: torch.Tensor) -> torch.Tensor:
    """Any-rank tensor inside a NaN guard band (a precomputed K)."""
    buf = torch.full(tuple(s + 2 for s in t.shape), float("nan"), dtype=t.dtype, device=t.device)
    view = buf[tuple(slice(1, 1 + s) for s in t.shape)]
    view.copy_(t)
    return view


# --- running one case: Triton against the float64 reference ------------------------------------

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]

# positional argument order of each public function (``pac_triton.triton`` = the reference's)
ORDER = {
    "pac_conv2d": ["input", "guide", "weight", "bias", "stride", "padding", "dilation", "kernel_type", "inv_alpha",
                   "inv_lambda", "smooth_kernel", "normalize_kernel", "shared_filters", "mask", "groups"],
    "pac_conv_transpose2d": ["input", "guide", "weight", "bias", "stride", "padding", "output_padding", "dilation",
                             "kernel_type", "inv_alpha", "inv_lambda", "smooth_kernel", "normalize_kernel",
                             "shared_filters", "mask", "groups"],
    "pac_pool2d": ["input", "guide", "kernel_size", "stride", "padding", "dilation", "kernel_type", "inv_alpha",
                   "inv_lambda", "smooth_kernel", "normalize_kernel", "channel_wise", "mask"],
    "packernel2d": ["guide", "mask", "kernel_size", "stride", "padding", "output_padding", "dilation",
                    "kernel_type", "smooth_kernel", "inv_alpha", "inv_lambda", "channel_wise", "normalize_kernel",
                    "transposed"],
    "pacconv2d": ["input", "kernel", "weight", "bias", "stride", "padding", "dilation", "shared_filters", "groups"],
    "pacconv_transpose2d": ["input", "kernel", "weight", "bias", "stride", "padding", "output_padding", "dilation",
                            "shared_filters", "groups"],
    "pacpool2d": ["input", "kernel", "kernel_size", "stride", "padding", "dilation"],
}
# arguments a case's ``static`` may leave out (the backends' defaults)
STATIC_DEFAULTS = {"groups": 1}
GRADS = ["input", "guide", "weight", "bias", "inv_alpha", "inv_lambda", "smooth_kernel"]


def case(id, **fields):
    """A named test case: ``pytest.param(SimpleNamespace(**fields), id=id)``."""
    return pytest.param(types.SimpleNamespace(**fields), id=id)


@contextlib.contextmanager
def guide_blocks_of_8(D):
    """A guide of 16 or more features in 8-feature blocks (still two or more: the loop over guide
    blocks stays), not the package fixture's 2 (8 blocks per tap at D = 16, these cases' main cost
    in the interpreter); a smaller guide keeps the fixture's blocks."""
    from pac_triton.triton import configs
    if D < 16:
        yield
        return
    with configs.force_blocks(**{**configs.settings.force, "BLOCK_D": 8}):
        yield


def device_or_skip(device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA")
    return torch.device(device)


def inv_params(kernel_type, device="cpu", n=None):
    """Random inv_alpha / inv_lambda (None, None for the gaussian); 1-D of length n if given."""
    if kernel_type == "gaussian":
        return None, None
    shape = () if n is None else (n,)
    alpha = (0.5 + torch.rand(shape, dtype=torch.float64)).to(device)
    lam = (-0.5 - 1.5 * torch.rand(shape, dtype=torch.float64)).to(device)
    return alpha, lam


def make_mask(B, H, W, device="cpu"):
    m = (torch.rand(B, 1, H, W) > 0.3).double()
    m[0, 0, : H // 2, : W // 2] = 0  # a corner with no valid tap for some pixels
    return m.to(device)


def convt_out_hw(H, W, k, s, p, op, d):
    return ((H - 1) * s[0] - 2 * p[0] + d[0] * (k[0] - 1) + op[0] + 1,
            (W - 1) * s[1] - 2 * p[1] + d[1] * (k[1] - 1) + op[1] + 1)


def convt_in_hw(Ho, Wo, k, s, p, op, d):
    return ((Ho - op[0] - 1 - (k[0] - 1) * d[0] + 2 * p[0]) // s[0] + 1,
            (Wo - op[1] - 1 - (k[1] - 1) * d[1] + 2 * p[1]) // s[1] + 1)


def _triton_input(k, v, dtype, channels_last):
    if v.dim() == 4 and k not in ("weight", "smooth_kernel"):
        return guarded(v.to(dtype), channels_last and k in ("input", "guide"))
    if v.dim() == 6:
        return guarded_nd(v.to(dtype))
    return v.to(dtype)


def _compare(name, got, exp, dtype, exact_names=("out_mask",)):
    if exp is None:
        assert got is None, f"{name}: expected None"
        return
    assert got.dtype == dtype, f"{name}: dtype {got.dtype} != {dtype}"
    if name in exact_names:
        assert tuple(got.shape) == tuple(exp.shape), f"{name}: shape {tuple(got.shape)} != {tuple(exp.shape)}"
        assert torch.equal(got.double().cpu(), exp.double().cpu()), f"{name} differs"
    else:
        assert not torch.isnan(got).any(), f"{name}: NaN in output (unwritten element or stray read)"
        assert_close_rel(got, exp, TOL[dtype], name)


def run_forward(fn_name, tensors, static, dtype, channels_last, out_names):
    """``tensors``: name -> float64 tensor or None; ``static``: the other arguments by name.
    The float64 reference on the inputs rounded to ``dtype`` is the oracle; the Triton inputs
    are in ``dtype`` inside NaN guard bands (4-D ones in the requested layout)."""
    order = ORDER[fn_name]
    rounded = {k: (None if v is None else v.to(dtype).double()) for k, v in tensors.items()}
    static = {**STATIC_DEFAULTS, **static}
    exp = getattr(REF, fn_name)(*[rounded[k] if k in rounded else static[k] for k in order])
    exp = exp if isinstance(exp, tuple) else (exp,)
    tri = {k: (None if v is None else _triton_input(k, v, dtype, channels_last)) for k, v in tensors.items()}
    with reference_forbidden():
        got = getattr(PT(), fn_name)(*[tri[k] if k in tri else static[k] for k in order])
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == len(exp)
    for name, g, e in zip(out_names, got, exp):
        _compare(name, g, None if e is None else e.to(dtype), dtype)
    return got


def run_backward(fn_name, tensors, static, grad_names, dtype, device, channels_last=False):
    """Reference autograd (float64 on the inputs rounded to ``dtype``) vs the Triton backward
    on ``dtype`` inputs inside NaN guard bands. Returns the Triton gradients by name."""
    order = ORDER[fn_name]
    static = {**STATIC_DEFAULTS, **static}
    dev = torch.device(device)
    rounded = {k: (None if v is None else v.to(dtype).double().to(dev)) for k, v in tensors.items()}
    leaves = {k: rounded[k].clone().requires_grad_() for k in grad_names if rounded.get(k) is not None}
    out = getattr(REF, fn_name)(*[leaves.get(k, rounded.get(k)) if k in rounded else static[k] for k in order])
    y = out[0] if isinstance(out, tuple) else out
    gy = torch.randn(y.shape, dtype=torch.float64).to(dtype).double().to(dev)
    names = list(leaves)
    exp = torch.autograd.grad(y, [leaves[k] for k in names], gy)

    tri = {}
    for k, v in tensors.items():
        if v is None:
            tri[k] = None
            continue
        v = _triton_input(k, v.to(dev), dtype, channels_last)
        tri[k] = v.requires_grad_() if k in names else v
    with reference_forbidden():
        tout = getattr(PT(), fn_name)(*[tri[k] if k in tri else static[k] for k in order])
        ty = tout[0] if isinstance(tout, tuple) else tout
        gyt = guarded(gy.to(dtype)) if gy.dim() == 4 else guarded_nd(gy.to(dtype))
        got = torch.autograd.grad(ty, [tri[k] for k in names], gyt)
    for k, g, e in zip(names, got, exp):
        assert g.dtype == tri[k].dtype and g.shape == tri[k].shape, k
        assert not torch.isnan(g).any(), f"d{k}: NaN (unwritten element or stray read)"
        rtol = reduction_tol(dtype, y.numel()) if k in ("inv_alpha", "inv_lambda") else TOL[dtype]
        assert_close_rel(g, e.to(dtype), rtol, f"d{k}")
    return dict(zip(names, got))


def PT():
    return importlib.import_module("pac_triton.triton")


class Tracker:
    """The largest single allocation (``max_bytes``) made inside the block, custom ops' insides
    included: read off the profiler's per-op memory records (a ``TorchDispatchMode`` sees a
    custom op as one call and none of the buffers its implementation allocates)."""

    def __enter__(self):
        from torch.profiler import ProfilerActivity, profile
        self._prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        self._prof.__enter__()
        return self

    def __exit__(self, *exc):
        self._prof.__exit__(*exc)
        sizes = [e.self_cpu_memory_usage for e in self._prof.events()]
        self.max_bytes = max([0] + sizes)
        return False


def spy_launches(monkeypatch, record, seen=None):
    """Record the Triton launches (any family): ``record(kernel, kwargs)`` is called at
    each launch through ``host_common.checked`` (``kernel``: the ``@triton.jit`` function, also
    behind an autotuner) and what it returns, unless None, is appended to the returned list
    (``seen``, a new list unless given)."""
    from pac_triton.triton import depthwise
    seen = [] if seen is None else seen
    orig = depthwise.hc.checked

    class Spy(orig):
        def __getitem__(self, grid):
            launch = super().__getitem__(grid)

            def run(*a, **k):
                kernel = self.kernel.fn if hasattr(self.kernel, "configs") else self.kernel  # an autotuner's
                item = record(kernel, k)
                if item is not None:
                    seen.append(item)
                return launch(*a, **k)
            return run
    monkeypatch.setattr(depthwise.hc, "checked", Spy)
    return seen


class PassThrough(torch.utils._python_dispatch.TorchDispatchMode):
    """A dispatch mode that only records the ops it sees (``seen``), so the custom ops run, not
    their eager twins (``host_common.plain_eager``)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen.append(str(func))
        return func(*args, **(kwargs or {}))
