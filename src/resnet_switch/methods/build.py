"""Build the network a method needs from a backbone name: the single place that joins the two."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..layers.quant import QUANTIZABLE_LAYERS
from ..models import BACKBONES, build_switchable
from ..models.switchable import SwitchableNet
from . import METHODS, Method, build_method

log = logging.getLogger(__name__)

# ``model.small_input: auto`` picks the small-input stem up to this largest resolution (px): an
# ImageNet stem divides the input by 4 before the first stage, leaving 1x1 maps or less at the end.
SMALL_INPUT_MAX_RESOLUTION = 64


def check_quant_method(method: Method, quant: dict | None) -> None:
    """One-line refusal when ``quant`` is asked of a method whose layers are not plain convs
    (SAN's generated kernels, slimmable widths)."""
    if quant is not None and method.layers not in QUANTIZABLE_LAYERS:
        name = METHODS.name_of(method) or type(method).__name__
        raise ValueError(f"quant: method={name} is not supported with quant=lq; "
                         "use method=individual|parallel|rsnet")


def check_backbone_layers(method: Method, model_name: str) -> None:
    """One-line refusal when backbone ``model_name`` cannot be built with the layers ``method`` needs
    (converted torchvision/timm models: no slimmable widths, their channel dependencies are unknown)."""
    supported = BACKBONES.info(model_name).get("layers") if model_name in BACKBONES else None
    if supported is not None and method.layers not in supported:
        name = METHODS.name_of(method) or type(method).__name__
        raise ValueError(f"method: {name} is not supported with model={model_name} (its {method.layers} layers "
                         "slice channels, which needs the architecture's channel dependencies); "
                         "use method=individual|parallel|rsnet|san")


@dataclass(frozen=True)
class ModelConfig:
    """A ``model`` config: which backbone, how its weights start, and its constructor arguments.

    ``name`` selects the backbone, ``pretrained`` (a plain torchvision state dict) and ``init``
    (``model.init``: ``ckpt``, ``bn_mode``, ``classifier``; fine-tuning from our checkpoint) say how
    its weights start; every other entry of the config is an argument of the backbone's constructor
    (``backbone``)."""

    name: str
    pretrained: str | None = None
    init: dict[str, Any] = field(default_factory=dict)
    backbone: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, model_cfg: Mapping[str, Any]) -> ModelConfig:
        """Split a (resolved) ``model`` config into the declared fields and the backbone's arguments."""
        values = dict(model_cfg)
        own = {f.name: values.pop(f.name) for f in fields(cls) if f.name != "backbone" and f.name in values}
        own["init"] = dict(own.get("init") or {})
        return cls(**own, backbone=values)

    def stem_for(self, resolutions: Sequence[int]) -> ModelConfig:
        """This config with ``small_input: auto`` resolved for ``resolutions``: the small-input stem
        (stride-1 first conv, no max-pool) when the largest resolution is <= ``SMALL_INPUT_MAX_RESOLUTION``
        px, the ImageNet stem otherwise; ``true``/``false`` pass through. Logs the choice."""
        choice = self.backbone.get("small_input")
        if choice is None or isinstance(choice, bool):
            return self
        if str(choice).lower() != "auto":
            raise ValueError(f"model.small_input: expected auto, true or false, got {choice!r}")
        largest = max(resolutions)
        small = largest <= SMALL_INPUT_MAX_RESOLUTION
        log.info("model.small_input=auto -> %s: largest resolution %d px %s %d px, %s stem", str(small).lower(),
                 largest, "<=" if small else ">", SMALL_INPUT_MAX_RESOLUTION,
                 "small-input (stride-1, CIFAR-style)" if small else "ImageNet (stride-2)")
        return replace(self, backbone={**self.backbone, "small_input": small})


def build_net_for_method(method: Method, model_name: str, num_classes: int, in_channels: int = 3,
                         quant: dict | None = None, **backbone_kwargs: Any) -> SwitchableNet:
    """The switchable network for ``method`` (its layer factory, resolutions and widths), LQ-quantized
    when ``quant`` is given (:func:`resnet_switch.layers.quant.check_quant_spec`)."""
    check_quant_method(method, quant)
    check_backbone_layers(method, model_name)
    return build_switchable(
        model_name, method.resolutions, layers=method.layers, widths=method.net_widths(),
        num_classes=num_classes, in_channels=in_channels, layer_kwargs=method.layer_kwargs(model_name),
        quant=quant, **backbone_kwargs,
    )


def build_method_and_net(method_name: str, resolutions, model_name: str, num_classes: int,
                         in_channels: int = 3, method_kwargs: dict | None = None,
                         model_kwargs: dict | None = None, quant: dict | None = None) -> tuple[Method, SwitchableNet]:
    method = build_method(method_name, resolutions, **(method_kwargs or {}))
    net = build_net_for_method(method, model_name, num_classes, in_channels, quant=quant, **(model_kwargs or {}))
    return method, net
