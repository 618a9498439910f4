"""Model surgery: any BatchNorm CNN (a torchvision or timm model, or any ``nn.Module``) becomes switchable.

:func:`switchify` walks a module tree (as torch's ``convert_sync_batchnorm`` does) and replaces, in a
copy of the module, every layer the chosen ``kind`` switches:

- ``private_bn`` (methods ``parallel``, ``rsnet``): every ``BatchNorm2d`` (and subclass; timm's
  ``BatchNormAct2d`` keeps its activation and drop) becomes a
  :class:`~resnet_switch.layers.source_bn.SourcePrivateBatchNorm2d`, one BN set per resolution, each
  initialised from the module's own running statistics and affine parameters;
- ``scale_conv`` (method ``san``): the same BN sets, and every ``Conv2d`` (grouped and depthwise
  included) becomes SAN's :class:`~resnet_switch.layers.scale_conv.ScaleConv2d` whose meta-learner
  generates the module's own kernel at every scale (``kernel = eps * W + b`` with ``W = 0``,
  ``b = kernel``; the MLP meta-learners: last layer zero, bias the kernel), an exact warm start;
- ``private_conv`` (``san method.conv=private``): the BN sets, and one copy of every conv per resolution;
- ``plain`` (``individual``, ``parallel private_bn=false``): nothing replaced.

Before any training, at every resolution, the switchable network computes exactly what the module
computes, and ``net.materialize(config)`` is a plain module with the module's classes and state-dict
keys (it loads strictly into the source architecture). Channel slicing (MutualNet, US-Net, S-Net) needs
the architecture's channel dependencies and is refused.

Registered backbones ``torchvision`` and ``timm`` (``model=torchvision model.arch=NAME``) build
``torchvision.models.get_model(arch, num_classes=N, **kwargs)`` / ``timm.create_model(arch,
num_classes=N, in_chans=C, **kwargs)`` and convert it with the method's layer factory, so the network's
spec (``name`` = the library, ``arch``, ``kwargs``, ``small_input``, ``layers``, resolutions) rebuilds
it from a checkpoint alone through :func:`~resnet_switch.models.create_model`.

``small_input=True`` (32-px images): the first conv (in registration order: the stem) gets stride 1
and a ``MaxPool2d`` that comes before any other strided conv (the ResNet and ShuffleNetV2 stems) becomes
``nn.Identity``; keys and shapes are unchanged. Total stride: ResNets 32 -> 8, MobileNetV3,
EfficientNet, RegNet 32 -> 16, ShuffleNetV2 32 -> 8.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..layers.contracts import switchable_leaves
from ..layers.factory import LAYER_FACTORIES
from ..layers.scale_conv import PrivateConv2d, ScaleConv2d, build_meta
from ..layers.source_bn import SourcePrivateBatchNorm2d, is_norm_act
from ..rules import Real
from ..switch import SwitchState
from .registry import BACKBONES, SMALL_INPUT, register_backbone
from .switchable import SwitchableNet

SOURCES = ("torchvision", "timm")
KINDS = ("plain", "private_bn", "scale_conv", "private_conv")
# layer factory (a method's ``layers``) -> surgery kind; other factories (slimmable, LQ) are refused
KIND_OF_FACTORY = {"plain": "plain", "private_bn": "private_bn", "san": "scale_conv", "private_conv": "private_conv"}
# constructor arguments that come from elsewhere: key -> the fix
RESERVED_KWARGS = {
    "weights": "give a state-dict file as model.pretrained=FILE (nothing is downloaded)",
    "pretrained": "give a state-dict file as model.pretrained=FILE (nothing is downloaded)",
    "num_classes": "the class count comes from the data set",
    "in_chans": "the image channels come from the data set",
}


# ------------------------------------------------------------------------------ source models
def import_timm():
    """The ``timm`` package, or a one-line error saying how to install it."""
    try:
        import timm
    except ImportError:
        raise ConfigError("model=timm: timm is not installed; pip install -e '.[timm]'") from None
    return timm


def list_archs(source: str) -> list[str]:
    """Every architecture name ``source`` can build (``torchvision.models.list_models()`` of the
    classification models / ``timm.list_models()``)."""
    if source == "torchvision":
        import torchvision

        return torchvision.models.list_models(module=torchvision.models)
    if source == "timm":
        return import_timm().list_models()
    raise ConfigError(f"model.name: unknown model source {source!r}; choose one of {list(SOURCES)}")


def check_arch(source: str, arch: Any) -> str:
    """``arch`` when ``source`` has it; a one-line error with the library's close matches otherwise."""
    if arch is None:
        raise ConfigError(f"model.arch: required with model={source}; e.g. model.arch=resnet18")
    names = list_archs(source)
    if arch not in names:
        close = difflib.get_close_matches(str(arch), names, n=3)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        lister = "torchvision.models.list_models()" if source == "torchvision" else "timm.list_models()"
        raise ConfigError(f"model.arch: unknown {source} model {arch!r}; {hint}{lister} lists all {len(names)}")
    return str(arch)


