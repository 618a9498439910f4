"""Switchable backbones inside torchvision's Mask R-CNN: equal to torchvision at full width, one
shared neck and head for every configuration, the input size part of the switch."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN, resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from resnet_switch.detection.backbone import FEATURE_STAGES, SwitchableBackboneWithFPN, build_detection_backbone
from resnet_switch.detection.model import build_detector
from resnet_switch.evaluation.costs import count_costs
from resnet_switch.switch import SubnetConfig

SIZES = [96, 64]
FAST = dict(rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50, box_detections_per_img=20, box_score_thresh=0.0)
HEADS = dict(box_head_dim=64, mask_head_channels=[16])  # small heads: the tests are about the backbone


def randomise_bn(module: nn.Module) -> None:
    """Distinct statistics and affine parameters in every BN (and every private set)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)


def torchvision_maskrcnn(name: str, det) -> nn.Module:
    """torchvision's own Mask R-CNN + FPN for backbone ``name`` (plain BatchNorm2d), sized like ``det``."""
    fpn, classes = det.spec["fpn_channels"], det.spec["num_classes"]
    if name.startswith("resnet"):
        backbone = resnet_fpn_backbone(backbone_name=name, weights=None, norm_layer=nn.BatchNorm2d, trainable_layers=5)
    else:
        features = torchvision.models.mobilenet_v2().features
        stages = FEATURE_STAGES["mobilenetv2"].stages
        backbone = BackboneWithFPN(features, {s: str(i) for i, s in enumerate(stages)}, [24, 32, 96, 1280], fpn)
    return MaskRCNN(backbone, num_classes=None, min_size=SIZES[-1], max_size=det.spec["max_size"],
                    box_head=TwoMLPHead(fpn * 7 * 7, 64), box_predictor=FastRCNNPredictor(64, classes),
                    mask_head=MaskRCNNHeads(fpn, [16], 1), mask_predictor=MaskRCNNPredictor(16, 16, classes), **FAST)


@pytest.mark.parametrize("name,layers", [("resnet18", "private_bn"), ("resnet18", "slimmable"),
                                         ("mobilenetv2", "slimmable")])
def test_switchable_maskrcnn_equals_torchvision_at_full_width(name, layers):
    """Ours at (64 px, width 1) with the weights loaded into torchvision's Mask R-CNN (strict: same
    keys, so the layout is torchvision's) gives the same boxes, scores, labels and masks."""
    widths = [1.0, 0.5] if layers == "slimmable" else [1.0]
    fpn = 256 if name.startswith("resnet") else 32  # resnet_fpn_backbone's FPN is 256 wide
    det = build_detector(name, SIZES, num_classes=3, layers=layers, widths=widths, fpn_channels=fpn,
                         detector_kwargs=FAST, **HEADS)
    randomise_bn(det)
    det.eval()
    config = SubnetConfig(SIZES[-1])  # the second BN set of private_bn: the set choice matters
    reference = torchvision_maskrcnn(name, det).eval()
    reference.load_state_dict(det.materialize(config).state_dict(), strict=True)
    images = [torch.rand(3, 80, 100), torch.rand(3, 64, 72)]
    with torch.no_grad(), det.switch(config):
        ours = det(images)
    with torch.no_grad():
        theirs = reference(images)
    for a, b in zip(ours, theirs):
        assert len(a["boxes"]) == len(b["boxes"]) > 0
        for key in ("boxes", "scores", "labels", "masks"):
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)  # float32 rounding only


def test_private_bn_sets_differ_by_size():
    """RS-Net style: each size runs its own BN set (outputs differ between sets on the same input),
    and the materialised configuration reproduces its own set exactly."""
    det = build_detector("resnet18", SIZES, num_classes=3, layers="private_bn", fpn_channels=16, **HEADS).eval()
    randomise_bn(det)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = {}
        for size in SIZES:
            with det.switch(SubnetConfig(size)):
                out[size] = det.backbone.body(x)["3"]
        plain = det.materialize(SubnetConfig(64)).backbone.body(x)["3"]
    assert (out[96] - out[64]).abs().max() > 1e-2
    torch.testing.assert_close(plain, out[64])


@pytest.mark.parametrize("layers,widths", [("private_bn", [1.0]), ("slimmable", [1.0, 0.25])])
def test_neck_and_heads_are_the_same_objects_for_every_configuration(layers, widths):
    """Every configuration's loss reaches the same FPN/RPN/ROI-head parameter objects (all of
    them); the backbone's BN set (private_bn) or channel slice (slimmable) is what changes."""
    det = build_detector("resnet20", SIZES, num_classes=3, layers=layers, widths=widths, fpn_channels=16,
                         anchor_base=8, **HEADS)
    det.train()
    images = [torch.rand(3, 64, 64)]
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 10:40, 12:44] = 1
    targets = [{"boxes": torch.tensor([[12.0, 10.0, 44.0, 40.0]]), "labels": torch.tensor([1]), "masks": masks}]
    # the parts every configuration shares: FPN neck, RPN, box and mask heads
    shared = {"fpn": det.net.backbone.fpn, "rpn": det.net.rpn, "roi_heads": det.net.roi_heads}
    seen = []
    for config in [SubnetConfig(s, w) for s in SIZES for w in widths]:
        det.zero_grad(set_to_none=True)
        with det.switch(config):
            sum(det(images, targets).values()).backward()
        used = {id(p) for module in shared.values() for p in module.parameters() if p.grad is not None}
        seen.append(used)
        if layers == "private_bn":
            bn = det.backbone.body.layer1[0].bn1
            assert [s.weight.grad is not None for s in bn.sets] == [s == config.resolution for s in SIZES]
        else:
            lateral = det.backbone.fpn.inner_blocks[2][0]  # ResNet-20's 64-channel last stage
            active = 64 if config.width == 1.0 else 16
            assert lateral.weight.grad[:, :active].abs().sum() > 0
            assert lateral.weight.grad[:, active:].abs().sum() == 0
    every = {id(p) for module in shared.values() for p in module.parameters()}
    assert all(used == every for used in seen)
    assert len({id(m) for m in shared.values()}) == 3


