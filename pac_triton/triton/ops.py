"""torch.library custom ops wrapping the launchers, so that torch.compile sees one opaque op per
forward and one per backward (``register_fake`` gives shapes; no graph break). Each forward's
``register_autograd`` computes only the gradients autograd asks for (``ctx.needs_input_grad``)
with the Triton backward (``launch_bwd.py``); double backward raises NotImplementedError.

The op returns ``(out, out_mask)``; ``out_mask`` is an empty tensor when no mask was given
(custom ops cannot return ``None`` inside a tuple); the wrappers in ``__init__`` map it back.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from . import launch

_DOUBLE_MSG = ("double backward (create_graph=True through a Triton PAC op) is not implemented; use "
               "backend='reference' for higher-order gradients")


def _no_double_backward(ctx, *grads):
    raise NotImplementedError(_DOUBLE_MSG)


def _lazy_bwd():
    from . import launch_bwd
    return launch_bwd


def _setup_context(ctx, inputs, output):
    pass


def _empty_like_layout(x, shape, dtype):
    return launch._like_layout(x, shape, dtype)


def _over_batch(impl, args, batched, summed=()):
    """``impl(*args)``, run per batch chunk when the batch passes CUDA's grid limit
    (``launch.BATCH_CHUNK``, CUDA's 65535 programs on grid axes 1 and 2, where the kernels put
    the batch). ``batched``:
    positions of the batch-indexed arguments (sliced where their first dimension is the
    batch); the results are concatenated along the batch, except the positions in ``summed``
    (gradients of parameters: added in chunk order, so the result is deterministic) and empty
    placeholders."""
    B = args[batched[0]].shape[0]
    step = launch.BATCH_CHUNK
    if B <= step:
        return impl(*args)
    parts = []
    for start in range(0, B, step):
        chunk = list(args)
        for i in batched:
            if chunk[i] is not None and chunk[i].dim() > 0 and chunk[i].shape[0] == B:
                chunk[i] = chunk[i][start:start + step]
        parts.append(impl(*chunk))
    out = []
    for k, first in enumerate(parts[0]):
        if first.dim() == 1 and first.numel() == 0:
            out.append(first)
        elif k in summed:
            total = first
            for p in parts[1:]:
                total = total + p[k]
            out.append(total)
        else:
            out.append(torch.cat([p[k] for p in parts], dim=0))
    return type(parts[0])(out) if isinstance(parts[0], tuple) else out


# --- conv / transposed conv ---------------------------------------------------------------------

@torch.library.custom_op("pac_triton::triton_conv_fwd", mutates_args=())
def conv_fwd(x: Tensor, weight: Tensor, bias: Optional[Tensor], guide: Optional[Tensor],
             kernel: Optional[Tensor], mask: Optional[Tensor], smooth: Optional[Tensor],
             alpha: Optional[Tensor], lam: Optional[Tensor], stride: List[int], padding: List[int],
             output_padding: List[int], dilation: List[int], ktype: int, normalize: bool,
             shared: bool, transposed: bool) -> Tuple[Tensor, Tensor]:
    return _over_batch(_conv_fwd, (x, weight, bias, guide, kernel, mask, smooth, alpha, lam, stride, padding,
                                   output_padding, dilation, ktype, normalize, shared, transposed), (0, 3, 4, 5))


def _conv_fwd(x, weight, bias, guide, kernel, mask, smooth, alpha, lam, stride, padding, output_padding, dilation,
              ktype, normalize, shared, transposed):
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


def _conv_setup_context(ctx, inputs, output):
    (x, weight, bias, guide, kernel, mask, smooth, alpha, lam, stride, padding, output_padding, dilation,
     ktype, normalize, shared, transposed) = inputs
    ctx.save_for_backward(x, weight, guide, kernel, mask, smooth, alpha, lam)
    ctx.static = (list(stride), list(padding), list(output_padding), list(dilation), int(ktype), bool(normalize),
                  bool(shared), bool(transposed))


# Which inputs of conv_fwd / conv_bwd's ``needs`` line up: (x, weight, bias, guide, kernel, smooth, alpha, lam).
_CONV_GRAD_INPUTS = (0, 1, 2, 3, 4, 6, 7, 8)


def _conv_backward(ctx, gy, gom):
    x, weight, guide, kernel, mask, smooth, alpha, lam = ctx.saved_tensors
    stride, padding, output_padding, dilation, ktype, normalize, shared, transposed = ctx.static
    needs = [bool(ctx.needs_input_grad[i]) for i in _CONV_GRAD_INPUTS]
    grads = [None] * 17
    if not any(needs):
        return tuple(grads)
    res = conv_bwd(gy, x, weight, guide, kernel, mask, smooth, alpha, lam, stride, padding, output_padding,
                   dilation, ktype, normalize, shared, transposed, needs)
    for k, i in enumerate(_CONV_GRAD_INPUTS):
        if needs[k]:
            grads[i] = res[k]
    return tuple(grads)


conv_fwd.register_autograd(_conv_backward, setup_context=_conv_setup_context)


@torch.library.custom_op("pac_triton::triton_conv_bwd", mutates_args=())
def conv_bwd(gy: Tensor, x: Tensor, weight: Tensor, guide: Optional[Tensor], kernel: Optional[Tensor],
             mask: Optional[Tensor], smooth: Optional[Tensor], alpha: Optional[Tensor], lam: Optional[Tensor],
             stride: List[int], padding: List[int], output_padding: List[int], dilation: List[int], ktype: int,
             normalize: bool, shared: bool, transposed: bool, needs: List[bool]) -> List[Tensor]:
    """Gradients of conv_fwd for (x, weight, bias, guide, kernel, smooth, alpha, lam); an empty
    tensor where ``needs`` is false (or the input is None)."""
    return _over_batch(_conv_bwd, (gy, x, weight, guide, kernel, mask, smooth, alpha, lam, stride, padding,
                                   output_padding, dilation, ktype, normalize, shared, transposed, needs),
                       (0, 1, 3, 4, 5), summed=(1, 2, 5, 6, 7))


def _conv_bwd(gy, x, weight, guide, kernel, mask, smooth, alpha, lam, stride, padding, output_padding, dilation,
              ktype, normalize, shared, transposed, needs):
    if shared:
        res = _lazy_bwd().dw_backward(gy, x, weight, tuple(weight.shape[-2:]), tuple(stride), tuple(padding),
                                      tuple(output_padding), tuple(dilation), bool(transposed), guide, kernel, mask,
                                      smooth, alpha, lam, int(ktype), bool(normalize), False, list(needs))
    else:
        res = _lazy_bwd().conv_backward(gy, x, weight, guide, kernel, mask, smooth, alpha, lam, tuple(stride),
                                        tuple(padding), tuple(output_padding), tuple(dilation), bool(transposed),
                                        int(ktype), bool(normalize), list(needs))
    return [r if r is not None else x.new_empty((0,)) for r in res]


def _fake_grads(x, like, kernel, ktype, needs, bias=None):
    """Fake outputs of a backward op: slot k holds the gradient of ``like[k]`` (input, weight,
    bias, guide, kernel, smooth, alpha, lambda) or an empty tensor where it is not computed (not
    asked for; guide-side slots when a precomputed kernel is given; alpha/lambda of a gaussian)."""
    out = []
    for k, src in enumerate(like):
        if not needs[k]:
            out.append(x.new_empty((0,)))
        elif k == 2 and bias is not None:
            out.append(bias)
        elif src is None or (k >= 3 and kernel is not None and k != 4) or (k >= 6 and ktype == 0):
            out.append(x.new_empty((0,)))
        elif k == 0:
            out.append(_empty_like_layout(x, tuple(x.shape), x.dtype))
        else:
            out.append(torch.empty_like(src, memory_format=torch.contiguous_format))
    return out


@conv_bwd.register_fake
def _(gy, x, weight, guide, kernel, mask, smooth, alpha, lam, stride, padding, output_padding, dilation, ktype,
      normalize, shared, transposed, needs):
    return _fake_grads(x, [x, weight, None, guide, kernel, smooth, alpha, lam], kernel, ktype, needs,
                       bias=weight.new_empty((gy.shape[1],)))


conv_bwd.register_autograd(_no_double_backward)


# --- pooling ---------------------------------------------------------------------------------

@torch.library.custom_op("pac_triton::triton_pool_fwd", mutates_args=())
def pool_fwd(x: Tensor, guide: Optional[Tensor], kernel: Optional[Tensor], mask: Optional[Tensor],
             smooth: Optional[Tensor], alpha: Optional[Tensor], lam: Optional[Tensor], kernel_size: List[int],
             stride: List[int], padding: List[int], dilation: List[int], ktype: int, normalize: bool,
             channel_wise: bool) -> Tuple[Tensor, Tensor]:
    return _over_batch(_pool_fwd, (x, guide, kernel, mask, smooth, alpha, lam, kernel_size, stride, padding,
                                   dilation, ktype, normalize, channel_wise), (0, 1, 2, 3))


def _pool_fwd(x, guide, kernel, mask, smooth, alpha, lam, kernel_size, stride, padding, dilation, ktype, normalize,
              channel_wise):
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


def _pool_setup_context(ctx, inputs, output):
    (x, guide, kernel, mask, smooth, alpha, lam, kernel_size, stride, padding, dilation, ktype, normalize,
     channel_wise) = inputs
    ctx.save_for_backward(x, guide, kernel, mask, smooth, alpha, lam)
    ctx.static = (list(kernel_size), list(stride), list(padding), list(dilation), int(ktype), bool(normalize),
                  bool(channel_wise))


# pool_fwd inputs for (x, weight, bias, guide, kernel, smooth, alpha, lam); None: no such input.
_POOL_GRAD_INPUTS = (0, None, None, 1, 2, 4, 5, 6)


def _pool_backward(ctx, gy, gom):
    x, guide, kernel, mask, smooth, alpha, lam = ctx.saved_tensors
    kernel_size, stride, padding, dilation, ktype, normalize, channel_wise = ctx.static
    needs = [i is not None and bool(ctx.needs_input_grad[i]) for i in _POOL_GRAD_INPUTS]
    grads = [None] * 14
    if not any(needs):
        return tuple(grads)
    res = pool_bwd(gy, x, guide, kernel, mask, smooth, alpha, lam, kernel_size, stride, padding, dilation, ktype,
                   normalize, channel_wise, needs)
    for k, i in enumerate(_POOL_GRAD_INPUTS):
        if i is not None and needs[k]:
            grads[i] = res[k]
    return tuple(grads)


pool_fwd.register_autograd(_pool_backward, setup_context=_pool_setup_context)


@torch.library.custom_op("pac_triton::triton_pool_bwd", mutates_args=())
def pool_bwd(gy: Tensor, x: Tensor, guide: Optional[Tensor], kernel: Optional[Tensor], mask: Optional[Tensor],
             smooth: Optional[Tensor], alpha: Optional[Tensor], lam: Optional[Tensor], kernel_size: List[int],
             stride: List[int], padding: List[int], dilation: List[int], ktype: int, normalize: bool,
             channel_wise: bool, needs: List[bool]) -> List[Tensor]:
    """Gradients of pool_fwd in the order (x, -, -, guide, kernel, smooth, alpha, lam); empty
    tensors where not asked for."""
    return _over_batch(_pool_bwd, (gy, x, guide, kernel, mask, smooth, alpha, lam, kernel_size, stride, padding,
                                   dilation, ktype, normalize, channel_wise, needs), (0, 1, 2, 3, 4),
                       summed=(5, 6, 7))


def _pool_bwd(gy, x, guide, kernel, mask, smooth, alpha, lam, kernel_size, stride, padding, dilation, ktype,
              normalize, channel_wise, needs):
    res = _lazy_bwd().dw_backward(gy, x, None, tuple(kernel_size), tuple(stride), tuple(padding), (0, 0),
                                  tuple(dilation), False, guide, kernel, mask, smooth, alpha, lam, int(ktype),
                                  bool(normalize), bool(channel_wise), list(needs))
    return [r if r is not None else x.new_empty((0,)) for r in res]


@pool_bwd.register_fake
def _(gy, x, guide, kernel, mask, smooth, alpha, lam, kernel_size, stride, padding, dilation, ktype, normalize,
      channel_wise, needs):
    return _fake_grads(x, [x, None, None, guide, kernel, smooth, alpha, lam], kernel, ktype, needs)


pool_bwd.register_autograd(_no_double_backward)


# --- packernel2d -----------------------------------------------------------------------------

@torch.library.custom_op("pac_triton::triton_kernel_fwd", mutates_args=())
def kernel_fwd(guide: Tensor, mask: Optional[Tensor], smooth: Optional[Tensor], alpha: Optional[Tensor],
               lam: Optional[Tensor], kernel_size: List[int], stride: List[int], padding: List[int],
               output_padding: List[int], dilation: List[int], ktype: int, channel_wise: bool,
               normalize: bool, transposed: bool) -> Tuple[Tensor, Tensor]:
    return _over_batch(_kernel_fwd, (guide, mask, smooth, alpha, lam, kernel_size, stride, padding, output_padding,
                                     dilation, ktype, channel_wise, normalize, transposed), (0, 1))


def _kernel_fwd(guide, mask, smooth, alpha, lam, kernel_size, stride, padding, output_padding, dilation, ktype,
                channel_wise, normalize, transposed):
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


def _kernel_setup_context(ctx, inputs, output):
    (guide, mask, smooth, alpha, lam, kernel_size, stride, padding, output_padding, dilation, ktype, channel_wise,
     normalize, transposed) = inputs
    ctx.save_for_backward(guide, mask, smooth, alpha, lam)
    ctx.static = (list(kernel_size), list(stride), list(padding), list(output_padding), list(dilation), int(ktype),
                  bool(channel_wise), bool(normalize), bool(transposed))


_KERNEL_GRAD_INPUTS = (0, 2, 3, 4)  # guide, smooth, alpha, lam


def _kernel_backward(ctx, gk, gom):
    guide, mask, smooth, alpha, lam = ctx.saved_tensors
    needs = [bool(ctx.needs_input_grad[i]) for i in _KERNEL_GRAD_INPUTS]
    grads = [None] * 14
    if not any(needs) or gk is None:
        return tuple(grads)
    res = kernel_bwd(gk, guide, mask, smooth, alpha, lam, *ctx.static, needs)
    for k, i in enumerate(_KERNEL_GRAD_INPUTS):
        if needs[k]:
            grads[i] = res[k]
    return tuple(grads)


kernel_fwd.register_autograd(_kernel_backward, setup_context=_kernel_setup_context)


@torch.library.custom_op("pac_triton::triton_kernel_bwd", mutates_args=())
def kernel_bwd(gk: Tensor, guide: Tensor, mask: Optional[Tensor], smooth: Optional[Tensor], alpha: Optional[Tensor],
               lam: Optional[Tensor], kernel_size: List[int], stride: List[int], padding: List[int],
               output_padding: List[int], dilation: List[int], ktype: int, channel_wise: bool, normalize: bool,
               transposed: bool, needs: List[bool]) -> List[Tensor]:
    """Gradients of kernel_fwd for (guide, smooth, alpha, lam); empty where not asked for."""
    return _over_batch(_kernel_bwd, (gk, guide, mask, smooth, alpha, lam, kernel_size, stride, padding,
                                     output_padding, dilation, ktype, channel_wise, normalize, transposed, needs),
                       (0, 1, 2), summed=(1, 2, 3))


def _kernel_bwd(gk, guide, mask, smooth, alpha, lam, kernel_size, stride, padding, output_padding, dilation, ktype,
                channel_wise, normalize, transposed, needs):
    res = _lazy_bwd().kernel_backward(gk, guide, mask, smooth, alpha, lam, tuple(kernel_size), tuple(stride),
                                      tuple(padding), tuple(output_padding), tuple(dilation), int(ktype),
                                      bool(channel_wise), bool(normalize), bool(transposed), list(needs))
    return [r if r is not None else guide.new_empty((0,)) for r in res]


@kernel_bwd.register_fake
def _(gk, guide, mask, smooth, alpha, lam, kernel_size, stride, padding, output_padding, dilation, ktype,
      channel_wise, normalize, transposed, needs):
    out = []
    for k, src in enumerate((guide, smooth, alpha, lam)):
        if not needs[k] or src is None or (k >= 2 and ktype == 0):
            out.append(guide.new_empty((0,)))
        else:
            out.append(torch.empty_like(src, memory_format=torch.contiguous_format))
    return out


kernel_bwd.register_autograd(_no_double_backward)
