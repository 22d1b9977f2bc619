"""Index helpers shared by the reference operators.

Everything here is plain PyTorch. The reference is written for clarity, not speed: every tap
of the kernel window is a separate strided view of a zero-padded tensor, so each line of the
formulas in ``docs/semantics.md`` appears once, as written.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["sample", "tap_valid", "zero_insert", "compute_dtype", "kernel_compute_dtype"]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half types are computed in float32 inside the reference; float32/float64 as they are."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def kernel_compute_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """The dtype of the K math (distances, K, normalisation) of a guide-taking operator: float64
    when the input or the guide is float64, else float32 (half types upcast)."""
    return torch.float64 if torch.float64 in dtypes else torch.float32


def sample(t: torch.Tensor, start: tuple[int, int], step: tuple[int, int],
           count: tuple[int, int]) -> torch.Tensor:
    """Read ``t[..., start_h + u*step_h, start_w + v*step_w]`` for ``u < count_h, v < count_w``.

    Positions outside ``t`` read 0 (zero padding). ``t`` is ``[..., H, W]``; the result is
    ``[..., count_h, count_w]``.
    """
    height, width = t.shape[-2:]
    pads = []  # F.pad order: (w_lo, w_hi, h_lo, h_hi)
    slices = []
    for size, s0, st, n in ((width, start[1], step[1], count[1]), (height, start[0], step[0], count[0])):
        last = s0 + (n - 1) * st
        lo = max(0, -s0)
        hi = max(0, last - (size - 1))
        pads += [lo, hi]
        slices.append(slice(s0 + lo, s0 + lo + (n - 1) * st + 1, st))
    if any(pads):
        t = F.pad(t, pads)
    return t[..., slices[1], slices[0]]


def tap_valid(ones: torch.Tensor, start: tuple[int, int], step: tuple[int, int],
              count: tuple[int, int]) -> torch.Tensor:
    """``sample`` of ``ones`` (1 on the input pixels, 0 between them when zero-inserted) as a bool
    tensor: where a tap lands on an input pixel rather than on padding or a hole."""
    return sample(ones, start, step, count) != 0


def zero_insert(t: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
    """Insert ``stride - 1`` zeros between neighbouring pixels: ``[..., (H-1)*s+1, (W-1)*s+1]``."""
    sh, sw = stride
    if sh == 1 and sw == 1:
        return t
    height, width = t.shape[-2:]
    out = t.new_zeros(*t.shape[:-2], (height - 1) * sh + 1, (width - 1) * sw + 1)
    out[..., ::sh, ::sw] = t
    return out
