"""Dense-CRF mean-field inference with PAC message passing (pacnet's ``paccrf.py``), built on the
PAC layers; no kernels of its own. docs/semantics.md section 6."""
from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .dispatch import check_backend
from .modules import PacConv2d
from .validation import arg_names, check_tensor

__all__ = ["PacCRF", "PacCRFLoose", "create_position_feats", "create_YXRGB"]

FINAL_OUTPUTS = ("log_Q", "softmax", "log_softmax")
COMPAT_TYPES = ("na", "4d", "2d", "potts")


def _blur_pad(size, blur):
    """pacnet's padding for average pooling by ``blur``, per axis of ``size``."""
    return tuple(((blur - n % blur) % blur + 1) // 2 for n in size)


def _blur(tensor, blur):
    return F.avg_pool2d(tensor, blur, blur, padding=_blur_pad(tensor.shape[-2:], blur), count_include_pad=False)


def _final(logQ, final_output):
    if final_output == "softmax":
        return F.softmax(logQ, dim=1)
    if final_output == "log_softmax":
        return F.log_softmax(logQ, dim=1)
    return logQ


def _check_crf_args(channels, num_steps):
    """``PacCRF`` / ``PacCRFLoose`` arguments checked at construction."""
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 0:
        raise ValueError(f"num_steps must be a non-negative int, got {num_steps!r}")
    if not isinstance(channels, int) or isinstance(channels, bool) or channels <= 0:
        raise ValueError(f"channels must be a positive int (the number of categories), got {channels!r}")


class PacCRF(nn.Module):
    """Mean-field inference of a dense CRF whose pairwise messages are PAC layers."""

    def __init__(self, channels, num_steps, final_output="log_Q", perturbed_init=True, native_impl=False,
                 fixed_weighting=False, unary_weight=1.0, pairwise_kernels=None, *, backend=None):
        super().__init__()
        if final_output not in FINAL_OUTPUTS:
            raise ValueError(f"unknown final_output {final_output!r}: expected one of {FINAL_OUTPUTS}")
        _check_crf_args(channels, num_steps)
        self.channels = channels
        self.num_steps = num_steps
        self.final_output = final_output
        self.perturbed_init = perturbed_init
        self.native_impl = native_impl
        self.fixed_weighting = fixed_weighting
        self.messengers = nn.ModuleList()
        self.compat = nn.ModuleList()
        self.pairwise_weights = nn.ParameterList()
        self.init_pairwise_weights = []
        self.use_pairwise_weights = []
        self.blurs = []
        self.pairwise_repr = []
        if fixed_weighting:
            self.unary_weight = float(unary_weight)
        else:
            self.unary_weight = nn.Parameter(torch.tensor(float(unary_weight)))
        self._backend = None
        if pairwise_kernels is None:  # as pacnet: passers can be added later
            pairwise_kernels = ()
        elif isinstance(pairwise_kernels, Mapping):
            pairwise_kernels = (pairwise_kernels,)
        elif isinstance(pairwise_kernels, (str, bytes)) or not isinstance(pairwise_kernels, Iterable):
            raise TypeError("pairwise_kernels: expected a dict of add_pairwise_kernel's keyword arguments or a "
                            f"sequence of such dicts, got {type(pairwise_kernels).__name__}")
        for i, kwargs in enumerate(pairwise_kernels):
            if not isinstance(kwargs, Mapping):
                raise TypeError(f"pairwise_kernels[{i}]: expected a dict of add_pairwise_kernel's keyword "
                                f"arguments, got {type(kwargs).__name__}")
            self.add_pairwise_kernel(**kwargs)
        self.backend = backend

    @property
    def backend(self):
        return self._backend

    @backend.setter
    def backend(self, value):
        """Setting the CRF's backend sets it on every PAC message passer (a bad name is refused
        here, also while the CRF has no passer yet)."""
        if value is not None:
            check_backend(value)
        self._backend = value
        for messenger in self.messengers:
            if isinstance(messenger, PacConv2d):
                messenger.backend = value

    def add_pairwise_kernel(self, kernel_size=3, dilation=1, blur=1, compat_type="4d", spatial_filter=True,
                            pairwise_weight=1.0):
        if not isinstance(kernel_size, int) or kernel_size <= 0 or kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size!r}")
        if not isinstance(blur, int) or blur < 1:
            raise ValueError(f"blur must be a positive int, got {blur!r}")
        if compat_type not in COMPAT_TYPES:
            raise ValueError(f"unknown compat_type {compat_type!r}: expected one of {COMPAT_TYPES}")
        channels, padding = self.channels, (kernel_size // 2) * dilation
        filler = "crf_perturbed" if self.perturbed_init else "crf"
        if compat_type == "na":
            messenger = nn.Conv2d(channels, channels, kernel_size, padding=padding, dilation=dilation, bias=False)
        elif compat_type == "4d":
            messenger = PacConv2d(channels, channels, kernel_size, padding=padding, dilation=dilation, bias=False,
                                  shared_filters=False, filler=filler, native_impl=self.native_impl,
                                  backend=self.backend)
        else:
            messenger = PacConv2d(channels, channels, kernel_size, padding=padding, dilation=dilation, bias=False,
                                  shared_filters=True, filler=filler if spatial_filter else "crf_pool",
                                  native_impl=self.native_impl, backend=self.backend)
        self.messengers.append(messenger)
        self.compat.append(nn.Conv2d(channels, channels, kernel_size=1, bias=False) if compat_type == "2d"
                           else nn.Identity())
        if compat_type == "potts":
            pairwise_weight = -pairwise_weight
        use_weight = compat_type == "potts" and not spatial_filter and not self.fixed_weighting
        self.pairwise_weights.append(nn.Parameter(torch.tensor(float(pairwise_weight))))
        self.init_pairwise_weights.append(float(pairwise_weight))
        self.use_pairwise_weights.append(use_weight)
        self.blurs.append(blur)
        self.pairwise_repr.append(f"{compat_type}_{kernel_size}_{dilation}_{blur}"
                                  + ("" if spatial_filter else "_nospatial"))
        self._init_compat(len(self.compat) - 1)

    def num_pairwise_kernels(self):
        return len(self.messengers)

    def _init_compat(self, i):
        """A ``'2d'`` compatibility conv starts at ``1 - I`` (plus a small perturbation)."""
        compat = self.compat[i]
        if isinstance(compat, nn.Conv2d):
            with torch.no_grad():
                compat.weight.copy_((1.0 - torch.eye(self.channels))[:, :, None, None])
                if self.perturbed_init:
                    compat.weight.add_((torch.rand_like(compat.weight) - 0.5) * 0.001)

    def reset_parameters(self, pairwise_idx=None):
        """Re-initialise the message passers (all, or the one at ``pairwise_idx``) and their compat
        convs and weights, as at construction."""
        indices = range(len(self.messengers)) if pairwise_idx is None else [pairwise_idx]
        for i in indices:
            self.messengers[i].reset_parameters()
            self._init_compat(i)
            with torch.no_grad():
                self.pairwise_weights[i].fill_(self.init_pairwise_weights[i])

    def extra_repr(self):
        s = f"categories={self.channels}, num_steps={self.num_steps}, final_output={self.final_output}"
        if self.perturbed_init:
            s += ", perturbed_init=True"
        if self.fixed_weighting:
            s += ", fixed_weighting=True"
        if self.pairwise_repr:
            s += f", pairwise_kernels=({', '.join(self.pairwise_repr)})"
        return s

    def compute_edge_kernels(self, edge_feat):
        """One K per PAC message passer (``None`` for plain-conv passers). ``edge_feat`` is one
        float tensor ``[B, D, H, W]`` shared by all passers, or a list with one per passer. Errors
        name ``edge_feat``."""
        return self._edge_kernels(edge_feat, "PacCRF.compute_edge_kernels")

    def _edge_feats(self, edge_feat, unary=None):
        """``edge_feat`` as a list of ``(name, tensor)``, one per passer, checked against ``unary``."""
        count = len(self.messengers)
        if isinstance(edge_feat, (list, tuple)):
            if len(edge_feat) != count:
                raise ValueError(f"edge_feat has {len(edge_feat)} tensors for {count} message passers")
            feats = [(f"edge_feat[{i}]", feat) for i, feat in enumerate(edge_feat)]
        else:
            feats = [("edge_feat", edge_feat)] * count
        for (name, feat), messenger in zip(feats, self.messengers):
            if not isinstance(messenger, PacConv2d):
                continue
            check_tensor(name, feat, rank=4)
            if unary is not None and (feat.shape[0] != unary.shape[0] or feat.shape[-2:] != unary.shape[-2:]):
                raise ValueError(f"{name} [B, D, H, W] must have unary's batch {unary.shape[0]} and spatial size "
                                 f"{tuple(unary.shape[-2:])}, got {tuple(feat.shape)} (unary {tuple(unary.shape)})")
        return feats

    def _edge_kernels(self, edge_feat, entry, unary=None):
        feats = self._edge_feats(edge_feat, unary)
        kernels, blurred = [], {}
        for i, (messenger, blur) in enumerate(zip(self.messengers, self.blurs)):
            if not isinstance(messenger, PacConv2d):
                kernels.append(None)
                continue
            name, feat = feats[i]
            if blur > 1:
                key = (id(feat), blur)
                if key not in blurred:
                    blurred[key] = _blur(feat, blur)
                feat = blurred[key]
                name = f"{name} (average-pooled by blur={blur})"
            kernels.append(messenger._compute_kernel(feat, None, arg_names(entry, input=name))[0])
        return kernels

    def forward(self, unary, edge_feat, edge_kernel=None, logQ=None):
        """Mean-field inference. ``unary [B, channels, H, W]`` (float); ``edge_feat [B, D, H, W]``
        (or a list, one per passer; ignored when ``edge_kernel`` is given: one K
        ``[B, 1, k, k, H', W']`` or a list, as ``compute_edge_kernels`` returns); ``logQ`` like
        ``unary``. Returns ``[B, channels, H, W]`` (``final_output``). ``TypeError``/``ValueError``
        name these arguments."""
        return self._forward(unary, edge_feat, edge_kernel, logQ, "PacCRF.forward")

    def _forward(self, unary, edge_feat, edge_kernel, logQ, entry):
        count = len(self.messengers)
        check_tensor("unary", unary, rank=4)
        if unary.shape[1] != self.channels:
            raise ValueError(f"unary must have {self.channels} channels (the CRF's categories), got "
                             f"{tuple(unary.shape)}")
        if logQ is not None:
            check_tensor("logQ", logQ, rank=4)
            if logQ.shape != unary.shape:
                raise ValueError(f"logQ must have unary's shape {tuple(unary.shape)}, got {tuple(logQ.shape)}")
        if edge_kernel is None:
            edge_kernel = self._edge_kernels(edge_feat, entry, unary)
            kernel_names = ["edge_kernel computed from edge_feat"] * count
        elif isinstance(edge_kernel, torch.Tensor):
            edge_kernel = [edge_kernel] * count
            kernel_names = ["edge_kernel"] * count
        elif not isinstance(edge_kernel, (list, tuple)):
            raise TypeError(f"edge_kernel must be a tensor or a list of tensors, got {type(edge_kernel).__name__}")
        elif len(edge_kernel) != count:
            raise ValueError(f"edge_kernel has {len(edge_kernel)} tensors for {count} message passers")
        else:
            kernel_names = [f"edge_kernel[{i}]" for i in range(count)]
        height, width = unary.shape[-2:]
        logQ = unary if logQ is None else logQ
        for _ in range(self.num_steps):
            Q = F.softmax(logQ, dim=1)
            blurred = {1: Q}
            logQ = unary * self.unary_weight
            for i, (messenger, blur) in enumerate(zip(self.messengers, self.blurs)):
                if blur not in blurred:
                    blurred[blur] = _blur(Q, blur)
                if isinstance(messenger, PacConv2d):
                    names = arg_names(entry, input="unary" if blur == 1 else f"unary (average-pooled by blur={blur})",
                                      kernel=kernel_names[i], weight=f"messengers.{i}.weight")
                    msg = messenger._forward(blurred[blur], None, edge_kernel[i], None, names)
                else:
                    msg = messenger(blurred[blur])
                msg = self.compat[i](msg)
                if blur > 1:
                    pad_h, pad_w = _blur_pad(Q.shape[-2:], blur)
                    msg = F.interpolate(msg, scale_factor=blur, mode="bilinear", align_corners=False)
                    msg = msg[:, :, pad_h:pad_h + height, pad_w:pad_w + width]
                weight = self.pairwise_weights[i] if self.use_pairwise_weights[i] else self.init_pairwise_weights[i]
                logQ = logQ - msg * weight
        return _final(logQ, self.final_output)


class PacCRFLoose(nn.Module):
    """``num_steps`` independent one-step ``PacCRF``s (untied weights across steps). The edge
    kernels are computed once with the first step's passers."""

    def __init__(self, channels, num_steps, final_output="log_Q", perturbed_init=True, native_impl=False,
                 fixed_weighting=False, unary_weight=1.0, pairwise_kernels=None, *, backend=None):
        super().__init__()
        if final_output not in FINAL_OUTPUTS:
            raise ValueError(f"unknown final_output {final_output!r}: expected one of {FINAL_OUTPUTS}")
        _check_crf_args(channels, num_steps)
        self.channels = channels
        self.num_steps = num_steps
        self.final_output = final_output
        self.steps = nn.ModuleList(
            PacCRF(channels, 1, "log_Q", perturbed_init, native_impl, fixed_weighting, unary_weight,
                   pairwise_kernels, backend=backend)
            for _ in range(num_steps))
        self.backend = backend

    @property
    def backend(self):
        return self._backend

    @backend.setter
    def backend(self, value):
        if value is not None:
            check_backend(value)
        self._backend = value
        for step in self.steps:
            step.backend = value

    def add_pairwise_kernel(self, kernel_size=3, dilation=1, blur=1, compat_type="4d", spatial_filter=True,
                            pairwise_weight=1.0):
        """Adds the same message passer to every step (each with its own weights)."""
        for step in self.steps:
            step.add_pairwise_kernel(kernel_size, dilation, blur, compat_type, spatial_filter, pairwise_weight)
            for messenger in step.messengers:
                if isinstance(messenger, PacConv2d):
                    messenger.backend = self.backend

    def num_pairwise_kernels(self):
        return self.steps[0].num_pairwise_kernels() if self.num_steps > 0 else 0

    def reset_parameters(self):
        for step in self.steps:
            step.reset_parameters()

    def extra_repr(self):
        return f"categories={self.channels}, num_steps={self.num_steps}, final_output={self.final_output}"

    def forward(self, unary, edge_feat, edge_kernel=None):
        """As ``PacCRF.forward`` without ``logQ``; errors name these arguments."""
        check_tensor("unary", unary, rank=4)
        if self.num_steps == 0:
            return _final(unary, self.final_output)
        if edge_kernel is None:
            edge_kernel = self.steps[0]._edge_kernels(edge_feat, "PacCRFLoose.forward", unary)
        logQ = unary
        for step in self.steps:
            logQ = step._forward(unary, None, edge_kernel, logQ, "PacCRFLoose.forward")
        return _final(logQ, self.final_output)


def _scale_tensor(scales, count, like, name):
    scales = torch.as_tensor(scales, dtype=like.dtype, device=like.device).flatten()
    if scales.numel() == 1:
        scales = scales.expand(count)
    if scales.numel() != count:
        raise ValueError(f"{name} must have 1 or {count} values, got {scales.numel()}")
    return scales.reshape(1, count, 1, 1)


def create_position_feats(shape, scales=None, bs=1, device=None):
    """``[bs, len(shape), *shape]`` float32 coordinates (``ij`` meshgrid); coordinate ``a`` is
    divided by ``scales[a]`` when given."""
    if not isinstance(shape, torch.Size) and (  # a tensor's size is trusted (and may be symbolic under compile)
            not isinstance(shape, (tuple, list)) or not shape
            or not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) and n > 0 for n in shape)):
        raise ValueError(f"shape must be a tuple of positive ints (e.g. (H, W)), got {shape!r}")
    ranges = [torch.arange(n, dtype=torch.float32, device=device) for n in shape]
    mesh = torch.stack(torch.meshgrid(*ranges, indexing="ij"))
    if scales is not None:
        mesh = mesh / _scale_tensor(scales, len(shape), mesh, "scales")[0]
    return mesh.unsqueeze(0).expand(bs, *mesh.shape).contiguous()


