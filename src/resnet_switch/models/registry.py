"""Backbone registry: ``model.name`` -> constructor ``(layers, **kwargs) -> nn.Module``.

A backbone registers itself where it is defined (timm's ``register_model``); every module of this
package is imported on the registry's first lookup, so a new backbone is one module (and its
``conf/model/NAME.yaml``)::

    @register_backbone("resnet18", torchvision="resnet18", settings={"width_mult": WIDTH_MULT},
                       tiny={"width_mult": 0.25})
    def resnet18(layers, **kwargs): ...

``torchvision=``: the ``torchvision.models`` constructor of the same plain network (same layout and
state-dict keys), read back with :func:`torchvision_name`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ..errors import ConfigError
from ..registry import Registry
from ..rules import Choice, Int, Real, Rule

BACKBONES: Registry[Callable[..., nn.Module]] = Registry("backbone", field="model.name", package=__package__)

# rules of the arguments several backbones share (``model.<argument>``)
SMALL_INPUT: Rule = Choice(("auto", True, False))  # the stem: auto (by the largest resolution) | small | ImageNet
WIDTH_MULT: Rule = Real(0.0, open_low=True)  # build-time channel multiplier
BASE_WIDTH: Rule = Int(1)  # channels of the first stage
DROPOUT: Rule = Real(0.0, 1.0, open_high=True)


def register_backbone(name: str, *, torchvision: str | None = None, min_resolution: int = 1,
                      settings: dict[str, Rule] | None = None, tiny: dict[str, Any] | None = None,
                      **info) -> Callable:
    """Decorator registering a backbone constructor under ``name``.

    Args:
        torchvision: the ``torchvision.models`` twin of its plain network.
        min_resolution: the smallest square input in pixels it can classify.
        settings: the constructor arguments a ``model`` config sets, each with its type/range rule
            (checked as ``model.<argument>`` before any work, :mod:`resnet_switch.cli.ranges`); a
            ``small_input`` entry means the backbone has a small-input stem that ``auto`` chooses.
        tiny: the arguments of a small build of it (a few channels) for quick checks.
        info: further metadata. Converted library models (:mod:`.surgery`) add ``layers`` (the layer
            factories they can be built with), ``load_plain`` (``(net, state_dict)``: their
            ``model.pretrained`` loader), ``source_model`` (``spec -> the plain source network``) and
            ``requires`` (the optional package they need).
    """
    return BACKBONES.register(name, torchvision=torchvision, min_resolution=min_resolution,
                              settings=dict(settings or {}), tiny=dict(tiny or {}), **info)


def check_min_resolution(name: str, resolutions, field: str = "data.resolutions") -> None:
    """One line when a resolution is below backbone ``name``'s smallest input (before any work)."""
    least = BACKBONES.info(name)["min_resolution"]
    if min(resolutions) < least:
        raise ConfigError(f"{field}: {name} needs inputs of at least {least} px, got {min(resolutions)}; "
                          f"use resolutions >= {least}")


def list_backbones(*, torchvision: bool = False) -> list[str]:
    """Registered backbone names, sorted; ``torchvision=True``: only those with a torchvision twin."""
    return [n for n in BACKBONES.list() if not torchvision or torchvision_name(n) is not None]


def torchvision_name(name: str) -> str | None:
    """The ``torchvision.models`` constructor of backbone ``name``'s plain network, or ``None``."""
    return BACKBONES.info(name)["torchvision"]


def backbone_settings(name: str) -> dict[str, Rule]:
    """The rules of backbone ``name``'s config arguments (``{}`` for an unknown name)."""
    return BACKBONES.info(name)["settings"] if name in BACKBONES else {}


def has_small_input_stem(name: str) -> bool:
    """Whether backbone ``name`` can be built with the small-input stem (``small_input``)."""
    return "small_input" in backbone_settings(name)
