"""Upgrade an existing network to PAC in one call (the paper's section 6 "hot-swapping").

``swap_to_pac(model, names)`` replaces chosen ``nn.Conv2d`` / ``nn.ConvTranspose2d`` layers with
guided PAC layers that keep the pretrained parameters (the very same ``Parameter`` objects, so
state-dict keys, ``requires_grad`` flags and an optimizer built earlier stay valid; PAC options
that add tensors add their keys, see ``swap_to_pac``) and the
geometry (stride, padding, dilation, output_padding, ``groups`` -- grouped and depthwise convs,
channel multipliers included -- and ``padding_mode``: ``'reflect'``, ``'replicate'`` and
``'circular'`` pad the input and the guide alike, docs/semantics.md section 8). Grouped layers
run on the backends that implement ``groups != 1`` (docs/semantics.md section 7). The swapped
layers keep the one-argument ``forward(x)`` of the layers they replace; their guide comes from
a provider set on the model::

    model = swap_to_pac(model, ["features.2", "features.5"])        # or predicate=...
    with guided(model, image_features):                              # or set_guide(model, f)
        y = model(x)

The guide ``[B or 1, D, H, W]`` is resized to each layer's resolution with ``F.interpolate``
(``guide_mode``, default ``'bilinear'`` with ``align_corners=False``, antialiased when
shrinking): the *input* resolution for a conv, the *output* resolution for a transposed conv.
A guide of batch 1 is broadcast over the batch. A guide may also be passed per call,
``layer(x, guide)``, which skips resizing (the guide must then be at that layer's resolution).

With a constant guide and the default ``kernel_type='gaussian'`` without ``normalize_kernel``
the adapting kernel is ``K == 1`` and the swapped model computes what the original did, to
floating-point rounding (layers whose zero padding is wider than the kernel's half reach, where
the guide reads 0 past the border, are refused for that reason);
a guide that varies (colour, position, features of another network) makes every swapped layer
filter along its structure. Other ``kernel_type``/``normalize_kernel`` choices are accepted but
change the outputs even for a constant guide (``inv_`` kernels: ``K = alpha + eps^(lambda/2)``;
normalised: ``K = 1 / #valid taps``).

Parametrizations (``torch.nn.utils.parametrize``: ``parametrizations.weight_norm``,
``parametrizations.spectral_norm``, ``orthogonal``, your own) on ``weight`` or ``bias`` carry
over: the PAC layer holds the very same parametrization modules (their ``original``
Parameters, buffers and state), so it computes ``W = parametrization(original)`` as the layer
did and the state-dict keys stay ``parametrizations.weight.original0``, ... State-dict hooks
(such as ``weight_norm``'s loader of old checkpoints) carry over too.

What PAC cannot express, or could not take over without changing what the model computes, is
refused with a ``ValueError`` naming the layer: even kernel sizes, a transposed layer whose
``padding_mode`` is not ``'zeros'`` (``nn.ConvTranspose2d`` cannot run one either),
uninitialised lazy layers, subclasses that override the computation
(``forward``, ``_conv_forward``, ``_output_padding``: hand-made circular padding, weight
standardisation, ...), forward or backward hooks on the layer (which includes the deprecated
hook-based ``torch.nn.utils.weight_norm`` / ``spectral_norm`` and ``torch.nn.utils.prune``:
use the ``parametrizations`` versions, or make them permanent with ``remove_weight_norm`` /
``prune.remove`` first), a ``weight``/``bias`` that is not a Parameter, and parametrizations of
other tensors. String padding is converted: ``'valid'`` is 0 and ``'same'`` (stride 1, odd
kernel) is the symmetric ``dilation * (k - 1) / 2``.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from . import functional as PF
from .compat import every_named_module
from .modules import PacConv2d, PacConvTranspose2d
from .validation import PADDING_MODES

__all__ = ["swap_to_pac", "set_guide", "guided", "GuidedPacConv2d", "GuidedPacConvTranspose2d", "GUIDE_MODES"]

GUIDE_MODES = ("bilinear", "bicubic", "nearest", "nearest-exact", "area")


def _resize_guide(guide: torch.Tensor, size, mode: str) -> torch.Tensor:
    """``guide`` resized to ``size`` with ``F.interpolate`` (unchanged when already that size)."""
    size = tuple(int(n) for n in size)
    if tuple(guide.shape[-2:]) == size:
        return guide
    if mode in ("bilinear", "bicubic"):
        shrinking = any(n < g for n, g in zip(size, guide.shape[-2:]))
        return F.interpolate(guide, size=size, mode=mode, align_corners=False, antialias=shrinking)
    return F.interpolate(guide, size=size, mode=mode)


def _parametrized_once(module):
    """For a layer whose weight/bias carry a parametrization (kept from the swapped layer): compute
    each parametrized tensor once per call, as the original layer's forward did (spectral_norm's
    power iteration runs once per training step, not once per read)."""
    return parametrize.cached() if parametrize.is_parametrized(module) else contextlib.nullcontext()


def _dtype_device(module):
    """The weight's dtype and device, without computing a parametrized weight (no power iteration)."""
    if parametrize.is_parametrized(module, "weight"):
        plist = module.parametrizations["weight"]
        tensor = plist.original if hasattr(plist, "original") else plist.original0
    else:
        tensor = module.weight
    return tensor.dtype, tensor.device


