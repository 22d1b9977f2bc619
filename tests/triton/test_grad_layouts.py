"""Gradients in their inputs' memory layouts, and the host-side launches of a backward.

A channels-last network (``model.to(memory_format=torch.channels_last)``: channels-last
activations, guides and 4-D weights) gets channels-last gradients from ``nn.Conv2d``, which
autograd then accumulates into ``.grad`` without a copy (``AccumulateGrad`` steals a gradient
whose strides match its leaf's and copies any other). The Triton backend's input gradient always
followed the input's layout; the guide and weight gradients were contiguous NCHW, so every
channels-last guide or weight paid one more copy per backward (and a channels-last producer of
the guide one more conversion). Both now follow their inputs, for every family; an NCHW input
that the kernels gather from a channels-last staging copy still gets an NCHW gradient.

The second half pins how many PyTorch kernels (on a GPU: launches, each ~5 µs of host time) the
launchers add around the Triton kernels of one forward + backward (issue 10 point 2)."""
from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

import pac_triton as pac
from pac_testing import TOL, assert_close_rel

CL = torch.channels_last


@pytest.fixture(autouse=True)
def default_configs(monkeypatch):
    """The default configs and paths (not the tests' forced small blocks: layouts and launches
    are decided on the host, and the default tiles run these shapes in a few programs), no NaN
    fills (each would count as a launch)."""
    from pac_triton.triton import configs
    monkeypatch.setattr(configs.settings, "force", {})
    monkeypatch.setattr(configs.settings, "fill_outputs_with_nan", False)


def _cl(t):
    return t.contiguous(memory_format=CL)


def _leaves(tensors, channels_last):
    out = {}
    for k, v in tensors.items():
        v = _cl(v) if (channels_last and v.dim() == 4) else v.contiguous()
        out[k] = v.clone().requires_grad_()
    return out


def _case(family, dtype=torch.float32, seed=0):
    """``(call, tensors)``: ``call(backend, **tensors)`` returns the output of one PAC call on
    ``tensors`` (x, guide and, for the convs, weight and bias); channels and guide features are
    multiples of 16, so that the launchers gather NCHW inputs from channels-last staging copies."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g).to(dtype)  # noqa: E731
    B, C, H, W, D = 2, 16, 6, 5, 16
    if family == "conv":
        t = dict(x=r(B, C, H, W), guide=r(B, D, H, W), weight=r(32, C, 3, 3) * 0.2, bias=r(32))
        return (lambda be, x, guide, weight, bias: pac.pac_conv2d(x, guide, weight, bias, padding=1, backend=be)), t
    if family == "conv_groups":
        t = dict(x=r(B, 32, H, W), guide=r(B, D, H, W), weight=r(32, 16, 3, 3) * 0.2, bias=r(32))
        return (lambda be, x, guide, weight, bias: pac.pac_conv2d(x, guide, weight, bias, padding=1, groups=2,
                                                                  backend=be)), t
    if family == "conv_strided_smooth":
        t = dict(x=r(B, C, H, W), guide=r(B, D, H, W), weight=r(16, C, 3, 3) * 0.2, bias=r(16))
        return (lambda be, x, guide, weight, bias: pac.pac_conv2d(
            x, guide, weight, bias, stride=2, padding=1, smooth_kernel_type="gaussian", backend=be)), t
    if family == "transposed":
        t = dict(x=r(B, C, 3, 3), guide=r(B, D, 6, 6), weight=r(C, 16, 3, 3) * 0.2, bias=r(16))
        return (lambda be, x, guide, weight, bias: pac.pac_conv_transpose2d(
            x, guide, weight, bias, stride=2, padding=1, output_padding=1, backend=be)), t
    if family == "depthwise":
        t = dict(x=r(B, C, H, W), guide=r(B, D, H, W), weight=r(C, 1, 3, 3) * 0.3, bias=r(C))
        return (lambda be, x, guide, weight, bias: pac.pac_conv2d(x, guide, weight, bias, padding=1, groups=C,
                                                                  backend=be)), t
    if family == "pool":
        t = dict(x=r(B, C, H, W), guide=r(B, D, H, W))
        return (lambda be, x, guide: pac.pac_pool2d(x, guide, 3, padding=1, backend=be)), t
    if family == "kernel":
        t = dict(guide=r(B, D, H, W))
        return (lambda be, guide: pac.packernel2d(guide, kernel_size=3, padding=1, backend=be)[0]), t
    raise ValueError(family)


FAMILIES = ["conv", "conv_groups", "conv_strided_smooth", "transposed", "depthwise", "pool", "kernel"]


@pytest.mark.parametrize("channels_last", [True, False], ids=["channels_last", "nchw"])
@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_follow_input_layouts(family, channels_last):
    """Every gradient the backward returns has its input's strides (read with
    ``torch.autograd.grad``: ``.grad`` would hide a mismatch behind autograd's copy) and the
    reference backend's values."""
    call, tensors = _case(family)
    got = _leaves(tensors, channels_last)
    exp = _leaves(tensors, channels_last)
    names = list(got)
    y = call("triton", **got)
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad(y, [got[k] for k in names], gy)
    ref = torch.autograd.grad(call("reference", **exp), [exp[k] for k in names], gy)
    for k, g, e in zip(names, grads, ref):
        assert g.stride() == got[k].stride(), (k, g.stride(), got[k].stride())
        assert_close_rel(g, e, TOL[torch.float32], f"d{k}")


