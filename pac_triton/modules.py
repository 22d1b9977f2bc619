"""PAC layers with pacnet's constructor signatures, parameter names and fillers (docs/semantics.md
section 5), plus a keyword-only ``backend=`` (an attribute you can change later).

``forward(input_2d, input_for_kernel, kernel=None, mask=None)``: without ``kernel`` the layer
calls the guide-taking function (a fused backend stores no K, unless told to:
``PAC_TRITON_SAVE_K``); with a precomputed ``kernel``
the guide is ignored. Returns ``y``, or ``(y, out_mask)`` when a mask was given.
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn import Parameter

from . import functional as PF
from .dispatch import check_backend
from .options import fixed_smooth_kernel, parse_kernel_type, parse_smooth_type
from .validation import (arg_names, check_geometry, check_guide, check_mask, check_padding_mode,
                         check_positive_int, check_tensor, resolve_padding)

__all__ = ["PacConv2d", "PacConvTranspose2d", "PacPool2d"]

FILLERS = ("uniform", "linear", "crf", "crf_perturbed", "pool", "crf_pool")


def _gaussian_2d(width: int) -> torch.Tensor:
    """pacnet's truncated 2-D Gaussian (sigma = width / 4, sum 1), computed in float32 as pacnet does."""
    sigma = width / 4.0
    r = torch.arange(-(width // 2), width // 2 + 1, dtype=torch.float32)
    one_d = torch.exp(-0.5 * r * r / sigma / sigma)
    two_d = one_d[:, None] * one_d[None, :]
    return two_d / two_d.sum()


def _tent(kernel_size: int, stride: int, normalize_kernel: bool) -> torch.Tensor:
    """One axis of the bilinear ('linear') filler: ``[1, .., s, .., 1] / s`` zero-padded to k."""
    pad = (kernel_size - (2 * stride - 1)) // 2
    values = [0.0] * pad + list(range(1, stride)) + list(range(stride, 0, -1)) + [0.0] * pad
    tent = torch.tensor(values, dtype=torch.float64) / stride
    if normalize_kernel:
        tent = tent * torch.tensor([((kernel_size - t - 1) // stride) + (t // stride) + 1.0
                                    for t in range(kernel_size)], dtype=torch.float64)
    return tent


# class -> its ``_forward_names`` table (read-only)
_FORWARD_NAMES: dict = {}


class _PacConvNd(nn.Module):
    """Shared parameters, fillers and ``compute_kernel`` of the PAC layers (as pacnet's
    ``_PacConvNd``)."""

    # how ``forward``'s errors name its input and guide (pacnet's argument names; the swapped
    # layers' ``forward(input, guide)`` names its own)
    _FORWARD_ARGS = ("input_2d", "input_for_kernel (guide)")

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, transposed,
                 output_padding, bias, pool_only, kernel_type, smooth_kernel_type, channel_wise,
                 normalize_kernel, shared_filters, filler, native_impl, backend, groups=1, padding_mode="zeros",
                 device=None, dtype=None):
        super().__init__()
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating-point torch.dtype (or None), got {dtype!r}")
        factory = {"device": device, "dtype": dtype}
        if not pool_only:  # nn.Conv2d's "same"/"valid" (pooling takes ints, as F.avg_pool2d)
            padding = resolve_padding(padding, kernel_size, stride, dilation, transposed)
        geometry = check_geometry(kernel_size, stride, padding, dilation,
                                  output_padding if transposed else None)
        self.kernel_size, self.stride, self.padding, self.dilation = geometry[:4]
        self.padding_mode = check_padding_mode(padding_mode, transposed)
        self.groups = check_positive_int(groups, "groups")
        self.output_padding = geometry[4] if transposed else (0, 0)
        if not pool_only:
            in_channels = check_positive_int(in_channels, "in_channels")
            out_channels = check_positive_int(out_channels, "out_channels")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.transposed = transposed
        self.pool_only = pool_only
        self.kernel_type = kernel_type
        self.smooth_kernel_type = smooth_kernel_type
        self.channel_wise = channel_wise
        self.normalize_kernel = normalize_kernel
        self.shared_filters = shared_filters
        self.filler = filler
        self.native_impl = native_impl  # accepted for compatibility; no effect
        self.backend = backend
        ktype = parse_kernel_type(kernel_type)
        stype = parse_smooth_type(smooth_kernel_type)

        if not pool_only:
            for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
                if value % self.groups:
                    raise ValueError(f"{name} must be divisible by groups, got {name}={value}, groups={self.groups}")
            if shared_filters and in_channels != out_channels:
                raise ValueError(f"shared_filters needs in_channels == out_channels, got {in_channels} and "
                                 f"{out_channels}")
            if shared_filters and self.groups != 1:
                raise ValueError(f"shared_filters=True cannot be combined with groups={self.groups}: shared filters "
                                 "already apply one [1, 1, kh, kw] filter to every channel separately; use "
                                 "groups=in_channels (depthwise, one filter per channel) instead")
            self._check_filler()
            if filler in ("pool", "crf_pool"):
                weight = torch.ones(1, 1, *self.kernel_size, **factory)
                if filler == "crf_pool":
                    weight[0, 0, self.kernel_size[0] // 2, self.kernel_size[1] // 2] = 0
                self.register_buffer("weight", weight)
            elif shared_filters:
                self.weight = Parameter(torch.empty(1, 1, *self.kernel_size, **factory))
            elif transposed:
                self.weight = Parameter(torch.empty(in_channels, out_channels // self.groups, *self.kernel_size,
                                                    **factory))
            else:
                self.weight = Parameter(torch.empty(out_channels, in_channels // self.groups, *self.kernel_size,
                                                    **factory))
            if bias:
                self.bias = Parameter(torch.empty(out_channels, **factory))
            else:
                self.register_parameter("bias", None)

        if ktype.family == "inv":
            self.inv_alpha_init, self.inv_lambda_init = ktype.alpha, ktype.lam
            if channel_wise and not ktype.fixed:
                if out_channels <= 0:
                    raise ValueError(f"out_channels is needed for channel_wise {kernel_type!r} (learnable alpha and "
                                     "lambda per channel)")
                inv_alpha = torch.full((out_channels,), ktype.alpha, **factory)
                inv_lambda = torch.full((out_channels,), ktype.lam, **factory)
            else:
                inv_alpha, inv_lambda = torch.tensor(ktype.alpha, **factory), torch.tensor(ktype.lam, **factory)
            if ktype.fixed:
                self.register_buffer("inv_alpha", inv_alpha)
                self.register_buffer("inv_lambda", inv_lambda)
            else:
                self.inv_alpha = Parameter(inv_alpha)
                self.inv_lambda = Parameter(inv_lambda)
        if stype.kind == "full":
            self.smooth_kernel = Parameter(torch.empty(1, 1, stype.size, stype.size, **factory))
        elif stype.kind != "none":
            self.register_buffer("smooth_kernel", fixed_smooth_kernel(stype, dtype or torch.float32, device))
        self.reset_parameters()

    @property
    def backend(self):
        return self._backend

    @backend.setter
    def backend(self, value):
        if value is not None:
            check_backend(value)
        self._backend = value

    def _check_filler(self):
        filler, (kh, kw) = self.filler, self.kernel_size
        if filler not in FILLERS:
            raise ValueError(f"unknown filler {filler!r}: expected one of {FILLERS}")
        if filler == "linear":
            if not self.transposed or self.in_channels != self.out_channels:
                raise ValueError("filler 'linear' needs a transposed layer with in_channels == out_channels, got "
                                 f"transposed={self.transposed}, {self.in_channels} -> {self.out_channels}")
            if any(k < 2 * s - 1 for k, s in zip(self.kernel_size, self.stride)):
                raise ValueError(f"filler 'linear' needs kernel_size >= 2*stride - 1, got kernel_size "
                                 f"{self.kernel_size}, stride {self.stride}")
        elif filler in ("crf", "crf_perturbed"):
            if kh != kw or self.in_channels != self.out_channels:
                raise ValueError(f"filler {filler!r} needs a square kernel and in_channels == out_channels, got "
                                 f"kernel_size {self.kernel_size}, {self.in_channels} -> {self.out_channels}")
        elif filler in ("pool", "crf_pool") and not self.shared_filters:
            raise ValueError(f"filler {filler!r} needs shared_filters=True")

    def reset_parameters(self):
        with torch.no_grad():
            if not self.pool_only and self.filler not in ("pool", "crf_pool"):
                self._fill_weight()
            elif not self.pool_only and self.bias is not None:
                self.bias.zero_()
            if isinstance(getattr(self, "inv_alpha", None), Parameter):
                self.inv_alpha.fill_(self.inv_alpha_init)
                self.inv_lambda.fill_(self.inv_lambda_init)
            if isinstance(getattr(self, "smooth_kernel", None), Parameter):
                self.smooth_kernel.fill_(1.0 / self.smooth_kernel.numel())

    def _fill_weight(self):
        kh, kw = self.kernel_size
        if self.filler == "uniform":
            bound = 1.0 / math.sqrt(self.in_channels // self.groups * kh * kw)
            if self.shared_filters:
                bound *= self.in_channels
            self.weight.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)
            return
        if self.filler == "linear":
            window = torch.outer(_tent(kh, self.stride[0], self.normalize_kernel),
                                 _tent(kw, self.stride[1], self.normalize_kernel))
            self.weight.zero_()
            if self.shared_filters:
                self.weight[0, 0] = window
            else:
                self.weight[self._same_channel()] = window.to(self.weight)
        else:  # crf, crf_perturbed
            gauss = _gaussian_2d(kh) * (kh * kh)
            gauss[kh // 2, kw // 2] = 0
            if self.shared_filters:
                self.weight[0, 0] = gauss
            else:
                off_diagonal = (~self._same_channel()).to(torch.float32)
                self.weight.copy_(off_diagonal[:, :, None, None] * gauss)
            if self.filler == "crf_perturbed":
                self.weight.add_((torch.rand_like(self.weight) - 0.5) * 0.001)
        if self.bias is not None:
            self.bias.zero_()

    def _same_channel(self):
        """``[weight.shape[0], weight.shape[1]]`` bool: where a weight entry joins an input channel to the
        output channel of the same index (``in == out``); with groups the second axis is the index
        within the group (the diagonal ``weight[c, c]`` when ``groups == 1``)."""
        rows, cols = self.weight.shape[:2]
        a = torch.arange(rows)[:, None]
        b = torch.arange(cols)[None, :]
        return a == (a // (rows // self.groups)) * cols + b

    # ----------------------------------------------------------------- padding modes
    def _op_padding(self):
        """The padding the operators get: ``self.padding`` with ``'zeros'``; 0 otherwise (the
        tensors are padded by ``_pad`` first)."""
        return self.padding if self.padding_mode == "zeros" else (0, 0)

    def _pad(self, tensor, name):
        """``tensor [B, *, H, W]`` padded by ``self.padding`` with ``self.padding_mode`` (not
        ``'zeros'``), with a ``ValueError`` naming ``name`` where PyTorch cannot pad it."""
        (ph, pw), mode = self.padding, self.padding_mode
        height, width = tensor.shape[-2:]
        if mode == "reflect" and (ph >= height or pw >= width):
            raise ValueError(f"padding_mode='reflect' needs padding smaller than the padded size: padding "
                             f"{self.padding}, {name} spatial size {(height, width)}")
        if mode == "circular" and (ph > height or pw > width):
            raise ValueError(f"padding_mode='circular' needs padding no larger than the padded size: padding "
                             f"{self.padding}, {name} spatial size {(height, width)}")
        if mode == "replicate" and (ph or pw) and min(height, width) == 0:
            raise ValueError(f"padding_mode='replicate' cannot pad an empty {name} {tuple(tensor.shape)}")
        if ph == 0 and pw == 0:
            return tensor
        return F.pad(tensor, (pw, pw, ph, ph), mode=mode)

    def _padded(self, input, guide, mask, names):
        """With a non-zero padding mode: ``input``, ``guide`` and ``mask`` (each may be ``None``;
        all at the input resolution) checked and padded the same way, so taps past the border read
        reflected / replicated / wrapped pixels and are valid taps. Unchanged with ``'zeros'``."""
        if self.padding_mode == "zeros":
            return input, guide, mask
        ref = input if input is not None else guide
        ref_name = names["input"] if input is not None else names["guide"]
        check_tensor(ref_name, ref, rank=4)
        if input is not None and guide is not None:
            check_tensor(names["guide"], guide, rank=4)
            check_guide(guide, input, input.shape[-2:], f"{names['input']}'s spatial size", names["guide"],
                        names["input"])
        if mask is not None:
            mask = self._pad(check_mask(mask, ref.shape[0], ref.shape[-2:], ref_name, names["mask"]), names["mask"])
        return (None if input is None else self._pad(input, names["input"]),
                None if guide is None else self._pad(guide, names["guide"]), mask)

    def _optional(self, name):
        """``getattr(self, name, None)`` without raising and catching nn.Module's AttributeError
        (a few microseconds per call) for the K tensors a layer may not have."""
        if (name in self._parameters or name in self._buffers or name in self.__dict__ or name in self._modules
                or hasattr(type(self), name)):
            return getattr(self, name, None)
        return None

    def _kernel_args(self):
        return dict(kernel_type=self.kernel_type, smooth_kernel_type=self.smooth_kernel_type,
                    smooth_kernel=self._optional("smooth_kernel"), inv_alpha=self._optional("inv_alpha"),
                    inv_lambda=self._optional("inv_lambda"), normalize_kernel=self.normalize_kernel)

    def compute_kernel(self, input_for_kernel, input_mask=None):
        """``(K, out_mask)`` of this layer for a guide ``input_for_kernel [B, D, H, W]`` (and an
        optional ``input_mask [B, 1, H, W]``), as pacnet: ``K [B, 1, kh, kw, Ho, Wo]`` in the guide's
        dtype. Errors name ``input_for_kernel`` / ``input_mask``."""
        return self._compute_kernel(input_for_kernel, input_mask, arg_names(
            f"{type(self).__name__}.compute_kernel", input="input_for_kernel (guide)", mask="input_mask"))

    def _compute_kernel(self, guide, mask, names):
        args = self._kernel_args()
        # the guide is K's input here: errors name it as compute_kernel calls it
        _, guide, mask = self._padded(None, guide, mask, dict(names, guide=names["input"]))
        return PF._packernel2d(guide, mask, self.kernel_size, self.stride, self._op_padding(), self.output_padding,
                               self.dilation, args["kernel_type"], args["smooth_kernel_type"], args["smooth_kernel"],
                               args["inv_alpha"], args["inv_lambda"], self.channel_wise, self.normalize_kernel,
                               self.transposed, backend=self.backend, names=names)

    def _forward_names(self):
        """The argument names of ``forward``'s errors (per class, built once: the table is only read)."""
        cls = type(self)
        names = _FORWARD_NAMES.get(cls)
        if names is None:
            input_name, guide_name = cls._FORWARD_ARGS
            names = _FORWARD_NAMES[cls] = arg_names(
                f"{cls.__name__}.forward", input=input_name, guide=guide_name,
                weight=f"{cls.__name__}.weight", bias=f"{cls.__name__}.bias")
        return names

    @staticmethod
    def _check_kernel_xor_mask(kernel, mask):
        if kernel is not None and mask is not None:
            raise ValueError("pass either a precomputed kernel or a mask, not both: a mask only takes effect while "
                             "the kernel is computed (use compute_kernel(guide, mask))")

    def extra_repr(self):
        s = "{in_channels}, {out_channels}, kernel_size={kernel_size}, kernel_type={kernel_type}"
        if self.stride != (1, 1):
            s += ", stride={stride}"
        if self.padding != (0, 0):
            s += ", padding={padding}"
        if self.dilation != (1, 1):
            s += ", dilation={dilation}"
        if self.output_padding != (0, 0):
            s += ", output_padding={output_padding}"
        if self.groups != 1:
            s += ", groups={groups}"
        if self.padding_mode != "zeros":
            s += ", padding_mode={padding_mode}"
        if getattr(self, "bias", None) is None and not self.pool_only:
            s += ", bias=False"
        if self.smooth_kernel_type != "none":
            s += ", smooth_kernel_type={smooth_kernel_type}"
        if self.channel_wise:
            s += ", channel_wise=True"
        if self.normalize_kernel:
            s += ", normalize_kernel=True"
        if self.shared_filters:
            s += ", shared_filters=True"
        if self.backend is not None:
            s += ", backend={_backend}"
        return s.format(**self.__dict__)


class PacConv2d(_PacConvNd):
    """Pixel-adaptive convolution (pacnet's ``PacConv2d``); ``weight [out, in/groups, kh, kw]``.

    Beyond pacnet, keyword-only as in ``nn.Conv2d``: ``groups`` (``in`` and ``out`` divisible by
    it; K is shared by all channels; not with ``shared_filters``), ``padding`` may be
    ``"valid"`` or ``"same"`` (stride 1; stored resolved, as the pair ``dilation * (k - 1) //
    2``), ``padding_mode`` (``'zeros'``, ``'reflect'``, ``'replicate'``,
    ``'circular'``: the input, the guide and a mask are padded that way, then the op runs with
    padding 0; docs/semantics.md section 8), ``device`` and ``dtype`` (floating point) for the
    parameters and buffers. ``ValueError`` for channels not divisible by ``groups``, ``"same"``
    with a stride, an unknown ``padding_mode``."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, bias=True,
                 kernel_type="gaussian", smooth_kernel_type="none", normalize_kernel=False, shared_filters=False,
                 filler="uniform", native_impl=False, *, groups=1, padding_mode="zeros", device=None, dtype=None,
                 backend=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, False, 0, bias, False,
                         kernel_type, smooth_kernel_type, False, normalize_kernel, shared_filters, filler,
                         native_impl, backend, groups=groups, padding_mode=padding_mode, device=device, dtype=dtype)

    def forward(self, input_2d, input_for_kernel, kernel=None, mask=None):
        """``input_2d [B, in, H, W]``, guide ``input_for_kernel [B, D, H, W]`` (ignored, may be
        ``None``, when a precomputed ``kernel [B, 1, kh, kw, Ho, Wo]`` is given), ``mask [B, 1, H, W]``.
        Returns ``y [B, out, Ho, Wo]`` in the input's dtype, or ``(y, out_mask)`` with a mask.
        ``TypeError``/``ValueError`` name these arguments."""
        return self._forward(input_2d, input_for_kernel, kernel, mask, self._forward_names())

    def _forward(self, input_2d, input_for_kernel, kernel, mask, names):
        self._check_kernel_xor_mask(kernel, mask)
        if kernel is not None:
            input_2d, _, _ = self._padded(input_2d, None, None, names)
            return PF._pacconv2d(input_2d, kernel, self.weight, self.bias, self.stride, self._op_padding(),
                                 self.dilation, self.shared_filters, backend=self.backend, names=names,
                                 groups=self.groups)
        args = self._kernel_args()
        input_2d, input_for_kernel, mask = self._padded(input_2d, input_for_kernel, mask, names)
        return PF._pac_conv2d(input_2d, input_for_kernel, self.weight, self.bias, self.stride, self._op_padding(),
                              self.dilation, args["kernel_type"], args["inv_alpha"], args["inv_lambda"],
                              args["smooth_kernel_type"], args["smooth_kernel"], args["normalize_kernel"],
                              self.shared_filters, mask, backend=self.backend, names=names, groups=self.groups)


_PACNET_LOAD_WARNED = False  # the warning below is given once per process


class PacConvTranspose2d(_PacConvNd):
    """Pixel-adaptive transposed convolution; ``weight [in, out/groups, kh, kw]`` as
    ``nn.ConvTranspose2d`` (pacnet's weights are spatially flipped: load them with
    ``load_pacnet_state_dict``). The guide is at the output resolution. Keyword-only ``groups``,
    ``device``, ``dtype`` as ``PacConv2d``; ``padding`` is ints only and ``padding_mode`` must be
    ``'zeros'`` (both as ``nn.ConvTranspose2d``; ``ValueError`` otherwise).

    State dicts saved by this library carry ``_version = 2`` in their metadata. Loading a weight
    into this layer from a state dict without that version (pacnet's, an older pac_triton's, a
    hand-built dict) with plain ``load_state_dict`` gives a ``UserWarning`` (once per process)
    naming ``load_pacnet_state_dict``: if the weight came from pacnet, the result is silently
    different. ``convert_pacnet_state_dict`` marks its output as converted, so neither it nor
    ``load_pacnet_state_dict`` warns; nor do layers swapped in for ``nn.ConvTranspose2d`` by
    ``swap_to_pac`` (whose checkpoints are ``nn.ConvTranspose2d``'s, the same convention)."""

    # 1: nn.Module's default (pacnet's layers and pac_triton before issue 12); 2: weights known to be
    # in this library's (nn.ConvTranspose2d's) orientation.
    _version = 2

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, dilation=1,
                 bias=True, kernel_type="gaussian", smooth_kernel_type="none", normalize_kernel=False,
                 shared_filters=False, filler="uniform", native_impl=False, *, groups=1, padding_mode="zeros",
                 device=None, dtype=None, backend=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, True, output_padding,
                         bias, False, kernel_type, smooth_kernel_type, False, normalize_kernel, shared_filters,
                         filler, native_impl, backend, groups=groups, padding_mode=padding_mode, device=device,
                         dtype=dtype)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        version = local_metadata.get("version") if local_metadata else None
        if (prefix + "weight") in state_dict and (version is None or version < 2) and self._warns_on_old_weight():
            global _PACNET_LOAD_WARNED
            if not _PACNET_LOAD_WARNED:
                _PACNET_LOAD_WARNED = True
                warnings.warn(
                    f"loading {prefix}weight into a PacConvTranspose2d from a state dict without pac_triton's "
                    f"version (version {version}): if it is a pacnet checkpoint, its transposed weights are "
                    "spatially flipped relative to ours and the layer now computes something else; load it with "
                    "pac_triton.load_pacnet_state_dict(model, state_dict) (or convert_pacnet_state_dict). "
                    "This warning is shown once.", UserWarning, stacklevel=4)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def _warns_on_old_weight(self):
        from .swap import GuidedPacConvTranspose2d  # swapped nn.ConvTranspose2d layers: their checkpoints agree
        return not isinstance(self, GuidedPacConvTranspose2d)

    def forward(self, input_2d, input_for_kernel, kernel=None, mask=None):
        """``input_2d [B, in, H, W]``, guide ``input_for_kernel [B, D, Ho, Wo]`` at the output
        resolution (ignored when a precomputed ``kernel`` is given), ``mask [B, 1, H, W]`` at the
        input resolution. Returns ``y [B, out, Ho, Wo]`` in the input's dtype, or ``(y, out_mask)``.
        ``TypeError``/``ValueError`` name these arguments."""
        names = self._forward_names()
        self._check_kernel_xor_mask(kernel, mask)
        if kernel is not None:
            return PF._pacconv_transpose2d(input_2d, kernel, self.weight, self.bias, self.stride, self.padding,
                                           self.output_padding, self.dilation, self.shared_filters,
                                           backend=self.backend, names=names, groups=self.groups)
        args = self._kernel_args()
        return PF._pac_conv_transpose2d(input_2d, input_for_kernel, self.weight, self.bias, self.stride, self.padding,
                                        self.output_padding, self.dilation, args["kernel_type"], args["inv_alpha"],
                                        args["inv_lambda"], args["smooth_kernel_type"], args["smooth_kernel"],
                                        args["normalize_kernel"], self.shared_filters, mask, backend=self.backend,
                                        names=names, groups=self.groups)


class PacPool2d(_PacConvNd):
    """K-weighted pooling (pacnet's ``PacPool2d``). ``out_channels`` is needed only for learnable
    channel-wise ``inv_`` kernels; when positive it must equal the input's channels."""

    def __init__(self, kernel_size, stride=1, padding=0, dilation=1, kernel_type="gaussian",
                 smooth_kernel_type="none", channel_wise=False, normalize_kernel=False, out_channels=-1,
                 native_impl=False, *, backend=None):
        super().__init__(-1, out_channels, kernel_size, stride, padding, dilation, False, 0, False, True,
                         kernel_type, smooth_kernel_type, channel_wise, normalize_kernel, False, None,
                         native_impl, backend)

    def forward(self, input_2d, input_for_kernel, kernel=None, mask=None):
        """``input_2d [B, C, H, W]``, guide ``input_for_kernel [B, D, H, W]`` (``D == C`` when
        ``channel_wise``; ignored when a precomputed ``kernel [B, 1 or C, kh, kw, Ho, Wo]`` is given),
        ``mask [B, 1, H, W]``. Returns ``y [B, C, Ho, Wo]`` in the input's dtype, or ``(y, out_mask)``.
        ``TypeError``/``ValueError`` name these arguments."""
        self._check_kernel_xor_mask(kernel, mask)
        channels = input_2d.shape[1] if isinstance(input_2d, torch.Tensor) and input_2d.dim() == 4 else None
        if self.out_channels > 0 and channels is not None and channels != self.out_channels:
            raise ValueError(f"PacPool2d(out_channels={self.out_channels}) got input_2d with {channels} channels")
        names = arg_names("PacPool2d.forward", input="input_2d", guide="input_for_kernel (guide)")
        if kernel is not None:
            return PF._pacpool2d(input_2d, kernel, self.kernel_size, self.stride, self.padding, self.dilation,
                                 backend=self.backend, names=names)
        args = self._kernel_args()
        return PF._pac_pool2d(input_2d, input_for_kernel, self.kernel_size, self.stride, self.padding, self.dilation,
                              args["kernel_type"], args["inv_alpha"], args["inv_lambda"], args["smooth_kernel_type"],
                              args["smooth_kernel"], args["normalize_kernel"], self.channel_wise, mask,
                              backend=self.backend, names=names)

    def extra_repr(self):
        s = "kernel_size={kernel_size}, kernel_type={kernel_type}"
        if self.out_channels > 0:
            s = "out_channels={out_channels}, " + s
        for name, default in (("stride", (1, 1)), ("padding", (0, 0)), ("dilation", (1, 1))):
            if getattr(self, name) != default:
                s += f", {name}={{{name}}}"
        if self.smooth_kernel_type != "none":
            s += ", smooth_kernel_type={smooth_kernel_type}"
        if self.channel_wise:
            s += ", channel_wise=True"
        if self.normalize_kernel:
            s += ", normalize_kernel=True"
        if self.backend is not None:
            s += ", backend={_backend}"
        return s.format(**self.__dict__)
