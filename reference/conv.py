"""PAC convolution and transposed convolution with a given kernel K, in plain PyTorch.

Sections 2 and 3 of docs/semantics.md, one tap at a time:

    conv:        y[b,o,u,v] = bias[o] + sum_{c,i,j} W[o,c,i,j] K[b,0,i,j,u,v] x[b,c,u*s-p+i*d, v*s-p+j*d]
    transposed:  y[b,o,u,v] = bias[o] + sum_{c,i,j} W[c,o,i,j] K[b,0,kh-1-i,kw-1-j,u,v] x[b,c,(u+p-i*d)/s, ...]

The sums run over the valid taps only: a tap that reads zero padding (or, transposed, a hole
between input pixels) contributes nothing, whatever K holds there (NaN and Inf included), and
sends no gradient to K. K is *selected* at the valid taps (``torch.where``), not multiplied by
the zero that the tap reads.
"""
from __future__ import annotations

import torch

from ._sample import compute_dtype, sample, tap_valid, zero_insert

__all__ = ["pacconv2d", "pacconv_transpose2d"]


def _finish(acc, bias, like):
    """``acc`` (+ bias) in ``like``'s dtype and memory format (channels-last in, channels-last
    out, as ``F.conv2d``; otherwise contiguous, whatever layout the per-tap einsum left)."""
    if bias is not None:
        acc = acc + bias.to(acc.dtype).reshape(1, -1, 1, 1)
    if torch._C._functorch.is_batchedtensor(like) or torch._C._functorch.is_batchedtensor(acc):
        # inside torch.func.vmap memory formats cannot be queried (NYI): the batched result as is
        return acc.to(like.dtype)
    channels_last = like.is_contiguous(memory_format=torch.channels_last) and not like.is_contiguous()
    return acc.to(like.dtype).contiguous(memory_format=torch.channels_last if channels_last
                                         else torch.contiguous_format)


def _accumulate(taps, kernel, weight, shared_filters, weight_tap):
    """``sum_t K_t * (x_t contracted with W_t)`` over the valid taps; ``taps`` yields
    ``(i, j, x_t, valid_t)``. ``weight`` is ``[1, 1, kh, kw]`` (shared) or grouped,
    ``[G, O/G, C/G, kh, kw]``: output channel ``g*O/G + p`` reads input channels
    ``g*C/G .. (g+1)*C/G - 1`` only (``G == 1``: every channel)."""
    acc = 0
    for i, j, x_tap, valid in taps:
        k_tap = kernel[:, :, i, j] if weight_tap is None else kernel[:, :, weight_tap[0] - i, weight_tap[1] - j]
        scaled = torch.where(valid, k_tap, 0.0) * x_tap  # [B, C, Ho, Wo]
        if shared_filters:
            acc = acc + weight[0, 0, i, j] * scaled
        else:
            groups = weight.shape[0]
            grouped = scaled.unflatten(1, (groups, -1))  # [B, G, C/G, Ho, Wo]
            acc = acc + torch.einsum("gpc,bgchw->bgphw", weight[..., i, j], grouped).flatten(1, 2)
    return acc


def pacconv2d(input, kernel, weight, bias, stride, padding, dilation, shared_filters, groups=1):
    """``input [B, C, H, W]``, ``kernel [B, 1, kh, kw, Ho, Wo]``, ``weight [O, C/groups, kh, kw]``
    (``[1, 1, kh, kw]`` shared, then ``groups == 1``) -> ``[B, O, Ho, Wo]`` in the input's dtype.
    With ``groups`` G, output channel ``o`` sums over the input channels of its group
    ``o // (O/G)`` only, as ``F.conv2d(..., groups=G)``."""
    dtype = compute_dtype(input.dtype)
    x, k, w = input.to(dtype), kernel.to(dtype), weight.to(dtype)
    kh, kw = w.shape[-2:]
    out_hw = k.shape[-2:]
    ones = x.new_ones(1, 1, *x.shape[-2:])

    def tap(i, j):
        start = (i * dilation[0] - padding[0], j * dilation[1] - padding[1])
        return i, j, sample(x, start, stride, out_hw), tap_valid(ones, start, stride, out_hw)

    taps = (tap(i, j) for i in range(kh) for j in range(kw))
    if not shared_filters:
        w = w.unflatten(0, (groups, -1))  # [G, O/G, C/G, kh, kw]
    return _finish(_accumulate(taps, k, w, shared_filters, None), bias, input)


def pacconv_transpose2d(input, kernel, weight, bias, stride, padding, output_padding, dilation, shared_filters,
                        groups=1):
    """``input [B, C, H, W]``, ``kernel [B, 1, kh, kw, Ho, Wo]``, ``weight [C, O/groups, kh, kw]``
    (``[1, 1, kh, kw]`` shared, then ``groups == 1``) -> ``[B, O, Ho, Wo]``. ``output_padding`` is
    implied by K's size. Groups as ``F.conv_transpose2d(..., groups=G)``."""
    dtype = compute_dtype(input.dtype)
    x, k, w = input.to(dtype), kernel.to(dtype), weight.to(dtype)
    kh, kw = w.shape[-2:]
    out_hw = k.shape[-2:]
    # Zero insertion turns "(u + p - i*d) divisible by s and inside the input" into a plain read.
    inserted = zero_insert(x, stride)
    inserted_ones = zero_insert(x.new_ones(1, 1, *x.shape[-2:]), stride)

    def tap(i, j):
        start = (padding[0] - i * dilation[0], padding[1] - j * dilation[1])
        return i, j, sample(inserted, start, (1, 1), out_hw), tap_valid(inserted_ones, start, (1, 1), out_hw)

    taps = (tap(i, j) for i in range(kh) for j in range(kw))
    if not shared_filters:
        w = w.unflatten(0, (groups, -1)).transpose(1, 2)  # [C, O/G] -> [G, C/G, O/G] -> [G, O/G, C/G]
    return _finish(_accumulate(taps, k, w, shared_filters, (kh - 1, kw - 1)), bias, input)
