"""Checks of user input with clear errors: ``TypeError`` for wrong types and dtypes,
``ValueError`` for wrong values and shapes (naming them). Called only by ``functional``;
nothing below it validates again."""
from __future__ import annotations

import numbers

import torch

__all__ = [
    "pair", "check_tensor", "check_same_device", "check_geometry", "conv_out_size",
    "transposed_out_size", "check_inv_param", "check_smooth_kernel", "check_mask", "check_weight",
    "check_bias", "check_guide", "arg_names", "check_positive_int", "resolve_padding", "PADDING_MODES",
    "check_padding_mode", "constant_tensor",
]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def arg_names(entry: str, **names: str) -> dict[str, str]:
    """How one public entry point calls the tensors the checks below talk about: ``entry`` (its
    own name, e.g. ``"PacConv2d.forward"``) and, for each of ``input``, ``guide``, ``kernel``,
    ``mask``, ``weight``, ``bias``, ``groups``, the user's argument name (default: the same word). Passed
    down by the modules and the CRF so that an error names what the user passed."""
    table = {key: key for key in ("input", "guide", "kernel", "mask", "weight", "bias", "groups")}
    table.update(names)
    table["entry"] = entry
    return table


def pair(value, name: str) -> tuple[int, int]:
    """An int or a pair of ints -> a tuple of two Python ints."""
    kind = type(value)
    if kind is int:  # fast paths: a plain int, or an already normalised pair (bool is not int here)
        return value, value
    if kind is tuple and len(value) == 2 and type(value[0]) is int and type(value[1]) is int:
        return value
    items = (value, value) if isinstance(value, numbers.Integral) else value
    try:
        items = tuple(items)
    except TypeError:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if len(items) == 1:
        items = items * 2
    if len(items) != 2 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in items):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    return int(items[0]), int(items[1])


def check_tensor(name: str, tensor, rank: int | None = 4, allow_none: bool = False):
    if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and (rank is None or tensor.dim() == rank):
        return  # fast path: every check below passes
    if tensor is None:
        if allow_none:
            return
        raise TypeError(f"{name} must be a tensor, got None")
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype (float64/32/16 or bfloat16), got {tensor.dtype}")
    if rank is not None and tensor.dim() != rank:
        raise ValueError(f"{name} must be a {rank}-d tensor, got shape {tuple(tensor.shape)}")


def one_device(tensors) -> bool:
    """Whether every tensor among ``tensors`` (others ignored) is on one device (the fast path
    of ``check_same_device``)."""
    first = None
    for t in tensors:
        if isinstance(t, torch.Tensor):
            if first is None:
                first = t.device
            elif t.device != first:
                return False
    return True


def check_same_device(**named):
    if one_device(named.values()):
        return
    devices = {name: t.device for name, t in named.items() if isinstance(t, torch.Tensor)}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{name} on {device}" for name, device in devices.items())
        raise ValueError(f"all tensors must be on one device: {listing}")


def check_positive_int(value, name: str) -> int:
    """``value`` as an ``int``: any integer type (``numbers.Integral``, e.g. ``numpy.int64``, as
    ``nn.Conv2d`` takes), positive; a non-integer or a bool raises ``TypeError``, zero or a
    negative ``ValueError``, naming it."""
    if type(value) is int and value > 0:
        return value
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be a positive int, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return int(value)


