"""Pure-PyTorch reference backend of pac_triton: the correctness oracle.

Written for clarity (one strided view per kernel tap), gradients by autograd. It imports no
Triton and nothing from ``pac_triton``; the package installs it as ``pac_triton.reference``.
Arguments arrive validated and normalised (pairs as tuples, ``inv_alpha``/``inv_lambda`` as
tensors, ``smooth_kernel`` a ``[1, 1, sh, sw]`` tensor or ``None``) by ``pac_triton.functional``.
"""
from __future__ import annotations

from .conv import pacconv2d, pacconv_transpose2d
from .kernel import packernel2d
from .pool import pacpool2d

__all__ = [
    "packernel2d", "pacconv2d", "pacconv_transpose2d", "pacpool2d",
    "pac_conv2d", "pac_conv_transpose2d", "pac_pool2d",
]


def pac_conv2d(input, guide, weight, bias, stride, padding, dilation, kernel_type, inv_alpha, inv_lambda,
               smooth_kernel, normalize_kernel, shared_filters, mask):
    """Guide-taking conv: K from the guide, then ``pacconv2d``. Returns ``(y, out_mask)``."""
    kernel, out_mask = packernel2d(guide, mask, tuple(weight.shape[-2:]), stride, padding, (0, 0), dilation,
                                   kernel_type, smooth_kernel, inv_alpha, inv_lambda, False,
                                   normalize_kernel, False)
    return pacconv2d(input, kernel, weight, bias, stride, padding, dilation, shared_filters), out_mask


def pac_conv_transpose2d(input, guide, weight, bias, stride, padding, output_padding, dilation, kernel_type,
                         inv_alpha, inv_lambda, smooth_kernel, normalize_kernel, shared_filters, mask):
    """Guide-taking transposed conv (guide at output resolution). Returns ``(y, out_mask)``."""
    kernel, out_mask = packernel2d(guide, mask, tuple(weight.shape[-2:]), stride, padding, output_padding,
                                   dilation, kernel_type, smooth_kernel, inv_alpha, inv_lambda, False,
                                   normalize_kernel, True)
    y = pacconv_transpose2d(input, kernel, weight, bias, stride, padding, output_padding, dilation, shared_filters)
    return y, out_mask


def pac_pool2d(input, guide, kernel_size, stride, padding, dilation, kernel_type, inv_alpha, inv_lambda,
               smooth_kernel, normalize_kernel, channel_wise, mask):
    """Guide-taking K-weighted pooling. Returns ``(y, out_mask)``."""
    kernel, out_mask = packernel2d(guide, mask, kernel_size, stride, padding, (0, 0), dilation, kernel_type,
                                   smooth_kernel, inv_alpha, inv_lambda, channel_wise, normalize_kernel, False)
    return pacpool2d(input, kernel, kernel_size, stride, padding, dilation), out_mask
