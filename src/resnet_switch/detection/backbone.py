"""A switchable classification backbone as the feature extractor of an FPN detector.

The feature stages of one of our backbones (the outputs of strides 4, 8, 16, 32) feed
``torchvision.ops.FeaturePyramidNetwork`` through torchvision's ``BackboneWithFPN`` (its
``IntermediateLayerGetter`` keeps the children up to the last stage, so the classifier is dropped).
With plain layers the state-dict keys are torchvision's ``resnet_fpn_backbone`` keys.

The neck is shared by every configuration. A slimmed backbone hands the FPN the leading
``slim_channels(C, w)`` channels of each stage; each lateral 1x1 conv of the FPN then uses the
leading slice of its input channels (a :class:`~resnet_switch.layers.slimmable.SlimmableConv2d`
whose output, the FPN's width, is never slimmed), so the same neck serves every width.

Adding a backbone is one :data:`FEATURE_STAGES` entry: the module whose children run in order and
the names of the children whose outputs feed the FPN, finest first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN

from ..errors import ConfigError
from ..evaluation.costs import count_costs
from ..layers.slimmable import ChannelDim, SlimmableConv2d
from ..models import BACKBONES, create_model, load_plain_weights
from ..models.switchable import SwitchableNet
from ..switch import SubnetConfig, SwitchState


@dataclass(frozen=True)
class FeatureStages:
    """Where a backbone's FPN inputs come from.

    Attributes:
        body: attribute of the backbone whose children run in order (``""``: the backbone itself).
        stages: names of the children whose outputs feed the FPN, finest (stride 4) first.
        defaults: backbone arguments used unless given (e.g. the ImageNet stem of ResNet-20).
    """

    body: str
    stages: tuple[str, ...]
    defaults: tuple[tuple[str, object], ...] = ()


FEATURE_STAGES: dict[str, FeatureStages] = {
    # ResNets: the outputs of layer1..layer4 (strides 4, 8, 16, 32), as torchvision's resnet_fpn_backbone
    "resnet18": FeatureStages("", ("layer1", "layer2", "layer3", "layer4")),
    "resnet50": FeatureStages("", ("layer1", "layer2", "layer3", "layer4")),
    # CPU-sized: ResNet-20 with the ImageNet stem (model.small_input=false): strides 4, 8, 16
    "resnet20": FeatureStages("", ("layer1", "layer2", "layer3"), defaults=(("small_input", False),)),
    # MobileNetV2 features: ends of the 24-, 32-, 96-channel stages and the 1280-channel conv
    "mobilenetv2": FeatureStages("features", ("3", "6", "13", "18")),
    # VGG-16-BN in torchvision's `features` layout: the outputs of max-pools 2..5 (strides 4..32,
    # models.vgg.VGG.stage_ends[1:])
    "vgg16": FeatureStages("features", ("13", "23", "33", "43")),
}


def check_detection_backbone(name: str) -> FeatureStages:
    """The :class:`FeatureStages` of ``name``; one-line error when it cannot be a detection backbone."""
    usable = sorted(n for n in FEATURE_STAGES if n in BACKBONES)
    if name not in BACKBONES or name not in FEATURE_STAGES:
        raise ConfigError(f"model.name: {name!r} cannot be a detection backbone; choose one of {usable}")
    return FEATURE_STAGES[name]


def stage_channels(body: nn.Module, stage: str) -> ChannelDim:
    """The output channels of the child ``stage`` of ``body``: the channel dimension of the last
    BatchNorm up to and including it (a stage without one, e.g. VGG's max-pool, passes on the channels
    of the layers before it). Slimmable layers carry it as ``dim``; plain or private BN:
    ``num_features``, never slimmed."""
    norms = []
    for name, child in body.named_children():
        norms += [m for m in child.modules() if hasattr(m, "dim") or isinstance(m, nn.BatchNorm2d)]
        if name == stage:
            break
    if not norms:
        raise ConfigError(f"detection: no BatchNorm up to stage {stage!r} to read its channels from")
    last = norms[-1]
    return last.dim if hasattr(last, "dim") else ChannelDim(last.num_features, slim=False)


class SwitchableBackboneWithFPN(BackboneWithFPN):
    """torchvision's ``BackboneWithFPN`` over a switchable backbone.

    Input ``(B, 3, H, W)`` -> ``OrderedDict`` of FPN maps ``'0'..'{n-1}'`` and ``'pool'``, each with
    ``out_channels`` channels, at strides 4, 8, ... Runs in the configuration of ``state`` (the
    backbone's width and BN set); the FPN's lateral convs take the leading slice of their inputs.

    Attributes:
        state: the backbone's :class:`~resnet_switch.switch.SwitchState` (shared with the detector).
        spec: the backbone's :func:`~resnet_switch.models.create_model` arguments.
    """

    def __init__(self, net: SwitchableNet, stages: FeatureStages, out_channels: int = 256):
        body = net.net.get_submodule(stages.body) if stages.body else net.net
        children = dict(body.named_children())
        missing = [s for s in stages.stages if s not in children]
        if missing:
            raise ConfigError(f"detection: backbone {net.spec['name']} has no stage {missing[0]!r}; "
                             f"fix FEATURE_STAGES (children: {list(children)[:8]}...)")
        dims = [stage_channels(body, s) for s in stages.stages]
        return_layers = {s: str(i) for i, s in enumerate(stages.stages)}
        super().__init__(body, return_layers, [d.full for d in dims], out_channels)
        self.state: SwitchState = net.state
        self.spec = dict(net.spec)
        self.stage_dims = dims
        for block, dim in zip(self.fpn.inner_blocks, dims):
            block[0] = _lateral_conv(block[0], dim, self.state)

    def costs(self, config: SubnetConfig) -> tuple[int, int]:
        """``(madds, params)`` of the backbone body (FPN and heads excluded) at ``config``: the plain
        materialised body on one ``config.resolution`` square image (MutualNet's backbone FLOPs)."""
        return count_costs(SwitchableNet(self.body, self.state, self.spec), config)


def _lateral_conv(conv: nn.Conv2d, in_dim: ChannelDim, state: SwitchState) -> nn.Conv2d:
    """The FPN's 1x1 lateral conv taking the stage's active channels (same weights as ``conv``)."""
    if not in_dim.slim:
        return conv
    out_dim = ChannelDim(conv.out_channels, slim=False)
    slim = SlimmableConv2d(in_dim, out_dim, 1, bias=conv.bias is not None, state=state)
    slim.load_state_dict(conv.state_dict())
    return slim


def build_detection_backbone(name: str, sizes: Sequence[int], layers: str = "private_bn",
                             widths: Sequence[float] = (1.0,), layer_kwargs: dict | None = None,
                             out_channels: int = 256, pretrained: dict | None = None,
                             **backbone_kwargs) -> SwitchableBackboneWithFPN:
    """Our backbone ``name`` built with the ``layers`` factory for input ``sizes`` (highest first:
    one private BN set each with ``private_bn``) and ``widths``, under an FPN of ``out_channels``.

    ``pretrained``: a plain (torchvision) state dict of the classification backbone, loaded first
    (its class count is the row count of its last 2-D weight, the classifier; dropped afterwards).
    """
    stages = check_detection_backbone(name)
    backbone_kwargs = {**dict(stages.defaults), **backbone_kwargs}
    classes = [v.shape[0] for v in (pretrained or {}).values() if v.dim() == 2]
    net = create_model(name, sizes, layers=layers, widths=widths, num_classes=classes[-1] if classes else 1,
                       layer_kwargs=layer_kwargs, **backbone_kwargs)
    if pretrained is not None:
        load_plain_weights(net, pretrained)
    return SwitchableBackboneWithFPN(net, stages, out_channels)