def resolve_padding(padding, kernel_size, stride, dilation, transposed: bool = False, name: str = "padding"):
    """``nn.Conv2d``'s string padding: ``"valid"`` is 0; ``"same"`` (stride 1 only, as PyTorch; odd
    kernels, so it is symmetric) is ``dilation * (k - 1) // 2`` per axis. Anything else is returned
    unchanged for ``check_geometry``. Transposed convolutions take no string (as
    ``nn.ConvTranspose2d``): ``ValueError``."""
    if not isinstance(padding, str):
        return padding
    if transposed:
        raise ValueError(f"{name}={padding!r}: string padding is not supported for transposed convolutions "
                         "(as in nn.ConvTranspose2d); give an int or a pair of ints")
    if padding == "valid":
        return (0, 0)
    if padding != "same":
        raise ValueError(f"invalid {name} string {padding!r}: expected 'valid' or 'same' (or an int or a pair of "
                         "ints)")
    stride, kernel_size, dilation = pair(stride, "stride"), pair(kernel_size, "kernel_size"), pair(dilation, "dilation")
    if stride != (1, 1):
        raise ValueError(f"{name}='same' is not supported for strided convolutions (stride={stride}), as in "
                         "nn.Conv2d")
    if any(k % 2 != 1 for k in kernel_size):
        raise ValueError(f"kernel_size must be positive and odd, got {kernel_size} ({name}='same' included: PAC "
                         "needs a centre tap)")
    return tuple(d * (k - 1) // 2 for d, k in zip(dilation, kernel_size))


def check_padding_mode(padding_mode, transposed: bool = False, name: str = "padding_mode") -> str:
    """One of ``PADDING_MODES``; transposed layers take ``'zeros'`` only (as ``nn.ConvTranspose2d``)."""
    if not isinstance(padding_mode, str) or padding_mode not in PADDING_MODES:
        raise ValueError(f"{name} must be one of {PADDING_MODES}, got {padding_mode!r}")
    if transposed and padding_mode != "zeros":
        raise ValueError(f"{name}={padding_mode!r}: only 'zeros' padding mode is supported for transposed "
                         "convolutions (as in nn.ConvTranspose2d)")
    return padding_mode


def check_geometry(kernel_size, stride, padding, dilation, output_padding=None):
    """Validate and normalise the conv geometry. Returns tuples of two ints."""
    kernel_size, stride = pair(kernel_size, "kernel_size"), pair(stride, "stride")
    padding, dilation = pair(padding, "padding"), pair(dilation, "dilation")
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    if kh <= 0 or kh % 2 != 1 or kw <= 0 or kw % 2 != 1:
        raise ValueError(f"kernel_size must be positive and odd, got {kernel_size}")
    if sh <= 0 or sw <= 0:
        raise ValueError(f"stride must be positive, got {stride}")
    if dh <= 0 or dw <= 0:
        raise ValueError(f"dilation must be positive, got {dilation}")
    if ph < 0 or pw < 0:
        raise ValueError(f"padding must be non-negative, got {padding}")
    if output_padding is None:
        return kernel_size, stride, padding, dilation
    output_padding = pair(output_padding, "output_padding")
    for op, s, d in zip(output_padding, stride, dilation):
        if op < 0 or not (op < s or op < d):
            raise ValueError(f"output_padding must be non-negative and smaller than either stride or dilation, "
                             f"got output_padding={output_padding}, stride={stride}, dilation={dilation}")
    return kernel_size, stride, padding, dilation, output_padding


def conv_out_size(in_hw, kernel_size, stride, padding, dilation, what="input"):
    """Output size of a (strided) conv; a clear error when the kernel exceeds the padded input."""
    out = []
    for n, k, s, p, d in zip(in_hw, kernel_size, stride, padding, dilation):
        extent = d * (k - 1) + 1
        if n + 2 * p < extent:
            raise ValueError(f"kernel (size {tuple(kernel_size)}, dilation {tuple(dilation)}) is larger than the "
                             f"padded {what} ({tuple(in_hw)} with padding {tuple(padding)})")
        out.append((n + 2 * p - extent) // s + 1)
    return tuple(out)


def transposed_out_size(in_hw, kernel_size, stride, padding, output_padding, dilation):
    out = tuple((n - 1) * s - 2 * p + d * (k - 1) + op + 1
                for n, k, s, p, op, d in zip(in_hw, kernel_size, stride, padding, output_padding, dilation))
    if any(o <= 0 for o in out):
        raise ValueError(f"transposed conv of input {tuple(in_hw)} with kernel_size {tuple(kernel_size)}, stride "
                         f"{tuple(stride)}, padding {tuple(padding)} has an empty output {out}")
    return out


def check_guide(guide, input, expected_hw, what, guide_name="guide", input_name="input"):
    """Guide batch and spatial size must match exactly (no broadcasting)."""
    gshape, ishape = guide.shape, input.shape
    if gshape[0] == ishape[0] and gshape[-2:] == tuple(expected_hw):
        return  # fast path: both checks below pass
    shapes = f"({guide_name} {tuple(guide.shape)}, {input_name} {tuple(input.shape)})"
    if guide.shape[0] != input.shape[0]:
        raise ValueError(f"{guide_name} batch {guide.shape[0]} != {input_name} batch {input.shape[0]} {shapes}")
    if tuple(guide.shape[-2:]) != tuple(expected_hw):
        raise ValueError(f"{guide_name} spatial size {tuple(guide.shape[-2:])} must equal {what} "
                         f"{tuple(expected_hw)} {shapes}")


def check_inv_param(name, value, default, channels, channel_wise, ref, dtype=None):
    """``inv_alpha``/``inv_lambda``: ``None`` -> the type's default; a number -> 0-d tensor (in
    ``dtype``, default: ``ref``'s, float32 for half types); a tensor must be 0-d (or of length
    ``channels`` for channel-wise kernels)."""
    if value is None:
        value = default
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if dtype is None:
            dtype = torch.float32 if ref.dtype in (torch.float16, torch.bfloat16) else ref.dtype
        return constant_tensor(float(value), dtype, ref)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a number or a tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {value.dtype}")
    if value.numel() == 1 and value.dim() <= 1:
        return value.reshape(())
    if not (channel_wise and value.dim() == 1 and value.numel() == channels):
        allowed = f"0-d or length {channels} (channel_wise)" if channel_wise else "0-d"
        raise ValueError(f"{name} must be {allowed}, got shape {tuple(value.shape)}")
    return value


# (value key, dtype, device) -> (tensor, its version when cached); see ``constant_tensor``
_CONSTANTS: dict = {}
_CONSTANTS_MAX = 256


def _cacheable(ref) -> bool:
    """Whether constants for ``ref`` may be kept across calls: a plain (or Parameter) eager tensor
    outside torch.compile's tracing (a FakeTensor or a traced tensor must never be cached)."""
    return type(ref) in (torch.Tensor, torch.nn.Parameter) and not torch.compiler.is_compiling()


def constant_tensor(value, dtype, ref, make=None):
    """A tensor of ``dtype`` on ``ref``'s device holding ``value`` (a float: ``torch.tensor``;
    else ``make(dtype, device)`` builds it), made once per (value, dtype, device) and then
    reused: on CUDA a fresh ``torch.tensor`` per call is a synchronous host-to-device copy, and
    one inside CUDA-graph capture breaks it. The tensors are internal constants (the default
    ``inv_alpha`` / ``inv_lambda``, numbers given for them, the fixed smoothing windows): never
    returned to the user, never written by the backends, never requiring grad. A cached tensor
    whose version counter moved (written in place after all) is replaced. Floats are keyed by
    their exact bits (``float.hex``: -0.0 and NaN are keys like any other); the cache is
    bounded (cleared past ``_CONSTANTS_MAX`` entries). Made outside ``torch.inference_mode``, so a
    constant first made inside it serves calls outside it too."""
    device = ref.device
    if not _cacheable(ref):
        return torch.tensor(value, dtype=dtype, device=device) if make is None else make(dtype, device)
    key = (value.hex() if make is None else value, dtype, device)
    hit = _CONSTANTS.get(key)
    if hit is not None and hit[0]._version == hit[1]:
        return hit[0]
    # a normal tensor even under torch.inference_mode (an inference tensor has no version
    # counter to check, and is usable only inside inference mode)
    with torch.inference_mode(False):
        t = torch.tensor(value, dtype=dtype, device=device) if make is None else make(dtype, device)
    if type(t) is torch.Tensor and not t.requires_grad:
        if len(_CONSTANTS) >= _CONSTANTS_MAX:
            _CONSTANTS.clear()
        _CONSTANTS[key] = (t, t._version)
    return t


def check_smooth_kernel(smooth_kernel):
    check_tensor("smooth_kernel", smooth_kernel, rank=4)
    if smooth_kernel.shape[:2] != (1, 1) or any(n % 2 != 1 for n in smooth_kernel.shape[-2:]):
        raise ValueError(f"smooth_kernel must be [1, 1, sh, sw] with odd sh, sw, got {tuple(smooth_kernel.shape)}")


def check_mask(mask, batch, expected_hw, what, name="mask"):
    """A float (or bool, converted to float32) mask ``[B, 1, H, W]``. Returns it detached: the
    mask is a constant and gets no gradient."""
    if isinstance(mask, torch.Tensor) and mask.dtype == torch.bool:
        mask = mask.float()
    check_tensor(name, mask, rank=4)
    expected = (batch, 1, *expected_hw)
    if tuple(mask.shape) != expected:
        raise ValueError(f"{name} must have shape {expected} ([B, 1] at the {what} resolution), "
                         f"got {tuple(mask.shape)}")
    return mask.detach()


def check_weight(weight, expected, what, name="weight"):
    check_tensor(name, weight, rank=4)
    if tuple(weight.shape) != tuple(expected):
        raise ValueError(f"{name} of {what} must have shape {tuple(expected)}, got {tuple(weight.shape)}")


def check_bias(bias, out_channels, input, name="bias", input_name="input"):
    if bias is None:
        return
    if (isinstance(bias, torch.Tensor) and bias.is_floating_point() and bias.dtype == input.dtype
            and bias.dim() == 1 and bias.shape[0] == out_channels):
        return  # fast path: every check below passes (a float bias of the input's dtype and size)
    check_tensor(name, bias, rank=1)
    if bias.shape[0] != out_channels:
        raise ValueError(f"{name} must have shape ({out_channels},), got {tuple(bias.shape)}")
    if bias.dtype != input.dtype:
        raise TypeError(f"{name} dtype {bias.dtype} != {input_name} dtype {input.dtype}")
