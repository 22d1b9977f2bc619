"""Functional PAC API: validate user input once, then dispatch to a backend.

Two families, both with a keyword-only ``backend=`` (see ``pac_triton.dispatch``):

- pacnet's functions (same names, arguments, defaults and returns as pacnet's ``pac.py``):
  ``packernel2d`` builds the adapting kernel K; ``pacconv2d``, ``pacconv_transpose2d`` and
  ``pacpool2d`` apply a given K.
- the guide-taking functions ``pac_conv2d``, ``pac_conv_transpose2d``, ``pac_pool2d``: K is
  defined by the guide and the options, which lets a fused backend compute it on the fly
  without ever storing it. They return ``y``, or ``(y, out_mask)`` when a ``mask`` is given.

The formulas are those of ``docs/semantics.md``.
"""
from __future__ import annotations

import functools
import inspect

import torch

from .dispatch import select
from .options import fixed_smooth_kernel, parse_kernel_type, parse_smooth_type
from .validation import (arg_names, check_bias, check_geometry, check_guide, check_inv_param, check_positive_int,
                         check_mask, check_same_device, check_smooth_kernel, check_tensor, check_weight,
                         constant_tensor, conv_out_size, one_device, pair, resolve_padding, transposed_out_size)

__all__ = [
    "packernel2d", "pacconv2d", "pacconv_transpose2d", "pacpool2d",
    "pac_conv2d", "pac_conv_transpose2d", "pac_pool2d",
]


# --------------------------------------------------------------------------- autocast

def _autocast_device(tensor):
    """The device type of ``tensor`` when ``torch.autocast`` is on for it, else ``None``."""
    if not isinstance(tensor, torch.Tensor):
        return None
    device_type = tensor.device.type
    if not torch.amp.is_autocast_available(device_type) or not torch.is_autocast_enabled(device_type):
        return None
    return device_type


