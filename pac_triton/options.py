"""Parsing of the string options (``kernel_type``, ``smooth_kernel_type``) into small frozen
dataclasses, done once, and the fixed smoothing kernels. See docs/semantics.md, section 1."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

__all__ = ["KernelType", "SmoothType", "parse_kernel_type", "parse_smooth_type", "fixed_smooth_kernel"]

_INV_PATTERN = re.compile(r"^inv_([^_]+)_([^_]+)((?:_asym)?)((?:_fixed)?)$")


@dataclass(frozen=True)
class KernelType:
    """A parsed ``kernel_type``: ``'gaussian'`` or ``'inv_{alpha}_{lambda}[_asym][_fixed]'``."""

    name: str
    family: str  # "gaussian" or "inv"
    alpha: float | None = None  # initial / default inv_alpha
    lam: float | None = None  # initial / default inv_lambda
    asym: bool = False
    fixed: bool = False


@dataclass(frozen=True)
class SmoothType:
    """A parsed ``smooth_kernel_type``: ``'none'``, ``'gaussian'``, ``'average_n'`` or ``'full_n'``."""

    name: str
    kind: str  # "none", "gaussian", "average", "full"
    size: int = 0


def parse_kernel_type(kernel_type) -> KernelType:
    if not isinstance(kernel_type, str):
        raise TypeError(f"kernel_type must be a string, got {type(kernel_type).__name__}")
    if kernel_type == "gaussian":
        return KernelType(kernel_type, "gaussian")
    match = _INV_PATTERN.match(kernel_type)
    if match is not None:
        try:
            alpha, lam = float(match.group(1)), float(match.group(2))
        except ValueError:
            match = None
        else:
            if not (math.isfinite(alpha) and math.isfinite(lam)):
                raise ValueError(f"kernel_type {kernel_type!r}: alpha and lambda must be finite numbers, got "
                                 f"{match.group(1)!r} and {match.group(2)!r}")
            return KernelType(kernel_type, "inv", alpha, lam, bool(match.group(3)), bool(match.group(4)))
    raise ValueError(
        f"unknown kernel_type {kernel_type!r}: expected 'gaussian' or 'inv_{{alpha}}_{{lambda}}[_asym][_fixed]' "
        "(e.g. 'inv_0.5_1.5_asym')")


def parse_smooth_type(smooth_kernel_type) -> SmoothType:
    if not isinstance(smooth_kernel_type, str):
        raise TypeError(f"smooth_kernel_type must be a string, got {type(smooth_kernel_type).__name__}")
    if smooth_kernel_type in ("none", "gaussian"):
        return SmoothType(smooth_kernel_type, smooth_kernel_type, 0 if smooth_kernel_type == "none" else 3)
    match = re.match(r"^(average|full)_(\d+)$", smooth_kernel_type)
    if match is None:
        raise ValueError(f"unknown smooth_kernel_type {smooth_kernel_type!r}: expected 'none', 'gaussian', "
                         "'average_n' or 'full_n' with an odd n")
    size = int(match.group(2))
    if size % 2 != 1:
        raise ValueError(f"smooth_kernel_type {smooth_kernel_type!r}: the smoothing size must be odd, got {size}")
    return SmoothType(smooth_kernel_type, match.group(1), size)


def fixed_smooth_kernel(smooth: SmoothType, dtype=torch.float32, device=None) -> torch.Tensor | None:
    """The ``[1, 1, n, n]`` smoothing window of a type (``full_n``: its initial value ``1/n^2``)."""
    if smooth.kind == "none":
        return None
    if smooth.kind == "gaussian":
        one_d = torch.tensor([0.25, 0.5, 0.25], dtype=dtype, device=device)
        return (one_d[:, None] * one_d[None, :]).reshape(1, 1, 3, 3)
    n = smooth.size
    return torch.full((1, 1, n, n), 1.0 / (n * n), dtype=dtype, device=device)
