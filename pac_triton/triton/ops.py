"""torch.library custom ops wrapping the launchers, so that torch.compile sees one opaque op per
forward (``register_fake`` gives shapes; no graph break). Backward is not implemented yet: it
raises a clear NotImplementedError (no silent fallback to the reference).

The op returns ``(out, out_mask)``; ``out_mask`` is an empty tensor when no mask was given
(custom ops cannot return ``None`` inside a tuple); the wrappers in ``__init__`` map it back.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from . import launch

_BACKWARD_MSG = ("backward of the Triton backend lands with the backward issue; use "
                 "backend='reference' for gradients")


def _no_backward(ctx, *grads):
    raise NotImplementedError(_BACKWARD_MSG)


def _setup_context(ctx, inputs, output):
    pass


def _empty_like_layout(x, shape, dtype):
    return launch._like_layout(x, shape, dtype)


# --- conv / transposed conv ---------------------------------------------------------------------

@torch.library.custom_op("pac_triton::triton_conv_fwd", mutates_args=())
def conv_fwd(x: Tensor, weight: Tensor, bias: Optional[Tensor], guide: Optional[Tensor],
             kernel: Optional[Tensor], mask: Optional[Tensor], smooth: Optional[Tensor],
             alpha: Optional[Tensor], lam: Optional[Tensor], stride: List[int], padding: List[int],
             output_padding: List[int], dilation: List[int], ktype: int, normalize: bool,
             shared: bool, transposed: bool) -> Tuple[Tensor, Tensor]:
    st, pd, op, dl = tuple(stride), tuple(padding), tuple(output_padding), tuple(dilation)
    if shared:
        y, om = launch.dw_forward(x, weight, bias, tuple(weight.shape[-2:]), st, pd, op, dl, transposed,
                                  guide=guide, kernel=kernel, mask=mask, smooth=smooth, alpha=alpha,
                                  lam=lam, ktype=ktype, normalize=normalize)
    else:
        y, om = launch.conv_forward(x, weight, bias, st, pd, op, dl, transposed, guide=guide, kernel=kernel,
                                    mask=mask, smooth=smooth, alpha=alpha, lam=lam, ktype=ktype,
                                    normalize=normalize)
    if om is None:
        om = x.new_empty((0,))
    return y, om


def _conv_out_hw(x, weight, guide, kernel, stride, padding, dilation, transposed):
    if kernel is not None:
        return tuple(kernel.shape[-2:])
    if transposed:
        return tuple(guide.shape[-2:])
    return launch.conv_out_hw(tuple(guide.shape[-2:]), tuple(weight.shape[-2:]), stride, padding, dilation)


@conv_fwd.register_fake
def _(x, weight, bias, guide, kernel, mask, smooth, alpha, lam, stride, padding, output_padding, dilation,
      ktype, normalize, shared, transposed):
    Ho, Wo = _conv_out_hw(x, weight, guide, kernel, stride, padding, dilation, transposed)
    B, C = x.shape[:2]
    O = C if shared else (weight.shape[1] if transposed else weight.shape[0])
    y = _empty_like_layout(x, (B, O, Ho, Wo), x.dtype)
    if mask is not None and kernel is None:
        om = x.new_empty((B, 1, 1, 1, Ho, Wo), dtype=guide.dtype)
    else:
        om = x.new_empty((0,))
    return y, om


conv_fwd.register_autograd(_no_backward, setup_context=_setup_context)


# --- pooling ---------------------------------------------------------------------------------

@torch.library.custom_op("pac_triton::triton_pool_fwd", mutates_args=())
def pool_fwd(x: Tensor, guide: Optional[Tensor], kernel: Optional[Tensor], mask: Optional[Tensor],
             smooth: Optional[Tensor], alpha: Optional[Tensor], lam: Optional[Tensor], kernel_size: List[int],
             stride: List[int], padding: List[int], dilation: List[int], ktype: int, normalize: bool,
             channel_wise: bool) -> Tuple[Tensor, Tensor]:
    y, om = launch.dw_forward(x, None, None, tuple(kernel_size), tuple(stride), tuple(padding), (0, 0),
                              tuple(dilation), False, guide=guide, kernel=kernel, mask=mask, smooth=smooth,
                              alpha=alpha, lam=lam, ktype=ktype, normalize=normalize, channel_wise=channel_wise)
    if om is None:
        om = x.new_empty((0,))
    return y, om


@pool_fwd.register_fake
def _(x, guide, kernel, mask, smooth, alpha, lam, kernel_size, stride, padding, dilation, ktype, normalize,
      channel_wise):
    if kernel is not None:
        Ho, Wo = kernel.shape[-2:]
    else:
        Ho, Wo = launch.conv_out_hw(tuple(guide.shape[-2:]), tuple(kernel_size), stride, padding, dilation)
    B, C = x.shape[:2]
    y = _empty_like_layout(x, (B, C, Ho, Wo), x.dtype)
    if mask is not None and kernel is None:
        om = x.new_empty((B, C if (channel_wise and normalize) else 1, 1, 1, Ho, Wo), dtype=guide.dtype)
    else:
        om = x.new_empty((0,))
    return y, om


pool_fwd.register_autograd(_no_backward, setup_context=_setup_context)


# --- packernel2d -----------------------------------------------------------------------------

@torch.library.custom_op("pac_triton::triton_kernel_fwd", mutates_args=())
def kernel_fwd(guide: Tensor, mask: Optional[Tensor], smooth: Optional[Tensor], alpha: Optional[Tensor],
               lam: Optional[Tensor], kernel_size: List[int], stride: List[int], padding: List[int],
               output_padding: List[int], dilation: List[int], ktype: int, channel_wise: bool,
               normalize: bool, transposed: bool) -> Tuple[Tensor, Tensor]:
    k, om = launch.kernel_forward(guide, mask, tuple(kernel_size), tuple(stride), tuple(padding),
                                  tuple(output_padding), tuple(dilation), ktype, smooth, alpha, lam,
                                  channel_wise, normalize, transposed)
    if om is None:
        om = guide.new_empty((0,))
    return k, om


@kernel_fwd.register_fake
def _(guide, mask, smooth, alpha, lam, kernel_size, stride, padding, output_padding, dilation, ktype,
      channel_wise, normalize, transposed):
    B, D = guide.shape[:2]
    if transposed:
        Ho, Wo = guide.shape[-2:]
    else:
        Ho, Wo = launch.conv_out_hw(tuple(guide.shape[-2:]), tuple(kernel_size), stride, padding, dilation)
    DK = D if channel_wise else 1
    k = guide.new_empty((B, DK, kernel_size[0], kernel_size[1], Ho, Wo))
    if mask is not None:
        om = guide.new_empty((B, DK if (channel_wise and normalize) else 1, 1, 1, Ho, Wo))
    else:
        om = guide.new_empty((0,))
    return k, om


kernel_fwd.register_autograd(_no_backward, setup_context=_setup_context)