def check_kwargs(kwargs: Any) -> dict[str, Any]:
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict):
        raise ConfigError(f"model.kwargs: expected a mapping of constructor arguments, got {kwargs!r}; "
                          "e.g. model.kwargs={dropout:0.1}")
    for key, fix in RESERVED_KWARGS.items():
        if key in kwargs:
            raise ConfigError(f"model.kwargs.{key}: not allowed; {fix}")
    return dict(kwargs)


def build_source(source: str, arch: str | None, kwargs: dict[str, Any] | None = None, num_classes: int = 1000,
                 in_channels: int = 3, small_input: bool = False, bn_momentum: float | None = None) -> nn.Module:
    """The plain source network (random weights): ``torchvision.models.get_model(arch, num_classes=...,
    **kwargs)`` or ``timm.create_model(arch, num_classes=..., in_chans=..., **kwargs)``; for torchvision
    with ``in_channels != 3`` the first conv takes ``in_channels``; ``small_input``: see the module doc;
    ``bn_momentum``: every BatchNorm's running-statistics momentum (``None``: the library's; torchvision's
    MobileNetV3 and EfficientNets use 0.01, whose statistics barely move in a run of a few hundred steps)."""
    arch = check_arch(source, arch)
    kwargs = check_kwargs(kwargs)
    try:
        if source == "torchvision":
            import torchvision

            module = torchvision.models.get_model(arch, num_classes=num_classes, **kwargs)
            if in_channels != 3:
                replace_first_conv_input(module, in_channels)
        else:
            module = import_timm().create_model(arch, pretrained=False, num_classes=num_classes,
                                                in_chans=in_channels, **kwargs)
    except TypeError as err:
        raise ConfigError(f"model.kwargs: {source} {arch} does not take {sorted(kwargs)} ({err}); "
                          "check the constructor's arguments") from None
    if small_input:
        small_input_stem(module)
    if bn_momentum is not None:
        if not 0.0 < float(bn_momentum) <= 1.0:
            raise ConfigError(f"model.bn_momentum: must be in (0, 1], got {bn_momentum}; e.g. 0.1, or null for the "
                              "library's")
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = float(bn_momentum)
    return module


def named_convs(module: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    return [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Conv2d)]


def replace_first_conv_input(module: nn.Module, in_channels: int) -> None:
    """The first conv (the stem) takes ``in_channels`` image channels (same other settings)."""
    name, conv = named_convs(module)[0]
    module.set_submodule(name, nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                                         conv.padding, conv.dilation, conv.groups, conv.bias is not None,
                                         conv.padding_mode))


def small_input_stem(module: nn.Module) -> None:
    """For small images: the first conv's stride becomes 1 and a ``MaxPool2d`` before any other strided
    conv becomes ``nn.Identity`` (in place; no parameter changes)."""
    convs = named_convs(module)
    if not convs:
        raise ConfigError("model.small_input: the network has no Conv2d stem to change; use small_input=false")
    first = convs[0][1]
    first.stride = (1, 1)
    for name, child in module.named_modules():
        if isinstance(child, nn.Conv2d) and child is not first and max(child.stride) > 1:
            return
        if isinstance(child, nn.MaxPool2d):
            module.set_submodule(name, nn.Identity())
            return


# ------------------------------------------------------------------------------------ surgery
def _refuse(field: str, name: str, module: nn.Module, why: str, fix: str) -> ConfigError:
    return ConfigError(f"{field}: layer {name!r} is a {type(module).__name__} ({why}); {fix}")


def check_bn(name: str, bn: nn.BatchNorm2d) -> None:
    """One line when ``bn`` cannot become private BN sets."""
    if not (bn.affine and bn.track_running_stats):
        raise _refuse("model", name, bn, "without affine parameters or running statistics",
                      "switchify needs affine BatchNorm2d layers with running statistics")
    plain_forward = type(bn).forward in (nn.BatchNorm2d.forward, nn.SyncBatchNorm.forward)
    if not (plain_forward or is_norm_act(bn)):
        raise _refuse("model", name, bn, "a BatchNorm2d with its own forward",
                      "switchify converts BatchNorm2d, SyncBatchNorm and BN+act (timm's BatchNormAct2d) layers")


