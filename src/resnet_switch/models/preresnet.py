"""Pre-activation ResNets in the layout LQ-Nets (and RS-Net's quantized 2/2 runs) use.

He et al. 2016 (identity mappings) as the official quantized RS-Net code arranges it: the stem
(conv-BN-ReLU, max-pool) feeds stages of basic blocks; inside a stage, block ``i > 0`` keeps its input
as the shortcut and runs ``BN-ReLU -> conv -> BN-ReLU -> conv -> BN`` on the branch; block 0 takes
its input as it is (the stem's or the previous stage's BN-ReLU output), with a projection shortcut
(1x1 conv + BN) when the shape changes; every stage ends with BN-ReLU. With ``quant=lq`` each
non-stem conv quantizes its own input (:class:`~resnet_switch.layers.quant.LQConv2d`), which puts the
activation quantizers where the official network has them (after each BN-ReLU that feeds a conv).
"""

from __future__ import annotations

from torch import Tensor, nn

from ..layers.factory import PlainLayers
from .registry import BASE_WIDTH, SMALL_INPUT, register_backbone
from .resnet import ResNet, _shortcut, add_shortcut, add_stem, init_resnet


class BNReLU(nn.Module):
    def __init__(self, layers: PlainLayers, channels: int):
        super().__init__()
        self.bn = layers.bn(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(x))


class PreActBasicBlock(nn.Module):
    """``preact``: run BN-ReLU on the branch's input (blocks after the first of a stage)."""

    def __init__(self, layers: PlainLayers, in_ch: int, ch: int, stride: int = 1, preact: bool = True):
        super().__init__()
        self.preact = BNReLU(layers, in_ch) if preact else None
        self.conv1 = layers.conv(in_ch, ch, 3, stride, 1)
        self.bn1 = layers.bn(ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = layers.conv(ch, ch, 3, 1, 1)
        self.bn2 = layers.bn(ch)
        self.downsample = _shortcut(layers, in_ch, ch, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = x if self.preact is None else self.preact(x)
        out = self.relu(self.bn1(self.conv1(out)))
        out = self.bn2(self.conv2(out))
        return add_shortcut(out, x, self.downsample)


class PreActResNet(nn.Module):
    """Input ``(B, in_channels, R, R)`` -> logits ``(B, num_classes)``. Stage ``i`` is ``layer{i+1}``:
    its blocks, then its closing BN-ReLU (the last entry of the ``nn.Sequential``).

    ``small_input``: 3x3 stride-1 stem without max-pool (CIFAR style); otherwise 7x7/2 + 3x3/2 max-pool.
    """

    def __init__(self, layers: PlainLayers, depths: list[int], widths: list[int], num_classes: int = 1000,
                 in_channels: int = 3, small_input: bool = False):
        super().__init__()
        in_ch = add_stem(self, layers, in_channels, widths[0], small_input)
        self.num_stages = len(depths)
        for i, (depth, ch) in enumerate(zip(depths, widths)):
            blocks: list[nn.Module] = []
            for j in range(depth):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(PreActBasicBlock(layers, in_ch, ch, stride, preact=j > 0))
                in_ch = ch
            blocks.append(BNReLU(layers, in_ch))
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = layers.linear(in_ch, num_classes, role="head")
        init_resnet(self)

    forward = ResNet.forward  # stem, layer1..layerN, pool, fc: the same order as the post-activation net


@register_backbone("preresnet18", settings={"small_input": SMALL_INPUT})
def preresnet18(layers: PlainLayers, **kwargs) -> PreActResNet:
    return PreActResNet(layers, [2, 2, 2, 2], [64, 128, 256, 512], **kwargs)


@register_backbone("preresnet20", settings={"small_input": SMALL_INPUT, "base_width": BASE_WIDTH},
                   tiny={"base_width": 4})
def preresnet20(layers: PlainLayers, base_width: int = 16, **kwargs) -> PreActResNet:
    """CIFAR-style pre-activation ResNet-20 (3 stages x 3 blocks, 16/32/64 channels)."""
    kwargs.setdefault("small_input", True)
    return PreActResNet(layers, [3, 3, 3], [base_width, 2 * base_width, 4 * base_width], **kwargs)
