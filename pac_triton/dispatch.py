"""The backend flag: one place decides which implementation runs (named `dispatch`, not
`backends`: torch.compile skips every file whose path contains "triton/backends").

``backend`` is ``"reference"`` (pure PyTorch, any device), ``"triton"`` (fused Triton kernels:
CUDA tensors, or any tensors under Triton's interpreter ``TRITON_INTERPRET=1``) or ``"auto"``.
``None`` means the default, set by the environment variable ``PAC_TRITON_BACKEND`` (else
``"auto"``). ``"auto"`` picks Triton for CUDA tensors when its kernels for that operator (and,
when autograd will need it, its backward) exist and the call carries no forward-mode tangents
(``carries_tangents``) and is not differentiated by a ``torch.func`` transform
(``under_grad_transform``), and the reference otherwise (CPU tensors
always get the reference under ``"auto"``, interpreter or not; CUDA tensors get it with a
RuntimeWarning, once per reason, when the Triton backend cannot run: triton missing, or the
backend failing to load). ``"triton"`` never falls back:
it runs or raises ``NotImplementedError`` saying why (Triton not importable, no kernel for the
operator, or CPU tensors without the interpreter). ``explain(...)`` says which backend a call
gets and why.

``triton_available()`` answers whether the Triton backend can run *here*: Triton imports (the
experiment settings such as ``PAC_TRITON_FORCE`` are read at each launch, where a malformed
value raises a ValueError naming it; they never make the backend look unavailable) and this machine
can run its kernels, i.e. a CUDA device is available or Triton's interpreter is on
(``TRITON_INTERPRET`` set, before ``triton`` is first imported: Triton decides when the kernels
are defined). Otherwise it is falsy and its ``reason`` says why.
"""
from __future__ import annotations

import os
import sys
import warnings
from typing import NamedTuple

import torch

__all__ = ["BACKENDS", "default_backend", "check_backend", "select", "explain", "Selection", "triton_available"]

BACKENDS = ("auto", "reference", "triton")
ENV_VAR = "PAC_TRITON_BACKEND"


def check_backend(backend) -> str:
    """Validate a backend name (``None`` -> the default). Returns the name."""
    if backend is None:
        return default_backend()
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: expected one of {BACKENDS} or None")
    return backend


def default_backend() -> str:
    value = os.environ.get(ENV_VAR, "auto") or "auto"
    if value not in BACKENDS:
        raise ValueError(f"environment variable {ENV_VAR}={value!r} is not one of {BACKENDS}")
    return value


_TRITON_BACKEND = None  # the backend package once imported (an import statement per call costs ~1 us)


def _triton_module():
    """The Triton backend module and ``None``, or ``None`` and the reason it cannot run."""
    global _TRITON_BACKEND
    triton_backend = _TRITON_BACKEND
    if triton_backend is None:
        try:
            from . import triton as triton_backend
        except ImportError as error:  # triton not installed, or the backend package is missing
            return None, f"the Triton backend cannot be imported ({error})"
        _TRITON_BACKEND = triton_backend
    ok, reason = triton_backend.is_available()
    if not ok:
        return None, reason
    return triton_backend, ""


class Availability(NamedTuple):
    """``(ok, reason)``; truthy exactly when ``ok`` (so ``if triton_available():`` works)."""

    ok: bool
    reason: str

    def __bool__(self):
        return self.ok


