"""The one inference policy: which configurations a network runs and on which BN statistics,
checked against hand-computed blends, encodings and channel counts on tiny networks."""

from __future__ import annotations

import pytest
import torch

from resnet_switch.errors import ConfigError
from resnet_switch.layers.calibration import calibratable_layers, calibrate_bn
from resnet_switch.layers.scale_conv import ScaleConv2d
from resnet_switch.models import create_model
from resnet_switch.models.inference_policy import BNSource, InferencePolicy, WidthRule
from resnet_switch.switch import SubnetConfig

TINY = {"num_classes": 4, "base_width": 4}


def rsnet_net():
    """Private BN sets for 32, 24, 16 px, each with its own random statistics (fresh sets are all equal)."""
    net = create_model("resnet20", [32, 24, 16], layers="private_bn", **TINY)
    gen = torch.Generator().manual_seed(0)
    for name, buffer in net.named_buffers():
        if name.endswith("running_mean"):
            buffer.copy_(torch.randn(buffer.shape, generator=gen) * 0.1)
        elif name.endswith("running_var"):
            buffer.copy_(torch.rand(buffer.shape, generator=gen) + 0.5)
    return net


def slimmable_net(**layer_kwargs):
    """resnet20 with stage channels (8, 16, 32), divisor 8: widths 0.7 and 0.75 both give (8, 16, 24)."""
    return create_model("resnet20", [16, 12], layers="slimmable", widths=layer_kwargs.pop("widths", [1.0, 0.25]),
                        num_classes=4, base_width=8, layer_kwargs={"divisor": 8, **layer_kwargs})


def calibrate(net, config, images=4):
    calibrate_bn(net, [torch.randn(images, 3, config.resolution, config.resolution)], config, images)


# ------------------------------------------------------------------------ resolutions (RS-Net)
def test_interpolate_blends_the_two_neighbours_with_weights_from_the_distances():
    policy = InferencePolicy(rsnet_net(), bn_mode="interpolate")
    plan = policy.plan(SubnetConfig(28))
    # sets 0, 1, 2 = 32, 24, 16 px; 28 lies halfway between 32 and 24
    assert plan.source is BNSource.INTERPOLATED and plan.state_bn_mode == "interpolate"
    assert plan.blend.indices == (0, 1) and plan.blend.weights == pytest.approx((0.5, 0.5))
    plan = policy.plan(SubnetConfig(18))  # (18 - 16) / (24 - 16) = 0.25 of the 24-px set
    assert plan.blend.indices == (1, 2) and plan.blend.weights == pytest.approx((0.25, 0.75))
    # outside the trained range: the end set alone, i.e. the nearest training resolution's
    for resolution, index in ((40, 0), (12, 2)):
        plan = policy.plan(SubnetConfig(resolution))
        assert plan.source is BNSource.NEAREST and plan.blend.indices == (index,)


def test_nearest_breaks_a_tie_towards_the_larger_resolution():
    policy = InferencePolicy(rsnet_net(), bn_mode="nearest")
    plan = policy.plan(SubnetConfig(20))  # 4 px from both 24 and 16
    assert plan.source is BNSource.NEAREST and plan.blend.indices == (1,) and plan.blend.weights == (1.0,)
    assert policy.plan(SubnetConfig(30)).blend.indices == (0,)


@pytest.mark.parametrize("bn_mode", ["nearest", "interpolate", "calibrate", "proxy", "ideal"])
def test_training_resolutions_run_on_their_own_set_in_every_mode(bn_mode):
    policy = InferencePolicy(rsnet_net(), bn_mode=bn_mode)
    for index, resolution in enumerate((32, 24, 16)):
        plan = policy.plan(SubnetConfig(resolution))
        assert (plan.source, plan.blend.indices, plan.blend.calibrated) == (BNSource.OWN, (index,), False)


