"""Warm start of a switchable network from a plain state dict (``model.pretrained``)."""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..layers.contracts import SwitchableLeaf
from .create import create_model
from .registry import BACKBONES
from .switchable import SwitchableNet


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
        twin = create_model(**{k: v for k, v in net.spec.items() if k != "quant"})
        load_plain_weights(twin, state_dict)
        missing, unexpected = net.load_state_dict(twin.state_dict(), strict=False)
        assert not unexpected and all(k.endswith(".basis") for k in missing), (missing, unexpected)
        return
    plain = net.materialize()
    missing, unexpected = plain.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise ConfigError(
            f"model.pretrained: weights do not fit {net.spec['name']} "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); check model.name and num_classes"
        )
    plain_modules = dict(plain.named_modules())
    for name, module in net.net.named_modules():
        if isinstance(module, SwitchableLeaf):
            module.load_plain(plain_modules[name])
        elif name in plain_modules and not any(True for _ in module.children()):
            module.load_state_dict(plain_modules[name].state_dict())
