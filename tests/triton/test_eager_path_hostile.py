"""Hostile checks of the Triton backend's eager fast path (``host_common.EagerOp`` /
``backward_call``, commit 6c51d46): in plain eager mode the backend runs the custom ops'
implementations directly (or through a ``torch.autograd.Function`` built from the ops' own
``setup_context`` / ``backward``) instead of ``torch.ops.pac_triton.*``.

Each check runs the same computation on the eager path and on the custom-op path (forced by
making ``host_common.plain_eager`` answer False, which is exactly the code before the change:
forward and backward custom ops) and compares, or compares with the reference backend. The
tests under a "Regression test" comment failed before their fix (lazy negation bits, meta and
zero tensors, inference mode with grad enabled, torch-function modes, forward-mode AD); the
others pin behaviour that was already correct. Tiny shapes: Triton runs in its interpreter
here."""
from __future__ import annotations

import contextlib
import functools

import pytest
import torch
import torch.autograd.forward_ad as fwAD

import pac_triton as P

PT = pytest.importorskip("pac_triton.triton")

from pac_triton.triton import host_common as hc  # noqa: E402

T = "triton"


@pytest.fixture(autouse=True)
def _default_blocks(small_blocks):
    """The package's default block sizes, not the suite's tiny forced ones: these checks compare
    the eager path with the custom-op path (the host's dispatch), which the tiles do not enter;
    fewer interpreter programs."""
    from pac_triton.triton import configs
    with configs.force_blocks():
        yield


# --- helpers ---------------------------------------------------------------------------------

@contextlib.contextmanager
def op_path():
    """The custom-op path (the code before the eager fast path): ``plain_eager`` says no, so
    ``EagerOp`` calls the forward op and ``backward_call`` the backward op."""
    orig = hc.plain_eager
    hc.plain_eager = lambda args: False
    try:
        yield
    finally:
        hc.plain_eager = orig


def both(fn):
    """``{"eager": ..., "op": ...}``: ``fn()``'s result, or ``("raised", type)``, on each path."""
    out = {}
    for path, cm in (("eager", contextlib.nullcontext), ("op", op_path)):
        try:
            with cm():
                out[path] = fn()
        except Exception as e:  # noqa: BLE001 - the comparison is the point
            out[path] = ("raised", type(e), str(e)[:200])
    return out


