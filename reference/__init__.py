"""Pure-PyTorch reference backend of pac_triton: the correctness oracle.

Written for clarity (one strided view per kernel tap), gradients by autograd. It imports no
Triton and nothing from ``pac_triton``; the package installs it as ``pac_triton.reference``.
The guide-taking operators compute K with ``kernel_math``: in float64 when the input or the
guide is float64, else float32 (half types upcast), and K enters the conv / pooling in that
dtype (so a float64 input is accumulated with a float64 K). Outputs are in the input's dtype;
autograd returns each gradient in its tensor's dtype. Their K is selected to 0 at the taps that
land on no input pixel before it is used, so nothing read there (a NaN of the guide, an
overflowing distance) reaches an output or a gradient.

The conv functions take a trailing ``groups`` (default 1), as the Triton backend's do.

Arguments arrive validated and normalised (pairs as tuples, ``inv_alpha``/``inv_lambda`` as
tensors, ``smooth_kernel`` a ``[1, 1, sh, sw]`` tensor or ``None``) by ``pac_triton.functional``.
"""
from __future__ import annotations

from ._sample import kernel_compute_dtype
from .conv import pacconv2d, pacconv_transpose2d
from .kernel import kernel_math, packernel2d
from .pool import pacpool2d

__all__ = [
    "packernel2d", "pacconv2d", "pacconv_transpose2d", "pacpool2d",
    "pac_conv2d", "pac_conv_transpose2d", "pac_pool2d",
]


def _kernel(input, guide, mask, *args):
    """K of a guide-taking operator: float64 math when the input or the guide is float64, K kept in
    that dtype, selected to 0 at invalid taps; ``out_mask`` in the guide's dtype."""
    dtype = kernel_compute_dtype(input.dtype, guide.dtype)
    kernel, out_mask = kernel_math(guide, mask, *args, dtype, dtype, True)
    return kernel, (None if out_mask is None else out_mask.to(guide.dtype))


def pac_conv2d(input, guide, weight, bias, stride, padding, dilation, kernel_type, inv_alpha, inv_lambda,
               smooth_kernel, normalize_kernel, shared_filters, mask, groups=1):
    """Guide-taking conv: K from the guide, then ``pacconv2d`` (``groups`` as there). Returns
    ``(y, out_mask)``."""
    kernel, out_mask = _kernel(input, guide, mask, tuple(weight.shape[-2:]), stride, padding, (0, 0), dilation,
                               kernel_type, smooth_kernel, inv_alpha, inv_lambda, False, normalize_kernel, False)
    return pacconv2d(input, kernel, weight, bias, stride, padding, dilation, shared_filters, groups), out_mask


def pac_conv_transpose2d(input, guide, weight, bias, stride, padding, output_padding, dilation, kernel_type,
                         inv_alpha, inv_lambda, smooth_kernel, normalize_kernel, shared_filters, mask, groups=1):
    """Guide-taking transposed conv (guide at output resolution; ``groups`` as
    ``pacconv_transpose2d``). Returns ``(y, out_mask)``."""
    kernel, out_mask = _kernel(input, guide, mask, tuple(weight.shape[-2:]), stride, padding, output_padding,
                               dilation, kernel_type, smooth_kernel, inv_alpha, inv_lambda, False, normalize_kernel,
                               True)
    y = pacconv_transpose2d(input, kernel, weight, bias, stride, padding, output_padding, dilation, shared_filters,
                            groups)
    return y, out_mask


def pac_pool2d(input, guide, kernel_size, stride, padding, dilation, kernel_type, inv_alpha, inv_lambda,
               smooth_kernel, normalize_kernel, channel_wise, mask):
    """Guide-taking K-weighted pooling. Returns ``(y, out_mask)``."""
    kernel, out_mask = _kernel(input, guide, mask, kernel_size, stride, padding, (0, 0), dilation, kernel_type,
                               smooth_kernel, inv_alpha, inv_lambda, channel_wise, normalize_kernel, False)
    return pacpool2d(input, kernel, kernel_size, stride, padding, dilation), out_mask
