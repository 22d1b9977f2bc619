"""Inputs and the callables each provider runs for a :class:`~.cases.Case`.

Providers: ``triton``, ``reference``, ``auto`` (the library's own choice), ``compile``
(``torch.compile`` of the reference) and ``floor`` (``F.conv2d`` / ``F.conv_transpose2d`` /
depthwise ``F.conv2d`` for pooling at the same shape, ``F.conv2d(groups=...)`` for a grouped
conv: the same GEMM work without K).

Which backend a ``triton`` or ``auto`` provider really ran is observed, not assumed
(:class:`BackendProbe`: the Triton backend's work goes through the ``pac_triton::triton_*``
custom ops): the harness writes it into ``provider_detail`` (``[ran: reference]``) and fails a
``triton`` point that ran no Triton kernel.

All inputs of a case are drawn once (seeded, random, never zeros) and shared by every provider,
so correctness checks compare the same function on the same data. The guide is scaled so that
the gaussian kernel's distances are of order one (``K`` is neither all ones nor all zeros).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from torch.utils._python_dispatch import TorchDispatchMode

from .cases import Case

TORCH_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

FLOOR_DETAIL = {
    "conv": "F.conv2d", "transposed": "F.conv_transpose2d", "pool": "F.conv2d(groups=C)",
    "upsample": "F.conv_transpose2d stack", "crf": "F.conv2d x steps",
}
DETAIL = {"triton": "pac_triton triton", "reference": "pac_triton reference (eager)",
          "auto": "pac_triton auto", "compile": "torch.compile(reference)"}
# Providers whose backend is observed with BackendProbe (the others are what they say).
PROBED = ("triton", "auto")


def floor_detail(case: Case) -> str:
    if case.op == "conv" and case.groups != 1:
        return "F.conv2d(groups=C)" if case.groups == case.c_in else f"F.conv2d(groups={case.groups})"
    return FLOOR_DETAIL[case.op]


class BackendProbe(TorchDispatchMode):
    """Records the operators one call dispatches; ``backend`` is ``"triton"`` when a
    ``pac_triton::triton_*`` custom op (every Triton kernel launch of the library) ran,
    ``"reference"`` otherwise. ``run(fn)`` calls ``fn`` once under the probe."""

    TRITON_PREFIX = "pac_triton::triton_"

    def __init__(self):
        super().__init__()
        self.triton_ops = set()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.name() if hasattr(func, "name") else str(func)
        if name.startswith(self.TRITON_PREFIX):
            self.triton_ops.add(name)
        return func(*args, **(kwargs or {}))

    def run(self, fn):
        with self:
            out = fn()
        self.calls += 1
        return out

    @property
    def backend(self) -> str:
        return "triton" if self.triton_ops else "reference"


class Unavailable(Exception):
    """The provider cannot run here (a skip, not a failure)."""


@dataclass
class Inputs:
    """The tensors of one case: ``tensors`` by name; ``grad_names`` per provider kind."""
    case: Case
    device: torch.device
    dtype: torch.dtype
    t: dict = field(default_factory=dict)

    def cast(self, dtype):
        new = Inputs(self.case, self.device, dtype)
        new.t = {k: ([x.to(dtype) for x in v] if isinstance(v, list) else v.to(dtype)) for k, v in self.t.items()}
        return new


def make_inputs(case: Case, device: torch.device, seed: int) -> Inputs:
    g = torch.Generator(device="cpu").manual_seed(seed)
    dtype = TORCH_DTYPES[case.dtype]

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dtype)

    inp = Inputs(case, device, dtype)
    b, k, d = case.b, case.k, case.d
    gscale = 1.0 / math.sqrt(2.0 * d)  # E[r] ~ 1 for the gaussian kernel
    shapes = case.layer_shapes()
    ci, co, hi, wi, ho, wo = shapes[0]
    if case.op == "upsample":
        inp.t["x"] = rnd(b, ci, hi, wi)
        inp.t["guides"] = [rnd(b, d, s[4], s[5], scale=gscale) for s in shapes]
        inp.t["weights"] = [rnd(s[0], s[1], k, k, scale=1.0 / math.sqrt(s[0] * k * k)) for s in shapes]
    elif case.op == "crf":
        inp.t["x"] = rnd(b, ci, hi, wi)  # unary (logits)
        inp.t["guide"] = rnd(b, d, hi, wi, scale=gscale)  # YXRGB-like edge features
        inp.t["floor_w"] = rnd(ci, ci, k, k, scale=1.0 / (k * k))
    else:
        inp.t["x"] = rnd(b, ci, hi, wi)
        gh, gw = (ho, wo) if case.op == "transposed" else (hi, wi)
        inp.t["guide"] = rnd(b, d, gh, gw, scale=gscale)
        fan_in = ci // case.groups * k * k
        if case.op == "conv":
            inp.t["weight"] = rnd(co, ci // case.groups, k, k, scale=1.0 / math.sqrt(fan_in))
        elif case.op == "transposed":
            inp.t["weight"] = rnd(ci, co, k, k, scale=1.0 / math.sqrt(fan_in))
        else:  # pool: the floor is a depthwise conv of the same size
            inp.t["floor_w"] = rnd(ci, 1, k, k, scale=1.0 / (k * k))
    if case.layout == "channels_last":  # every 4-D tensor (inputs, guides, weights), as a channels-last model's
        inp.t = {n: ([x.contiguous(memory_format=torch.channels_last) for x in v] if isinstance(v, list)
                     else v.contiguous(memory_format=torch.channels_last)) for n, v in inp.t.items()}
    elif case.layout != "nchw":
        raise ValueError(f"unknown layout {case.layout!r}; expected one of nchw, channels_last")
    return inp


# ---- forward callables -------------------------------------------------------------------------

def _first(y):
    return y[0] if isinstance(y, (tuple, list)) else y


def pac_forward(case: Case, inp: Inputs, backend: str):
    """``(forward, grad_tensors)`` for a PAC provider; raises if the library lacks the API."""
    t = inp.t
    s, p, op_, dil = case.stride, case.padding, case.output_padding, case.dilation
    if case.op == "crf":
        import pac_triton

        torch.manual_seed(1234)  # same parameters for every provider
        mod = pac_triton.PacCRF(case.c_in, case.steps, pairwise_kernels=dict(kernel_size=case.k),
                                backend=backend).to(device=inp.device, dtype=inp.dtype)
        params = [q for q in mod.parameters() if q.requires_grad]

        def fwd():
            return _first(mod(t["x"], t["guide"]))

        return fwd, [t["x"], t["guide"]] + params

    import pac_triton.functional as PF

    kt = case.kernel_type
    if case.op == "conv":
        def fwd():
            return _first(PF.pac_conv2d(t["x"], t["guide"], t["weight"], None, stride=s, padding=p, dilation=dil,
                                        kernel_type=kt, groups=case.groups, backend=backend))
        return fwd, [t["x"], t["guide"], t["weight"]]
    if case.op == "transposed":
        def fwd():
            return _first(PF.pac_conv_transpose2d(t["x"], t["guide"], t["weight"], None, stride=s, padding=p,
                                                  output_padding=op_, dilation=dil, kernel_type=kt,
                                                  backend=backend))
        return fwd, [t["x"], t["guide"], t["weight"]]
    if case.op == "pool":
        def fwd():
            return _first(PF.pac_pool2d(t["x"], t["guide"], case.k, stride=s, padding=p, dilation=dil,
                                        kernel_type=kt, backend=backend))
        return fwd, [t["x"], t["guide"]]
    if case.op == "upsample":
        def fwd():
            y = t["x"]
            for guide, w in zip(t["guides"], t["weights"]):
                y = _first(PF.pac_conv_transpose2d(y, guide, w, None, stride=s, padding=p, output_padding=op_,
                                                   dilation=dil, kernel_type=kt, backend=backend))
            return y
        return fwd, [t["x"]] + t["guides"] + t["weights"]
    raise ValueError(f"unknown op {case.op!r}")


def floor_forward(case: Case, inp: Inputs):
    """The practical floor: the same GEMM work through cuDNN / ATen without K."""
    t = inp.t
    s, p, op_, dil = case.stride, case.padding, case.output_padding, case.dilation
    if case.op == "conv":
        return (lambda: F.conv2d(t["x"], t["weight"], None, s, p, dil, case.groups)), [t["x"], t["weight"]]
    if case.op == "transposed":
        return (lambda: F.conv_transpose2d(t["x"], t["weight"], None, s, p, op_, 1, dil)), [t["x"], t["weight"]]
    if case.op == "pool":
        c = case.c_in
        return (lambda: F.conv2d(t["x"], t["floor_w"], None, s, p, dil, c)), [t["x"], t["floor_w"]]
    if case.op == "upsample":
        def fwd():
            y = t["x"]
            for w in t["weights"]:
                y = F.conv_transpose2d(y, w, None, s, p, op_, 1, dil)
            return y
        return fwd, [t["x"]] + t["weights"]
    if case.op == "crf":
        pad = case.k // 2

        def fwd():
            q = t["x"]
            for _ in range(case.steps):
                q = t["x"] - F.conv2d(torch.softmax(q, 1), t["floor_w"], None, 1, pad)
            return q
        return fwd, [t["x"], t["floor_w"]]
    raise ValueError(f"unknown op {case.op!r}")


def provider_forward(case: Case, inp: Inputs, provider: str):
    """``(forward, grad_tensors, detail)`` for any provider."""
    if provider == "floor":
        fwd, grads = floor_forward(case, inp)
        return fwd, grads, floor_detail(case)
    if provider == "compile":
        fwd, grads = pac_forward(case, inp, "reference")
        import torch._dynamo

        torch._dynamo.reset()  # a fresh cache per case: no recompile limit across shapes
        return torch.compile(fwd), grads, DETAIL[provider]
    fwd, grads = pac_forward(case, inp, provider)
    return fwd, grads, DETAIL[provider]


# ---- the timed region per mode -------------------------------------------------------------------

def set_requires_grad(tensors, flag: bool):
    for x in tensors:
        if x.is_leaf:
            x.requires_grad_(flag)


def timed_callable(mode: str, fwd, grad_tensors, seed: int = 0):
    """The callable to time: ``fwd`` (no grad), ``bwd`` (backward of one retained forward),
    ``fwdbwd``. ``grad_tensors`` (the guide among them) require grad for ``bwd``/``fwdbwd``.
    ``torch.autograd.grad`` returns the gradients (no ``.grad`` accumulates between calls)."""
    if mode == "fwd":
        set_requires_grad(grad_tensors, False)

        def fn():
            with torch.no_grad():
                return fwd()
        return fn
    set_requires_grad(grad_tensors, True)
    y = fwd()
    gen = torch.Generator(device="cpu").manual_seed(seed + 7)
    gy = torch.randn(y.shape, generator=gen).to(device=y.device, dtype=y.dtype)
    if mode == "bwd":
        def fn():
            return torch.autograd.grad(y, grad_tensors, gy, retain_graph=True, allow_unused=True)
        return fn

    del y

    def fn():
        return torch.autograd.grad(fwd(), grad_tensors, gy, allow_unused=True)
    return fn


def outputs_of(mode: str, fwd, grad_tensors, seed: int = 0):
    """Forward output (``fwd``) or output and gradients (``bwd``/``fwdbwd``) for checks."""
    if mode == "fwd":
        set_requires_grad(grad_tensors, False)
        with torch.no_grad():
            return [fwd()]
    set_requires_grad(grad_tensors, True)
    y = fwd()
    gen = torch.Generator(device="cpu").manual_seed(seed + 7)
    gy = torch.randn(y.shape, generator=gen).to(device=y.device, dtype=y.dtype)
    grads = torch.autograd.grad(y, grad_tensors, gy, allow_unused=True)
    return [y.detach()] + [g for g in grads]


def rel_err(a, b) -> float:
    """Largest ``||a - b|| / ||b||`` over pairs, in float64; NaN anywhere gives inf."""
    worst = 0.0
    for x, y in zip(a, b):
        if x is None or y is None:
            if (x is None) != (y is None):
                return float("inf")
            continue
        x64, y64 = x.detach().double(), y.detach().to(device=x.device, dtype=torch.float64)
        if not torch.isfinite(x64).all():
            return float("inf")
        den = torch.linalg.vector_norm(y64).item()
        num = torch.linalg.vector_norm(x64 - y64).item()
        worst = max(worst, num / den if den > 0 else num)
    return worst


def bitwise_equal(a, b) -> bool:
    return all((x is None and y is None) or (x is not None and y is not None and torch.equal(x, y))
               for x, y in zip(a, b))