def same(a, b):
    """Bitwise equality of nested results (tensors compared with torch.equal)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                and a.dtype == b.dtype and torch.equal(a.detach(), b.detach()))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(p, q) for p, q in zip(a, b))
    if isinstance(a, tuple) and a and a[0] == "raised":
        return isinstance(b, tuple) and b and b[0] == "raised" and a[1] is b[1]
    return a == b


def assert_same_both(fn):
    r = both(fn)
    assert not (isinstance(r["op"], tuple) and r["op"] and r["op"][0] == "raised" and
                not (isinstance(r["eager"], tuple) and r["eager"][0] == "raised")), r
    assert same(r["eager"], r["op"]), r
    return r["eager"]


def data(C=2, D=2, H=5, W=5, O=None):
    torch.manual_seed(0)
    x = torch.randn(1, C, H, W)
    g = torch.randn(1, D, H, W)
    w = torch.randn(O or C, C, 3, 3)
    b = torch.randn(O or C)
    return x, g, w, b


def conv(x, g, w, b=None, **kw):
    kw.setdefault("padding", 1)
    return P.pac_conv2d(x, g, w, b, backend=T, **kw)


def neg_bit(t):
    """``t``'s values as a tensor with the negative bit set (a lazy negation view: the storage
    holds ``-t``): what ``z.conj().imag`` of a complex ``z`` gives."""
    n = torch.complex(torch.zeros_like(t), -t).conj().imag
    assert n.is_neg() and torch.equal(n, t)
    return n


def fwd_bwd(fn, leaves, which=None):
    """``fn(*leaves)`` and the gradients of ``sum(y**2)`` w.r.t. the leaves at ``which``
    (default: all)."""
    leaves = [t.detach().clone() for t in leaves]
    which = range(len(leaves)) if which is None else which
    for i in which:
        leaves[i].requires_grad_()
    y = fn(*leaves)
    y = y[0] if isinstance(y, tuple) else y
    y.square().sum().backward()  # not autograd.grad: reentrant checkpointing refuses it
    return (y.detach(),) + tuple(leaves[i].grad for i in which)


# --- bugs: plain tensors the eager path must not take ------------------------------------------

def _neg_forward_cases():
    x, g, w, b = data()
    a, lm = torch.tensor(0.7), torch.tensor(-1.2)
    K = torch.rand(1, 1, 3, 3, 5, 5)
    inv = dict(kernel_type="inv_0.5_1.5")
    return {
        "input": lambda n: conv(neg_bit(x) if n else x, g, w, b),
        "inv_alpha": lambda n: conv(x, g, w, b, inv_alpha=neg_bit(a) if n else a, inv_lambda=lm, **inv),
        "inv_lambda": lambda n: conv(x, g, w, b, inv_alpha=a, inv_lambda=neg_bit(lm) if n else lm, **inv),
        "precomputed_kernel": lambda n: P.pacconv2d(x, neg_bit(K) if n else K, w, b, padding=1, backend=T),
    }


# Regression test (found by a hostile review, fixed in host_common): eager path reads a negative-
# bit tensor (lazy negation view, e.g. z.conj().imag) as its raw storage, i.e. with the wrong
# sign: plain_eager() accepts it as a plain Tensor, so the dispatcher's Negative fallback (which
# materialises the negation before a custom op's kernel) is skipped and the Triton kernels read
# the un-negated storage; silently wrong output (input with C % 16 != 0 not copied by
# gather_layout, inv_alpha/inv_lambda via kdt_vector, a precomputed K)
@pytest.mark.parametrize("case", ["input", "inv_alpha", "inv_lambda", "precomputed_kernel"])
def test_negative_bit_operands_forward(case):
    """A tensor with the negative bit set gives the same output as the same values without it
    (as the custom op does, and every built-in op)."""
    fn = _neg_forward_cases()[case]
    with op_path():
        assert torch.equal(fn(True), fn(False))  # the op path is right
    assert torch.equal(fn(True), fn(False))


# Regression test (found by a hostile review, fixed in host_common): eager path: the gradient
# flowing into the dense/depthwise/transposed conv backward can carry the negative bit (y used as
# the imaginary part of a complex tensor that is then conj()'d: the engine hands the backward
# imag(conj view) lazily); backward_call() runs conv_bwd_impl directly and the Triton backward
# kernels read gy's raw storage, so every gradient has the wrong sign; the backward custom op (op
# path) resolves the bit first
def test_negative_bit_grad_output_from_complex_chain():
    """Weight gradient through ``complex(0, y).conj()`` equals the reference backend's (the gradient
    reaching the PAC op has the negative bit set)."""
    x, g, w, b = data()
    c = torch.complex(torch.randn(1, 2, 5, 5), torch.randn(1, 2, 5, 5))
    seen = []

    def grad_w(backend):
        ww = w.clone().requires_grad_()
        y = P.pac_conv2d(x, g, ww, b, padding=1, backend=backend)
        y.register_hook(lambda gr: seen.append(gr.is_neg()))
        loss = (torch.complex(torch.zeros_like(y), y).conj() * c).real.sum()
        return torch.autograd.grad(loss, ww)[0]

    expected = grad_w("reference")
    with op_path():
        assert torch.allclose(grad_w(T), expected, rtol=1e-4, atol=1e-5)
    assert seen and all(seen)  # the gradient reaching the op does carry the bit
    assert torch.allclose(grad_w(T), expected, rtol=1e-4, atol=1e-5)


def _meta_cases():
    x, g, w, b = data()
    return {
        "conv": lambda: conv(x.to("meta"), g.to("meta"), w.to("meta"), b.to("meta")),
        "pool": lambda: P.pac_pool2d(x.to("meta"), g.to("meta"), 3, padding=1, backend=T),
        "kernel": lambda: P.packernel2d(g.to("meta"), None, 3, padding=1, backend=T)[0],
        "module": lambda: P.PacConv2d(2, 3, 3, padding=1, backend=T, device="meta")(x.to("meta"), g.to("meta")),
    }


# Regression test (found by a hostile review, fixed in host_common): eager path on meta tensors:
# the custom ops' register_fake doubles as their Meta kernel, so before the change a meta-device
# call (shape inference, a model built under torch.device('meta')) returned meta outputs of the
# right shape; plain_eager() does not look at the device, so the eager path launches the Triton
# kernels on meta tensors (interpreter: 'Cannot copy out of meta tensor; no data!')
@pytest.mark.parametrize("case", ["conv", "pool", "kernel", "module"])
def test_meta_device(case):
    """backend='triton' on meta tensors returns meta outputs of the custom op's shape."""
    fn = _meta_cases()[case]
    with op_path():
        expected = fn()
    assert expected.device.type == "meta"
    y = fn()
    assert y.device.type == "meta" and y.shape == expected.shape


