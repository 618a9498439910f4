"""VGG-16 with BatchNorm (Simonyan & Zisserman 2014, config D), torchvision layout and keys.

With plain layers ``vgg16`` loads ``torchvision.models.vgg16_bn`` state dicts and gives the same
outputs: ``features`` (13 x [conv3x3 (bias) -> BN -> ReLU] in 5 stages, each closed by a 2x2
max-pool), ``avgpool`` (adaptive, 7x7), ``classifier`` (FC 25088 -> 4096 -> 4096 -> classes, ReLU and
dropout between). MutualNet (sec. 4.3, A.2) uses it as the detection backbone.

Slimmable: every hidden dimension slims with the width (US-Net's rule), the 4096-unit FCs too;
only the image channels (first conv's input) and the classes (last FC's output) are fixed. The first
FC reads the flattened 512x7x7 map, so it slims by whole channels (49 features each).

Feature stages for a detector (FPN): ``features[: stage_ends[k] + 1]`` ends stage ``k`` at stride
``2**(k+1)`` with ``stage_channels[k]`` channels (at width 1.0); the indices are those of
torchvision's ``vgg16_bn().features``, so ``IntermediateLayerGetter(vgg.features,
{str(i): name for i in vgg.stage_ends})`` returns them.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..errors import ConfigError
from ..layers.factory import PlainLayers
from ..rules import Int
from .registry import DROPOUT, register_backbone

# channels of the 3x3 convs of each stage (VGG config "D")
VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
POOLED_SIZE = 7  # the classifier sees a 7x7 map whatever the input size (adaptive average pool)
MIN_RESOLUTION = 32  # five 2x2 max-pools: a smaller input vanishes before the classifier


class VGG(nn.Module):
    """Input ``(B, in_channels, R, R)`` with ``R >= 32`` (five 2x2 pools) -> logits ``(B, num_classes)``.

    Attributes:
        stage_ends: index in ``features`` of each stage's closing max-pool.
        stage_channels: output channels of each stage at width 1.0.
    """

    def __init__(self, layers: PlainLayers, stages=VGG16_STAGES, num_classes: int = 1000, in_channels: int = 3,
                 hidden: int = 4096, dropout: float = 0.5):
        super().__init__()
        features: list[nn.Module] = []
        stage_ends: list[int] = []
        in_ch, role = in_channels, "stem"
        for stage in stages:
            for ch in stage:
                features += [layers.conv(in_ch, ch, 3, 1, 1, bias=True, role=role),
                             layers.bn(ch), nn.ReLU(inplace=True)]
                in_ch, role = ch, "body"
            stage_ends.append(len(features))
            features.append(nn.MaxPool2d(kernel_size=2, stride=2))
        self.features = nn.Sequential(*features)
        self.stage_ends = tuple(stage_ends)
        self.stage_channels = tuple(stage[-1] for stage in stages)
        self.avgpool = nn.AdaptiveAvgPool2d((POOLED_SIZE, POOLED_SIZE))
        positions = POOLED_SIZE * POOLED_SIZE
        self.classifier = nn.Sequential(
            layers.linear(in_ch * positions, hidden, role="body", in_positions=positions),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            layers.linear(hidden, hidden, role="body"),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            layers.linear(hidden, num_classes, role="head"),
        )
        init_vgg(self)

    def forward(self, x: Tensor) -> Tensor:
        if min(x.shape[-2:]) < MIN_RESOLUTION:
            raise ConfigError(f"data.resolutions: VGG-16 needs inputs of at least {MIN_RESOLUTION} px (five 2x2 "
                             f"max-pools), got {tuple(x.shape[-2:])}; use resolutions >= {MIN_RESOLUTION}, "
                             f"e.g. data.resolutions=[64,48,32]")
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def init_vgg(model: nn.Module) -> None:
    """torchvision's VGG init: Kaiming-normal (fan_out, ReLU) convs with zero bias, BN 1/0,
    N(0, 0.01) linear weights with zero bias."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


@register_backbone("vgg16", torchvision="vgg16_bn", min_resolution=MIN_RESOLUTION,
                   settings={"hidden": Int(1), "dropout": DROPOUT}, tiny={"hidden": 16})
def vgg16(layers: PlainLayers, **kwargs) -> VGG:
    """VGG-16-BN (``torchvision.models.vgg16_bn``'s architecture and keys with plain layers)."""
    return VGG(layers, VGG16_STAGES, **kwargs)
