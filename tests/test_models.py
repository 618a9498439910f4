"""Backbones: torchvision equivalence, warm start, materialisation."""

import pytest
import torch
import torchvision

from resnet_switch.models import build_switchable, load_plain_weights
from resnet_switch.switch import SubnetConfig

TV = [("resnet18", "resnet18"), ("resnet50", "resnet50"), ("mobilenetv2", "mobilenet_v2")]


@pytest.mark.parametrize("name,tv_name", TV)
def test_plain_backbone_equals_torchvision(name, tv_name):
    ref = getattr(torchvision.models, tv_name)(num_classes=10).eval()
    net = build_switchable(name, [64], layers="plain", num_classes=10)
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
    net = build_switchable(name, [64, 48, 32], layers="private_bn", num_classes=10)
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
    net = build_switchable("mobilenetv2", [32], layers="plain", num_classes=10, small_input=True)
    net.net.load_state_dict(ref.state_dict())
    net.eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(net(x), ref(x), rtol=0, atol=0)
    assert net.net.features(x).shape[-2:] == (4, 4)  # output stride 8
    imagenet = build_switchable("mobilenetv2", [32], layers="plain", num_classes=10, small_input=False)
    assert imagenet.net.features(x).shape[-2:] == (1, 1)  # output stride 32


def test_small_input_mobilenetv1_has_output_stride_8():
    """small_input: stride-1 stem and first 128-channel block (Howard et al. Table 1 otherwise), same keys."""
    small = build_switchable("mobilenetv1", [32], layers="plain", num_classes=10, small_input=True).net
    imagenet = build_switchable("mobilenetv1", [32], layers="plain", num_classes=10, small_input=False).net
    assert list(small.state_dict()) == list(imagenet.state_dict())
    strides = [m.stride[0] for m in small.features.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    # the stem, then the depthwise conv of each of the 13 blocks: Table 1's strides with the first two 2s -> 1
    assert strides == [1, 1, 1, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    x = torch.randn(2, 3, 32, 32)
    assert small.features(x).shape[-2:] == (4, 4)  # output stride 8
    assert imagenet.features(x).shape[-2:] == (1, 1)  # output stride 32


def test_plain_weights_of_wrong_model_are_rejected():
    ref = torchvision.models.resnet18(num_classes=10)
    net = build_switchable("mobilenetv2", [32], layers="private_bn", num_classes=10)
    with pytest.raises(ValueError, match="model.pretrained"):
        load_plain_weights(net, ref.state_dict())


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv1", "mobilenetv2", "resnet18"])
def test_materialized_plain_model_equals_switchable(name):
    net = build_switchable(name, [32, 24, 16], layers="private_bn", num_classes=7, small_input=True)
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
    net = build_switchable("resnet20", [32, 16], num_classes=3).eval()
    with pytest.raises(ValueError, match="active configuration"):
        net(torch.randn(1, 3, 16, 16))


@pytest.mark.parametrize("kwargs", [dict(num_classes=5, in_channels=1), dict(num_classes=12, in_channels=3)])
def test_num_classes_and_in_channels(kwargs):
    net = build_switchable("resnet20", [28, 14], **kwargs).eval()
    with net.switch(SubnetConfig(14)):
        out = net(torch.randn(2, kwargs["in_channels"], 14, 14))
    assert out.shape == (2, kwargs["num_classes"])
