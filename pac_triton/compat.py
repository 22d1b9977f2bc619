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


def every_named_module(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` for every name of every submodule of ``model`` (itself as ``""``): a
    module registered under several names once per name, where ``named_modules()`` yields its
    first name only. A child that holds a module of its own path (e.g. a back-reference to its
    parent) is not walked into (``named_modules(remove_duplicate=False)`` recurses forever)."""
    out = []

    def walk(module, prefix, path):
        out.append((prefix, module))
        path = path | {id(module)}
        for name, child in module._modules.items():
            if child is not None and id(child) not in path:
                walk(child, f"{prefix}.{name}" if prefix else name, path)
    walk(model, "", frozenset())
    return out


def _transposed_layers(model: nn.Module) -> list[list[str]]:
    """The PAC transposed layers of ``model`` (our class, or any class named
    ``PacConvTranspose2d``: pacnet's own module), each as the prefixes (``"up.0."``) of all its
    names: a layer registered under several names has its weight under each in a state dict
    saved by ``state_dict()``, and under one in a checkpoint that dropped the duplicates."""
    layers = {}
    for name, module in every_named_module(model):
        if isinstance(module, PacConvTranspose2d) or type(module).__name__ == "PacConvTranspose2d":
            layers.setdefault(id(module), []).append(name + "." if name else "")
    return list(layers.values())


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
    converted = OrderedDict(state_dict)
    # Metadata (per-module versions) as load_state_dict reads it; the converted transposed layers are
    # marked with our version so that loading the result does not warn (PacConvTranspose2d).
    metadata = OrderedDict(getattr(state_dict, "_metadata", None) or {})
    for prefixes in _transposed_layers(layout):
        present = [prefix for prefix in prefixes if prefix + "weight" in converted]
        if not present:
            raise ValueError(f"state dict has no {prefixes[0] + 'weight'!r} for the transposed layer "
                             f"{prefixes[0][:-1] or '<root>'}")
        for prefix in present:  # each name's copy flipped once
            converted[prefix + "weight"] = pacnet_transposed_weight(converted[prefix + "weight"])
        for prefix in prefixes:
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