def test_the_method_default_applies_when_no_mode_is_given():
    net = rsnet_net()
    assert InferencePolicy(net, default_bn_mode="interpolate").plan(SubnetConfig(28)).source is BNSource.INTERPOLATED
    assert InferencePolicy(net, default_bn_mode="nearest").plan(SubnetConfig(28)).source is BNSource.NEAREST
    with pytest.raises(ConfigError, match="^bn_mode: unknown 'closest'"):
        InferencePolicy(net, bn_mode="closest")


def test_switch_runs_the_plan_and_restores_the_previous_state():
    net = rsnet_net().eval()
    policy = InferencePolicy(net, bn_mode="interpolate")
    net.set_active(SubnetConfig(16))
    before = (net.state.config, net.state.bn_mode, net.state.scale_encoding)
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad(), policy.switch(SubnetConfig(28)):
        assert net.state.blend == policy.plan(SubnetConfig(28)).blend
        got = net(x)
    assert (net.state.config, net.state.bn_mode, net.state.scale_encoding) == before
    with torch.no_grad(), net.switch(SubnetConfig(28), "interpolate"):
        expected = net(x)
    with torch.no_grad(), net.switch(SubnetConfig(28), "nearest"):
        nearest = net(x)
    assert torch.equal(got, expected) and not torch.allclose(got, nearest)


def test_calibrate_mode_needs_statistics_until_they_are_stored():
    net = rsnet_net()
    policy = InferencePolicy(net, bn_mode="calibrate")
    config = SubnetConfig(28)
    assert policy.plan(config).source is BNSource.NEEDS_CALIBRATION and policy.uses_exact_statistics(config)
    with pytest.raises(ConfigError, match=r"^resolution: no BN statistics stored for width 1 @ 28px \(stored: none\); "
                                          r"calibrate it$"):
        policy.ensure_statistics(config, fix="calibrate it")
    calibrate(net, config)
    assert policy.plan(config).source is BNSource.STORED and policy.stored_configs() == [config]


# --------------------------------------------------------------------------- SAN's encoding
def test_san_proxy_uses_the_nearest_encoding_and_ideal_its_own():
    net = create_model("resnet20", [32, 16], layers="san", **TINY).eval()
    conv = next(m for m in net.modules() if isinstance(m, ScaleConv2d))
    proxy, ideal = InferencePolicy(net, bn_mode="proxy"), InferencePolicy(net, bn_mode="ideal")
    plan = proxy.plan(SubnetConfig(20))
    assert (plan.scale_encoding, plan.encoded_resolution, plan.source) == ("nearest", 16, BNSource.NEAREST)
    plan = ideal.plan(SubnetConfig(20))
    assert (plan.scale_encoding, plan.encoded_resolution, plan.source) == ("exact", 20, BNSource.NEEDS_CALIBRATION)
    assert ideal.plan(SubnetConfig(32)).encoded_resolution == 32
    # eps = 0.1 * S / 32 (SAN sec. 3.3): 16 px -> 0.05, 20 px -> 0.0625
    with proxy.switch(SubnetConfig(20)):
        assert conv.encoding() == pytest.approx(0.05)
    with ideal.switch(SubnetConfig(20)):
        assert conv.encoding() == pytest.approx(0.0625)
    assert net.state.scale_encoding == "exact"  # the state's own setting is back