def test_channels_last_backward_makes_no_gradient_copies():
    """A channels-last forward + backward: autograd's accumulation into ``.grad`` copies
    nothing (before: the guide and weight gradients were copied into their leaves' layout)."""
    call, tensors = _case("conv")
    leaves = _leaves(tensors, channels_last=True)
    y = call("triton", **leaves)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        y.backward(torch.ones_like(y))
    copies = [e for e in prof.events() if e.name == "aten::copy_" and _has_ancestor(e, "AccumulateGrad")]
    assert not copies, [c.input_shapes for c in copies]


# --- the launchers' own PyTorch kernels --------------------------------------------------------

# PyTorch ops that run a kernel on the device (a launch on a GPU); counted where no ancestor is one
# of them (``contiguous`` -> ``clone`` -> ``copy_`` is one launch, ``new_zeros`` -> ``fill_`` one)
_WORK = {"aten::copy_", "aten::fill_", "aten::zero_", "aten::sum", "aten::add", "aten::add_", "aten::mul", "aten::mul_",
         "aten::cat", "aten::sub", "aten::div", "aten::neg", "aten::pow"}


def _has_ancestor(ev, text):
    p = ev.cpu_parent
    while p is not None:
        if text in p.name:
            return True
        p = p.cpu_parent
    return False


_LAUNCH = "pac_triton_test::triton_launch"


def _torch_launches(fn, monkeypatch):
    """The device-kernel PyTorch ops that ``fn()`` runs outside the Triton launches (whose
    interpreter copies arguments with PyTorch ops on a CPU), outermost only, by name; and the
    number of staging-copy launches (``jit_common.pac_stage_kernel``, a Triton kernel) among
    the Triton launches."""
    from pac_triton.triton import host_common, jit_common
    orig = host_common.checked
    staged = []

    class Marked(orig):
        def __getitem__(self, grid):
            launch = super().__getitem__(grid)
            if self.kernel is jit_common.pac_stage_kernel:
                staged.append(grid)

            def run(*a, **k):
                with torch.profiler.record_function(_LAUNCH):
                    return launch(*a, **k)
            return run
    monkeypatch.setattr(host_common, "checked", Marked)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    monkeypatch.setattr(host_common, "checked", orig)
    names = []
    for e in prof.events():
        if e.name in _WORK and not _has_ancestor(e, _LAUNCH) and not any(_has_ancestor(e, w) for w in _WORK):
            names.append(e.name)
    return sorted(names), len(staged)


# (forward, backward): what the launchers add around the PAC kernels, channels-last inputs
# (no copies of x or the guide), float32 weights and bias requiring grad, as
# (PyTorch kernels, staging-copy launches):
#   conv: forward the tap-major weight permute; backward its transposed permute, the bias sum,
#         the weight gradient's one cast-and-permute copy (one split: no sum); no staging
#   depthwise: forward the tap weights' cast-and-transpose copy, and the zero-padded staging of
#         x; backward the tap weights, the bias sum, the weight gradient's split sum and its
#         copy, and the staging of x and of dL/dy
#   before the gradients took their inputs' layouts: conv (1, 7), depthwise (3, 10) PyTorch
#         kernels (the weight gradient summed (one split too), permuted, then cast; the guide
#         gradient copied by autograd into the guide's layout; a zero gradient materialised for
#         the out-mask output); before the staging kernel each staging copy was two PyTorch
#         kernels (a zero fill of the whole buffer, then a permuting copy into it)
# NCHW inputs (the perf harness's layout) add staging launches only: x and the guide in the
# forward; x, the guide and dL/dy in the backward (the depthwise family stages x once for its
# dK and dW passes, and dL/dy once for dx, dK and dW: before, dK and dW read a second,
# unpadded copy of dL/dy)
LAUNCHES = {"conv-channels_last": ((1, 0), (3, 0)), "depthwise-channels_last": ((1, 1), (4, 2)),
            "conv-nchw": ((1, 2), (3, 3)), "depthwise-nchw": ((1, 2), (4, 3))}


@pytest.mark.parametrize("case", list(LAUNCHES))
def test_launchers_torch_kernels(case, monkeypatch):
    family, layout = case.split("-")
    call, tensors = _case(family)
    leaves = _leaves(tensors, channels_last=layout == "channels_last")
    out = {}
    fwd = _torch_launches(lambda: out.setdefault("y", call("triton", **leaves)), monkeypatch)
    y = out["y"]
    gy = torch.ones_like(y)
    bwd = _torch_launches(lambda: y.backward(gy), monkeypatch)
    assert ((len(fwd[0]), fwd[1]), (len(bwd[0]), bwd[1])) == LAUNCHES[case], (fwd, bwd)
