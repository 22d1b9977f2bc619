"""pac_triton: pixel-adaptive convolution (Su et al., CVPR 2019) for PyTorch.

A drop-in for NVlabs pacnet's ``pac.py`` / ``paccrf.py`` (same names, arguments, parameters),
plus guide-taking functions that a fused Triton backend serves without materialising the
adapting kernel, and a ``backend=`` flag everywhere (see ``pac_triton.dispatch``).
"""
from __future__ import annotations

from .dispatch import default_backend, triton_available
from .compat import convert_pacnet_state_dict, load_pacnet_state_dict, pacnet_transposed_weight
from .crf import PacCRF, PacCRFLoose, create_position_feats, create_YXRGB
from .functional import (pac_conv2d, pac_conv_transpose2d, pac_pool2d, packernel2d, pacconv2d,
                         pacconv_transpose2d, pacpool2d)
from .modules import PacConv2d, PacConvTranspose2d, PacPool2d
from .swap import GuidedPacConv2d, GuidedPacConvTranspose2d, guided, set_guide, swap_to_pac

__version__ = "0.1.0"

__all__ = [
    "PacConv2d", "PacConvTranspose2d", "PacPool2d", "PacCRF", "PacCRFLoose",
    "packernel2d", "pacconv2d", "pacconv_transpose2d", "pacpool2d",
    "pac_conv2d", "pac_conv_transpose2d", "pac_pool2d",
    "create_position_feats", "create_YXRGB",
    "convert_pacnet_state_dict", "load_pacnet_state_dict", "pacnet_transposed_weight",
    "default_backend", "triton_available",
    "swap_to_pac", "set_guide", "guided", "GuidedPacConv2d", "GuidedPacConvTranspose2d",
]