def check_conv(name: str, conv: nn.Conv2d) -> None:
    """One line when ``conv`` cannot become a generated-kernel conv."""
    own_forward = type(conv).forward is not nn.Conv2d.forward or type(conv)._conv_forward is not nn.Conv2d._conv_forward
    if own_forward or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise _refuse("method", name, conv, "own forward, non-zero padding mode or 'same' padding",
                      "method=san converts plain zero-padded nn.Conv2d layers; use method=rsnet|parallel|individual")


def scale_conv_of(conv: nn.Conv2d, state: SwitchState, meta: str, scale: float, encodings) -> ScaleConv2d:
    """SAN's conv generating ``conv``'s kernel (and keeping its bias) at every scale."""
    leaf = ScaleConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, state, conv.stride, conv.padding,
                       conv.groups, conv.bias is not None, meta=meta, scale=scale, dilation=conv.dilation,
                       encodings=encodings).to(conv.weight.device, conv.weight.dtype)
    leaf.load_plain(conv)
    return leaf


def private_conv_of(conv: nn.Conv2d, state: SwitchState) -> PrivateConv2d:
    """One copy of ``conv`` per training resolution."""
    leaf = PrivateConv2d(1, 1, 1, state)
    leaf.convs = nn.ModuleList(copy.deepcopy(conv) for _ in state.train_resolutions)
    return leaf


def convert(module: nn.Module, state: SwitchState, kind: str = "private_bn", *, meta: str = "linear",
            scale: float = 0.1, encodings: Sequence[float] | None = None, private_bn: bool = True) -> nn.Module:
    """Replace, in place, the layers ``kind`` switches (see the module docstring); returns ``module``.

    ``meta``, ``scale``, ``encodings``: SAN's meta-learner settings (``kind="scale_conv"``);
    ``private_bn=False``: BN stays shared (plain) for the conv kinds."""
    if kind not in KINDS:
        raise ConfigError(f"kind: unknown {kind!r}; choose one of {list(KINDS)}")
    bns = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.BatchNorm2d)]
    if not bns:
        raise ConfigError(f"model: {type(module).__name__} has no BatchNorm2d layer; switchify gives each resolution "
                          "its own BN set, so it needs a BatchNorm network (e.g. resnet18, efficientnet_b0)")
    convert_bn = kind == "private_bn" or (kind in ("scale_conv", "private_conv") and private_bn)
    convs = named_convs(module) if kind in ("scale_conv", "private_conv") else []
    if kind == "scale_conv":
        build_meta(meta, (1, 1, 1, 1))  # validates the name
        for name, conv in convs:
            check_conv(name, conv)
    if convert_bn:
        for name, bn in bns:
            check_bn(name, bn)
    for name, conv in convs:
        leaf = scale_conv_of(conv, state, meta, scale, encodings) if kind == "scale_conv" else private_conv_of(conv, state)
        module.set_submodule(name, leaf)
    if convert_bn:
        for name, bn in bns:
            module.set_submodule(name, SourcePrivateBatchNorm2d(bn, state))
    return module


def switchify(module: nn.Module, resolutions: Sequence[int], kind: str = "private_bn", *, meta: str = "linear",
              scale: float = 0.1, encodings: Sequence[float] | None = None, private_bn: bool = True,
              spec: dict[str, Any] | None = None) -> SwitchableNet:
    """A :class:`SwitchableNet` for ``resolutions`` (highest first) from any BatchNorm ``nn.Module``.

    ``module`` is left as it is (a deep copy is converted); in eval mode, at every resolution and
    before any training, ``net(x)`` equals ``module(x)``. ``kind``: ``private_bn`` | ``scale_conv`` |
    ``private_conv`` | ``plain`` (module docstring). ``spec``: what the network's spec records (a
    network built as ``create_model("torchvision"|"timm", ..., arch=NAME)`` has a spec that
    rebuilds it from a checkpoint; a bare module's does not)."""
    state = SwitchState(resolutions)
    net = convert(copy.deepcopy(module), state, kind, meta=meta, scale=scale, encodings=encodings,
                  private_bn=private_bn)
    full_spec = {"name": "module", "resolutions": list(state.train_resolutions), "kind": kind}
    return SwitchableNet(net, state, {**full_spec, **(spec or {})})


