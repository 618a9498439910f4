"""Build the network a method needs from a backbone name: the single place that joins the two."""

from __future__ import annotations

from typing import Any

from ..layers.quant import QUANTIZABLE_LAYERS
from ..models import build_switchable
from ..models.switchable import SwitchableNet
from . import METHODS, Method, build_method


def check_quant_method(method: Method, quant: dict | None) -> None:
    """One-line refusal when ``quant`` is asked of a method whose layers are not plain convs
    (SAN's generated kernels, slimmable widths)."""
    if quant is not None and method.layers not in QUANTIZABLE_LAYERS:
        name = next((k for k, v in METHODS.items() if type(method) is v), type(method).__name__)
        raise ValueError(f"quant: method={name} is not supported with quant=lq; "
                         "use method=individual|parallel|rsnet")


# model config keys that are not backbone constructor arguments (read by train.py and init_from)
MODEL_KEYS_NOT_BACKBONE = ("name", "pretrained", "san_meta_roles", "init_from", "init_bn_mode", "init_classifier")


def backbone_kwargs(model_cfg: dict[str, Any], also_drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """The backbone constructor's arguments from a (resolved) ``model`` config."""
    return {k: v for k, v in model_cfg.items() if k not in MODEL_KEYS_NOT_BACKBONE + also_drop}


def build_net_for_method(method: Method, model_name: str, num_classes: int, in_channels: int = 3,
                         quant: dict | None = None, **backbone_kwargs: Any) -> SwitchableNet:
    """The switchable network for ``method`` (its layer factory, resolutions and widths), LQ-quantized
    when ``quant`` is given (:func:`resnet_switch.layers.quant.check_quant_spec`)."""
    check_quant_method(method, quant)
    return build_switchable(
        model_name, method.resolutions, layers=method.layers, widths=method.net_widths(),
        num_classes=num_classes, in_channels=in_channels, layer_kwargs=method.layer_kwargs(),
        quant=quant, **backbone_kwargs,
    )


def build_method_and_net(method_name: str, resolutions, model_name: str, num_classes: int,
                         in_channels: int = 3, method_kwargs: dict | None = None,
                         model_kwargs: dict | None = None, quant: dict | None = None) -> tuple[Method, SwitchableNet]:
    method = build_method(method_name, resolutions, **(method_kwargs or {}))
    net = build_net_for_method(method, model_name, num_classes, in_channels, quant=quant, **(model_kwargs or {}))
    return method, net
