"""torchvision's Mask R-CNN / Faster R-CNN around a switchable backbone.

The backbone (width, BN set) and the input size switch together through one
:class:`~resnet_switch.switch.SwitchState`; the FPN neck, the RPN and the box / mask heads are single
modules shared by every configuration (MutualNet sec. 4.3). ``SubnetConfig(resolution=size,
width=w)``: images resized to shorter side ``size``, backbone at width ``w``.

    det = build_detector("resnet18", sizes=[128, 96, 64], num_classes=4)
    with det.switch(SubnetConfig(96)):
        losses = det(images, targets)          # train mode: dict of the five torchvision losses
    det.eval(); det.set_active(SubnetConfig(64)); detections = det(images)
    plain = det.materialize(SubnetConfig(64))  # a plain torchvision MaskRCNN for that configuration
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from ..errors import ConfigError
from ..models.switchable import SwitchableNet
from ..registry import Registry
from ..switch import SubnetConfig, check_resolutions
from .backbone import build_detection_backbone
from .transform import SwitchableTransform

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SwitchableDetector(SwitchableNet):
    """A torchvision two-stage detector whose backbone and input size switch.

    ``det(images, targets)`` with ``images`` a list of float ``(3, H, W)`` tensors in [0, 1] (any
    sizes) and torchvision targets (``boxes`` xyxy, ``labels`` in 1..num_classes-1, ``masks``):
    the loss dict in train mode, the detections (in each image's own pixel coordinates) in eval
    mode. ``net`` is the torchvision model; ``spec`` rebuilds it with :func:`build_detector`.
    """

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        return self.net(images, targets)

    @property
    def backbone(self):
        return self.net.backbone

    def backbone_costs(self, config: SubnetConfig) -> tuple[int, int]:
        """``(madds, params)`` of the backbone body at ``config`` (square ``config.resolution`` image)."""
        return self.net.backbone.costs(config)


def anchor_sizes(anchor_base: int, levels: int) -> tuple[tuple[int], ...]:
    """One anchor size per FPN level, doubling with the level's stride: ``anchor_base * 2**i``
    (torchvision's Mask R-CNN: 32, 64, 128, 256, 512)."""
    if isinstance(anchor_base, bool) or not isinstance(anchor_base, int) or anchor_base <= 0:
        raise ConfigError(f"detector.anchor_base: a positive integer (px of the finest level's anchor), got {anchor_base!r}")
    return tuple((anchor_base * 2**i,) for i in range(levels))


# detector kind -> ``(body, levels, spec, common) -> GeneralizedRCNN``: ``body`` the backbone + FPN,
# ``levels`` its FPN level names, ``spec`` the detector's spec, ``common`` the arguments every kind takes
DETECTORS: Registry[Callable[..., GeneralizedRCNN]] = Registry("detector", field="detector")


def register_detector(name: str, *, masks: bool) -> Callable:
    """Decorator registering a detector kind; ``masks``: whether it predicts instance masks (the
    ``detector.masks`` setting that selects it)."""
    return DETECTORS.register(name, masks=masks)


def list_detectors() -> list[str]:
    """Registered detector kinds, sorted."""
    return DETECTORS.list()


def detector_kind(masks: bool) -> str:
    """The registered kind that ``detector.masks`` selects (``true``: mask_rcnn, ``false``: faster_rcnn)."""
    return next(name for name in DETECTORS.list() if DETECTORS.info(name)["masks"] is bool(masks))


@register_detector("mask_rcnn", masks=True)
def mask_rcnn(body: nn.Module, levels: list[str], spec: dict[str, Any], common: dict[str, Any]) -> MaskRCNN:
    """Mask R-CNN: Faster R-CNN + a mask head of ``spec["mask_head_channels"]`` convs on 14x14 RoIs."""
    mask_channels = spec["mask_head_channels"]
    if not mask_channels:
        raise ConfigError("detector.mask_head_channels: give at least one conv width, e.g. [256,256,256,256]")
    return MaskRCNN(body, mask_roi_pool=MultiScaleRoIAlign(levels, 14, 2),
                    mask_head=MaskRCNNHeads(spec["fpn_channels"], mask_channels, 1),
                    mask_predictor=MaskRCNNPredictor(mask_channels[-1], mask_channels[-1], spec["num_classes"]),
                    **common)


@register_detector("faster_rcnn", masks=False)
def faster_rcnn(body: nn.Module, levels: list[str], spec: dict[str, Any], common: dict[str, Any]) -> FasterRCNN:
    """Faster R-CNN (boxes only)."""
    return FasterRCNN(body, **common)


def build_detector(backbone: str, sizes: Sequence[int], num_classes: int, *, layers: str = "private_bn",
                   widths: Sequence[float] = (1.0,), layer_kwargs: dict | None = None,
                   backbone_kwargs: dict | None = None, masks: bool = True, fpn_channels: int = 256,
                   anchor_base: int = 32,
                   aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0), max_size: int | None = None,
                   box_head_dim: int = 1024, mask_head_channels: Sequence[int] = (256, 256, 256, 256),
                   image_mean: Sequence[float] = IMAGENET_MEAN, image_std: Sequence[float] = IMAGENET_STD,
                   detector_kwargs: dict | None = None, pretrained_backbone: dict | None = None) -> SwitchableDetector:
    """Mask R-CNN (``masks=True``) or Faster R-CNN (:data:`DETECTORS`) with an FPN over our switchable
    ``backbone``.

    Args:
        sizes: input sizes (shorter image side), highest first; one private BN set each with
            ``layers="private_bn"``.
        num_classes: object classes + 1 (index 0 is the background, torchvision's convention).
        layers, widths, layer_kwargs: the backbone's layer factory (``private_bn`` for RS-Net style,
            ``slimmable`` for US-Net / MutualNet style) and its switchable widths.
        anchor_base: anchor size (px of the resized image) at the finest FPN level, doubled at
            each coarser one (the ``pool`` level included).
        max_size: cap of the longer image side (default ``ceil(5/3 * sizes[0])``, MutualNet's 1000/600).
        box_head_dim, mask_head_channels: widths of torchvision's box MLP and mask conv head.
        detector_kwargs: further ``MaskRCNN``/``FasterRCNN`` arguments (``rpn_*``, ``box_*``).
        pretrained_backbone: a plain (torchvision) classification state dict for the backbone.
    """
    sizes = check_resolutions(sizes, "data.resolutions")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes: need >= 2 (background + at least one class), got {num_classes!r}")
    spec = dict(backbone=backbone, sizes=list(sizes), num_classes=num_classes, layers=layers,
                widths=[float(w) for w in widths], layer_kwargs=dict(layer_kwargs or {}),
                backbone_kwargs=dict(backbone_kwargs or {}), masks=bool(masks), fpn_channels=int(fpn_channels),
                anchor_base=anchor_base, aspect_ratios=[float(a) for a in aspect_ratios],
                max_size=int(max_size or -(-5 * sizes[0] // 3)), box_head_dim=int(box_head_dim),
                mask_head_channels=list(mask_head_channels), image_mean=list(image_mean),
                image_std=list(image_std), detector_kwargs=dict(detector_kwargs or {}))
    body = build_detection_backbone(backbone, sizes, layers, widths, layer_kwargs, fpn_channels,
                                    pretrained_backbone, **spec["backbone_kwargs"])
    # as built: ``small_input: auto`` decided (a rebuilt detector does not decide again)
    spec["backbone_kwargs"] = {k: body.spec[k] for k in spec["backbone_kwargs"] if k in body.spec}
    levels = [str(i) for i in range(len(body.stage_dims))]
    anchors = AnchorGenerator(anchor_sizes(anchor_base, len(levels) + 1),
                              (tuple(spec["aspect_ratios"]),) * (len(levels) + 1))
    common: dict[str, Any] = dict(
        num_classes=None, min_size=sizes[0], max_size=spec["max_size"], rpn_anchor_generator=anchors,
        box_roi_pool=MultiScaleRoIAlign(levels, 7, 2),
        box_head=TwoMLPHead(fpn_channels * 7 * 7, spec["box_head_dim"]),
        box_predictor=FastRCNNPredictor(spec["box_head_dim"], num_classes),
        image_mean=spec["image_mean"], image_std=spec["image_std"], **spec["detector_kwargs"],
    )
    det = DETECTORS.get(detector_kind(spec["masks"]))(body, levels, spec, common)
    det.transform = SwitchableTransform(body.state, spec["max_size"], spec["image_mean"], spec["image_std"])
    return SwitchableDetector(det, body.state, spec)



def load_detector(path) -> tuple[SwitchableDetector, dict[str, Any]]:
    """A detector trained by ``resnet_switch.train task=detection``, rebuilt from its checkpoint
    alone: ``(detector in eval mode, the checkpoint's resnet_switch meta)``."""
    from ..training.checkpointing import CHECKPOINT_KEY, check_task, load_checkpoint

    ckpt = load_checkpoint(path)
    meta = ckpt[CHECKPOINT_KEY]
    check_task(meta, "detection")
    detector = build_detector(**meta["net"])
    detector.load_state_dict({k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")})
    return detector.eval(), meta
