"""Backbone registry: ``model.name`` -> constructor ``(layers, **kwargs) -> nn.Module``.

A backbone registers itself where it is defined (timm's ``register_model``)::

    @register_backbone("resnet18", torchvision="resnet18")
    def resnet18(layers, **kwargs): ...

``torchvision=``: the ``torchvision.models`` constructor of the same plain network (same layout and
state-dict keys), read back with :func:`torchvision_name`.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..registry import Registry

BACKBONES: Registry[Callable[..., nn.Module]] = Registry("backbone", field="model.name")


def register_backbone(name: str, *, torchvision: str | None = None, min_resolution: int = 1, **info) -> Callable:
    """Decorator registering a backbone constructor under ``name`` (``torchvision``: its twin;
    ``min_resolution``: the smallest square input in pixels it can classify). Converted library models
    (:mod:`.surgery`) add ``layers`` (the layer factories they can be built with), ``load_plain``
    (``(net, state_dict)``: their ``model.pretrained`` loader) and ``source_model`` (``spec -> the plain
    source network``)."""
    return BACKBONES.register(name, torchvision=torchvision, min_resolution=min_resolution, **info)


def check_min_resolution(name: str, resolutions, field: str = "data.resolutions") -> None:
    """One line when a resolution is below backbone ``name``'s smallest input (before any work)."""
    least = BACKBONES.info(name)["min_resolution"]
    if min(resolutions) < least:
        raise ValueError(f"{field}: {name} needs inputs of at least {least} px, got {min(resolutions)}; "
                         f"use resolutions >= {least}")


def list_backbones(*, torchvision: bool = False) -> list[str]:
    """Registered backbone names, sorted; ``torchvision=True``: only those with a torchvision twin."""
    return [n for n in BACKBONES.list() if not torchvision or torchvision_name(n) is not None]


def torchvision_name(name: str) -> str | None:
    """The ``torchvision.models`` constructor of backbone ``name``'s plain network, or ``None``."""
    return BACKBONES.info(name)["torchvision"]


def build_backbone(name: str, layers, **kwargs) -> nn.Module:
    """Backbone ``name`` built with the layer factory ``layers``; one-line error for unknown names."""
    return BACKBONES.get(name)(layers, **kwargs)
