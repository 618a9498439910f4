"""Slimmable layers: channel rule, slicing = a narrower plain net, BN statistics, calibration, MAdds."""

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from resnet_switch.data.multires import MultiResBatch, resize_images
from resnet_switch.errors import ConfigError
from resnet_switch.layers.calibration import calibrate_bn
from resnet_switch.layers.factory import PlainLayers
from resnet_switch.layers.slimmable import slim_channels
from resnet_switch.models import create_model, load_plain_weights
from resnet_switch.models.resnet import BasicBlock, ResNet
from resnet_switch.switch import SubnetConfig

BACKBONES = ["mobilenetv1", "mobilenetv2", "resnet18", "resnet50", "resnet20"]


def slimmable(name, resolutions=(32,), widths=(1.0, 0.25), **kw):
    """Small nets: ImageNet stems (stride 4 before the blocks) keep 32-px forwards cheap."""
    return create_model(name, list(resolutions), layers="slimmable", widths=widths, num_classes=10, **kw)


def randomize_bn_stats(net):
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


def test_slim_channels_rule():
    # make_divisible(C * w, 8) with at least 8 channels and at most C; width 1 keeps C
    assert slim_channels(32, 0.25) == 8
    assert slim_channels(16, 0.25) == 8  # 4 -> 8, never fewer than the divisor (no 9-channel layers)
    assert slim_channels(64, 0.33) == 24  # 21.12 -> 24
    assert slim_channels(32, 0.33) == 16  # 10.56 -> 8 would be > 10% below, so 16
    assert slim_channels(1024, 0.77) == 792
    assert slim_channels(20, 1.0) == 20 and slim_channels(20, 0.99) == 20
    assert slim_channels(96, 0.35, ratio=6) == 6 * 8  # MobileNetV2 hidden = t * slimmed input
    assert slim_channels(16, 0.35, divisor=4) == 8


@pytest.mark.parametrize("name", BACKBONES)
def test_no_layer_below_divisor_at_small_widths(name):
    net = slimmable(name)
    for w in (0.25, 0.05):
        plain = net.materialize(SubnetConfig(32, w))
        for m in plain.modules():
            if isinstance(m, nn.Conv2d):
                assert m.out_channels >= 8 and m.out_channels % 8 == 0
            if isinstance(m, nn.BatchNorm2d):
                assert m.num_features >= 8 and m.num_features % 8 == 0


def narrow_plain(name, width):
    """A plain net built independently at the channel counts of ``width``."""
    if name in ("mobilenetv1", "mobilenetv2"):
        return create_model(name, [32], layers="plain", num_classes=10, width_mult=width).net
    stages = {"resnet18": [64, 128, 256, 512], "resnet20": [16, 32, 64]}[name]
    depths = {"resnet18": [2, 2, 2, 2], "resnet20": [3, 3, 3]}[name]
    return ResNet(PlainLayers(), BasicBlock, depths, [slim_channels(c, width) for c in stages],
                  num_classes=10, small_input=name == "resnet20")


@pytest.mark.parametrize("name", ["mobilenetv1", "mobilenetv2", "resnet18", "resnet20"])
def test_sliced_net_equals_narrow_plain_net(name):
    net = slimmable(name)
    randomize_bn_stats(net)
    net.eval()
    full_sd = net.net.state_dict()
    x = torch.randn(2, 3, 32, 32)
    for width in (0.33, 0.77, 0.25):
        small = narrow_plain(name, width).eval()
        small_sd = {}
        for key, value in small.state_dict().items():
            full = full_sd[key]
            assert all(s <= f for s, f in zip(value.shape, full.shape)), key
            small_sd[key] = full[tuple(slice(0, s) for s in value.shape)]
        small.load_state_dict(small_sd)
        with torch.no_grad(), net.switch(SubnetConfig(32, width)):
            torch.testing.assert_close(net(x), small(x), rtol=1e-5, atol=1e-5)
        # the materialised sub-network has exactly the narrow net's shapes
        plain_sd = net.materialize(SubnetConfig(32, width)).state_dict()
        assert {k: v.shape for k, v in plain_sd.items()} == {k: v.shape for k, v in small_sd.items()}


@pytest.mark.parametrize("name", BACKBONES)
def test_residual_sums_agree_at_odd_widths_and_materialize(name):
    net = slimmable(name)
    randomize_bn_stats(net)
    net.eval()
    x = torch.randn(2, 3, 32, 32)
    for width in (0.33, 0.77):
        cfg = SubnetConfig(32, width)
        with torch.no_grad(), net.switch(cfg):
            out = net(x)  # a residual sum with mismatched channels would raise here
            torch.testing.assert_close(net.materialize(cfg)(x), out, rtol=1e-5, atol=1e-5)
        assert out.shape == (2, 10)


def test_training_updates_only_the_active_slice_of_running_stats():
    net = slimmable("resnet20").train()
    bn = net.net.bn1
    c = slim_channels(16, 0.5)
    before = bn.running_mean.clone()
    with net.switch(SubnetConfig(32, 0.5)):
        net(torch.randn(4, 3, 32, 32) + 1.0)
    assert not torch.equal(bn.running_mean[:c], before[:c])
    assert torch.equal(bn.running_mean[c:], before[c:])


def test_warm_start_from_torchvision_mobilenetv2():
    ref = torchvision.models.mobilenet_v2(num_classes=10)
    randomize_bn_stats(ref)
    ref.eval()
    net = create_model("mobilenetv2", [64], layers="slimmable", widths=[1.0, 0.35], num_classes=10)
    load_plain_weights(net, ref.state_dict())
    net.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref(x), rtol=1e-5, atol=1e-5)


