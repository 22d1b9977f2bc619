"""The adapting kernel K (``packernel2d``) in plain PyTorch: section 1 of docs/semantics.md.

Arguments arrive validated and normalised by ``pac_triton.functional``: pairs are tuples,
``inv_alpha``/``inv_lambda`` are tensors, ``smooth_kernel`` is a ``[1, 1, sh, sw]`` tensor or
``None`` (no smoothing). Nothing here checks user input.
"""
from __future__ import annotations

import torch

from ._sample import compute_dtype, sample, zero_insert

__all__ = ["packernel2d", "kernel_math", "kernel_grid"]

INV_EPSILON = 1e-4


def kernel_grid(guide_hw, kernel_size, stride, padding, dilation, transposed):
    """Where K lives and which guide rows each tap reads.

    Returns ``(out_hw, tap_start, step)``: K is ``out_hw`` big, and tap ``(i, j)`` of output
    pixel ``(u, v)`` reads the guide at ``(tap_start(i, j)[0] + u*step[0], ... )``.
    """
    kh, kw = kernel_size
    if transposed:
        # Guide at output resolution; stride 1 and "same" padding (k - 1) * d / 2.
        out_hw = tuple(guide_hw)
        step = (1, 1)

        def tap_start(i, j):
            return ((i - kh // 2) * dilation[0], (j - kw // 2) * dilation[1])
    else:
        out_hw = tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                       for n, p, d, k, s in zip(guide_hw, padding, dilation, kernel_size, stride))
        step = tuple(stride)

        def tap_start(i, j):
            return (i * dilation[0] - padding[0], j * dilation[1] - padding[1])
    return out_hw, tap_start, step


def transposed_input_hw(out_hw, kernel_size, stride, padding, output_padding, dilation):
    """Input size of the transposed conv whose output is ``out_hw`` (section 1, valid taps)."""
    return tuple((n - op - 1 - (k - 1) * d + 2 * p) // s + 1
                 for n, op, k, d, p, s in zip(out_hw, output_padding, kernel_size, dilation, padding, stride))


def _tap_mask(ones_or_mask, transposed, tap_start, step, out_hw, kernel_size, stride, padding, dilation):
    """Per tap, the value of ``ones_or_mask`` (input resolution) at the input pixel it lands on,
    0 where the tap lands on no input pixel. Returns ``[B, 1, kh, kw, Ho, Wo]``."""
    kh, kw = kernel_size
    taps = []
    if transposed:
        # The zero-inserted, padded input: position z = u + i*d - ((k-1)*d - p).
        inserted = zero_insert(ones_or_mask, stride)
        for i in range(kh):
            for j in range(kw):
                start = (i * dilation[0] - ((kh - 1) * dilation[0] - padding[0]),
                         j * dilation[1] - ((kw - 1) * dilation[1] - padding[1]))
                taps.append(sample(inserted, start, (1, 1), out_hw))
    else:
        for i in range(kh):
            for j in range(kw):
                taps.append(sample(ones_or_mask, tap_start(i, j), step, out_hw))
    return torch.stack(taps, dim=2).unflatten(2, (kh, kw))


def packernel2d(guide, mask, kernel_size, stride, padding, output_padding, dilation, kernel_type,
                smooth_kernel, inv_alpha, inv_lambda, channel_wise, normalize_kernel, transposed):
    """Returns ``(K, out_mask)``; ``K`` is ``[B, 1 or D, kh, kw, Ho, Wo]`` in the guide's dtype,
    computed in float32 (half guides) or the guide's own dtype."""
    return kernel_math(guide, mask, kernel_size, stride, padding, output_padding, dilation, kernel_type,
                       smooth_kernel, inv_alpha, inv_lambda, channel_wise, normalize_kernel, transposed,
                       compute_dtype(guide.dtype), guide.dtype, False)


def kernel_math(guide, mask, kernel_size, stride, padding, output_padding, dilation, kernel_type,
                smooth_kernel, inv_alpha, inv_lambda, channel_wise, normalize_kernel, transposed,
                dtype, out_dtype, only_valid):
    """``packernel2d`` computed in ``dtype`` and returned in ``out_dtype``.

    Taps that land on no input pixel, and masked taps, contribute nothing: where the contract
    zeroes K (``K * m`` with ``m == 0``) the value is *selected* away, never multiplied by 0, so
    a NaN or Inf of the guide there (or an overflowing distance) cannot leak into the pixel's
    other taps, its normaliser, or any gradient; K stays exactly 0 there even when the
    normaliser is NaN. The distance of such a tap is replaced by 0 before K is formed (a double
    select), so autograd sends exactly 0 (not ``0 * NaN``) back through it. ``only_valid`` (the guide-taking operators, whose K never leaves them) does the
    same for the invalid taps of an unmasked, unnormalised K; the standalone ``packernel2d``
    returns K at every tap there, as the contract says.
    """
    f = guide.to(dtype)
    kh, kw = kernel_size
    out_hw, tap_start, step = kernel_grid(f.shape[-2:], kernel_size, stride, padding, dilation, transposed)

    # Which taps count: valid (land on an input pixel) and, with a mask, not masked out.
    keep = m = valid = None
    if normalize_kernel or mask is not None or only_valid:
        ones = f.new_ones(1, 1, *(
            transposed_input_hw(out_hw, kernel_size, stride, padding, output_padding, dilation)
            if transposed else f.shape[-2:]))
        valid = _tap_mask(ones, transposed, tap_start, step, out_hw, kernel_size, stride, padding, dilation)
        m = valid if mask is None else _tap_mask(mask.to(dtype), transposed, tap_start, step, out_hw,
                                                  kernel_size, stride, padding, dilation)
        keep = m != 0

    # Centre feature f0: the guide at the centre tap, or its per-channel smoothing there.
    centre = tap_start(kh // 2, kw // 2)
    if smooth_kernel is None:
        f0 = sample(f, centre, step, out_hw)
    else:
        weights = smooth_kernel.to(dtype)
        sh, sw = weights.shape[-2:]
        f0 = 0
        for a in range(sh):
            for b in range(sw):
                shifted = sample(f, (centre[0] + a - sh // 2, centre[1] + b - sw // 2), step, out_hw)
                f0 = f0 + weights[0, 0, a, b] * shifted

    asym = kernel_type.startswith("inv_") and "_asym" in kernel_type
    distances = []
    for i in range(kh):
        for j in range(kw):
            diff = sample(f, tap_start(i, j), step, out_hw) - f0
            if keep is not None:
                diff = torch.where(keep[:, :, i, j], diff, 0.0)
            if asym:
                diff = torch.relu(diff)
            sq = diff * diff
            distances.append(sq if channel_wise else sq.sum(dim=1, keepdim=True))
    r = torch.stack(distances, dim=2).unflatten(2, (kh, kw))  # [B, 1|D, kh, kw, Ho, Wo]

    if kernel_type == "gaussian":
        kernel = torch.exp(-0.5 * r)
    else:
        alpha = inv_alpha.to(dtype).reshape(1, -1, 1, 1, 1, 1)
        lam = inv_lambda.to(dtype).reshape(1, -1, 1, 1, 1, 1)
        kernel = alpha + torch.pow(r + INV_EPSILON, 0.5 * lam)

    out_mask = None
    if normalize_kernel or mask is not None:
        if normalize_kernel:
            kernel = torch.where(keep, kernel * m, 0.0)
            norm = kernel.sum(dim=(2, 3), keepdim=True)
        else:
            norm = m.sum(dim=(2, 3), keepdim=True)
            kernel = torch.where(keep, kernel * m * valid.sum(dim=(2, 3), keepdim=True), 0.0)
        nonzero = norm != 0
        # selected again: a NaN normaliser (a valid tap read a NaN) leaves the others at 0
        kernel = torch.where(keep, kernel / torch.where(nonzero, norm, torch.ones_like(norm)), 0.0)
        if mask is not None:
            out_mask = nonzero.to(out_dtype)
    elif only_valid:
        kernel = torch.where(keep, kernel, 0.0)
    return kernel.to(out_dtype), out_mask
