"""Backbone registry and the one function that builds a switchable network from its spec."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..layers.factory import build_layers
from ..layers.quant import QuantLayers, check_quant_spec
from ..switch import SwitchState
from .mobilenet import mobilenetv1, mobilenetv2
from .preresnet import preresnet18, preresnet20
from .resnet import resnet18, resnet20, resnet50
from .switchable import SwitchableNet
from .vgg import vgg16

BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "resnet50": resnet50,
    "resnet20": resnet20,
    "preresnet18": preresnet18,
    "preresnet20": preresnet20,
    "mobilenetv2": mobilenetv2,
    "mobilenetv1": mobilenetv1,
    "vgg16": vgg16,
}

# backbones whose plain version is torchvision's: name -> torchvision.models constructor name
TORCHVISION_NAMES = {"resnet18": "resnet18", "resnet50": "resnet50", "mobilenetv2": "mobilenet_v2",
                     "vgg16": "vgg16_bn"}


def build_backbone(name: str, layers, **kwargs) -> nn.Module:
    if name not in BACKBONES:
        raise ValueError(f"model.name: unknown {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name](layers, **kwargs)


def build_switchable(
    name: str,
    resolutions: Sequence[int],
    layers: str = "private_bn",
    widths: Sequence[float] = (1.0,),
    num_classes: int = 1000,
    in_channels: int = 3,
    layer_kwargs: dict[str, Any] | None = None,
    quant: dict[str, Any] | None = None,
    **backbone_kwargs,
) -> SwitchableNet:
    """Build ``name`` with the ``layers`` factory for ``resolutions`` (highest first).

    ``quant``: ``None`` (float) or LQ settings ``{"weight_bits", "act_bits", "act_basis_update"}``
    (:class:`~resnet_switch.layers.quant.QuantLayers` wraps the ``layers`` factory).
    The returned net's ``spec`` holds exactly these arguments, so ``build_switchable(**net.spec)``
    rebuilds the same architecture (used by checkpoints).
    """
    quant = check_quant_spec(quant)
    spec = dict(
        name=name, resolutions=[int(r) for r in resolutions], layers=layers,
        widths=[float(w) for w in widths], num_classes=int(num_classes), in_channels=int(in_channels),
        layer_kwargs=dict(layer_kwargs or {}), **backbone_kwargs,
    )
    if quant is not None:
        spec["quant"] = dict(quant)
    state = SwitchState(resolutions, widths)
    factory = build_layers(layers, state, **(layer_kwargs or {}))
    if quant is not None:
        factory = QuantLayers(factory, **quant)
    net = build_backbone(name, factory, num_classes=num_classes, in_channels=in_channels, **backbone_kwargs)
    return SwitchableNet(net, state, spec)


@torch.no_grad()
def load_plain_weights(net: SwitchableNet, state_dict: dict[str, torch.Tensor]) -> None:
    """Warm start from a plain (e.g. torchvision) state dict.

    Every key must exist in the plain materialisation of ``net``; each BN is copied into every
    private set (and each switchable layer takes the plain tensors through its ``load_plain``).
    """
    if net.spec.get("quant"):  # load into the float twin, then take its tensors (the bases keep theirs)
        twin = build_switchable(**{k: v for k, v in net.spec.items() if k != "quant"})
        load_plain_weights(twin, state_dict)
        missing, unexpected = net.load_state_dict(twin.state_dict(), strict=False)
        assert not unexpected and all(k.endswith(".basis") for k in missing), (missing, unexpected)
        return
    plain = net.materialize()
    missing, unexpected = plain.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"model.pretrained: weights do not fit {net.spec['name']} "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); check model.name and num_classes"
        )
    plain_modules = dict(plain.named_modules())
    for name, module in net.net.named_modules():
        if hasattr(module, "load_plain"):
            module.load_plain(plain_modules[name])
        elif name in plain_modules and not any(True for _ in module.children()):
            module.load_state_dict(plain_modules[name].state_dict())


__all__ = ["BACKBONES", "TORCHVISION_NAMES", "SwitchableNet", "build_backbone", "build_switchable", "load_plain_weights"]
