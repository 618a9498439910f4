"""Backbones: torchvision equivalence, warm start, materialisation, the small-input stem."""

import logging

import pytest
import torch
import torchvision

from resnet_switch.cli.ranges import check_ranges
from resnet_switch.errors import ConfigError
from resnet_switch.models import create_model, load_plain_weights, resolve_small_input
from resnet_switch.switch import SubnetConfig
from resnet_switch.training.tasks import ClassificationTask

from .helpers import compose_train

TV = [("resnet18", "resnet18"), ("resnet50", "resnet50"), ("mobilenetv2", "mobilenet_v2")]


@pytest.mark.parametrize("name,tv_name", TV)
def test_plain_backbone_equals_torchvision(name, tv_name):
    ref = getattr(torchvision.models, tv_name)(num_classes=10).eval()
    net = create_model(name, [64], layers="plain", num_classes=10)
    assert list(net.net.state_dict()) == list(ref.state_dict())
    net.net.load_state_dict(ref.state_dict())
    net.eval()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(net(x), ref(x), rtol=0, atol=0)


@pytest.mark.parametrize("name,tv_name", TV)
def test_warm_start_copies_torchvision_into_every_private_set(name, tv_name):
    ref = getattr(torchvision.models, tv_name)(num_classes=10)
    # make BN statistics non-trivial so a wrong copy shows
    for m in ref.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    ref.eval()
    net = create_model(name, [64, 48, 32], layers="private_bn", num_classes=10)
    load_plain_weights(net, ref.state_dict())
    net.eval()
    for r in (64, 48, 32, 40):  # every private set, and an interpolated one
        x = torch.randn(2, 3, r, r)
        with net.switch(SubnetConfig(r), bn_mode="interpolate"):
            torch.testing.assert_close(net(x), ref(x), rtol=1e-5, atol=1e-5)


def test_small_input_mobilenetv2_is_torchvisions_with_output_stride_8():
    """small_input: stride-1 first conv and first 24-channel block (the CIFAR MobileNetV2), same keys."""
    ref = torchvision.models.mobilenet_v2(num_classes=10).eval()
    ref.features[0][0].stride = (1, 1)
    ref.features[2].conv[1][0].stride = (1, 1)  # the depthwise conv of the first 24-channel block
    net = create_model("mobilenetv2", [32], layers="plain", num_classes=10, small_input=True)
    net.net.load_state_dict(ref.state_dict())
    net.eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(net(x), ref(x), rtol=0, atol=0)
    assert net.net.features(x).shape[-2:] == (4, 4)  # output stride 8
    imagenet = create_model("mobilenetv2", [32], layers="plain", num_classes=10, small_input=False)
    assert imagenet.net.features(x).shape[-2:] == (1, 1)  # output stride 32


