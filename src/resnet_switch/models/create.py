"""The one builder: a backbone name and a method's layer choice -> :class:`~.switchable.SwitchableNet`.

Every network is built here (timm's ``create_model``): by train (:mod:`resnet_switch.training.tasks`),
evaluate (a checkpoint's spec), costs, bench, convert and detection's backbone::

    net = create_model("resnet18", method=build_method("rsnet", [224, 192]), num_classes=1000)
    net = create_model("timm", [32, 16], layers="private_bn", arch="efficientnet_b0", small_input="auto")
    twin = create_model(**net.spec)        # the same architecture (what a checkpoint does)

``small_input="auto"`` is decided here, for every backbone with a small-input stem (ours and the
converted torchvision/timm models): the small-input stem when the largest resolution is at most
:data:`SMALL_INPUT_MAX_RESOLUTION` px, the ImageNet stem otherwise, logged once. The spec records the
decision (``True``/``False``), so a rebuilt network never decides again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from ..errors import ConfigError
from ..layers.factory import build_layers
from ..layers.quant import QuantLayers, check_quant_spec
from ..switch import SwitchState
from .registry import BACKBONES, SMALL_INPUT, has_small_input_stem
from .switchable import SwitchableNet

log = logging.getLogger(__name__)

# ``model.small_input: auto`` picks the small-input stem up to this largest resolution (px): an
# ImageNet stem divides the input by 4 before the first stage, leaving 1x1 maps or less at the end.
SMALL_INPUT_MAX_RESOLUTION = 64


class LayerChoice(Protocol):
    """What a training method decides about its network (:class:`~resnet_switch.methods.base.Method`
    implements it): the layer factory, its arguments, the widths and the resolutions."""

    layers: str
    resolutions: tuple[int, ...]

    def layer_kwargs(self, backbone: str | None = None) -> dict[str, Any]:
        """The layer factory's arguments on ``backbone``."""

    def net_widths(self) -> tuple[float, ...]:
        """The widths the network is built for, widest first."""

    def check_backbone(self, backbone: str, quant: dict[str, Any] | None) -> None:
        """One-line refusal when the method cannot run on ``backbone`` (or quantized with ``quant``)."""


@dataclass(frozen=True)
class ModelConfig:
    """A ``model`` config: which backbone, how its weights start, and its constructor arguments.

    ``name`` selects the backbone, ``pretrained`` (a plain torchvision state dict) and ``init``
    (``model.init``: ``ckpt``, ``bn_mode``, ``classifier``; fine-tuning from our checkpoint) say how
    its weights start; every other entry of the config is an argument of the backbone's constructor
    (``backbone``, given to :func:`create_model` as keyword arguments)."""

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


def resolve_small_input(choice: Any, resolutions: Sequence[int], backbone: str = "the backbone") -> bool:
    """``model.small_input`` as the stem to build: ``True``/``False`` as given; ``auto``: the small-input
    stem when the largest of ``resolutions`` is <= :data:`SMALL_INPUT_MAX_RESOLUTION` px (logged with
    the reason). Any other value: a one-line :class:`ConfigError` naming ``model.small_input``."""
    problem = SMALL_INPUT.check(choice)
    if problem:
        raise ConfigError(f"model.small_input: {problem}, got {choice!r}")
    if isinstance(choice, bool):
        return choice
    largest = max(resolutions)
    small = largest <= SMALL_INPUT_MAX_RESOLUTION
    log.info("model.small_input=auto -> %s: largest resolution %d px %s %d px, %s stem for %s", str(small).lower(),
             largest, "<=" if small else ">", SMALL_INPUT_MAX_RESOLUTION,
             "small-input (stride-1, CIFAR-style)" if small else "ImageNet (stride-2)", backbone)
    return small


def stem_arguments(name: str, backbone_kwargs: dict[str, Any], resolutions: Sequence[int]) -> dict[str, Any]:
    """``backbone_kwargs`` with ``small_input`` decided (:func:`resolve_small_input`). A backbone with
    one stem (VGG-16) takes no ``small_input``: ``auto`` is dropped, ``true``/``false`` refused."""
    if "small_input" not in backbone_kwargs:
        return backbone_kwargs
    choice = backbone_kwargs["small_input"]
    label = f"{name} {backbone_kwargs['arch']}" if "arch" in backbone_kwargs else name
    if not has_small_input_stem(name):
        rest = {k: v for k, v in backbone_kwargs.items() if k != "small_input"}
        if choice == "auto":
            return rest
        raise ConfigError(f"model.small_input: {name} has one stem (no small-input choice); drop model.small_input")
    return {**backbone_kwargs, "small_input": resolve_small_input(choice, resolutions, label)}


def create_model(name: str, resolutions: Sequence[int] | None = None, *, method: LayerChoice | None = None,
                 layers: str | None = None, widths: Sequence[float] | None = None,
                 layer_kwargs: dict[str, Any] | None = None, num_classes: int = 1000, in_channels: int = 3,
                 quant: dict[str, Any] | None = None, **backbone_kwargs: Any) -> SwitchableNet:
    """Backbone ``name`` built with a layer factory for ``resolutions`` (highest first).

    Args:
        name: a registered backbone (:func:`~.registry.list_backbones`).
        resolutions: the training resolutions (default: the method's).
        method: the layer choice of a training method (its ``layers``, ``layer_kwargs(name)``,
            ``net_widths()``; its ``check_backbone`` refuses what it cannot run). Without it:
        layers, widths, layer_kwargs: the layer factory's name (default ``private_bn``), the widths
            (default ``(1.0,)``) and the factory's arguments.
        num_classes, in_channels: the classifier's outputs and the image channels.
        quant: ``None`` (float) or LQ settings ``{"weight_bits", "act_bits", "act_basis_update"}``
            (:class:`~resnet_switch.layers.quant.QuantLayers` wraps the factory).
        backbone_kwargs: the backbone's constructor arguments (``width_mult``, ``arch`` for
            ``torchvision``/``timm``, ``small_input``: ``True``/``False``/``"auto"``, ...).

    The returned net's ``spec`` holds these arguments (``small_input`` decided), so
    ``create_model(**net.spec)`` rebuilds the same architecture (used by checkpoints).
    """
    if method is not None:
        if layers is not None or widths is not None or layer_kwargs is not None:
            raise TypeError("create_model: give either method or layers/widths/layer_kwargs, not both")
        method.check_backbone(name, quant)
        resolutions = method.resolutions if resolutions is None else resolutions
        layers, widths, layer_kwargs = method.layers, method.net_widths(), method.layer_kwargs(name)
    if resolutions is None:
        raise TypeError("create_model: give resolutions or a method")
    layers = "private_bn" if layers is None else layers
    widths = (1.0,) if widths is None else widths
    quant = check_quant_spec(quant)
    constructor = BACKBONES.get(name)
    backbone_kwargs = stem_arguments(name, backbone_kwargs, resolutions)
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
    net = constructor(factory, num_classes=num_classes, in_channels=in_channels, **backbone_kwargs)
    return SwitchableNet(net, state, spec)
