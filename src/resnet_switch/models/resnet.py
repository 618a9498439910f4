"""ResNet-18/50 (torchvision layout and state-dict keys) and the CIFAR-style ResNet-20.

With :class:`~resnet_switch.layers.factory.PlainLayers` ``resnet18``/``resnet50`` load
``torchvision.models.resnet18/50`` state dicts and give the same outputs (He et al. 2016, v1.5:
the stride sits on the 3x3 conv of a bottleneck). ``width_mult`` scales every stage's channels at
build time (``round(C * width_mult)``); a bottleneck's inner convs ask the factory for role ``mid``.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..layers.factory import PlainLayers
from .channels import check_width_mult
from .registry import BASE_WIDTH, SMALL_INPUT, WIDTH_MULT, register_backbone


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, layers: PlainLayers, in_ch: int, ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = layers.conv(in_ch, ch, 3, stride, 1)
        self.bn1 = layers.bn(ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = layers.conv(ch, ch, 3, 1, 1)
        self.bn2 = layers.bn(ch)
        self.downsample = _shortcut(layers, in_ch, ch, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(add_shortcut(out, x, self.downsample))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, layers: PlainLayers, in_ch: int, ch: int, stride: int = 1):
        super().__init__()
        out_ch = ch * self.expansion
        self.conv1 = layers.conv(in_ch, ch, 1, role="mid")
        self.bn1 = layers.bn(ch, role="mid")
        self.conv2 = layers.conv(ch, ch, 3, stride, 1, role="mid")
        self.bn2 = layers.bn(ch, role="mid")
        self.conv3 = layers.conv(ch, out_ch, 1)
        self.bn3 = layers.bn(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(layers, in_ch, out_ch, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(add_shortcut(out, x, self.downsample))


def add_shortcut(out: Tensor, x: Tensor, downsample: nn.Module | None) -> Tensor:
    """``out += shortcut(x)`` in place, the shortcut computed after the residual branch (as
    torchvision does: no extra block-sized tensor, and the branch's memory is reused)."""
    return out.add_(x if downsample is None else downsample(x))


def _shortcut(layers: PlainLayers, in_ch: int, out_ch: int, stride: int) -> nn.Module | None:
    if stride == 1 and in_ch == out_ch:
        return None
    return nn.Sequential(
        layers.conv(in_ch, out_ch, 1, stride, role="shortcut"), layers.bn(out_ch, role="shortcut")
    )


def add_stem(net: nn.Module, layers: PlainLayers, in_channels: int, stem_ch: int, small_input: bool) -> int:
    """Set ``net.conv1/bn1/relu/maxpool`` (torchvision's names): the 3x3/1 stem without max-pool when
    ``small_input`` (CIFAR style), else the ImageNet 7x7/2 conv + 3x3/2 max-pool. Returns ``stem_ch``."""
    if small_input:
        net.conv1 = layers.conv(in_channels, stem_ch, 3, 1, 1, role="stem")
    else:
        net.conv1 = layers.conv(in_channels, stem_ch, 7, 2, 3, role="stem")
    net.bn1 = layers.bn(stem_ch, role="stem")
    net.relu = nn.ReLU(inplace=True)
    net.maxpool = nn.Identity() if small_input else nn.MaxPool2d(3, 2, 1)
    return stem_ch


class ResNet(nn.Module):
    """ResNet with a configurable stem.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``; depths: blocks per stage; widths: stage channels
        (before expansion), multiplied by ``width_mult``. ``small_input``: 3x3 stride-1 stem without
        max-pool (CIFAR style); otherwise the ImageNet 7x7/2 stem + 3x3/2 max-pool. Input
        ``(B, in_channels, R, R)`` -> logits ``(B, num_classes)``.
    """

    def __init__(self, layers: PlainLayers, block: type, depths: list[int], widths: list[int],
                 num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
                 width_mult: float = 1.0, zero_init_residual: bool = False):
        super().__init__()
        width_mult = check_width_mult(width_mult)
        widths = [max(1, round(w * width_mult)) for w in widths]
        in_ch = add_stem(self, layers, in_channels, widths[0], small_input)
        stages = []
        for i, (depth, ch) in enumerate(zip(depths, widths)):
            blocks = []
            for j in range(depth):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(layers, in_ch, ch, stride))
                in_ch = ch * block.expansion
            stages.append(nn.Sequential(*blocks))
        # torchvision names the stages layer1..layer4
        for i, stage in enumerate(stages):
            self.add_module(f"layer{i + 1}", stage)
        self.num_stages = len(stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = layers.linear(in_ch, num_classes, role="head")
        init_resnet(self, zero_init_residual)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(self.avgpool(x).flatten(1))


def init_resnet(model: nn.Module, zero_init_residual: bool = False) -> None:
    """torchvision's init: Kaiming-normal (fan_out) convs, BN weight 1 / bias 0; with
    ``zero_init_residual`` the last BN of every residual branch starts at weight 0 (every private
    set of it), so each block starts as the identity (Goyal et al. 2017, torchvision's option)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for block in model.modules():
            last_bn = {BasicBlock: "bn2", Bottleneck: "bn3"}.get(type(block))
            if last_bn is not None:
                for m in getattr(block, last_bn).modules():
                    if isinstance(m, nn.BatchNorm2d):
                        nn.init.zeros_(m.weight)


RESNET_SETTINGS = {"width_mult": WIDTH_MULT, "small_input": SMALL_INPUT}


@register_backbone("resnet18", torchvision="resnet18", settings=RESNET_SETTINGS, tiny={"width_mult": 0.25})
def resnet18(layers: PlainLayers, **kwargs) -> ResNet:
    return ResNet(layers, BasicBlock, [2, 2, 2, 2], [64, 128, 256, 512], **kwargs)


@register_backbone("resnet50", torchvision="resnet50", settings=RESNET_SETTINGS, tiny={"width_mult": 0.125})
def resnet50(layers: PlainLayers, **kwargs) -> ResNet:
    return ResNet(layers, Bottleneck, [3, 4, 6, 3], [64, 128, 256, 512], **kwargs)


@register_backbone("resnet20", settings={**RESNET_SETTINGS, "base_width": BASE_WIDTH}, tiny={"base_width": 4})
def resnet20(layers: PlainLayers, base_width: int = 16, **kwargs) -> ResNet:
    """CIFAR ResNet-20 (3 stages x 3 basic blocks, 16/32/64 channels, 1x1 projection shortcuts)."""
    kwargs.setdefault("small_input", True)
    return ResNet(layers, BasicBlock, [3, 3, 3], [base_width, 2 * base_width, 4 * base_width], **kwargs)