def exact_stats(x):
    """Per-channel mean and unbiased variance over every pixel of ``x`` (B, C, H, W), float64."""
    flat = x.double().transpose(0, 1).reshape(x.shape[1], -1)
    return flat.mean(1), flat.var(1, unbiased=True)


@pytest.mark.parametrize("private", [False, True])
def test_recalibration_is_the_exact_average_over_exactly_n_images(private):
    net = create_model("resnet20", [32, 16], layers="slimmable", widths=[1.0, 0.5], num_classes=10,
                       layer_kwargs={"private_bn_per_width": private})
    images = torch.randn(16, 3, 32, 32) * 2 + 0.5
    batches = [MultiResBatch(images[i:i + 4], torch.zeros(4, dtype=torch.long)) for i in range(0, 16, 4)]
    seen = []
    hook = net.net.conv1.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].shape[0]))
    cfg = SubnetConfig(16, 0.5)
    used = calibrate_bn(net, (b.at(16) for b in batches), cfg, num_samples=10)
    hook.remove()
    assert used == 10 and sum(seen) == 10  # 4 + 4 + 2 of the 16 offered
    with torch.no_grad(), net.switch(cfg):
        stem = net.net.conv1.to_plain()
        x16 = torch.cat([b.at(16) for b in batches])[:10]
        mean, var = exact_stats(stem(x16))
    got_mean, got_var = net.net.bn1.calibrated[cfg.key()]
    assert got_mean.shape == (8,)
    torch.testing.assert_close(got_mean.double(), mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_var.double(), var, rtol=1e-5, atol=1e-6)


def test_calibrated_stats_are_used_saved_and_materialized():
    net = slimmable("mobilenetv2", resolutions=(32, 24))
    batches = [torch.randn(6, 3, 32, 32) for _ in range(2)]
    configs = [SubnetConfig(24, 0.35), SubnetConfig(32, 0.6)]
    for config in configs:
        calibrate_bn(net, (resize_images(b, config.resolution) for b in batches), config, num_samples=12)
    net.eval()
    x = torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        with net.switch(configs[0], bn_mode="calibrated"):
            calibrated = net(x)
        with net.switch(configs[0]):
            default = net(x)
        assert not torch.allclose(calibrated, default)
        plain = net.materialize(configs[0], bn_mode="calibrated")
        torch.testing.assert_close(plain(x), calibrated, rtol=1e-5, atol=1e-5)
        fresh = slimmable("mobilenetv2", resolutions=(32, 24))
        fresh.load_state_dict(net.state_dict())
        fresh.eval()
        with fresh.switch(configs[0], bn_mode="calibrated"):
            torch.testing.assert_close(fresh(x), calibrated)
        with fresh.switch(SubnetConfig(24, 0.5), bn_mode="calibrated"), pytest.raises(ConfigError, match="calibrate"):
            fresh(x)


def test_private_bn_per_width_isolated():
    net = create_model("resnet20", [32], layers="slimmable", widths=[1.0, 0.5, 0.25], num_classes=10,
                       layer_kwargs={"private_bn_per_width": True}).train()
    bn = net.net.bn1
    assert [s.num_features for s in bn.sets] == [16, 8, 8]
    before = {k: v.clone() for k, v in bn.state_dict().items() if torch.is_tensor(v)}
    with net.switch(SubnetConfig(32, 0.5)):
        net(torch.randn(4, 3, 32, 32) + 1.0)
    after = bn.state_dict()
    assert torch.equal(after["sets.0.running_mean"], before["sets.0.running_mean"])
    assert torch.equal(after["sets.2.running_mean"], before["sets.2.running_mean"])
    assert not torch.equal(after["sets.1.running_mean"], before["sets.1.running_mean"])
    with net.switch(SubnetConfig(32, 0.75)), pytest.raises(ValueError, match="private BN"):
        net(torch.randn(1, 3, 32, 32))


def test_divisor_is_stored_in_spec_and_rebuilds():
    net = create_model("mobilenetv1", [32], layers="slimmable", widths=[1.0, 0.25], num_classes=10,
                       layer_kwargs={"divisor": 4})
    assert net.spec["layer_kwargs"] == {"divisor": 4}
    again = create_model(**net.spec)
    again.load_state_dict(net.state_dict())
    shapes = {k: v.shape for k, v in again.materialize(SubnetConfig(32, 0.3)).state_dict().items()}
    assert shapes["features.0.0.weight"][0] == 12  # 32 * 0.3 = 9.6 -> 12 with divisor 4 (16 with 8)
    assert shapes["features.1.1.0.weight"][0] == 20  # 64 * 0.3 = 19.2 -> 20 (24 with 8)


def madds(net, resolution, width):
    plain = net.materialize(SubnetConfig(resolution, width))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        plain(torch.randn(1, 3, resolution, resolution, device="meta"))
    return counter.get_total_flops() / 2 / 1e6


@pytest.mark.parametrize("name,cases", [
    ("mobilenetv1", [(1.0, 224, 568.8), (1.0, 192, 418.2), (0.7, 160, 146.9), (0.25, 160, 21.1), (0.25, 128, 13.6)]),
    ("mobilenetv2", [(1.0, 224, 301.0), (0.7, 160, 89.3), (0.85, 128, 83.9), (0.35, 224, 59.3)]),
])
def test_madds_match_reference_table(name, cases):
    with torch.device("meta"):  # shapes only: FLOP counting needs no values
        net = create_model(name, [224, 192, 160, 128], layers="slimmable", widths=[1.0, 0.25])
    for width, resolution, expected in cases:
        assert madds(net, resolution, width) == pytest.approx(expected, rel=0.01), (width, resolution)

