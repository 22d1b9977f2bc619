"""Helpers of the Triton-backend tests (imported by conftest.py and the test files)."""
from __future__ import annotations

import contextlib
import importlib
import os
import sys

import torch

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