def create_YXRGB(img, yx_scale=None, rgb_scale=None, scales=None):
    """Guide features ``[N, 2 + C, H, W]``: scaled ``(y, x)`` positions then ``img / rgb_scale``.

    ``img`` is viewed as ``[-1, C, H, W]``; ``scales`` (the two position scales then the colour
    scales) is exclusive with ``yx_scale``/``rgb_scale``.
    """
    if not isinstance(img, torch.Tensor) or img.dim() < 3:
        raise ValueError("img must be a tensor [..., C, H, W]")
    img = img.reshape(-1, *img.shape[-3:])
    if scales is not None:
        if yx_scale is not None or rgb_scale is not None:
            raise ValueError("pass either scales or yx_scale/rgb_scale, not both")
        scales = torch.as_tensor(scales, dtype=img.dtype).flatten()
        if scales.numel() != 2 + img.shape[1]:
            raise ValueError(f"scales must have 2 + {img.shape[1]} values (y, x, then one per channel of img "
                             f"{tuple(img.shape)}), got {scales.numel()}")
        yx_scale, rgb_scale = scales[:2], scales[2:]
    mesh = create_position_feats(img.shape[-2:], yx_scale, img.shape[0], img.device).to(img.dtype)
    if rgb_scale is not None:
        if isinstance(rgb_scale, numbers.Real):
            rgb_scale = [rgb_scale]
        img = img / _scale_tensor(rgb_scale, img.shape[1], img, "rgb_scale")
    return torch.cat([mesh, img], dim=1)