# Regression test (found by a hostile review, fixed in host_common): eager path on a ZeroTensor
# (torch._efficientzerotensor, private; what some derivative formulas and forward AD produce):
# plain_eager() accepts it (its type is torch.Tensor), the kernels then touch its storage-less
# data pointer ('Attempted to access the data pointer on an invalid python storage'); the custom
# op's dispatch materialises it (ZeroTensor fallback) and runs
def test_zero_tensor_input():
    """A ZeroTensor input gives what the custom op gives."""
    x, g, w, b = data()
    z = torch._efficientzerotensor(x.shape)
    with op_path():
        expected = conv(z, g, w, b)
    assert torch.equal(conv(z, g, w, b), expected)


# Regression test (found by a hostile review, fixed in host_common): eager path under
# torch.inference_mode() + torch.enable_grad(): EagerOp._eager checks only
# torch.is_grad_enabled(), and autograd.Function.apply records a node even in inference mode, so
# the output (an inference tensor) has requires_grad=True and a grad_fn, saves its inputs, and
# torch.autograd.grad through it works; with the custom op (and every built-in op, e.g. F.conv2d)
# inference mode records nothing
def test_inference_mode_with_enable_grad_records_nothing():
    """Inside inference_mode, enable_grad does not make the output differentiable (as F.conv2d)."""
    x, g, w, b = data()
    ww = w.clone().requires_grad_()
    with torch.inference_mode(), torch.enable_grad():
        builtin = torch.nn.functional.conv2d(x, ww, b, padding=1)
        with op_path():
            via_op = conv(x, g, ww, b)
        y = conv(x, g, ww, b)
    assert not builtin.requires_grad and not via_op.requires_grad
    assert not y.requires_grad and y.grad_fn is None