def test_input_size_follows_the_switch_and_cannot_be_set_apart():
    det = build_detector("resnet20", SIZES, num_classes=3, fpn_channels=16, **HEADS)
    with det.switch(SubnetConfig(64)):
        batch, _ = det.net.transform([torch.rand(3, 120, 160)])
        assert batch.image_sizes == [(64, 85)]
    assert det.net.transform.min_size == (96,)
    with pytest.raises(AttributeError, match="switch the detector"):
        det.net.transform.min_size = (32,)


def test_materialized_slim_configuration_is_plain_torchvision_and_equal():
    det = build_detector("mobilenetv2", SIZES, num_classes=3, layers="slimmable", widths=[1.0, 0.5],
                         fpn_channels=16, detector_kwargs=FAST, **HEADS).eval()
    randomise_bn(det)
    config = SubnetConfig(64, 0.5)
    plain = det.materialize(config)
    assert not any(hasattr(m, "to_plain") for m in plain.modules())  # no switchable layer left
    assert type(plain.transform) is GeneralizedRCNNTransform and plain.transform.min_size == (64,)
    assert plain.backbone.fpn.inner_blocks[3][0].in_channels == 1280  # MobileNetV2's head conv: never slimmed
    assert plain.backbone.fpn.inner_blocks[0][0].in_channels == 16  # 24 channels at width 0.5
    images = [torch.rand(3, 70, 64)]
    with torch.no_grad(), det.switch(config):
        ours = det(images)[0]
    with torch.no_grad():
        theirs = plain(images)[0]
    torch.testing.assert_close(ours["boxes"], theirs["boxes"])
    torch.testing.assert_close(ours["masks"], theirs["masks"])


def test_backbone_madds_are_torchvision_resnet18_without_the_classifier():
    det = build_detector("resnet18", SIZES, num_classes=3, layers="slimmable", widths=[1.0, 0.5], fpn_channels=16,
                         **HEADS)
    madds, params = det.backbone_costs(SubnetConfig(64))
    tv_madds, tv_params = count_costs(torchvision.models.resnet18(), SubnetConfig(64))
    assert madds == tv_madds - 512 * 1000  # the fc layer's multiply-adds
    assert params == tv_params - 512 * 1000 - 1000
    assert det.backbone_costs(SubnetConfig(64, 0.5))[0] < madds / 3  # ~width^2


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenetv2", "resnet20", "vgg16"])
def test_feature_stages_have_strides_4_to_32(name):
    """Each detection backbone feeds the FPN maps at strides 4, 8, 16, 32 (ResNet-20: 4-16)."""
    backbone = build_detection_backbone(name, [64], out_channels=8)
    assert isinstance(backbone, SwitchableBackboneWithFPN)
    maps = backbone(torch.rand(1, 3, 64, 64))
    levels = len(FEATURE_STAGES[name].stages)
    assert [maps[str(i)].shape[-1] for i in range(levels)] == [16, 8, 4, 2][:levels]
    assert all(m.shape[1] == 8 for m in maps.values())


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv2", "vgg16"])
def test_plain_backbone_with_fpn_equals_torchvision_and_loads_its_classifier_weights(name):
    """Our backbone (plain layers) warm-started from a torchvision classifier's state dict
    (``model.pretrained``) gives the same FPN maps as that classifier cut at the same stages, with
    the same state-dict keys (``vgg16``: torchvision's vgg16_bn)."""
    classifier = getattr(torchvision.models, {"vgg16": "vgg16_bn", "mobilenetv2": "mobilenet_v2"}.get(name, name))()
    randomise_bn(classifier)
    ours = build_detection_backbone(name, [64], layers="plain", out_channels=8, pretrained=classifier.state_dict())
    stages = FEATURE_STAGES[name]
    body = classifier.get_submodule(stages.body) if stages.body else classifier
    reference = BackboneWithFPN(body, {s: str(i) for i, s in enumerate(stages.stages)},
                                [d.full for d in ours.stage_dims], 8)
    assert set(reference.state_dict()) == set(ours.state_dict())  # torchvision's layout and keys
    reference.fpn.load_state_dict(ours.fpn.state_dict())  # the body keeps torchvision's own weights
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = ours.eval()(x), reference.eval()(x)
    for key in b:
        torch.testing.assert_close(a[key], b[key])


def test_unknown_detection_backbone_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"model.name: 'mobilenetv1' cannot be a detection backbone; choose one of"):
        build_detector("mobilenetv1", SIZES, num_classes=3, fpn_channels=16, **HEADS)
    with pytest.raises(ValueError, match=r"detector.anchor_base: a positive integer"):
        build_detector("resnet20", SIZES, num_classes=3, anchor_base=0, fpn_channels=16, **HEADS)
