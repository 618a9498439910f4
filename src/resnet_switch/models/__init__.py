"""Backbones (registered in their modules, :mod:`.registry`) and the one function that builds a
switchable network from its spec."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..layers.contracts import SwitchableLeaf
from ..layers.factory import build_layers
from ..layers.quant import QuantLayers, check_quant_spec
from ..switch import SwitchState
from . import mobilenet, preresnet, resnet, surgery, vgg  # noqa: F401  (each registers its backbones)
from .registry import (
    BACKBONES,
    build_backbone,
    check_min_resolution,
    list_backbones,
    register_backbone,
    torchvision_name,
)
from .surgery import switchify
from .switchable import SwitchableNet


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
    A backbone registered with its own ``load_plain`` (converted torchvision/timm models) loads there.
    """
    name = net.spec.get("name")
    loader = BACKBONES.info(name).get("load_plain") if name in BACKBONES else None
    if loader is not None:
        return loader(net, state_dict)
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
        if isinstance(module, SwitchableLeaf):
            module.load_plain(plain_modules[name])
        elif name in plain_modules and not any(True for _ in module.children()):
            module.load_state_dict(plain_modules[name].state_dict())


__all__ = ["BACKBONES", "SwitchableNet", "build_backbone", "build_switchable", "check_min_resolution", "list_backbones",
           "load_plain_weights", "register_backbone", "switchify", "torchvision_name"]