def test_small_input_mobilenetv1_has_output_stride_8():
    """small_input: stride-1 stem and first 128-channel block (Howard et al. Table 1 otherwise), same keys."""
    small = create_model("mobilenetv1", [32], layers="plain", num_classes=10, small_input=True).net
    imagenet = create_model("mobilenetv1", [32], layers="plain", num_classes=10, small_input=False).net
    assert list(small.state_dict()) == list(imagenet.state_dict())
    strides = [m.stride[0] for m in small.features.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    # the stem, then the depthwise conv of each of the 13 blocks: Table 1's strides with the first two 2s -> 1
    assert strides == [1, 1, 1, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    x = torch.randn(2, 3, 32, 32)
    assert small.features(x).shape[-2:] == (4, 4)  # output stride 8
    assert imagenet.features(x).shape[-2:] == (1, 1)  # output stride 32


def test_plain_weights_of_wrong_model_are_rejected():
    ref = torchvision.models.resnet18(num_classes=10)
    net = create_model("mobilenetv2", [32], layers="private_bn", num_classes=10)
    with pytest.raises(ValueError, match="model.pretrained"):
        load_plain_weights(net, ref.state_dict())


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv1", "mobilenetv2", "resnet18"])
def test_materialized_plain_model_equals_switchable(name):
    net = create_model(name, [32, 24, 16], layers="private_bn", num_classes=7, small_input=True)
    # give every private set different statistics and affine parameters
    net.train()
    for r in (32, 24, 16):
        with net.switch(SubnetConfig(r)):
            for _ in range(2):
                net(torch.randn(4, 3, r, r) * (r / 16))
    for p in net.parameters():
        p.data.add_(torch.randn_like(p) * 0.05)
    net.eval()
    for r, mode in [(32, None), (24, None), (16, None), (28, "interpolate"), (20, "nearest")]:
        plain = net.materialize(SubnetConfig(r), bn_mode=mode)
        assert not any(hasattr(m, "state") for m in plain.modules())
        x = torch.randn(3, 3, r, r)
        with net.switch(SubnetConfig(r), bn_mode=mode):
            torch.testing.assert_close(plain(x), net(x), rtol=1e-5, atol=1e-5)


def test_input_size_must_match_active_configuration():
    net = create_model("resnet20", [32, 16], num_classes=3).eval()
    with pytest.raises(ValueError, match="active configuration"):
        net(torch.randn(1, 3, 16, 16))


@pytest.mark.parametrize("kwargs", [dict(num_classes=5, in_channels=1), dict(num_classes=12, in_channels=3)])
def test_num_classes_and_in_channels(kwargs):
    net = create_model("resnet20", [28, 14], **kwargs).eval()
    with net.switch(SubnetConfig(14)):
        out = net(torch.randn(2, kwargs["in_channels"], 14, 14))
    assert out.shape == (2, kwargs["num_classes"])


# ---- model.small_input: auto (decided once, in create_model) -------------------------------------
def feature_map_side(net, resolution: int) -> int:
    """The side of the last stage's output of a ResNet-layout plain network at ``resolution`` px."""
    seen = []
    hook = net.layer4.register_forward_hook(lambda module, inputs, out: seen.append(out.shape[-1]))
    with torch.no_grad():
        net.eval()(torch.randn(1, 3, resolution, resolution))
    hook.remove()
    return seen[0]


@pytest.mark.parametrize("resolutions,small", [([64], True), ([65], False), ([64, 48, 32], True),
                                               ([96, 32], False), ([224, 64], False)])
def test_small_input_auto_follows_the_largest_resolution(resolutions, small):
    """<= 64 px: the small-input stem (3x3 stride-1 conv, no max-pool: output stride 8); above: the
    ImageNet stem (7x7/2 conv + 3x3/2 max-pool: output stride 32). The largest resolution decides."""
    net = create_model("resnet18", resolutions, layers="plain", num_classes=10, width_mult=0.25, small_input="auto")
    assert net.spec["small_input"] is small
    plain = net.net
    assert plain.conv1.kernel_size == ((3, 3) if small else (7, 7)) and plain.conv1.stride == ((1, 1) if small else (2, 2))
    assert isinstance(plain.maxpool, torch.nn.Identity if small else torch.nn.MaxPool2d)
    assert feature_map_side(plain, 64) == (64 // 8 if small else 64 // 32)


@pytest.mark.parametrize("source", ["torchvision", "timm"])
def test_small_input_auto_applies_to_converted_models(source):
    """``model=torchvision|timm``: auto at 32 px takes the small-input stem (stride-1 first conv, no stem
    max-pool; output stride 8 for a ResNet), at 96 px the library's own."""
    if source == "timm":
        pytest.importorskip("timm", reason="timm is an optional extra: pip install -e '.[timm]'")
    small = create_model(source, [32], layers="plain", num_classes=10, arch="resnet18", small_input="auto")
    large = create_model(source, [96], layers="plain", num_classes=10, arch="resnet18", small_input="auto")
    assert small.spec["small_input"] is True and large.spec["small_input"] is False
    assert feature_map_side(small.net, 32) == 32 // 8 and feature_map_side(large.net, 96) == 96 // 32


def test_small_input_auto_is_logged_once_and_a_rebuild_decides_nothing(caplog):
    with caplog.at_level(logging.INFO, logger="resnet_switch.models.create"):
        net = create_model("torchvision", [32, 16], layers="private_bn", num_classes=10, arch="resnet18",
                           small_input="auto")
        create_model("resnet18", [32], num_classes=10, width_mult=0.25, small_input=True)  # given: nothing to log
    lines = [r.getMessage() for r in caplog.records if r.name == "resnet_switch.models.create"]
    assert len(lines) == 1, lines
    assert lines[0].startswith("model.small_input=auto -> true: largest resolution 32 px <= 64 px")
    assert "small-input" in lines[0] and lines[0].endswith("torchvision resnet18")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="resnet_switch.models.create"):
        twin = create_model(**net.spec)  # what a checkpoint does: the spec holds the decision
    assert not caplog.records and twin.spec == net.spec


@pytest.mark.parametrize("value", ["maybe", "yes", 1, None])
def test_small_input_bad_value_is_a_config_error_naming_the_field(value):
    with pytest.raises(ConfigError, match=r"^model.small_input: expected one of auto, true, false, got "):
        resolve_small_input(value, [32])
    with pytest.raises(ConfigError, match=r"^model.small_input: "):
        create_model("resnet18", [32], num_classes=10, small_input=value)


@pytest.mark.parametrize("overrides", [["model.small_input=maybe"], ["model=timm", "model.small_input=maybe"],
                                       ["model=mobilenetv2", "model.small_input=2"]])
def test_small_input_bad_value_stops_train_before_any_work(overrides):
    with pytest.raises(ConfigError) as err:
        check_ranges(compose_train("model=resnet18", *overrides) if overrides[0].startswith("model.")
                     else compose_train(*overrides))
    assert str(err.value).startswith("model.small_input: expected one of auto, true, false, got ")


def test_a_spec_without_small_input_keeps_the_backbones_stem():
    """Checkpoints written before ``small_input`` was recorded rebuild the constructor's default stem."""
    old_spec = {"name": "resnet18", "resolutions": [32], "layers": "plain", "widths": [1.0], "num_classes": 10,
                "in_channels": 3, "layer_kwargs": {}, "width_mult": 0.25}
    net = create_model(**old_spec)
    assert net.spec == old_spec and net.net.conv1.kernel_size == (7, 7)


def test_a_backbone_with_one_stem_takes_no_small_input():
    net = create_model("vgg16", [32], layers="plain", num_classes=3, hidden=8, small_input="auto")
    assert "small_input" not in net.spec
    with pytest.raises(ConfigError, match=r"^model.small_input: vgg16 has one stem"):
        create_model("vgg16", [32], layers="plain", num_classes=3, hidden=8, small_input=True)


def test_train_of_a_timm_model_at_32_px_logs_the_small_input_stem(caplog):
    """The train command's build (``model=timm``, its config's default ``small_input: auto``)."""
    pytest.importorskip("timm", reason="timm is an optional extra: pip install -e '.[timm]'")
    cfg = compose_train("model=timm", "model.arch=resnet18", "data.resolutions=[32,16]", "data.num_workers=0")
    with caplog.at_level(logging.INFO, logger="resnet_switch.models.create"):
        parts = ClassificationTask().build(cfg, None)
    assert parts.net.spec["small_input"] is True
    assert [r.getMessage() for r in caplog.records if r.name == "resnet_switch.models.create"] == [
        "model.small_input=auto -> true: largest resolution 32 px <= 64 px, small-input (stride-1, CIFAR-style) "
        "stem for timm resnet18"]