def _autocast_inputs(low=(), fp32=()):
    """``nn.Conv2d``'s autocast policy for one function (decorator). Under ``torch.autocast`` for the
    first argument's device, the floating tensors named in ``low`` (input, weight, bias) are cast
    to the autocast dtype and those in ``fp32`` (guide, mask: the K math) to float32; float64
    tensors are left alone, as autocast does. The function then runs with autocast off, so the
    output is in the autocast dtype (``low``) or the input's (pooling, like ``avg_pool2d``).
    A precomputed ``kernel`` keeps its dtype."""
    def decorate(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            device_type = _autocast_device(args[0] if args else kwargs.get("input"))
            if device_type is None:
                return fn(*args, **kwargs)
            bound = signature.bind(*args, **kwargs)
            for names, dtype in ((low, torch.get_autocast_dtype(device_type)), (fp32, torch.float32)):
                for name in names:
                    value = bound.arguments.get(name)
                    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != torch.float64:
                        bound.arguments[name] = value.to(dtype)
            with torch.autocast(device_type, enabled=False):
                return fn(*bound.args, **bound.kwargs)
        return wrapper
    return decorate


# --------------------------------------------------------------------------- shared checks

# The parsed option strings (frozen dataclasses, shared safely), memoised per string in eager
# mode; anything that is not a str goes to the parser itself, which raises its TypeError, and
# so does torch.compile's tracing (which would only trace through the cache wrapper).
_parse_kernel_type_str = functools.lru_cache(maxsize=64)(parse_kernel_type)
_parse_smooth_type_str = functools.lru_cache(maxsize=64)(parse_smooth_type)


def _kernel_type(kernel_type):
    if type(kernel_type) is str and not torch.compiler.is_compiling():
        return _parse_kernel_type_str(kernel_type)
    return parse_kernel_type(kernel_type)


def _smooth_type(smooth_kernel_type):
    if type(smooth_kernel_type) is str and not torch.compiler.is_compiling():
        return _parse_smooth_type_str(smooth_kernel_type)
    return parse_smooth_type(smooth_kernel_type)


def _kernel_options(guide, kernel_type, smooth_kernel_type, smooth_kernel, inv_alpha, inv_lambda,
                    channel_wise, smooth_required, input=None):
    """Parse the K options. Returns ``(kernel_type, smooth_kernel or None, inv_alpha, inv_lambda)``.

    Defaults (the fixed smoothing window, ``inv_alpha``/``inv_lambda`` from the kernel name) are
    built in the K math dtype (docs/semantics.md, "Dtypes"): float64 when the guide or
    ``input`` is float64, else float32, so that ``1/9`` or ``0.1`` are not rounded to float32
    for a float64 computation.

    ``smooth_required``: the functional ``packernel2d`` needs the window passed in (the type
    only switches smoothing on); the guide-taking functions default to the type's fixed window,
    except ``full_n`` whose window is a learnable parameter that must be given.
    """
    ktype = _kernel_type(kernel_type)
    stype = _smooth_type(smooth_kernel_type)
    f64 = guide.dtype == torch.float64 or (input is not None and input.dtype == torch.float64)
    kdt = torch.float64 if f64 else torch.float32
    if stype.kind == "none":
        if smooth_kernel is not None:
            raise ValueError("smooth_kernel was given but smooth_kernel_type is 'none': set the type "
                             "('gaussian', 'average_n', 'full_n') to smooth the centre feature")
    elif smooth_kernel is None:
        if smooth_required or stype.kind == "full":
            raise ValueError(f"smooth_kernel_type={stype.name!r} needs a smooth_kernel tensor [1, 1, n, n]")
        # a constant made once per (type, dtype, device): no host-to-device copy per call
        smooth_kernel = constant_tensor(stype, kdt, guide, make=lambda dtype, device: fixed_smooth_kernel(
            stype, dtype, device))
    if smooth_kernel is not None:
        check_smooth_kernel(smooth_kernel)
    if ktype.family == "inv":
        channels = guide.shape[1]
        inv_alpha = check_inv_param("inv_alpha", inv_alpha, ktype.alpha, channels, channel_wise, guide, kdt)
        inv_lambda = check_inv_param("inv_lambda", inv_lambda, ktype.lam, channels, channel_wise, guide, kdt)
    elif inv_alpha is not None or inv_lambda is not None:
        raise ValueError(f"inv_alpha / inv_lambda were given but kernel_type is {ktype.name!r}")
    return ktype.name, smooth_kernel, inv_alpha, inv_lambda


def _check_conv_weight(input, weight, kernel_size, shared_filters, transposed, names, groups=1):
    """Weight shapes: ``[O, C/groups, kh, kw]`` (conv), ``[C, O/groups, kh, kw]`` (transposed),
    ``[1, 1, kh, kw]`` (shared, ``groups == 1`` only). Returns the number of output channels."""
    check_tensor(names["weight"], weight, rank=4)
    channels = input.shape[1]
    if weight.dtype != input.dtype:
        raise TypeError(f"{names['weight']} dtype {weight.dtype} != {names['input']} dtype {input.dtype}")
    if shared_filters:
        if groups != 1:
            raise ValueError(f"shared_filters=True cannot be combined with {names['groups']}={groups}: shared "
                             "filters already apply one [1, 1, kh, kw] filter to every channel separately (like a "
                             "depthwise conv with one filter); use groups=1, or shared_filters=False with a "
                             "grouped weight")
        check_weight(weight, (1, 1, *kernel_size), "shared filters", names["weight"])
        return channels
    if channels % groups:
        raise ValueError(f"{names['input']} has {channels} channels, which {names['groups']}={groups} does not "
                         f"divide (in_channels must be divisible by groups)")
    if transposed:
        if weight.shape[0] != channels:
            raise ValueError(f"channel mismatch: {names['input']} has {channels} channels but {names['weight']} "
                             f"[C_in, C_out/groups, kh, kw] has shape {tuple(weight.shape)}"
                             + ("" if groups == 1 else f" ({names['groups']}={groups})"))
        return weight.shape[1] * groups
    if weight.shape[1] * groups != channels:
        layout = "[C_out, C_in, kh, kw]" if groups == 1 else f"[C_out, C_in/groups = {channels // groups}, kh, kw]"
        raise ValueError(f"channel mismatch: {names['input']} has {channels} channels but {names['weight']} "
                         f"{layout} has shape {tuple(weight.shape)}"
                         + ("" if groups == 1 else f" ({names['groups']}={groups})"))
    if weight.shape[0] % groups:
        raise ValueError(f"{names['weight']} has {weight.shape[0]} output channels (shape {tuple(weight.shape)}), "
                         f"which {names['groups']}={groups} does not divide (out_channels must be divisible by "
                         "groups)")
    return weight.shape[0]


def _check_precomputed_kernel(kernel, batch, channels_allowed, kernel_size, out_hw, names):
    check_tensor(names["kernel"], kernel, rank=6)
    kh, kw = kernel_size
    shape = tuple(kernel.shape)
    if shape[0] != batch or shape[1] not in channels_allowed or shape[2:] != (kh, kw, *out_hw):
        channels = " or ".join(str(c) for c in sorted(set(channels_allowed)))
        raise ValueError(f"{names['kernel']} for {names['entry']} must have shape [{batch}, {channels}, {kh}, {kw}, "
                         f"{out_hw[0]}, {out_hw[1]}] (batch, channels, taps, output size of {names['input']}), "
                         f"got {shape}")


def _geometry_from_weight(weight, stride, padding, dilation, output_padding=None, names=None):
    """The geometry with the kernel size read from ``weight``; ``padding`` may be ``"same"`` /
    ``"valid"`` for a (not transposed) conv, as in ``F.conv2d``. An even kernel is refused naming
    the weight (the caller gave no ``kernel_size``)."""
    wname = names["weight"] if names else "weight"
    check_tensor(wname, weight, rank=4)
    kernel_size = tuple(weight.shape[-2:])
    if any(k % 2 != 1 for k in kernel_size):
        raise ValueError(f"{wname} of shape {tuple(weight.shape)}: its kernel size {kernel_size} (the last two "
                         "dimensions) must be odd: PAC needs a centre tap")
    padding = resolve_padding(padding, kernel_size, stride, dilation, output_padding is not None)
    return check_geometry(kernel_size, stride, padding, dilation, output_padding)


def _devices(names, **tensors):
    if one_device(tensors.values()):  # fast path (the renamed check below says which differ)
        return
    check_same_device(**{names.get(key, key): value for key, value in tensors.items()})


# --------------------------------------------------------------------------- pacnet's functions

_PACKERNEL2D = arg_names("packernel2d", input="input (guide)")
_PACCONV2D = arg_names("pacconv2d")
_PACCONV_T2D = arg_names("pacconv_transpose2d")
_PACPOOL2D = arg_names("pacpool2d")
_PAC_CONV2D = arg_names("pac_conv2d")
_PAC_CONV_T2D = arg_names("pac_conv_transpose2d")
_PAC_POOL2D = arg_names("pac_pool2d")


def packernel2d(input, mask=None, kernel_size=0, stride=1, padding=0, output_padding=0, dilation=1,
                kernel_type="gaussian", smooth_kernel_type="none", smooth_kernel=None, inv_alpha=None,
                inv_lambda=None, channel_wise=False, normalize_kernel=False, transposed=False,
                native_impl=False, *, backend=None):
    """The adapting kernel of guide ``input [B, D, H, W]``: returns ``(K, out_mask)``.

    ``K`` is ``[B, 1, kh, kw, Ho, Wo]`` (``[B, D, ...]`` when ``channel_wise``) in the guide's
    dtype; ``out_mask`` is ``None`` unless a ``mask [B, 1, H, W]`` is given (then
    ``[B, 1, 1, 1, Ho, Wo]``, the guide's dtype). ``transposed=True``: the guide is at the
    transposed conv's output resolution and ``mask`` at its input resolution. ``native_impl``
    has no effect. Errors: ``TypeError`` for non-tensors and non-float dtypes, ``ValueError``
    for shapes, sizes and options (each naming the argument).
    """
    return _packernel2d(input, mask, kernel_size, stride, padding, output_padding, dilation, kernel_type,
                        smooth_kernel_type, smooth_kernel, inv_alpha, inv_lambda, channel_wise, normalize_kernel,
                        transposed, backend=backend, names=_PACKERNEL2D)


@_autocast_inputs(fp32=("input", "mask"))
def _packernel2d(input, mask, kernel_size, stride, padding, output_padding, dilation, kernel_type,
                 smooth_kernel_type, smooth_kernel, inv_alpha, inv_lambda, channel_wise, normalize_kernel,
                 transposed, *, backend, names):
    guide_name = names["input"]
    check_tensor(guide_name, input, rank=4)
    if pair(kernel_size, "kernel_size") == (0, 0):
        raise ValueError(f"{names['entry']} needs kernel_size (an odd int or pair)")
    kernel_size, stride, padding, dilation, output_padding = check_geometry(
        kernel_size, stride, padding, dilation, output_padding)
    batch = input.shape[0]
    if transposed:
        in_hw = tuple((n - op - 1 - (k - 1) * d + 2 * p) // s + 1 for n, op, k, d, p, s in
                      zip(input.shape[-2:], output_padding, kernel_size, dilation, padding, stride))
        if mask is not None or normalize_kernel:
            implied = (transposed_out_size(in_hw, kernel_size, stride, padding, output_padding, dilation)
                       if min(in_hw) > 0 else None)
            if implied != tuple(input.shape[-2:]):
                raise ValueError(f"{guide_name} size {tuple(input.shape[-2:])} is not the output size of any "
                                 f"transposed conv input with kernel_size {kernel_size}, stride {stride}, padding "
                                 f"{padding}, output_padding {output_padding}, dilation {dilation}")
        mask_hw, mask_what = in_hw, "transposed conv's input"
    else:
        conv_out_size(input.shape[-2:], kernel_size, stride, padding, dilation, what=guide_name)
        mask_hw, mask_what = tuple(input.shape[-2:]), guide_name
    if mask is not None:
        mask = check_mask(mask, batch, mask_hw, mask_what, names["mask"])
    kernel_type, smooth_kernel, inv_alpha, inv_lambda = _kernel_options(
        input, kernel_type, smooth_kernel_type, smooth_kernel, inv_alpha, inv_lambda, channel_wise, True)
    _devices(names, input=input, mask=mask, smooth_kernel=smooth_kernel, inv_alpha=inv_alpha, inv_lambda=inv_lambda)
    impl = select(backend, "packernel2d", (input, smooth_kernel, inv_alpha, inv_lambda))
    return impl.packernel2d(input, mask, kernel_size, stride, padding, output_padding, dilation, kernel_type,
                            smooth_kernel, inv_alpha, inv_lambda, bool(channel_wise), bool(normalize_kernel),
                            bool(transposed))


def pacconv2d(input, kernel, weight, bias=None, stride=1, padding=0, dilation=1, shared_filters=False,
              native_impl=False, *, groups=1, backend=None):
    """PAC convolution with a precomputed ``kernel [B, 1, kh, kw, Ho, Wo]`` (section 2).

    ``input [B, C, H, W]``, ``weight [C_out, C/groups, kh, kw]`` (``[1, 1, kh, kw]`` shared) and
    ``bias [C_out]`` in one float dtype; returns ``[B, C_out, Ho, Wo]`` in the input's dtype.
    ``padding`` may also be ``"same"`` (stride 1) or ``"valid"``. ``groups`` as in ``F.conv2d``
    (``C`` and ``C_out`` divisible by it; K is shared by all channels; not with
    ``shared_filters``; both backends). ``TypeError``/``ValueError`` name the argument at fault."""
    return _pacconv2d(input, kernel, weight, bias, stride, padding, dilation, shared_filters, backend=backend,
                      names=_PACCONV2D, groups=groups)


@_autocast_inputs(low=("input", "weight", "bias"))
def _pacconv2d(input, kernel, weight, bias, stride, padding, dilation, shared_filters, *, backend, names,
               groups=1):
    check_tensor(names["input"], input, rank=4)
    groups = check_positive_int(groups, names["groups"])
    kernel_size, stride, padding, dilation = _geometry_from_weight(weight, stride, padding, dilation, names=names)
    out_channels = _check_conv_weight(input, weight, kernel_size, shared_filters, False, names, groups)
    check_bias(bias, out_channels, input, names["bias"], names["input"])
    out_hw = conv_out_size(input.shape[-2:], kernel_size, stride, padding, dilation, names["input"])
    _check_precomputed_kernel(kernel, input.shape[0], (1,), kernel_size, out_hw, names)
    _devices(names, input=input, kernel=kernel, weight=weight, bias=bias)
    impl = select(backend, "pacconv2d", (input, kernel, weight, bias))
    return impl.pacconv2d(input, kernel, weight, bias, stride, padding, dilation, bool(shared_filters),
                          groups)


def pacconv_transpose2d(input, kernel, weight, bias=None, stride=1, padding=0, output_padding=0, dilation=1,
                        shared_filters=False, native_impl=False, *, groups=1, backend=None):
    """PAC transposed convolution with a precomputed ``kernel [B, 1, kh, kw, Ho, Wo]`` (section 3).

    ``weight [C, C_out/groups, kh, kw]``; returns ``[B, C_out, Ho, Wo]`` in the input's dtype.
    Equals ``F.conv_transpose2d`` with the same weight (and ``groups``) when ``K == 1`` (pacnet
    needs the weight flipped; see ``convert_pacnet_state_dict``). ``groups`` as
    ``F.conv_transpose2d`` (``C`` and ``C_out`` divisible by it; not with ``shared_filters``).
    ``TypeError``/``ValueError`` name the argument at fault."""
    return _pacconv_transpose2d(input, kernel, weight, bias, stride, padding, output_padding, dilation,
                                shared_filters, backend=backend, names=_PACCONV_T2D, groups=groups)


@_autocast_inputs(low=("input", "weight", "bias"))
def _pacconv_transpose2d(input, kernel, weight, bias, stride, padding, output_padding, dilation, shared_filters, *,
                         backend, names, groups=1):
    check_tensor(names["input"], input, rank=4)
    groups = check_positive_int(groups, names["groups"])
    kernel_size, stride, padding, dilation, output_padding = _geometry_from_weight(
        weight, stride, padding, dilation, output_padding, names=names)
    out_channels = _check_conv_weight(input, weight, kernel_size, shared_filters, True, names, groups)
    check_bias(bias, out_channels, input, names["bias"], names["input"])
    out_hw = transposed_out_size(input.shape[-2:], kernel_size, stride, padding, output_padding, dilation)
    _check_precomputed_kernel(kernel, input.shape[0], (1,), kernel_size, out_hw, names)
    _devices(names, input=input, kernel=kernel, weight=weight, bias=bias)
    impl = select(backend, "pacconv_transpose2d", (input, kernel, weight, bias))
    return impl.pacconv_transpose2d(input, kernel, weight, bias, stride, padding, output_padding, dilation,
                                    bool(shared_filters), groups)


def pacpool2d(input, kernel, kernel_size, stride=1, padding=0, dilation=1, native_impl=False, *, backend=None):
    """K-weighted sum pooling of ``input [B, C, H, W]`` with a precomputed ``kernel [B, 1 or C, kh,
    kw, Ho, Wo]`` (section 4); returns ``[B, C, Ho, Wo]`` in the input's dtype.
    ``TypeError``/``ValueError`` name the argument at fault."""
    return _pacpool2d(input, kernel, kernel_size, stride, padding, dilation, backend=backend, names=_PACPOOL2D)


@_autocast_inputs()
def _pacpool2d(input, kernel, kernel_size, stride, padding, dilation, *, backend, names):
    check_tensor(names["input"], input, rank=4)
    kernel_size, stride, padding, dilation = check_geometry(kernel_size, stride, padding, dilation)
    out_hw = conv_out_size(input.shape[-2:], kernel_size, stride, padding, dilation, names["input"])
    _check_precomputed_kernel(kernel, input.shape[0], (1, input.shape[1]), kernel_size, out_hw, names)
    _devices(names, input=input, kernel=kernel)
    impl = select(backend, "pacpool2d", (input, kernel))
    return impl.pacpool2d(input, kernel, kernel_size, stride, padding, dilation)


# --------------------------------------------------------------------------- guide-taking functions

def _finish(y, out_mask, mask):
    return y if mask is None else (y, out_mask)


def pac_conv2d(input, guide, weight, bias=None, *, stride=1, padding=0, dilation=1, kernel_type="gaussian",
               inv_alpha=None, inv_lambda=None, smooth_kernel_type="none", smooth_kernel=None,
               normalize_kernel=False, shared_filters=False, mask=None, groups=1, backend=None):
    """PAC convolution whose kernel K is defined by ``guide [B, D, H, W]`` (same B, H, W as
    ``input [B, C, H, W]``). ``weight [C_out, C/groups, kh, kw]`` (``[1, 1, kh, kw]`` shared),
    ``bias [C_out]``, in the input's dtype; returns ``y [B, C_out, Ho, Wo]`` in the input's dtype.
    ``padding``: an int, a pair, ``"valid"`` or ``"same"`` (stride 1 only, as ``F.conv2d``).
    ``groups`` as ``F.conv2d`` (one K for all channels; not with ``shared_filters``).

    ``inv_alpha``/``inv_lambda`` default to the values in an ``inv_`` type's name;
    ``smooth_kernel`` defaults to the type's fixed window (required for ``full_n``). ``mask
    [B, 1, H, W]`` marks valid input pixels; then ``(y, out_mask)`` is returned. Errors:
    ``TypeError`` (types, dtypes), ``ValueError`` (shapes, options), naming the argument.
    """
    return _pac_conv2d(input, guide, weight, bias, stride, padding, dilation, kernel_type, inv_alpha, inv_lambda,
                       smooth_kernel_type, smooth_kernel, normalize_kernel, shared_filters, mask, backend=backend,
                       names=_PAC_CONV2D, groups=groups)


@_autocast_inputs(low=("input", "weight", "bias"), fp32=("guide", "mask"))
def _pac_conv2d(input, guide, weight, bias, stride, padding, dilation, kernel_type, inv_alpha, inv_lambda,
                smooth_kernel_type, smooth_kernel, normalize_kernel, shared_filters, mask, *, backend, names,
                groups=1):
    check_tensor(names["input"], input, rank=4)
    check_tensor(names["guide"], guide, rank=4)
    groups = check_positive_int(groups, names["groups"])
    kernel_size, stride, padding, dilation = _geometry_from_weight(weight, stride, padding, dilation, names=names)
    out_channels = _check_conv_weight(input, weight, kernel_size, shared_filters, False, names, groups)
    check_bias(bias, out_channels, input, names["bias"], names["input"])
    conv_out_size(input.shape[-2:], kernel_size, stride, padding, dilation, names["input"])
    check_guide(guide, input, input.shape[-2:], f"{names['input']}'s spatial size", names["guide"], names["input"])
    if mask is not None:
        mask = check_mask(mask, input.shape[0], input.shape[-2:], names["input"], names["mask"])
    kernel_type, smooth_kernel, inv_alpha, inv_lambda = _kernel_options(
        guide, kernel_type, smooth_kernel_type, smooth_kernel, inv_alpha, inv_lambda, False, False, input)
    _devices(names, input=input, guide=guide, weight=weight, bias=bias, mask=mask, smooth_kernel=smooth_kernel,
             inv_alpha=inv_alpha, inv_lambda=inv_lambda)
    impl = select(backend, "pac_conv2d", (input, guide, weight, bias, smooth_kernel, inv_alpha, inv_lambda))
    y, out_mask = impl.pac_conv2d(input, guide, weight, bias, stride, padding, dilation, kernel_type, inv_alpha,
                                  inv_lambda, smooth_kernel, bool(normalize_kernel), bool(shared_filters), mask,
                                  groups)
    return _finish(y, out_mask, mask)


def pac_conv_transpose2d(input, guide, weight, bias=None, *, stride=1, padding=0, output_padding=0, dilation=1,
                         kernel_type="gaussian", inv_alpha=None, inv_lambda=None, smooth_kernel_type="none",
                         smooth_kernel=None, normalize_kernel=False, shared_filters=False, mask=None, groups=1,
                         backend=None):
    """PAC transposed convolution; ``guide [B, D, Ho, Wo]`` is at the *output* resolution (exactly
    the size the input implies). ``weight [C, C_out/groups, kh, kw]`` as ``nn.ConvTranspose2d``;
    ``mask [B, 1, H, W]`` at the input resolution. Returns ``y [B, C_out, Ho, Wo]`` in the input's
    dtype (``(y, out_mask)`` with a mask). ``padding`` is ints only (as ``F.conv_transpose2d``).
    ``groups``, other options and errors as ``pac_conv2d``."""
    return _pac_conv_transpose2d(input, guide, weight, bias, stride, padding, output_padding, dilation, kernel_type,
                                 inv_alpha, inv_lambda, smooth_kernel_type, smooth_kernel, normalize_kernel,
                                 shared_filters, mask, backend=backend, names=_PAC_CONV_T2D, groups=groups)


@_autocast_inputs(low=("input", "weight", "bias"), fp32=("guide", "mask"))
def _pac_conv_transpose2d(input, guide, weight, bias, stride, padding, output_padding, dilation, kernel_type,
                          inv_alpha, inv_lambda, smooth_kernel_type, smooth_kernel, normalize_kernel, shared_filters,
                          mask, *, backend, names, groups=1):
    check_tensor(names["input"], input, rank=4)
    check_tensor(names["guide"], guide, rank=4)
    groups = check_positive_int(groups, names["groups"])
    kernel_size, stride, padding, dilation, output_padding = _geometry_from_weight(
        weight, stride, padding, dilation, output_padding, names=names)
    out_channels = _check_conv_weight(input, weight, kernel_size, shared_filters, True, names, groups)
    check_bias(bias, out_channels, input, names["bias"], names["input"])
    out_hw = transposed_out_size(input.shape[-2:], kernel_size, stride, padding, output_padding, dilation)
    check_guide(guide, input, out_hw, "the transposed conv's output size", names["guide"], names["input"])
    if mask is not None:
        mask = check_mask(mask, input.shape[0], input.shape[-2:], names["input"], names["mask"])
    kernel_type, smooth_kernel, inv_alpha, inv_lambda = _kernel_options(
        guide, kernel_type, smooth_kernel_type, smooth_kernel, inv_alpha, inv_lambda, False, False, input)
    _devices(names, input=input, guide=guide, weight=weight, bias=bias, mask=mask, smooth_kernel=smooth_kernel,
             inv_alpha=inv_alpha, inv_lambda=inv_lambda)
    impl = select(backend, "pac_conv_transpose2d", (input, guide, weight, bias, smooth_kernel, inv_alpha, inv_lambda))
    y, out_mask = impl.pac_conv_transpose2d(input, guide, weight, bias, stride, padding, output_padding, dilation,
                                            kernel_type, inv_alpha, inv_lambda, smooth_kernel,
                                            bool(normalize_kernel), bool(shared_filters), mask,
                                            groups)
    return _finish(y, out_mask, mask)


def pac_pool2d(input, guide, kernel_size, *, stride=1, padding=0, dilation=1, kernel_type="gaussian",
               inv_alpha=None, inv_lambda=None, smooth_kernel_type="none", smooth_kernel=None,
               normalize_kernel=False, channel_wise=False, mask=None, backend=None):
    """K-weighted pooling of ``input [B, C, H, W]`` with K from ``guide [B, D, H, W]`` (``D == C``
    when ``channel_wise``: one kernel per channel). With ``normalize_kernel`` it is a K-weighted
    mean over valid taps; otherwise a K-weighted sum. Returns ``y [B, C, Ho, Wo]`` in the input's
    dtype (``(y, out_mask)`` with a ``mask [B, 1, H, W]``). Errors as ``pac_conv2d``."""
    return _pac_pool2d(input, guide, kernel_size, stride, padding, dilation, kernel_type, inv_alpha, inv_lambda,
                       smooth_kernel_type, smooth_kernel, normalize_kernel, channel_wise, mask, backend=backend,
                       names=_PAC_POOL2D)


@_autocast_inputs(fp32=("guide", "mask"))
def _pac_pool2d(input, guide, kernel_size, stride, padding, dilation, kernel_type, inv_alpha, inv_lambda,
                smooth_kernel_type, smooth_kernel, normalize_kernel, channel_wise, mask, *, backend, names):
    check_tensor(names["input"], input, rank=4)
    check_tensor(names["guide"], guide, rank=4)
    kernel_size, stride, padding, dilation = check_geometry(kernel_size, stride, padding, dilation)
    conv_out_size(input.shape[-2:], kernel_size, stride, padding, dilation, names["input"])
    check_guide(guide, input, input.shape[-2:], f"{names['input']}'s spatial size", names["guide"], names["input"])
    if channel_wise and guide.shape[1] != input.shape[1]:
        raise ValueError(f"channel_wise pooling needs {names['guide']} to have {names['input']}'s "
                         f"{input.shape[1]} channels, got {names['guide']} {tuple(guide.shape)}")
    if mask is not None:
        mask = check_mask(mask, input.shape[0], input.shape[-2:], names["input"], names["mask"])
    kernel_type, smooth_kernel, inv_alpha, inv_lambda = _kernel_options(
        guide, kernel_type, smooth_kernel_type, smooth_kernel, inv_alpha, inv_lambda, channel_wise, False, input)
    _devices(names, input=input, guide=guide, mask=mask, smooth_kernel=smooth_kernel, inv_alpha=inv_alpha,
             inv_lambda=inv_lambda)
    impl = select(backend, "pac_pool2d", (input, guide, smooth_kernel, inv_alpha, inv_lambda))
    y, out_mask = impl.pac_pool2d(input, guide, kernel_size, stride, padding, dilation, kernel_type, inv_alpha,
                                  inv_lambda, smooth_kernel, bool(normalize_kernel), bool(channel_wise), mask)
    return _finish(y, out_mask, mask)
