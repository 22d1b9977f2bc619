"""PAC pooling with a given kernel K (section 4 of docs/semantics.md), in plain PyTorch:

    y[b,c,u,v] = sum_{i,j} K[b, c or 0, i, j, u, v] * x[b, c, u*s-p+i*d, v*s-p+j*d]

over the valid taps only: K is selected there (``torch.where``), so a tap reading zero padding
contributes nothing and gets no gradient whatever K holds (NaN and Inf included).
"""
from __future__ import annotations

import torch

from ._sample import compute_dtype, sample, tap_valid

__all__ = ["pacpool2d"]


def pacpool2d(input, kernel, kernel_size, stride, padding, dilation):
    """``input [B, C, H, W]``, ``kernel [B, 1 or C, kh, kw, Ho, Wo]`` -> ``[B, C, Ho, Wo]``."""
    dtype = compute_dtype(input.dtype)
    x, k = input.to(dtype), kernel.to(dtype)
    kh, kw = kernel_size
    out_hw = k.shape[-2:]
    ones = x.new_ones(1, 1, *x.shape[-2:])
    acc = 0
    for i in range(kh):
        for j in range(kw):
            start = (i * dilation[0] - padding[0], j * dilation[1] - padding[1])
            x_tap = sample(x, start, stride, out_hw)
            acc = acc + torch.where(tap_valid(ones, start, stride, out_hw), k[:, :, i, j], 0.0) * x_tap
    return acc.to(input.dtype)
