"""Backbones (each registers itself in its module, :mod:`.registry`; the registry imports every module
of this package on its first lookup) and the one builder :func:`create_model`."""

from __future__ import annotations

from .create import SMALL_INPUT_MAX_RESOLUTION, LayerChoice, ModelConfig, create_model, resolve_small_input
from .plain_weights import load_plain_weights
from .registry import BACKBONES, check_min_resolution, list_backbones, register_backbone, torchvision_name
from .surgery import switchify
from .switchable import SwitchableNet

__all__ = ["BACKBONES", "SMALL_INPUT_MAX_RESOLUTION", "LayerChoice", "ModelConfig", "SwitchableNet",
           "check_min_resolution", "create_model", "list_backbones", "load_plain_weights", "register_backbone",
           "resolve_small_input", "switchify", "torchvision_name"]
