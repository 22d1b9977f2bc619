"""Loading NVlabs pacnet checkpoints.

pacnet's ``PacConvTranspose2d`` pairs ``W[c, o, i, j]`` with the unflipped tap, so with a constant
guide it equals ``conv_transpose2d`` only with a spatially flipped weight. Ours equals
``nn.ConvTranspose2d`` with the same weight (a pretrained ``nn.ConvTranspose2d`` swaps in unchanged).
So a pacnet checkpoint's transposed weights must be flipped once, with ``weight.flip(-2, -1)``;
everything else loads as it is. Which keys are transposed weights cannot be read off a state dict,
so these helpers take the model (ours, or pacnet's module) to find them.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import torch
from torch import nn

from .modules import PacConvTranspose2d

__all__ = ["pacnet_transposed_weight", "convert_pacnet_state_dict", "load_pacnet_state_dict"]


def pacnet_transposed_weight(weight: torch.Tensor) -> torch.Tensor:
    """pacnet's transposed weight ``[in, out, kh, kw]`` -> ours (its own inverse)."""
    return weight.flip(-2, -1)


def _transposed_prefixes(model: nn.Module) -> list[str]:
    """Prefixes (``"up.0."``) of the PAC transposed layers in ``model``: our class, or any class
    named ``PacConvTranspose2d`` (pacnet's own module); every name of a layer registered under
    several (its state dict holds the weight under each)."""
    return [name + "." if name else "" for name, module in model.named_modules(remove_duplicate=False)
            if isinstance(module, PacConvTranspose2d) or type(module).__name__ == "PacConvTranspose2d"]


def convert_pacnet_state_dict(source, model: nn.Module | None = None) -> "OrderedDict[str, torch.Tensor]":
    """A copy of a pacnet state dict with every ``PacConvTranspose2d`` weight flipped.

    ``source``: a pacnet ``nn.Module`` (its transposed layers are found by class name), or a state
    dict together with ``model``, a pac_triton model of the same structure, which tells which keys
    belong to transposed layers. Converting twice undoes the conversion.
    """
    if model is not None and not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module (the pac_triton model the state dict is for), got "
                        f"{type(model).__name__}")
    if isinstance(source, nn.Module):
        layout = source if model is None else model
        state_dict = source.state_dict()
    elif not isinstance(source, Mapping):
        raise TypeError(f"source must be a pacnet nn.Module or a state dict (a mapping of names to tensors), got "
                        f"{type(source).__name__}")
    else:
        if model is None:
            raise ValueError("convert_pacnet_state_dict(state_dict) needs model=, the pac_triton model it will be "
                             "loaded into, to know which keys are transposed-layer weights")
        layout, state_dict = model, source
    prefixes = _transposed_prefixes(layout)
    converted = OrderedDict(state_dict)
    # Metadata (per-module versions) as load_state_dict reads it; the converted transposed layers are
    # marked with our version so that loading the result does not warn (PacConvTranspose2d).
    metadata = OrderedDict(getattr(state_dict, "_metadata", None) or {})
    for prefix in prefixes:
        key = prefix + "weight"
        if key not in converted:
            raise ValueError(f"state dict has no {key!r} for the transposed layer {prefix[:-1] or '<root>'}")
        converted[key] = pacnet_transposed_weight(converted[key])
        metadata[prefix[:-1]] = {**metadata.get(prefix[:-1], {}), "version": PacConvTranspose2d._version}
    converted._metadata = metadata
    return converted


def load_pacnet_state_dict(model: nn.Module, state_dict, strict: bool = True):
    """``model.load_state_dict`` of a pacnet checkpoint, transposed weights flipped. Returns what
    ``load_state_dict`` returns. (Plain ``model.load_state_dict`` of a pacnet checkpoint warns
    once: see ``PacConvTranspose2d``.) ``TypeError`` when ``model`` is not an ``nn.Module`` or
    ``state_dict`` not a mapping; ``ValueError`` when a transposed layer's weight is missing."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of names to tensors (e.g. torch.load(...)), got "
                        f"{type(state_dict).__name__}")
    return model.load_state_dict(convert_pacnet_state_dict(state_dict, model), strict=strict)
