"""Layer factories: backbones are written once and ask a factory for every conv, BN and linear.

A factory decides what kind of layer a backbone gets (plain, private-BN, scale-conditioned,
slimmable) so every method works with every backbone. Every factory has the methods and signatures
of :class:`~.contracts.LayerFactory` (``conv``, ``bn``, ``linear`` and ``state``). Each request
carries a ``role`` so a method can treat layers differently by position:

- ``stem``: the first conv (its input channels are the image's, never slimmed),
- ``body``: convs/BNs inside blocks, ``shortcut``: the 1x1 projection of a residual block,
- ``mid``: a bottleneck's inner convs/BNs (a quarter of the block's output channels); a kind of
  ``body`` (:func:`base_role`) for factories that do not tell them apart,
- ``expand``: a MobileNetV2 1x1 expansion (its output is ``t`` x its input: slimmable layers keep
  that ratio),
- ``head``: layers whose outputs are never slimmed: the classifier (the classes) and MobileNet's
  last 1x1 conv (1280 channels at every width, as in US-Net/MutualNet); a hidden fully connected
  layer (VGG's 4096-unit ones) is ``body``.

``linear(..., in_positions=P)``: the input is a flattened ``(C, H, W)`` map with ``P = H*W``
positions per channel (VGG's first FC: ``512*7*7``); channel-major flattening makes the first ``c``
channels the first ``c*P`` features, so a slimmable factory slims it as ``P`` x the channels.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..registry import Registry
from ..switch import SwitchState
from .private_bn import PrivateBatchNorm2d

ROLES = ("stem", "body", "mid", "shortcut", "expand", "head")


def base_role(role: str) -> str:
    """``mid`` -> ``body``; other roles unchanged."""
    return "body" if role == "mid" else role


# name -> factory class ``(state, **kwargs)``; factories register where they are defined
LAYER_FACTORIES: Registry[Callable[..., PlainLayers]] = Registry("layer factory", field="layers")


def register_layer_factory(name: str) -> Callable:
    """Class decorator registering a layer factory under ``name`` (``Method.layers``)."""
    return LAYER_FACTORIES.register(name)


def list_layer_factories() -> list[str]:
    """Registered layer factory names, sorted."""
    return LAYER_FACTORIES.list()


@register_layer_factory("plain")
class PlainLayers:
    """Ordinary ``nn.Conv2d``/``nn.BatchNorm2d``/``nn.Linear`` (torchvision-compatible models)."""

    def __init__(self, state: SwitchState | None = None):
        self.state = state

    def conv(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
             padding: int = 0, groups: int = 1, bias: bool = False, *, role: str = "body") -> nn.Module:
        return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=bias)

    def bn(self, num_features: int, *, role: str = "body") -> nn.Module:
        return nn.BatchNorm2d(num_features)

    def linear(self, in_features: int, out_features: int, *, role: str = "head", in_positions: int = 1) -> nn.Module:
        return nn.Linear(in_features, out_features)


@register_layer_factory("private_bn")
class PrivateBNLayers(PlainLayers):
    """Shared convs and classifier, one BN set per training resolution (RS-Net, parallel)."""

    def __init__(self, state: SwitchState):
        super().__init__(state)

    def bn(self, num_features: int, *, role: str = "body") -> nn.Module:
        return PrivateBatchNorm2d(num_features, self.state)


def build_layers(name: str, state: SwitchState, **kwargs) -> PlainLayers:
    """The layer factory ``name`` over ``state``; one-line error for unknown names."""
    return LAYER_FACTORIES.get(name)(state, **kwargs)
