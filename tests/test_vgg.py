"""VGG-16-BN: torchvision equivalence, slimmable materialisation, costs, feature stages."""

import pytest
import torch
import torchvision
from torch import nn

from resnet_switch.evaluation.costs import count_costs
from resnet_switch.layers.slimmable import slim_channels
from resnet_switch.models import create_model, list_backbones, load_plain_weights, torchvision_name
from resnet_switch.switch import SubnetConfig


def randomise_bn(model: nn.Module) -> None:
    """Non-trivial BN statistics and affine parameters, so a wrong copy or slice shows."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)


def test_plain_vgg16_equals_torchvision_vgg16_bn():
    ref = torchvision.models.vgg16_bn(weights=None, num_classes=10)
    randomise_bn(ref)
    ref.eval()
    net = create_model("vgg16", [32], layers="plain", num_classes=10)
    assert [(k, v.shape) for k, v in net.net.state_dict().items()] == [(k, v.shape) for k, v in ref.state_dict().items()]
    net.net.load_state_dict(ref.state_dict(), assign=True)  # share the tensors: no second 0.5 GB copy
    net.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref(x), rtol=0, atol=0)
    assert torchvision_name("vgg16") == "vgg16_bn" and "vgg16" in list_backbones(torchvision=True)


def test_vgg16_warm_start_fills_every_private_bn_set():
    """The small-classifier variant (hidden=64) through model.pretrained's path: every private set
    and an interpolated resolution give the plain model's outputs."""
    plain = create_model("vgg16", [40], layers="plain", num_classes=5, hidden=64).net
    randomise_bn(plain)
    plain.eval()
    net = create_model("vgg16", [40, 32], layers="private_bn", num_classes=5, hidden=64)
    load_plain_weights(net, plain.state_dict())
    net.eval()
    with torch.no_grad():
        for r in (40, 32, 36):
            x = torch.randn(1, 3, r, r)
            with net.switch(SubnetConfig(r), bn_mode="interpolate"):
                torch.testing.assert_close(net(x), plain(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("width", [1.0, 0.6, 0.25])
def test_slimmable_vgg16_materializes_each_width(width):
    net = create_model("vgg16", [40, 32], layers="slimmable", widths=[1.0, 0.25], num_classes=7,
                       in_channels=1, hidden=64)
    randomise_bn(net)
    net.eval()
    config = SubnetConfig(32, width)
    plain = net.materialize(config)
    convs = [m for m in plain.features if isinstance(m, nn.Conv2d)]
    fcs = [m for m in plain.classifier if isinstance(m, nn.Linear)]
    # image channels and classes are never slimmed; every hidden dimension is
    assert convs[0].in_channels == 1 and fcs[-1].out_features == 7
    assert [c.out_channels for c in convs[:3]] == [slim_channels(64, width)] * 2 + [slim_channels(128, width)]
    assert fcs[0].in_features == slim_channels(512, width) * 49  # the flattened 512x7x7 map, by channel
    assert fcs[0].out_features == fcs[1].in_features == slim_channels(64, width)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad(), net.switch(config):
        torch.testing.assert_close(plain(x), net(x), rtol=1e-5, atol=1e-5)


def test_vgg16_costs_match_torchvision_published_figures():
    """MAdds and parameters at 224 px against torchvision's VGG16_BN weight metadata (15.47 GMACs,
    138,365,992 parameters), counted on the meta device (no memory, no arithmetic)."""
    published = torchvision.models.VGG16_BN_Weights.IMAGENET1K_V1.meta
    with torch.device("meta"):
        net = create_model("vgg16", [224], layers="slimmable", widths=[1.0, 0.5])
    madds, params = count_costs(net, SubnetConfig(224))
    assert params == published["num_params"]
    assert round(madds / 1e9, 2) == published["_ops"]
    half, _ = count_costs(net, SubnetConfig(224, 0.5))
    assert 0.24 < half / madds < 0.26  # every conv slims both sides: about a quarter


def test_vgg16_feature_stages_for_detection():
    net = create_model("vgg16", [32], layers="plain", num_classes=3, hidden=16).eval()
    vgg = net.net
    assert vgg.stage_ends == (6, 13, 23, 33, 43)
    assert all(isinstance(vgg.features[i], nn.MaxPool2d) for i in vgg.stage_ends)
    getter = torchvision.models._utils.IntermediateLayerGetter(
        vgg.features, {str(i): f"c{k}" for k, i in enumerate(vgg.stage_ends)})
    with torch.no_grad():
        outs = getter(torch.randn(1, 3, 32, 32))
    assert [tuple(v.shape[1:]) for v in outs.values()] == [
        (c, 32 >> (k + 1), 32 >> (k + 1)) for k, c in enumerate(vgg.stage_channels)]
