"""MobileNetV2 (torchvision layout and keys) and MobileNetV1 (Howard et al. 2017).

With plain layers ``mobilenetv2`` loads ``torchvision.models.mobilenet_v2`` state dicts and gives
the same outputs. Both take ``width_mult`` (a build-time multiplier; run-time slimming is the
slimmable layer factory's job). MobileNetV1 takes ``act``: ``relu`` (Howard et al.) or ``relu6``
(the US-Net / MutualNet code).
"""

from __future__ import annotations

from torch import Tensor, nn

from ..errors import ConfigError
from ..layers.factory import PlainLayers
from ..rules import Choice
from .channels import check_width_mult, make_divisible
from .registry import DROPOUT, SMALL_INPUT, WIDTH_MULT, register_backbone

ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6}


def conv_bn_act(layers: PlainLayers, in_ch: int, out_ch: int, kernel: int, stride: int = 1,
                groups: int = 1, act: type = nn.ReLU6, role: str = "body") -> nn.Sequential:
    """conv -> BN -> activation as ``Sequential`` (keys ``.0``, ``.1`` like torchvision)."""
    return nn.Sequential(
        layers.conv(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, role=role),
        layers.bn(out_ch, role=role),
        act(inplace=True),
    )


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand (if t > 1) -> 3x3 depthwise -> 1x1 linear projection."""

    def __init__(self, layers: PlainLayers, in_ch: int, out_ch: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = int(round(in_ch * expand_ratio))
        self.use_res_connect = stride == 1 and in_ch == out_ch
        body: list[nn.Module] = []
        if expand_ratio != 1:
            body.append(conv_bn_act(layers, in_ch, hidden, 1, role="expand"))  # hidden = t x input
        body += [
            conv_bn_act(layers, hidden, hidden, 3, stride, groups=hidden),
            layers.conv(hidden, out_ch, 1),
            layers.bn(out_ch),
        ]
        self.conv = nn.Sequential(*body)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


# (expansion t, channels c, repeats n, first stride s) -- Sandler et al. 2018, Table 2
MOBILENETV2_SETTINGS = [
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
]


def strides_for(strides: list[int], small_input: bool) -> list[int]:
    """The strides after the stem; ``small_input`` keeps the first stride-2 one at 1 too, so with the
    stride-1 stem the net has output stride 8 (4x4 maps at 32 px: the CIFAR MobileNets; at output
    stride 16 MobileNetV1/V2 stayed near chance on the embedded data, experiments/method_model)."""
    if small_input and 2 in strides:
        strides = list(strides)
        strides[strides.index(2)] = 1
    return strides


class MobileNetV2(nn.Module):
    """Input ``(B, in_channels, R, R)`` -> logits ``(B, num_classes)``.

    ``small_input`` (32-px images): the first conv and the first 24-channel block at stride 1, output
    stride 8 (4x4 maps at 32 px) as the usual CIFAR MobileNetV2; otherwise output stride 32 as on ImageNet.
    The modules and the state dict keys are the same either way.
    """

    def __init__(self, layers: PlainLayers, num_classes: int = 1000, in_channels: int = 3,
                 width_mult: float = 1.0, dropout: float = 0.2, small_input: bool = False):
        super().__init__()
        width_mult = check_width_mult(width_mult)
        in_ch = make_divisible(32 * width_mult)
        last_ch = make_divisible(1280 * max(1.0, width_mult))
        features = [conv_bn_act(layers, in_channels, in_ch, 3, 1 if small_input else 2, role="stem")]
        stage_strides = strides_for([s for *_, s in MOBILENETV2_SETTINGS], small_input)
        for (t, c, n, _), s in zip(MOBILENETV2_SETTINGS, stage_strides):
            out_ch = make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(layers, in_ch, out_ch, s if i == 0 else 1, t))
                in_ch = out_ch
        features.append(conv_bn_act(layers, in_ch, last_ch, 1, role="head"))  # 1280: never slimmed
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(dropout), layers.linear(last_ch, num_classes, role="head"))
        init_mobilenet(self)

    def forward(self, x: Tensor) -> Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(x.flatten(1))


# (channels, stride) of the 13 depthwise-separable blocks -- Howard et al. 2017, Table 1
MOBILENETV1_SETTINGS = [
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
]


class MobileNetV1(nn.Module):
    """MobileNetV1: 3x3 stem, 13 depthwise-separable blocks, global pool, FC; ``(B, in_channels, R, R)`` -> logits.

    ``small_input`` (32-px images): the stem and the first 128-channel block at stride 1, output stride 8
    (4x4 maps at 32 px), as MobileNetV2's; otherwise output stride 32 as on ImageNet. Same state dict keys.
    ``act``: the activation after every BN, ``relu`` (the paper) or ``relu6`` (US-Net, MutualNet).
    """

    def __init__(self, layers: PlainLayers, num_classes: int = 1000, in_channels: int = 3,
                 width_mult: float = 1.0, small_input: bool = False, act: str = "relu"):
        super().__init__()
        if act not in ACTIVATIONS:
            raise ConfigError(f"model.act: unknown {act!r}; choose one of {sorted(ACTIVATIONS)}")
        act_layer = ACTIVATIONS[act]
        width_mult = check_width_mult(width_mult)
        in_ch = make_divisible(32 * width_mult)
        features = [conv_bn_act(layers, in_channels, in_ch, 3, 1 if small_input else 2, act=act_layer, role="stem")]
        block_strides = strides_for([s for _, s in MOBILENETV1_SETTINGS], small_input)
        for (c, _), s in zip(MOBILENETV1_SETTINGS, block_strides):
            out_ch = make_divisible(c * width_mult)
            features.append(nn.Sequential(
                conv_bn_act(layers, in_ch, in_ch, 3, s, groups=in_ch, act=act_layer),
                conv_bn_act(layers, in_ch, out_ch, 1, act=act_layer),
            ))
            in_ch = out_ch
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(layers.linear(in_ch, num_classes, role="head"))
        init_mobilenet(self)

    def forward(self, x: Tensor) -> Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(x.flatten(1))


def init_mobilenet(model: nn.Module) -> None:
    """torchvision's MobileNetV2 init: Kaiming fan_out convs, BN 1/0, N(0, 0.01) linear."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


@register_backbone("mobilenetv2", torchvision="mobilenet_v2",
                   settings={"width_mult": WIDTH_MULT, "dropout": DROPOUT, "small_input": SMALL_INPUT},
                   tiny={"width_mult": 0.25})
def mobilenetv2(layers: PlainLayers, **kwargs) -> MobileNetV2:
    return MobileNetV2(layers, **kwargs)


@register_backbone("mobilenetv1", settings={"width_mult": WIDTH_MULT, "small_input": SMALL_INPUT,
                                            "act": Choice(tuple(sorted(ACTIVATIONS)))}, tiny={"width_mult": 0.25})
def mobilenetv1(layers: PlainLayers, **kwargs) -> MobileNetV1:
    return MobileNetV1(layers, **kwargs)