# ------------------------------------------------------------------- the registered backbones
def kind_of_factory(layers) -> tuple[str, dict[str, Any]]:
    """``(kind, convert options)`` of a layer factory; one line for factories surgery cannot make."""
    name = LAYER_FACTORIES.name_of(layers)
    if name not in KIND_OF_FACTORY:
        if name is None:  # a wrapper such as the LQ quantizer
            raise ConfigError("quant: converted models (model=torchvision|timm) are not supported with quant=lq; "
                              "use quant=none")
        raise ConfigError(f"method: {name} layers slice channels, which needs the architecture's channel "
                          "dependencies (not done for model=torchvision|timm); use method=individual|parallel|rsnet|san")
    kind = KIND_OF_FACTORY[name]
    options: dict[str, Any] = {}
    if kind in ("scale_conv", "private_conv"):
        options["private_bn"] = layers.private_bn
    if kind == "scale_conv":
        options.update(meta=layers.meta, scale=layers.scale, encodings=layers.encodings)
    return kind, options


def converted_backbone(source: str, layers, arch: str | None = None, kwargs: dict[str, Any] | None = None,
                       num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
                       bn_momentum: float | None = None) -> nn.Module:
    """``source``'s ``arch`` converted for the layer factory ``layers`` (its kind and switch state)."""
    kind, options = kind_of_factory(layers)
    module = build_source(source, arch, kwargs, num_classes, in_channels, small_input, bn_momentum)
    if not any(isinstance(m, nn.BatchNorm2d) for m in module.modules()):
        raise ConfigError(f"model.arch: {source} {arch} has no BatchNorm2d layer; switchify gives each resolution its "
                          "own BN set, so it needs a BatchNorm network (e.g. resnet18, efficientnet_b0)")
    return convert(module, layers.state, kind, **options)


def source_model(spec: dict[str, Any]) -> nn.Module:
    """A fresh plain source network of a converted network's ``spec`` (what its materialisation loads
    into strictly)."""
    return build_source(spec["name"], spec.get("arch"), spec.get("kwargs"), spec.get("num_classes", 1000),
                        spec.get("in_channels", 3), spec.get("small_input", False), spec.get("bn_momentum"))


@torch.no_grad()
def load_source_weights(net: SwitchableNet, state_dict: dict[str, torch.Tensor]) -> None:
    """``model.pretrained``: load ``state_dict`` strictly into the source architecture, then start every
    switchable layer from its source layer (``load_plain``: every BN set from its BN, every generated
    kernel is its conv's) and every other tensor from the source's: the network then equals the source
    loaded with ``state_dict``, as if it had been converted after loading."""
    spec = net.spec
    module = source_model(spec)
    missing, unexpected = module.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise ConfigError(f"model.pretrained: weights do not fit {spec['name']} {spec['arch']} (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]}); check model.arch, model.kwargs and the class count")
    leaves = switchable_leaves(net.net)
    prefixes = tuple(f"{name}." for name, _ in leaves)
    rest = {k: v for k, v in module.state_dict().items() if not k.startswith(prefixes)}
    missing, unexpected = net.net.load_state_dict(rest, strict=False)
    assert not unexpected and all(k.startswith(prefixes) for k in missing), (missing[:3], unexpected[:3])
    for name, leaf in leaves:
        leaf.load_plain(module.get_submodule(name))


def _register(source: str) -> None:
    def constructor(layers, arch: str | None = None, kwargs: dict[str, Any] | None = None, num_classes: int = 1000,
                    in_channels: int = 3, small_input: bool = False, bn_momentum: float | None = None) -> nn.Module:
        return converted_backbone(source, layers, arch, kwargs, num_classes, in_channels, small_input, bn_momentum)

    constructor.__name__ = constructor.__qualname__ = f"{source}_backbone"
    constructor.__doc__ = f"A {source} model (``arch``, ``kwargs``) converted for ``layers`` (:func:`converted_backbone`)."
    register_backbone(source, layers=tuple(KIND_OF_FACTORY), load_plain=load_source_weights,
                      source_model=source_model, requires="timm" if source == "timm" else None,
                      settings={"small_input": SMALL_INPUT, "bn_momentum": Real(0.0, 1.0, open_low=True)},
                      tiny={"arch": "resnet18"})(constructor)


for _source in SOURCES:
    _register(_source)


def is_converted(name: str) -> bool:
    """Whether backbone ``name`` is a converted library model (``torchvision`` / ``timm``)."""
    return name in BACKBONES and BACKBONES.info(name).get("source_model") is not None