class _SeeFunctions(torch.overrides.TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


# Regression test (found by a hostile review, fixed in host_common): eager path under a
# TorchFunctionMode: plain_eager() checks TorchDispatchModes and __torch_function__ subclasses but
# not torch-function modes, so a user's TorchFunctionMode no longer sees
# pac_triton.triton_conv_fwd (it did before: torch.ops calls go through __torch_function__) but
# ~250 internal calls (F.pad, new_empty, ...) of the implementation instead; inconsistent with the
# subclass case, where __torch_function__ does get the custom op
def test_torch_function_mode_sees_the_custom_op():
    """A TorchFunctionMode sees the forward custom op, as it did before the change."""
    x, g, w, b = data()
    with op_path():
        with _SeeFunctions() as mode:
            conv(x, g, w, b)
    assert any("pac_triton.triton_conv_fwd" in s for s in mode.seen)
    with _SeeFunctions() as mode:
        conv(x, g, w, b)
    assert any("pac_triton.triton_conv_fwd" in s for s in mode.seen), len(mode.seen)


# Regression test (found by a hostile review, fixed in host_common): pre-existing, both paths (not
# caused by the eager path): forward-mode AD through the Triton backend silently drops the tangent
# instead of raising (the ops have no jvp; torch.library's autograd kernel and EagerOp both decide
# on requires_grad only, so a dual input without requires_grad runs the forward without a
# tangent): fwAD gives tangent None, torch.func.jvp a zero tangent; the reference backend gives
# the right one
def test_forward_ad_tangent_is_not_silently_dropped():
    """Forward-mode AD gives the reference's tangent, or raises; never a missing/zero tangent."""
    x, g, w, b = data()
    t = torch.randn_like(x)
    _, expected = torch.func.jvp(lambda xx: P.pac_conv2d(xx, g, w, b, padding=1, backend="reference"), (x,), (t,))
    for path in (contextlib.nullcontext, op_path):
        with path():
            with fwAD.dual_level():
                try:
                    tangent = fwAD.unpack_dual(conv(fwAD.make_dual(x, t), g, w, b)).tangent
                except (NotImplementedError, RuntimeError):
                    tangent = expected
            assert tangent is not None and torch.allclose(tangent, expected, rtol=1e-4, atol=1e-5)
            try:
                _, tangent = torch.func.jvp(lambda xx: conv(xx, g, w, b), (x,), (t,))
            except (NotImplementedError, RuntimeError):
                tangent = expected
            assert torch.allclose(tangent, expected, rtol=1e-4, atol=1e-5)


# --- correct behaviour: same as the custom ops ---------------------------------------------------

def test_forward_ad_with_requires_grad_refused_on_both_paths():
    """A dual input that also requires grad: both paths refuse forward AD with the same
    NotImplementedError (no jvp)."""
    x, g, w, b = data()

    def run():
        with fwAD.dual_level():
            conv(fwAD.make_dual(x, torch.ones_like(x)), g, w.clone().requires_grad_(), b)
    r = both(run)
    assert r["eager"][0] == "raised" and r["eager"][1] is NotImplementedError, r
    assert same(r["eager"], r["op"])


@pytest.mark.parametrize("mode", ["reentrant", "non_reentrant", "selective"])
def test_checkpoint(mode):
    """torch.utils.checkpoint (reentrant, non-reentrant, selective activation checkpointing whose policy
    sees the forward custom op): bitwise the gradients of the custom-op path."""
    from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts
    seen = []

    def policy(ctx, op, *args, **kwargs):
        seen.append(str(op))
        return CheckpointPolicy.MUST_SAVE if "pac_triton" in str(op) else CheckpointPolicy.PREFER_RECOMPUTE
    kw = {"reentrant": dict(use_reentrant=True), "non_reentrant": dict(use_reentrant=False),
          "selective": dict(use_reentrant=False,
                            context_fn=functools.partial(create_selective_checkpoint_contexts, policy))}[mode]
    leaves = data()
    plain = assert_same_both(lambda: fwd_bwd(conv, leaves))
    got = assert_same_both(lambda: fwd_bwd(lambda *a: checkpoint(conv, *a, **kw), leaves))
    assert same(got, plain)
    if mode == "selective":
        assert any("pac_triton.triton_conv_fwd" in s for s in seen)


def test_saved_tensor_hooks_and_save_on_cpu():
    """saved_tensors_hooks see the op's saved tensors (x, weight, guide: 3 here) on both paths;
    save_on_cpu gives the same gradients."""
    leaves = data()
    counts = []

    def hooked():
        n = [0]

        def pack(t):
            n[0] += 1
            return t.clone()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            r = fwd_bwd(conv, leaves, which=[2])
        counts.append(n[0])
        return r
    assert_same_both(hooked)
    assert counts[0] == counts[1] >= 3
    with torch.autograd.graph.save_on_cpu():
        assert_same_both(lambda: fwd_bwd(conv, leaves))


@pytest.mark.parametrize("which", ["input", "guide"])
def test_inplace_change_of_saved_input_errors_at_backward(which):
    """Modifying a saved input in place after the forward makes backward raise (version counter),
    on both paths."""
    x, g, w, b = data()

    def run():
        xx, gg, ww = x.clone(), g.clone(), w.clone().requires_grad_()
        y = conv(xx, gg, ww, b)
        (xx if which == "input" else gg).add_(1)
        y.sum().backward()
    r = both(run)
    assert r["eager"][0] == "raised" and r["eager"][1] is RuntimeError and "inplace" in r["eager"][2], r
    assert same(r["eager"], r["op"])


def test_inplace_on_outputs_then_backward():
    """In-place ops on the outputs (conv, pool) after a recorded forward are allowed (the outputs are
    not views) and give the op path's gradients."""
    x, g, w, b = data()

    def run():
        xx = x.clone().requires_grad_()
        y = conv(xx, g, w, b)
        p = P.pac_pool2d(xx, g, 3, padding=1, backend=T)
        assert not y._is_view() and not p._is_view()
        y.relu_()
        p.mul_(2)
        (y.sum() + p.sum()).backward()
        return xx.grad
    assert_same_both(run)


def test_grad_modes():
    """no_grad with inputs that require grad: no graph; enable_grad inside no_grad: a graph, same
    gradients; inference_mode alone: an inference tensor without grad; on both paths."""
    x, g, w, b = data()

    def run():
        ww = w.clone().requires_grad_()
        with torch.no_grad():
            y0 = conv(x, g, ww, b)
            with torch.enable_grad():
                y1 = conv(x, g, ww, b)
        with torch.inference_mode():
            y2 = conv(x, g, ww, b)
        y1.sum().backward()
        flags = [(t.requires_grad, t.is_inference()) for t in (y0, y1, y2)]
        assert flags == [(False, False), (True, False), (False, True)], flags
        return y0, y1, y2, ww.grad
    assert_same_both(run)


@pytest.mark.parametrize("which", ["input", "guide", "weight", "bias", "inv_alpha", "inv_lambda"])
def test_partial_requires_grad(which):
    """Only one operand requires grad (input, guide, weight, bias, inv_alpha, inv_lambda): bitwise the
    op path's output and gradient."""
    x, g, w, b = data()
    a, lm = torch.tensor(0.7), torch.tensor(-1.2)
    names = ["input", "guide", "weight", "bias", "inv_alpha", "inv_lambda"]

    def fn(x, g, w, b, a, lm):
        return conv(x, g, w, b, kernel_type="inv_0.5_1.5", inv_alpha=a, inv_lambda=lm)
    assert_same_both(lambda: fwd_bwd(fn, [x, g, w, b, a, lm], which=[names.index(which)]))


def test_retain_graph_twice_unused_nonleaf_parameter():
    """retain_graph then a second backward accumulates; a second backward without it raises;
    autograd.grad(allow_unused) gives None for an unused leaf; a non-leaf input and an nn.Parameter
    weight get the op path's gradients."""
    x, g, w, b = data()

    def run():
        x0 = x.clone().requires_grad_()
        ww = torch.nn.Parameter(w.clone())
        z = torch.zeros(1, requires_grad=True)
        y = conv(x0 * 2, g, ww, b)
        loss = y.square().sum()
        loss.backward(retain_graph=True)
        first = ww.grad.clone()
        loss.backward()
        unused = torch.autograd.grad(conv(x0, g, ww, b).sum(), [ww, z], allow_unused=True)
        assert unused[1] is None
        with pytest.raises(RuntimeError, match="second time"):
            loss.backward()
        return first, ww.grad, x0.grad, unused[0]
    assert_same_both(run)


class _Sub(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return super().__torch_function__(func, types, args, kwargs or {})


def test_tensor_subclass_takes_the_custom_op(monkeypatch):
    """A trivial __torch_function__ subclass input is not plain: the custom op runs (seen by a spy),
    the output keeps the subclass, and values and gradients equal the op path's."""
    x, g, w, b = data()
    calls = []
    orig = PT.conv.run_conv_fwd.op

    def spy(*args):
        calls.append(1)
        return orig(*args)
    monkeypatch.setattr(PT.conv.run_conv_fwd, "op", spy)

    def run():
        xs = x.clone().as_subclass(_Sub).requires_grad_()
        y = conv(xs, g, w, b)
        y.square().sum().backward()
        return type(y).__name__, y.as_subclass(torch.Tensor), xs.grad.as_subclass(torch.Tensor)
    r = assert_same_both(run)
    assert r[0] == "_Sub"
    assert len(calls) == 2  # once per path: the eager path handed the subclass to the op too


def test_torch_func_transforms_behave_as_the_ops():
    """torch.func.grad (refused by both paths with the same error: the op's generated autograd.Function has
    no setup_context), vmap (same values) and FakeTensorMode (custom op's fake: same shape)."""
    x, g, w, b = data()
    r = both(lambda: torch.func.grad(lambda ww: conv(x, g, ww, b).square().sum())(w))
    assert same(r["eager"], r["op"]), r
    xb = torch.randn(2, 2, 5, 5)
    assert_same_both(lambda: torch.func.vmap(lambda xx: conv(xx[None], g, w, b)[0])(xb))
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode() as mode:
        fx, fg, fw = (mode.from_tensor(t) for t in (x, g, w))
        assert conv(fx, fg, fw).shape == (1, 2, 5, 5)


def test_grads_batched_refused_on_both_paths():
    """autograd.grad(is_grads_batched=True) (legacy vmap over the backward: BatchedTensors that are plain
    torch.Tensor to plain_eager) is refused on both paths (the op: no batching rule; the eager path:
    'Cannot access storage of BatchedTensorImpl' from the launch's index-width check: a worse message,
    no wrong result)."""
    x, g, w, b = data()

    def run():
        ww = w.clone().requires_grad_()
        y = conv(x, g, ww, b)
        torch.autograd.grad(y, ww, torch.randn(2, *y.shape), is_grads_batched=True)
    r = both(run)
    assert r["op"][0] == "raised" and r["eager"][0] == "raised", r


@pytest.mark.parametrize("setting", ["autocast", "anomaly", "deterministic"])
def test_autocast_anomaly_deterministic(setting):
    """torch.autocast (bf16 output, same gradients), anomaly mode and deterministic algorithms: bitwise
    the op path."""
    leaves = data()

    @contextlib.contextmanager
    def deterministic():
        prev = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(prev)
    cm = {"autocast": lambda: torch.autocast("cpu", dtype=torch.bfloat16),
          "anomaly": lambda: torch.autograd.set_detect_anomaly(True), "deterministic": deterministic}[setting]

    def run():
        with cm():
            return fwd_bwd(conv, leaves)
    y = assert_same_both(run)[0]
    assert y.dtype == (torch.bfloat16 if setting == "autocast" else torch.float32)


def test_modules_api():
    """PacConv2d (inv kernel, learnable alpha/lambda), PacConvTranspose2d and PacPool2d with
    backend='triton': bitwise the op path's outputs and parameter / input gradients."""
    def run():
        torch.manual_seed(1)
        mods = [P.PacConv2d(2, 3, 3, padding=1, kernel_type="inv_0.5_1.5", backend=T),
                P.PacConvTranspose2d(2, 2, 3, stride=2, padding=1, output_padding=1, backend=T),
                P.PacPool2d(3, padding=1, backend=T)]
        x = torch.randn(1, 2, 4, 4, requires_grad=True)
        g, gt = torch.randn(1, 2, 4, 4), torch.randn(1, 2, 8, 8)
        outs = [mods[0](x, g), mods[1](x, gt), mods[2](x, g)]
        sum(o.square().sum() for o in outs).backward()
        return outs + [x.grad] + [p.grad for m in mods for p in m.parameters()]
    assert_same_both(run)


def test_compile_aot_eager_and_compiled_autograd():
    """torch.compile(fullgraph, aot_eager) of a PacConv2d equals the eager path (forward and input
    gradient); compiled autograd over an eager-path graph gives the eager gradients."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    m = P.PacConv2d(2, 3, 3, padding=1, backend=T)
    x, g = torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4)
    ref = fwd_bwd(lambda xx: m(xx, g), [x])
    got = fwd_bwd(lambda xx: torch.compile(m, backend="aot_eager", fullgraph=True)(xx, g), [x])
    assert same(got, ref)
    ww = m.weight
    ww.grad = None
    y = m(x, g)
    with torch._dynamo.compiled_autograd._enable(torch.compile(backend="aot_eager")):
        y.square().sum().backward()
    compiled = ww.grad.clone()
    ww.grad = None
    m(x, g).square().sum().backward()
    assert torch.equal(compiled, ww.grad)
    torch._dynamo.reset()


def test_profiler_names_every_family():
    """Under torch.profiler the eager calls of the pool and kernel-map families are ranges named as
    their forward and backward ops (the conv family is covered in test_registration)."""
    from torch.profiler import ProfilerActivity, profile
    x, g, _, _ = data()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fwd_bwd(lambda xx, gg: P.pac_pool2d(xx, gg, 3, padding=1, backend=T), [x, g])
        fwd_bwd(lambda gg: P.packernel2d(gg, None, 3, padding=1, backend=T)[0], [g])
    names = {e.name for e in prof.events()}
    assert {"pac_triton::triton_pool_fwd", "pac_triton::triton_pool_bwd", "pac_triton::triton_kernel_fwd",
            "pac_triton::triton_kernel_bwd"} <= names


def test_double_backward_refused_for_depthwise_and_transposed():
    """create_graph=True then a second backward: NotImplementedError (double backward) for the depthwise
    and transposed families too, on the eager path as on the op path."""
    x, g, _, _ = data(C=4)
    wd = torch.randn(4, 1, 3, 3, dtype=torch.float64)
    wt = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    gt = torch.randn(1, 2, 9, 9, dtype=torch.float64)
    x, g = x.double(), g.double()
    fns = [lambda xx: P.pac_conv2d(xx, g, wd, None, padding=1, groups=4, backend=T),
           lambda xx: P.pac_conv_transpose2d(xx, gt, wt, None, stride=2, padding=1, groups=2, backend=T)]
    for fn in fns:
        def run(fn=fn):
            xx = x.clone().requires_grad_()
            (d0,) = torch.autograd.grad(fn(xx).square().sum(), [xx], create_graph=True)
            d0.sum().backward()
        r = both(run)
        assert r["eager"][0] == "raised" and r["eager"][1] is NotImplementedError, r
        assert same(r["eager"], r["op"])