class _Guided:
    """Mixin: the guide provider of a swapped layer (not a parameter or buffer: not in the state dict)."""

    guide_mode: str = "bilinear"

    def _init_guided(self, guide_mode):
        if guide_mode not in GUIDE_MODES:
            raise ValueError(f"unknown guide_mode {guide_mode!r}: expected one of {GUIDE_MODES}")
        self.guide_mode = guide_mode
        self.guide = None

    def _guide_for(self, input, guide, out_hw):
        """The guide to use for this call: the one passed, else the provider's, resized to ``out_hw``."""
        if guide is None:
            guide = self.guide
            if guide is None:
                raise RuntimeError(f"{type(self).__name__} has no guide: call set_guide(model, guide) or run the "
                                   "model inside `with guided(model, guide):` (or pass the guide: layer(x, guide))")
            if not isinstance(guide, torch.Tensor) or guide.dim() != 4:
                raise ValueError(f"the guide must be a 4-d tensor [B or 1, D, H, W], got "
                                 f"{getattr(guide, 'shape', type(guide).__name__)}")
            guide = _resize_guide(guide, out_hw, self.guide_mode)
        if isinstance(guide, torch.Tensor) and guide.dim() == 4:
            if guide.shape[0] == 1 and input.dim() == 4 and input.shape[0] != 1:
                guide = guide.expand(input.shape[0], *guide.shape[1:])
            # float32/float64 layers get the guide in their dtype; half layers keep its own (K math is fp32).
            weight_dtype, weight_device = _dtype_device(self)
            dtype = weight_dtype if weight_dtype in (torch.float32, torch.float64) else guide.dtype
            if guide.is_floating_point() and (guide.device != weight_device or guide.dtype != dtype):
                guide = guide.to(device=weight_device, dtype=dtype)
        return guide

    def extra_repr(self):
        return super().extra_repr() + f", guide_mode={self.guide_mode}"


def _batched_guide(guide):
    """A guide passed with an unbatched input: ``[D, H, W]`` as a batch of one."""
    return guide[None] if isinstance(guide, torch.Tensor) and guide.dim() == 3 else guide


class GuidedPacConv2d(_Guided, PacConv2d):
    """A ``PacConv2d`` whose ``forward(input, guide=None)`` takes its guide from the provider set by
    ``set_guide``/``guided`` (resized to the *input* resolution) when none is passed. As
    ``nn.Conv2d``, it also takes an unbatched ``[C, H, W]`` input (and returns ``[O, Ho, Wo]``;
    the provider's guide must then have a batch of one)."""

    _FORWARD_ARGS = ("input", "guide")

    def __init__(self, *args, guide_mode="bilinear", **kwargs):
        super().__init__(*args, **kwargs)
        self._init_guided(guide_mode)

    def forward(self, input, guide=None):
        if isinstance(input, torch.Tensor) and input.dim() == 3:
            # unbatched [C, H, W], as nn.Conv2d takes it: a batch of one (a 3-d guide too)
            return self.forward(input[None], _batched_guide(guide))[0]
        if not isinstance(input, torch.Tensor) or input.dim() != 4:
            raise ValueError(f"input must be a 4-d tensor [B, C, H, W] or an unbatched 3-d one [C, H, W], got "
                             f"{getattr(input, 'shape', type(input).__name__)}")
        with _parametrized_once(self):
            return super().forward(input, self._guide_for(input, guide, input.shape[-2:]))


