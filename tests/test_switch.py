"""Switch state, private BN (nearest / interpolate / calibrated), exact recalibration, and the inference
modes: what each computes, and that evaluate, export and the runtime follow their one table."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnet_switch.layers.calibration import calibrate_bn
from resnet_switch.layers.private_bn import PrivateBatchNorm2d
from resnet_switch.layers.scale_conv import ScaleConv2d
from resnet_switch.models.switchable import SwitchableNet
from resnet_switch.switch import (
    BN_MODES,
    INFERENCE_MODES,
    InferenceMode,
    SubnetConfig,
    SwitchState,
    check_resolutions,
    inference_mode,
    interpolation_blend,
)

RES = (224, 192, 160, 128, 96)


def _bn_net(resolutions=RES, channels=3):
    state = SwitchState(resolutions)
    bn = PrivateBatchNorm2d(channels, state)
    with torch.no_grad():
        for k, s in enumerate(bn.sets):
            s.weight.copy_(torch.rand(channels) + k)
            s.bias.copy_(torch.randn(channels))
            s.running_mean.copy_(torch.randn(channels) * (k + 1))
            s.running_var.copy_(torch.rand(channels) + 0.5 * (k + 1))
    return SwitchableNet(nn.Sequential(bn), state, {}).eval(), bn


@pytest.mark.parametrize("bad,match", [
    ([96, 128], "highest to lowest"), ([224, 224], "duplicate"), ([224, 0], "positive"),
    ([], "empty"), ([224.5], "positive"),
])
def test_check_resolutions_rejects_bad_lists(bad, match):
    with pytest.raises(ValueError, match=match):
        check_resolutions(bad, "data.resolutions")


def test_subnet_config_validation_and_key():
    assert SubnetConfig(160, 0.75).key() == "r160_w0.75"
    assert SubnetConfig(160, 0.1 + 0.2) == SubnetConfig(160, 0.3)  # rounded, no float-equality traps
    with pytest.raises(ValueError, match="width"):
        SubnetConfig(160, 1.5)


def test_interpolation_weights_hand_computed():
    blend = interpolation_blend(RES, 176)  # between 192 (index 1) and 160 (index 2)
    assert blend.indices == (1, 2) and blend.weights == pytest.approx((0.5, 0.5))
    blend = interpolation_blend(RES, 200)  # 224 and 192: w(224) = (200-192)/32
    assert blend.indices == (0, 1) and blend.weights == pytest.approx((0.25, 0.75))
    assert interpolation_blend(RES, 256).indices == (0,)  # clamped above
    assert interpolation_blend(RES, 64).indices == (4,)  # clamped below


@pytest.mark.parametrize("k,r", list(enumerate(RES)))
def test_interpolated_bn_at_a_training_resolution_equals_its_set(k, r):
    net, bn = _bn_net()
    x = torch.randn(4, 3, r, r)
    with net.switch(SubnetConfig(r), bn_mode="interpolate"):
        torch.testing.assert_close(net(x), bn.sets[k](x))


def test_interpolated_bn_blends_all_four_tensors():
    net, bn = _bn_net()
    x = torch.randn(2, 3, 200, 200)
    a, b = bn.sets[0], bn.sets[1]  # 224 weight 0.25, 192 weight 0.75
    w = 0.25
    mean = w * a.running_mean + (1 - w) * b.running_mean
    var = w * a.running_var + (1 - w) * b.running_var
    gamma = w * a.weight + (1 - w) * b.weight
    beta = w * a.bias + (1 - w) * b.bias
    expected = (x - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + bn.eps) * gamma.view(1, -1, 1, 1) + beta.view(1, -1, 1, 1)
    with net.switch(SubnetConfig(200), bn_mode="interpolate"):
        torch.testing.assert_close(net(x), expected, rtol=1e-5, atol=1e-5)
    with net.switch(SubnetConfig(200), bn_mode="nearest"):  # nearest of 200 is 192
        torch.testing.assert_close(net(x), b(x))


def test_switching_never_mixes_statistics():
    net, bn = _bn_net(resolutions=(32, 16))
    before = [s.running_mean.clone() for s in bn.sets]
    net.train()
    with net.switch(SubnetConfig(16)):
        net(torch.randn(8, 3, 16, 16) + 5.0)
    torch.testing.assert_close(bn.sets[0].running_mean, before[0])  # untouched
    assert not torch.allclose(bn.sets[1].running_mean, before[1])
    assert int(bn.sets[0].num_batches_tracked) == 0 and int(bn.sets[1].num_batches_tracked) == 1


def test_training_at_an_unseen_resolution_is_an_error():
    net, _ = _bn_net(resolutions=(32, 16))
    net.train()
    with net.switch(SubnetConfig(24), bn_mode="interpolate"), pytest.raises(RuntimeError, match="not a training"):
        net(torch.randn(2, 3, 24, 24))


def test_switch_context_restores_previous_configuration():
    net, _ = _bn_net()
    net.set_active(SubnetConfig(160))
    with net.switch(SubnetConfig(200), bn_mode="interpolate"):
        assert net.config == SubnetConfig(200) and net.state.bn_mode == "interpolate"
    assert net.config == SubnetConfig(160) and net.state.bn_mode == "nearest"


def test_calibration_is_the_exact_average_over_exactly_n_images():
    net, bn = _bn_net(resolutions=(32, 16), channels=2)
    images = torch.randn(23, 2, 20, 20) * torch.tensor([1.0, 3.0]).view(1, 2, 1, 1) + 2.0
    batches = [images[i:i + 5] for i in range(0, 23, 5)]  # 5,5,5,5,3
    used = calibrate_bn(net, iter(batches), SubnetConfig(20), num_samples=13)
    assert used == 13
    first = images[:13]
    mean = first.mean(dim=(0, 2, 3))
    var = first.transpose(0, 1).reshape(2, -1).var(dim=1, unbiased=True)
    got_mean, got_var = bn.calibrated["r20_w1"]
    torch.testing.assert_close(got_mean, mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_var, var, rtol=1e-5, atol=1e-5)
    # using them: plain BN with those statistics and the nearest set's affine (20 -> 16)
    x = torch.randn(3, 2, 20, 20)
    s = bn.sets[1]
    expected = (x - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + bn.eps) * s.weight.view(1, -1, 1, 1) + s.bias.view(1, -1, 1, 1)
    with net.switch(SubnetConfig(20), bn_mode="calibrated"):
        torch.testing.assert_close(net(x), expected, rtol=1e-4, atol=1e-4)
    # statistics survive a state-dict round trip
    net2, bn2 = _bn_net(resolutions=(32, 16), channels=2)
    net2.load_state_dict(net.state_dict())
    torch.testing.assert_close(bn2.calibrated["r20_w1"][1], var)


def test_calibration_with_too_few_images_fails_clearly():
    net, _ = _bn_net(resolutions=(32, 16), channels=2)
    with pytest.raises(ValueError, match="num_samples"):
        calibrate_bn(net, iter([torch.randn(4, 2, 8, 8)]), SubnetConfig(8), num_samples=10)


# ---- the state's declared fields and the table of inference modes ----------------------------
def test_switch_state_declares_its_fields_with_defaults():
    state = SwitchState((32, 16), widths=(0.5, 1.0))
    assert state.train_resolutions == (32, 16) and state.widths == (1.0, 0.5)
    assert state.config == SubnetConfig(32, 1.0)
    assert (state.bn_mode, state.scale_encoding, state.calibrating) == ("nearest", "exact", False)
    for name in ("bn_mode", "scale_encoding", "calibrating", "config", "version", "train_resolutions"):
        with pytest.raises(AttributeError):
            setattr(state, name, getattr(state, name))  # read-only: changed through methods only
    with pytest.raises(AttributeError):
        state.undeclared = 1  # no field beyond the declared ones


def test_scale_encoding_and_calibrating_change_only_through_methods():
    state = SwitchState((32, 16))
    version = state.version
    state.set_scale_encoding("nearest")
    assert state.scale_encoding == "nearest" and state.version == version + 1
    with pytest.raises(ValueError, match=r"^scale_encoding: unknown 'proxy'; choose one of \['exact', 'nearest'\]$"):
        state.set_scale_encoding("proxy")
    assert state.scale_encoding == "nearest"
    with pytest.raises(RuntimeError), state.collecting_statistics():
        assert state.calibrating
        raise RuntimeError("a failing calibration batch")
    assert not state.calibrating  # restored even on error
    with pytest.raises(ValueError, match=r"^bn_mode: unknown 'calibrate'; choose one of"):
        state.activate(SubnetConfig(24), bn_mode="calibrate")  # a user-facing name, not a state mode


# ---- the inference modes, by what the papers say each one computes -----------------------------
# A one-conv network trained at 16 and 12 px: SAN's generated conv (kernel = eps W + b, eps = 0.1 S / 32)
# then private BN. At the unseen 15 px (nearest: 16; RS-Net's blend: 0.75 x the 16-px set + 0.25 x the
# 12-px set) each user-facing bn_mode is computed here by hand from the parameters.
UNSEEN = 15


def _san_bn_net():
    torch.manual_seed(0)
    state = SwitchState((16, 12))
    conv = ScaleConv2d(2, 3, 3, state, padding=1)
    bn = PrivateBatchNorm2d(3, state)
    with torch.no_grad():
        conv.meta.weight.normal_()
        conv.meta.bias.normal_()
        for k, s in enumerate(bn.sets):
            s.weight.copy_(torch.rand(3) + 0.5 + k)
            s.bias.copy_(torch.randn(3))
            s.running_mean.copy_(torch.randn(3) * (k + 1))
            s.running_var.copy_(torch.rand(3) + 0.5 * (k + 1))
    return SwitchableNet(nn.Sequential(conv, bn), state, {}).eval(), conv, bn


def _by_hand(conv, bn, x, calibration):
    """``{bn_mode: output at UNSEEN px}`` written out from the papers' definitions."""
    def convolve(images, encoded):  # SAN eq. 2 at the encoding of `encoded` px
        eps = 0.1 * encoded / 32
        return F.conv2d(images, eps * conv.meta.weight + conv.meta.bias, padding=1)

    def normalise(y, mean, var, gamma, beta):
        return (y - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + bn.eps) * gamma.view(1, -1, 1, 1) \
            + beta.view(1, -1, 1, 1)

    def tensors(s):
        return s.running_mean, s.running_var, s.weight, s.bias

    def exact_statistics(y):  # over the calibration images: mean and unbiased variance per channel
        flat = y.transpose(0, 1).reshape(y.shape[1], -1)
        return flat.mean(1), flat.var(1, unbiased=True)

    near, far = bn.sets[0], bn.sets[1]  # 16 px (nearest to 15) and 12 px
    blend = [0.75 * a + 0.25 * b for a, b in zip(tensors(near), tensors(far))]
    nearest = normalise(convolve(x, 16), *tensors(near))
    return {
        "nearest": nearest,  # the nearest training resolution's BN set (and its encoding)
        "interpolate": normalise(convolve(x, 16), *blend),  # RS-Net sec. 4.3: all four tensors blended
        "calibrate": normalise(convolve(x, 16), *exact_statistics(convolve(calibration, 16)), near.weight, near.bias),
        "proxy": nearest,  # SAN eq. 6: the nearest resolution's encoding and BN
        "ideal": normalise(convolve(x, UNSEEN), *exact_statistics(convolve(calibration, UNSEEN)),
                           near.weight, near.bias),  # SAN eq. 5: its own encoding, BN recalibrated
    }