# --------------------------------------------------------------------------------- slimmable
def test_slimmable_configurations_use_stored_twin_or_missing_statistics():
    net = slimmable_net().eval()
    policy = InferencePolicy(net, needs_calibration=True)
    stored, twin, other_res, other_channels = (SubnetConfig(16, 0.75), SubnetConfig(16, 0.7),
                                               SubnetConfig(12, 0.75), SubnetConfig(16, 1.0))
    calibrate(net, stored)
    assert policy.plan(stored).source is BNSource.STORED
    plan = policy.plan(twin)
    assert (plan.source, plan.twin, plan.state_bn_mode) == (BNSource.TWIN, stored, "calibrated")
    assert policy.plan(other_res).source is BNSource.NEEDS_CALIBRATION
    assert policy.plan(other_channels).source is BNSource.NEEDS_CALIBRATION
    assert policy.provide_statistics([twin, other_channels]) == {twin: BNSource.TWIN,
                                                                 other_channels: BNSource.NEEDS_CALIBRATION}
    layers = calibratable_layers(net)
    assert all(layer.calibrated[twin.key()][0] is layer.calibrated[stored.key()][0] for layer in layers)
    assert all(other_channels.key() not in layer.calibrated for layer in layers)
    assert policy.plan(twin).source is BNSource.STORED
    # the twin is the same plain network: the same channels (32 x 0.7 and 32 x 0.75 both round to 24) and logits
    last_conv = [m for m in net.materialize(twin, "calibrated").modules() if isinstance(m, torch.nn.Conv2d)][-1]
    assert last_conv.out_channels == 24
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        with policy.switch(twin):
            a = net(x)
        with policy.switch(stored):
            b = net(x)
    assert torch.equal(a, b)


def test_methods_that_need_calibration_use_exact_statistics_in_every_mode():
    policy = InferencePolicy(slimmable_net(), needs_calibration=True, bn_mode="nearest")
    assert policy.state_bn_mode(SubnetConfig(16, 1.0)) == "calibrated"  # a training resolution too
    assert InferencePolicy(slimmable_net(), needs_calibration=True).mode.name == "calibrate"


# ------------------------------------------------------------------------------------ widths
def test_shared_bn_widths_must_lie_in_the_trained_range_unless_untrained_ones_are_allowed():
    policy = InferencePolicy(slimmable_net(), needs_calibration=True, owner="this usnet checkpoint")
    assert policy.check_config(16, 0.6) == SubnetConfig(16, 0.6)
    with pytest.raises(ConfigError, match=r"^width: 0.2 is outside the trained range \[0.25, 1\] of this usnet"):
        policy.check_config(16, 0.2)
    assert policy.check_config(16, 0.2, allow_untrained=True) == SubnetConfig(16, 0.2)
    assert policy.widths.untrained([0.2, 0.5, 1.0]) == [0.2]
    assert policy.widths.query_grid(0.25) == [0.25, 0.5, 0.75, 1.0]


def test_snet_runs_only_its_trained_widths():
    policy = InferencePolicy(slimmable_net(widths=[1.0, 0.5], private_bn_per_width=True), needs_calibration=True)
    assert policy.widths.per_width_bn and policy.check_config(12, 0.5) == SubnetConfig(12, 0.5)
    with pytest.raises(ConfigError, match=r"^width: 0.75 has no private BN .*choose from \[1.0, 0.5\]"):
        policy.check_config(16, 0.75)
    assert policy.widths.query_grid(0.05) == [0.5, 1.0]


def test_a_network_that_is_not_slimmable_runs_width_one_only():
    policy = InferencePolicy(rsnet_net(), owner="this rsnet checkpoint")
    assert not policy.widths.slimmable and policy.widths.query_grid(0.05) == [1.0]
    with pytest.raises(ConfigError, match="^width: this rsnet checkpoint is not slimmable"):
        policy.check_config(32, 0.5)
    for bad, field in ((0, "resolution"), (True, "resolution"), (16.5, "resolution")):
        with pytest.raises(ConfigError, match=f"^{field}: "):
            policy.check_config(bad, 1.0)
    with pytest.raises(ConfigError, match="^width: must be in"):
        policy.check_config(32, 1.5)


def test_width_rule_of_a_checkpoint_spec():
    spec = {"layers": "slimmable", "widths": [0.25, 1.0], "layer_kwargs": {"divisor": 8}}
    assert WidthRule.of_spec(spec) == WidthRule(slimmable=True, per_width_bn=False, trained=(1.0, 0.25))
    snet = {"layers": "slimmable", "widths": [1.0, 0.5], "layer_kwargs": {"private_bn_per_width": True}}
    assert WidthRule.of_spec(snet).per_width_bn
    assert WidthRule.of_spec({"layers": "private_bn", "widths": [1.0]}) == WidthRule(False, False, (1.0,))