class GuidedPacConvTranspose2d(_Guided, PacConvTranspose2d):
    """A ``PacConvTranspose2d`` whose ``forward(input, guide=None, output_size=None)`` takes its guide
    from the provider (resized to the *output* resolution) when none is passed. ``output_size``
    and unbatched ``[C, H, W]`` inputs work as in ``nn.ConvTranspose2d``."""

    def __init__(self, *args, guide_mode="bilinear", **kwargs):
        super().__init__(*args, **kwargs)
        self._init_guided(guide_mode)

    def _output_padding_for(self, input, output_size):
        if output_size is None:
            return self.output_padding
        output_size = tuple(int(n) for n in output_size)[-2:]
        output_padding = []
        for axis in range(2):
            smallest = ((input.shape[2 + axis] - 1) * self.stride[axis] - 2 * self.padding[axis]
                        + self.dilation[axis] * (self.kernel_size[axis] - 1) + 1)
            extra = output_size[axis] - smallest
            if not 0 <= extra < self.stride[axis]:  # nn.ConvTranspose2d's range (its _output_padding)
                raise ValueError(f"requested output_size {output_size} is not reachable from input "
                                 f"{tuple(input.shape[-2:])}: sizes from {smallest} to "
                                 f"{smallest + self.stride[axis] - 1} on axis {axis}")
            output_padding.append(extra)
        return tuple(output_padding)

    def forward(self, input, guide=None, output_size=None):
        if isinstance(input, torch.Tensor) and input.dim() == 3:
            # unbatched [C, H, W], as nn.ConvTranspose2d takes it: a batch of one (a 3-d guide too)
            return self.forward(input[None], _batched_guide(guide), output_size)[0]
        if not isinstance(input, torch.Tensor) or input.dim() != 4:
            raise ValueError(f"input must be a 4-d tensor [B, C, H, W] or an unbatched 3-d one [C, H, W], got "
                             f"{getattr(input, 'shape', type(input).__name__)}")
        output_padding = self._output_padding_for(input, output_size)
        out_hw = tuple((n - 1) * s - 2 * p + d * (k - 1) + op + 1 for n, s, p, d, k, op in
                       zip(input.shape[-2:], self.stride, self.padding, self.dilation, self.kernel_size,
                           output_padding))
        with _parametrized_once(self):
            return self._forward(input, self._guide_for(input, guide, out_hw), output_padding)

    def _forward(self, input, guide, output_padding):
        return PF.pac_conv_transpose2d(input, guide, self.weight, self.bias, stride=self.stride,
                                       padding=self.padding, output_padding=output_padding,
                                       dilation=self.dilation, shared_filters=self.shared_filters,
                                       groups=self.groups, backend=self.backend, **self._kernel_args())


# --------------------------------------------------------------------------- the swap

def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


# Methods through which an nn.Conv2d / nn.ConvTranspose2d subclass can change what it computes.
_COMPUTATION_METHODS = ("forward", "_conv_forward", "_output_padding", "__call__", "_call_impl")
# Hooks that run around the layer's computation (they would not run around the PAC layer's).
_COMPUTATION_HOOKS = (("forward pre-", "_forward_pre_hooks"), ("forward", "_forward_hooks"),
                      ("backward", "_backward_hooks"), ("backward pre-", "_backward_pre_hooks"))