@torch.no_grad()
def _run_mode(net, name, x, calibration):
    """Run ``net`` at UNSEEN px as :data:`INFERENCE_MODES` says for ``name`` (scale encoding, BN recalibrated
    on ``calibration`` when the mode recalibrates, the state's BN mode)."""
    mode = inference_mode(name)
    config = SubnetConfig(UNSEEN)
    net.state.set_scale_encoding(mode.scale_encoding)
    if mode.recalibrates:
        calibrate_bn(net, [calibration], config, num_samples=len(calibration))
    with net.switch(config, mode.bn_mode):
        return net(x)


def test_each_inference_mode_computes_what_its_paper_defines():
    """Each user-facing bn_mode of the table, run on a SAN-style layer pair, gives the hand computation
    of its definition (RS-Net sec. 4.3; SAN eq. 5 and 6); the modes that differ give different outputs,
    so an entry swapped in the table fails here."""
    net, conv, bn = _san_bn_net()
    x, calibration = torch.randn(4, 2, UNSEEN, UNSEEN), torch.randn(6, 2, UNSEEN, UNSEEN) * 2 + 1
    with torch.no_grad():
        want = _by_hand(conv, bn, x, calibration)
    assert set(BN_MODES) == set(want)  # every mode has its definition here
    for name in BN_MODES:
        torch.testing.assert_close(_run_mode(net, name, x, calibration), want[name], rtol=1e-5, atol=1e-5, msg=name)
    distinct = [want[name] for name in ("nearest", "interpolate", "calibrate", "ideal")]
    assert all(not torch.allclose(a, b, atol=1e-3) for i, a in enumerate(distinct) for b in distinct[i + 1:])
    with pytest.raises(ValueError, match=r"^bn_mode: unknown 'calibrated'; choose one of \['nearest', "):
        inference_mode("calibrated")  # a state mode, not a user-facing name


