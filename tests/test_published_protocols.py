"""The paper protocols of the source repositories as data options, RS-Net's ensemble accuracy, and
the architecture options published weights need (checked against hand computations)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from resnet_switch.data import MultiResDataModule
from resnet_switch.evaluation.accuracy import evaluate_configs
from resnet_switch.layers.scale_conv import scale_encoding, tabulated_encoding
from resnet_switch.layers.slimmable import ChannelDim, slim_channels
from resnet_switch.models import create_model
from resnet_switch.switch import SubnetConfig
from resnet_switch.training.checkpointing import (
    CheckpointError,
    check_compatible,
    load_checkpoint,
    rebuild_from_checkpoint,
)

from .ckpt_factory import write_checkpoint


def pil_image(w: int = 300, h: int = 200, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def official_center(image: Image.Image, r: int) -> np.ndarray:
    """RS-Nets / SAN ``Resize(int(r / .875)) + CenterCrop(r)`` on a PIL image, by hand."""
    w, h = image.size
    short = int(r / 0.875)
    size = (short, int(short * h / w)) if w < h else (int(short * w / h), short)
    resized = image.resize(size, Image.BILINEAR)
    top, left = int(round((size[1] - r) / 2.0)), int(round((size[0] - r) / 2.0))
    return np.asarray(resized.crop((left, top, left + r, top + r))).transpose(2, 0, 1)


def datamodule(**kwargs) -> MultiResDataModule:
    return MultiResDataModule(name="synthetic", train_resolutions=(224, 160), **kwargs)


@pytest.mark.parametrize("protocol", ["rsnets", "san", "slimmable"])
def test_per_resolution_protocols_resize_each_resolution_from_the_image(protocol):
    image = pil_image()
    out = datamodule(protocol=protocol).val_transform()(image)
    assert [tuple(x.shape) for x in out] == [(3, 224, 224), (3, 160, 160)]
    for x, r in zip(out, (224, 160)):
        np.testing.assert_array_equal(x.numpy(), official_center(image, r))


def test_mutualnet_protocol_crops_once_and_interpolates_with_align_corners():
    dm = datamodule(protocol="mutualnet")
    image = pil_image(320, 240)
    crop = dm.val_transform()(image)
    np.testing.assert_array_equal(crop.numpy(), official_center(image, 224))  # Resize(256) + CenterCrop(224)
    batch = dm.on_after_batch_transfer((crop.unsqueeze(0), torch.tensor([0])))
    x224 = (crop.unsqueeze(0).float() / 255 - torch.tensor(dm.mean).view(1, 3, 1, 1)) / torch.tensor(dm.std).view(1, 3, 1, 1)
    expected = F.interpolate(x224, (160, 160), mode="bilinear", align_corners=True)
    torch.testing.assert_close(batch.at(160), expected, rtol=0, atol=1e-5)
    assert not torch.allclose(datamodule().on_after_batch_transfer((crop.unsqueeze(0), torch.tensor([0]))).at(160),
                              expected, atol=1e-3)  # ours (antialias, align_corners=False) differs


def test_normalisation_can_be_switched_off_and_is_validated():
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    torch.testing.assert_close(datamodule(mean=[0, 0, 0], std=[1, 1, 1]).normalize(x), x.float() / 255)
    with pytest.raises(ValueError, match="data.mean / data.std: give both"):
        datamodule(mean=[0, 0, 0])
    with pytest.raises(ValueError, match="data.protocol: unknown"):
        datamodule(protocol="timm")


def test_rsnet_ensemble_accuracy_in_evaluate_equals_a_hand_computation(tmp_path):
    path = write_checkpoint(tmp_path / "rs.ckpt", "rsnet", resolutions=(16, 12))
    method, net, _ = rebuild_from_checkpoint(load_checkpoint(path))
    with torch.no_grad():
        method.alpha.copy_(torch.tensor([1.5, -0.5]))
    dm = MultiResDataModule(name="synthetic", train_resolutions=(16, 12), val_samples=48, batch_size=16,
                            num_workers=0, mean=[0.5] * 3, std=[0.3] * 3)
    dm.setup("validate")
    extra: dict = {}
    configs = [SubnetConfig(16), SubnetConfig(12)]
    evaluate_configs(net, dm, configs, ensemble=method.ensemble, extra=extra, progress=False)
    weights = torch.softmax(torch.tensor([1.5, -0.5]), 0)
    correct = total = 0
    with torch.no_grad():
        for images, targets in dm.val_dataloader():
            batch = dm.on_after_batch_transfer((images, targets))
            logits = []
            for c in configs:
                with net.switch(c):
                    logits.append(net(batch.at(c.resolution)))
            combined = weights[0] * logits[0] + weights[1] * logits[1]
            correct += int((combined.argmax(1) == targets).sum())
            total += len(targets)
    assert extra["ensemble"]["top1"] == pytest.approx(100 * correct / total)
    # without every training resolution there is no ensemble
    extra = {}
    evaluate_configs(net, dm, configs[:1], ensemble=method.ensemble, extra=extra, progress=False)
    assert extra == {}


# ----------------------------------------------------------------------- architecture options
def test_official_channel_rounding_options():
    # US-Net / MutualNet make_divisible(v, 8, min_value=1): 32 * 0.1 = 3.2 -> 9 channels (ours: 8)
    assert slim_channels(32, 0.1) == 8 and slim_channels(32, 0.1, min_value=1) == 9
    # MutualNet ResNet-50: a bottleneck's 64 inner channels at 0.9 are make_divisible(256 * 0.9) / 4
    assert ChannelDim(64, ratio=0.25).active(0.9) == 58 and ChannelDim(64).active(0.9) == 56
    assert ChannelDim(96, ratio=6).active(0.35) == 48  # MobileNetV2 hidden: 6 x make_divisible(16 * 0.35)


def test_role_ratios_reach_the_bottleneck_and_the_stem():
    net = create_model("resnet50", [32], layers="slimmable", widths=[1.0, 0.65], num_classes=10,
                       layer_kwargs={"min_channels": 1, "role_ratios": {"stem": 0.25, "mid": 0.25}})
    plain = net.materialize(SubnetConfig(32, 0.9))
    assert plain.conv1.out_channels == 58 and plain.layer1[0].conv1.out_channels == 58
    assert plain.layer1[0].conv3.out_channels == 232 and plain.layer1[0].downsample[0].in_channels == 58
    assert plain.layer2[0].conv2.out_channels == 116 and plain.fc.in_features == 1840


def test_san_encoding_table_interpolates_and_keeps_the_formula_for_the_default_list():
    default = [224, 192, 160, 128, 96]
    table = [scale_encoding(r) for r in default]
    for r in (224, 208, 100, 64, 256):
        assert tabulated_encoding(default, table, r) == pytest.approx(scale_encoding(r))
    official = [0.7, 0.6, 0.5]  # the official code's encodings of [128, 96, 64]
    assert tabulated_encoding([128, 96, 64], official, 96) == pytest.approx(0.6)
    assert tabulated_encoding([128, 96, 64], official, 112) == pytest.approx(0.65)
    assert tabulated_encoding([128, 96, 64], official, 160) == pytest.approx(0.8)


def test_width_mult_scales_every_backbone_and_is_validated():
    for name, probe in (("resnet18", lambda m: m.fc.in_features), ("mobilenetv1", lambda m: m.features[0][0].out_channels),
                        ("mobilenetv2", lambda m: m.features[0][0].out_channels)):
        base = probe(create_model(name, [32], layers="plain", num_classes=10).net)
        wide = create_model(name, [32], layers="plain", num_classes=10, width_mult=2.0)
        assert probe(wide.net) == 2 * base, name
        assert create_model(**wide.spec).spec["width_mult"] == 2.0
    with pytest.raises(ValueError, match="model.width_mult: must be a positive number"):
        create_model("resnet18", [32], layers="plain", width_mult=0)


def test_resuming_with_other_architecture_numbers_is_refused():
    meta = {"method": {"name": "usnet"}, "net": {"name": "mobilenetv1", "resolutions": [224], "act": "relu6",
                                                  "layer_kwargs": {"divisor": 8, "min_channels": 1}}}
    spec = {"name": "mobilenetv1", "resolutions": [224], "act": "relu6", "layer_kwargs": {"divisor": 8,
                                                                                         "min_channels": 1}}
    check_compatible(meta, "usnet", "mobilenetv1", [224], spec=spec)
    with pytest.raises(CheckpointError, match="network has model.act=relu6 but this run builds model.act=relu"):
        check_compatible(meta, "usnet", "mobilenetv1", [224], spec={**spec, "act": "relu"})
    with pytest.raises(CheckpointError, match="method.min_channels=1 but this run builds method.min_channels=None"):
        check_compatible(meta, "usnet", "mobilenetv1", [224], spec={**spec, "layer_kwargs": {"divisor": 8}})