# Hooks around state-dict saving and loading: carried over.
_STATE_DICT_HOOKS = (("state-dict", "_state_dict_hooks"), ("state-dict pre-", "_state_dict_pre_hooks"),
                     ("load-state-dict pre-", "_load_state_dict_pre_hooks"),
                     ("load-state-dict post-", "_load_state_dict_post_hooks"))


def _refusal(module) -> str | None:
    """Why PAC cannot stand in for ``module`` (``None`` when it can)."""
    if isinstance(module, (PacConv2d, PacConvTranspose2d)):
        return "it is already a PAC layer"
    if not isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        return f"it is a {type(module).__name__}, not an nn.Conv2d or nn.ConvTranspose2d"
    base = nn.ConvTranspose2d if isinstance(module, nn.ConvTranspose2d) else nn.Conv2d
    for method in _COMPUTATION_METHODS:
        if getattr(type(module), method, None) is not getattr(base, method, None):
            return (f"{type(module).__name__} overrides {method} (a custom convolution); its behaviour "
                    "would be lost")
    if isinstance(module, nn.modules.lazy.LazyModuleMixin) and module.has_uninitialized_params():
        return "it is a lazy layer whose parameters are not initialised yet: run one forward pass first"
    hooks = [kind for kind, attribute in _COMPUTATION_HOOKS if getattr(module, attribute, None)]
    if hooks:
        owners = sorted({getattr(h, "__qualname__", None) or type(h).__qualname__
                         for _, attribute in _COMPUTATION_HOOKS for h in getattr(module, attribute).values()})
        return (f"it has {' and '.join(hooks)} hooks ({', '.join(owners)}) that the PAC layer would not run; "
                "hook-based torch.nn.utils.weight_norm / spectral_norm and torch.nn.utils.prune work this way: "
                "use torch.nn.utils.parametrizations.weight_norm / spectral_norm instead (carried over), or make "
                "them permanent (remove_weight_norm, prune.remove) before swapping")
    for kind, attribute in _STATE_DICT_HOOKS:
        for hook in getattr(module, attribute, {}).values():
            if getattr(hook, "with_module", False):
                return f"it has a {kind} hook bound to the layer itself ({hook!r}), which cannot be moved"
    parametrized = set(getattr(module, "parametrizations", {}) or {}) if parametrize.is_parametrized(module) else set()
    if parametrized - {"weight", "bias"}:
        return (f"it has parametrizations of {sorted(parametrized - {'weight', 'bias'})}; only those of weight "
                "and bias carry over")
    for name in ("weight", "bias"):
        if name in parametrized:
            continue
        value = getattr(module, name, None)
        if value is not None and not isinstance(value, nn.Parameter):
            return (f"its {name} is a {type(value).__name__}, not a Parameter (computed by something the PAC layer "
                    "would not run)")
    if module.padding_mode not in PADDING_MODES:
        return f"padding_mode={module.padding_mode!r}: PAC layers pad with one of {PADDING_MODES}"
    if isinstance(module, nn.ConvTranspose2d) and module.padding_mode != "zeros":
        return (f"padding_mode={module.padding_mode!r}: transposed layers (nn.ConvTranspose2d and "
                "PacConvTranspose2d) pad with 'zeros' only")
    if module.in_channels % module.groups or module.out_channels % module.groups:
        return (f"groups={module.groups} does not divide in_channels={module.in_channels} and "
                f"out_channels={module.out_channels}")
    kernel_size = _pair(module.kernel_size)
    if any(k % 2 == 0 for k in kernel_size):
        return f"kernel_size={kernel_size}: PAC kernels need odd sizes (the centre tap defines K)"
    if module.padding_mode == "zeros" and not isinstance(module.padding, str):
        padding, dilation = _pair(module.padding), _pair(module.dilation)
        reach = tuple(d * (k - 1) // 2 for d, k in zip(dilation, kernel_size))
        if any(p > r for p, r in zip(padding, reach)):
            where = ("the centre tap of the outermost output pixels falls in the zero padding, where the guide "
                     "reads 0" if isinstance(module, nn.Conv2d) else
                     "taps of the outermost output pixels read the guide past the output's border, where it "
                     "reads 0")
            return (f"padding={padding} is wider than the kernel's half reach dilation * (kernel_size - 1) / 2 = "
                    f"{reach} with zero padding: {where} (docs/semantics.md section 1), so even a constant guide "
                    "would not reproduce the layer (build a PacConv2d / PacConvTranspose2d yourself if that is "
                    "what you want)")
    return None


def _geometry(module):
    """``(kernel_size, stride, padding, dilation, output_padding)`` of a conv layer, string padding resolved."""
    kernel_size, stride, dilation = _pair(module.kernel_size), _pair(module.stride), _pair(module.dilation)
    padding = module.padding
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":  # nn.Conv2d allows it with stride 1 only; odd kernels make it symmetric
        padding = tuple(d * (k - 1) // 2 for d, k in zip(dilation, kernel_size))
    padding = _pair(padding)
    output_padding = _pair(module.output_padding) if isinstance(module, nn.ConvTranspose2d) else (0, 0)
    return kernel_size, stride, padding, dilation, output_padding


def _make_pac(module, kernel_type, smooth_kernel_type, normalize_kernel, guide_mode, backend):
    kernel_size, stride, padding, dilation, output_padding = _geometry(module)
    options = dict(bias=module.bias is not None, kernel_type=kernel_type, smooth_kernel_type=smooth_kernel_type,
                   normalize_kernel=normalize_kernel, guide_mode=guide_mode, backend=backend)
    if isinstance(module, nn.ConvTranspose2d):
        pac = GuidedPacConvTranspose2d(module.in_channels, module.out_channels, kernel_size, stride=stride,
                                       padding=padding, output_padding=output_padding, dilation=dilation,
                                       groups=module.groups, **options)
    else:
        pac = GuidedPacConv2d(module.in_channels, module.out_channels, kernel_size, stride=stride,
                              padding=padding, dilation=dilation, groups=module.groups,
                              padding_mode=module.padding_mode, **options)
    # Kernel buffers/parameters (inv_alpha, smooth_kernel, ...) follow the layer's device and dtype;
    # weight and bias are the original Parameter objects.
    dtype, device = _dtype_device(module)
    pac.to(device=device, dtype=dtype)
    parametrized = module.parametrizations if parametrize.is_parametrized(module) else {}
    for name in ("weight", "bias"):
        if name in parametrized:
            # Make the PAC layer's tensor parametrized (a placeholder list), then hand it the layer's own
            # ParametrizationList: the same original Parameters, buffers and parametrization modules.
            parametrize.register_parametrization(pac, name, nn.Identity())
            pac.parametrizations[name] = parametrized[name]
        else:
            setattr(pac, name, getattr(module, name))
    for _, attribute in _STATE_DICT_HOOKS:
        getattr(pac, attribute).update(getattr(module, attribute))
    pac.train(module.training)
    return pac


def swap_to_pac(model: nn.Module, names: str | Iterable[str] | None = None, *,
                predicate: Callable[[str, nn.Module], bool] | None = None, kernel_type: str = "gaussian",
                smooth_kernel_type: str = "none", normalize_kernel: bool = False, guide_mode: str = "bilinear",
                backend=None) -> nn.Module:
    """Replace chosen ``nn.Conv2d``/``nn.ConvTranspose2d`` layers of ``model`` by guided PAC layers.

    Choose the layers by qualified ``names`` (as in ``model.named_modules()``, e.g.
    ``"features.3"``; ``""`` is the model itself) or by ``predicate(name, module)``, which is
    asked about every ``nn.Conv2d``/``nn.ConvTranspose2d`` of the model. Exactly one of the two.
    The replacements are ``GuidedPacConv2d``/``GuidedPacConvTranspose2d`` with the layer's own
    ``weight`` and ``bias`` Parameters (and parametrizations), geometry (``groups`` and
    ``padding_mode`` included), dtype, device, training mode, and the given PAC options
    (``kernel_type``, ``smooth_kernel_type``, ``normalize_kernel``, ``backend``) and
    ``guide_mode`` (how the model's guide is resized to each layer: one of ``GUIDE_MODES``).
    The options that add tensors add their state-dict keys (pacnet's names): ``smooth_kernel``
    for a smoothing window, ``inv_alpha`` / ``inv_lambda`` for an ``inv_*`` kernel type; load a
    checkpoint of the original model with ``strict=False`` then (its missing keys are exactly
    those). With the default options the keys are the original layers'.

    The model is changed in place and returned (a new object only when the model itself was
    the layer swapped). A layer registered under several names is replaced everywhere. A
    selected layer that PAC cannot express raises ``ValueError`` naming it and saying why;
    nothing is changed then. Feed the guide with ``set_guide`` or ``guided``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if (names is None) == (predicate is None):
        raise ValueError("choose the layers to swap with either names=[...] or predicate=fn(name, module), "
                         "exactly one of them")
    if guide_mode not in GUIDE_MODES:
        raise ValueError(f"unknown guide_mode {guide_mode!r}: expected one of {GUIDE_MODES}")
    # every name of every module (a layer registered twice answers to both)
    modules = dict(every_named_module(model))
    if names is not None:
        names = [names] if isinstance(names, str) else list(names)
        if not names:
            raise ValueError("names is empty: nothing to swap")
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"layer names must be strings, got {name!r}")
            if name not in modules:
                convs = [n for n, m in modules.items() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
                raise ValueError(f"model has no submodule named {name!r}; its conv layers are {convs}")
        chosen = list(dict.fromkeys(names))
    else:
        chosen = [name for name, module in modules.items()
                  if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d))
                  and not isinstance(module, (PacConv2d, PacConvTranspose2d)) and predicate(name, module)]
        if not chosen:
            raise ValueError("the predicate selected no nn.Conv2d / nn.ConvTranspose2d layer")
    for name in chosen:
        reason = _refusal(modules[name])
        if reason is not None:
            raise ValueError(f"cannot swap layer {name or '<model>'!r} to PAC: {reason}")

    replacement = {}
    for name in chosen:
        module = modules[name]
        if id(module) not in replacement:
            replacement[id(module)] = _make_pac(module, kernel_type, smooth_kernel_type, normalize_kernel,
                                                guide_mode, backend)
    if id(model) in replacement:
        return replacement[id(model)]
    # Every place that holds a chosen module, including repeats of a shared one.
    for parent in list(model.modules()):
        for child_name, child in list(parent._modules.items()):
            if child is not None and id(child) in replacement:
                setattr(parent, child_name, replacement[id(child)])
    return model


# --------------------------------------------------------------------------- the guide provider

def _guided_layers(model):
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    layers = [m for m in model.modules() if isinstance(m, _Guided)]
    if not layers:
        raise ValueError("the model has no swapped PAC layers (GuidedPacConv2d / GuidedPacConvTranspose2d): "
                         "call swap_to_pac first")
    return layers


def set_guide(model: nn.Module, guide: torch.Tensor | None) -> None:
    """Set the guide ``[B or 1, D, H, W]`` of every swapped layer of ``model`` (``None`` clears it).

    Each layer resizes it to its own resolution when it runs (see ``guide_mode``), so one
    full-resolution guide serves every layer. The guide is held by reference until it is
    replaced or cleared; ``guided`` clears it for you."""
    if guide is not None:
        if not isinstance(guide, torch.Tensor):
            raise TypeError(f"guide must be a tensor or None, got {type(guide).__name__}")
        if not guide.is_floating_point():
            raise TypeError(f"guide must be a floating-point tensor, got {guide.dtype}")
        if guide.dim() != 4:
            raise ValueError(f"guide must be a 4-d tensor [B or 1, D, H, W], got shape {tuple(guide.shape)}")
    for layer in _guided_layers(model):
        layer.guide = guide


@contextlib.contextmanager
def guided(model: nn.Module, guide: torch.Tensor):
    """``with guided(model, guide): y = model(x)``: ``set_guide`` for the block, then the previous
    guides are restored (so nothing holds the guide afterwards)."""
    layers = _guided_layers(model)
    previous = [layer.guide for layer in layers]
    set_guide(model, guide)
    try:
        yield model
    finally:
        for layer, old in zip(layers, previous):
            layer.guide = old