# ---- one definition: evaluate, export and the runtime follow the table -------------------------
def test_evaluate_export_and_the_runtime_follow_the_table(tmp_path, monkeypatch):
    """With the table's ``proxy`` entry redefined (RS-Net's blended BN and SAN's own encoding instead
    of the nearest resolution's), the runtime, export and evaluate all run the new definition at an
    unseen resolution: none keeps a copy of its own. Tiny SAN checkpoint trained at 16 and 12 px, 13 px."""
    from resnet_switch import export
    from resnet_switch.deploy.runtime import SwitchableClassifier
    from resnet_switch.evaluate import evaluate

    from .tiny_eval import eval_cfg, logits_by_hand, plain_logits, rebuilt, top1_top5, validation_batches, write_tiny

    ckpt = write_tiny(tmp_path / "san.ckpt", "san")
    config = SubnetConfig(13)
    x = torch.randn(3, 3, 13, 13, generator=torch.Generator().manual_seed(1))
    val = validation_batches([13])
    _, net = rebuilt(ckpt)
    with torch.no_grad():
        as_defined = net.materialize(SubnetConfig(12))(x)  # proxy: the 12-px network on 13-px images
    defined_accuracy = top1_top5(*plain_logits(net.materialize(SubnetConfig(12)), val, 13))
    net.state.set_scale_encoding("exact")
    with torch.no_grad(), net.switch(config, "interpolate"):
        redefined = net(x)
    redefined_accuracy = top1_top5(*logits_by_hand(net, val, config, bn_mode="interpolate"))
    assert not torch.allclose(as_defined, redefined, atol=1e-3) and defined_accuracy != redefined_accuracy

    monkeypatch.setitem(INFERENCE_MODES, "proxy", InferenceMode("proxy", "interpolate", "exact", False))
    clf = SwitchableClassifier.from_checkpoint(ckpt, device="cpu", bn_mode="proxy")
    clf.switch(13)
    with torch.no_grad():
        torch.testing.assert_close(clf(x), redefined, rtol=1e-5, atol=1e-5)

    out = tmp_path / "proxy13.pt"
    export.main([f"ckpt={ckpt}", "resolution=13", "format=torchscript", "bn_mode=proxy", f"out={out}"])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
        torch.testing.assert_close(torch.jit.load(str(out))(x), redefined, rtol=1e-5, atol=1e-5)

    (row,) = evaluate(eval_cfg(f"ckpt={ckpt}", "test_resolutions=[13]", "bn_mode=proxy", f"run_dir={tmp_path / 'e'}"))
    assert (row["top1"], row["top5"]) == pytest.approx(redefined_accuracy, abs=1e-4)