def triton_available() -> Availability:
    """``(True, "")`` when the Triton backend can run in this process on this machine (Triton
    imports, and a CUDA device is available or ``TRITON_INTERPRET`` is set), else
    ``(False, reason)``."""
    module, reason = _triton_module()
    if module is None:
        return Availability(False, reason)
    if not torch.cuda.is_available() and not _interpreting():
        return Availability(False, "Triton is installed but cannot run its kernels here: no CUDA device "
                                   "(torch.cuda.is_available() is False) and Triton's interpreter is off (set "
                                   "TRITON_INTERPRET=1 before triton is imported to run the kernels on the CPU)")
    return Availability(True, "")


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _needs_grad(tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def carries_tangents(tensors) -> bool:
    """Whether a call's ``tensors`` carry forward-mode tangents: a dual tensor of
    ``torch.autograd.forward_ad``, or a tensor wrapped by a ``torch.func.jvp`` / ``jacfwd``
    transform. The Triton backend has no forward-mode formula: ``"auto"`` takes the reference
    for such calls and ``"triton"`` raises (never a dropped tangent)."""
    import torch.autograd.forward_ad as fwad
    if fwad._current_level >= 0:
        for t in tensors:
            if isinstance(t, torch.Tensor) and fwad.unpack_dual(t).tangent is not None:
                return True
    return _under_transform(tensors, "Jvp")


def under_grad_transform(tensors) -> bool:
    """Whether a ``torch.func`` gradient transform (``grad``, ``vjp``, ``jacrev``, ``hessian``:
    functorch's Grad interpreter) is active and one of ``tensors`` is wrapped by a functorch
    transform, i.e. the call may be differentiated by torch.func. The Triton backend's
    autograd (``torch.library`` custom ops) does not support torch.func, so ``"auto"`` takes the
    reference for such calls (also for one that torch.func does not differentiate after all,
    e.g. under ``torch.no_grad()``: correct, only slower). ``"triton"`` runs them, and raises a
    ``NotImplementedError`` naming the transform where torch refuses the op's autograd
    (``host_common.EagerOp``), not torch's message about an ``autograd.Function`` without
    ``setup_context``."""
    return _under_transform(tensors, "Grad")


def _under_transform(tensors, kind: str) -> bool:
    """Whether a functorch transform of ``kind`` (a ``torch._C._functorch.TransformType`` name) is
    active and one of ``tensors`` is wrapped by a functorch transform."""
    if not torch._C._are_functorch_transforms_active() or not any(
            isinstance(t, torch.Tensor) and torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors):
        return False
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters
    key = getattr(torch._C._functorch.TransformType, kind)
    return any(i.key() == key for i in retrieve_all_functorch_interpreters())


_WARNED_UNAVAILABLE: set = set()  # the reasons "auto" has warned about in this process


def _warn_unavailable_once(reason: str) -> None:
    """``"auto"`` given CUDA tensors while the Triton backend cannot run (triton missing, or
    the backend failing to load): the reference runs, correct but many times slower, so say it
    once per reason (a RuntimeWarning) rather than fall back in silence."""
    if reason in _WARNED_UNAVAILABLE or torch.compiler.is_compiling():
        return  # (Dynamo cannot trace warnings.warn: fullgraph=True would fail; the eager call warns)
    _WARNED_UNAVAILABLE.add(reason)
    warnings.warn(f"pac_triton: backend='auto' is running the reference backend (pure PyTorch, many times "
                  f"slower) on CUDA tensors because the Triton backend is unavailable: {reason}. Pass "
                  f"backend='reference' (or set {ENV_VAR}=reference) to choose it explicitly.",
                  RuntimeWarning, stacklevel=_caller_stacklevel())


# (with a trailing separator: a sibling directory named pac_triton_x is not the library)
_LIBRARY_DIRS = (os.path.dirname(os.path.abspath(__file__)) + os.sep,
                 os.path.dirname(os.path.abspath(torch.nn.__file__)) + os.sep)


def _caller_stacklevel() -> int:
    """``warnings.warn``'s ``stacklevel`` (for a call made by this module's caller) that names
    the first frame outside pac_triton and ``torch.nn`` (the user's line that called a function
    or a module); Python 3.11 has no ``skip_file_prefixes``."""
    frame, level = sys._getframe(2), 2
    while frame is not None and frame.f_code.co_filename.startswith(_LIBRARY_DIRS):
        frame, level = frame.f_back, level + 1
    return level


class Selection(NamedTuple):
    """What ``select`` picks and why: ``backend`` is ``"reference"`` or ``"triton"``; ``reason``
    says why (for ``"auto"``) in words."""

    backend: str
    reason: str


def _choose(backend, op, tensors):
    """``(module, Selection)``; raises ``NotImplementedError`` for a ``"triton"`` that cannot run."""
    backend = check_backend(backend)
    if backend == "reference":
        from . import reference
        return reference, Selection("reference", "backend='reference' was asked for")
    on_cuda = False
    for t in tensors:
        if t is not None and t.is_cuda:
            on_cuda = True
            break
    module, reason = _triton_module()
    if backend == "auto":
        if module is None:
            why = reason
            if on_cuda:
                _warn_unavailable_once(reason)
        elif not on_cuda:
            why = "CPU tensors ('auto' runs Triton on CUDA tensors only)"
        elif op not in module.IMPLEMENTED:
            why = f"{op} has no Triton kernel"
        elif _needs_grad(tensors) and op not in getattr(module, "IMPLEMENTED_BACKWARD", ()):
            why = f"{op} has no Triton backward and autograd needs one"
        elif carries_tangents(tensors):
            why = "forward-mode AD (tangents) and the Triton backend has no forward-mode formula"
        elif under_grad_transform(tensors):
            why = "a torch.func gradient transform (grad, vjp, jacrev) and the Triton backend's autograd does not support torch.func"
        else:
            return module, Selection("triton", f"CUDA tensors and a Triton kernel for {op}")
        from . import reference
        return reference, Selection("reference", why)
    # backend == "triton": run or say why not.
    if module is None:
        raise NotImplementedError(f"backend='triton' for {op}: {reason}")
    if op not in module.IMPLEMENTED:
        raise NotImplementedError(f"backend='triton': {op} has no Triton kernel yet; use backend='reference' "
                                  "or 'auto'")
    if not on_cuda and not _interpreting():
        raise NotImplementedError(f"backend='triton' for {op} needs CUDA tensors (or Triton's interpreter, "
                                  "TRITON_INTERPRET=1 set before triton is imported); got CPU tensors")
    return module, Selection("triton", "backend='triton' was asked for")


def select(backend, op: str, tensors):
    """The module implementing ``op`` for ``backend`` on these ``tensors``.

    Both backends expose the same functions with the same options (see
    ``reference/__init__.py``). ``explain`` says which backend a call gets and why, without
    running it.
    """
    return _choose(backend, op, tensors)[0]


def explain(backend, op: str, tensors) -> Selection:
    """``Selection(backend, reason)``: which backend ``select`` picks for these arguments and why.
    Raises what ``select`` raises (``NotImplementedError`` for a ``"triton"`` that cannot run)."""
    return _choose(backend, op, tensors)[1]
