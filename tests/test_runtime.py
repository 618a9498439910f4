"""Runtime API: load once, predict at a configuration, switch cheaply, select under a budget."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from resnet_switch.data.multires import resize_images
from resnet_switch.deploy.runtime import SwitchableClassifier
from resnet_switch.evaluation import query_table as qt
from resnet_switch.layers.scale_conv import ScaleConv2d
from resnet_switch.models.switchable import SwitchableNet
from resnet_switch.switch import BN_MODES, INFERENCE_MODES, SubnetConfig

from .ckpt_factory import MEAN, STD, write_method_checkpoints


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    return write_method_checkpoints(tmp_path_factory.mktemp("ckpts"))


def manual_input(images_uint8: torch.Tensor, r: int, ratio: float = 0.875) -> torch.Tensor:
    """The validation protocol by hand: central square of ratio x shorter side, resize, normalise."""
    x = images_uint8.float() / 255
    h, w = x.shape[-2:]
    side = round(min(h, w) * ratio)
    top, left = (h - side) // 2, (w - side) // 2
    x = resize_images(x[..., top:top + side, left:left + side], r)
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def test_predict_matches_the_network_on_the_validation_preprocessing(ckpts):
    clf = SwitchableClassifier.from_checkpoint(ckpts["rsnet"], device="cpu")
    assert clf.config == SubnetConfig(16)
    images = torch.randint(0, 256, (2, 3, 40, 30), dtype=torch.uint8)
    logits = clf.predict(images, resolution=12)
    assert logits.shape == (2, 10) and clf.config == SubnetConfig(12)
    with torch.no_grad(), clf.net.switch(SubnetConfig(12), "nearest"):
        expected = clf.net(manual_input(images, 12))
    assert torch.allclose(logits, expected, atol=1e-5)
    # float input in [0, 1] and a list of PIL images of different sizes give the same answer
    assert torch.allclose(clf.predict(images.float() / 255), logits, atol=1e-5)
    pil = [Image.fromarray(im.permute(1, 2, 0).numpy()) for im in images]
    assert torch.allclose(clf.predict(pil), logits, atol=1e-4)


def test_switch_is_cheap_no_rematerialisation_no_weight_copy(ckpts, monkeypatch):
    clf = SwitchableClassifier.from_checkpoint(ckpts["rsnet"], device="cpu")
    pointers = [p.data_ptr() for p in clf.net.parameters()]

    def forbidden(*args, **kwargs):
        raise AssertionError("switch must not materialise")

    monkeypatch.setattr(SwitchableNet, "materialize", forbidden)
    images = torch.randint(0, 256, (1, 3, 20, 20), dtype=torch.uint8)
    outs = {}
    for r in (16, 12, 14, 16):
        clf.switch(r)
        outs.setdefault(r, clf.predict(images))
        assert torch.equal(clf.predict(images), outs[r])  # the same configuration gives the same answer
    assert [p.data_ptr() for p in clf.net.parameters()] == pointers
    assert not torch.allclose(outs[16], outs[12])


def test_unseen_resolution_uses_the_bn_mode(ckpts):
    near = SwitchableClassifier.from_checkpoint(ckpts["rsnet"], device="cpu", bn_mode="nearest")
    interp = SwitchableClassifier.from_checkpoint(ckpts["rsnet"], device="cpu")  # rsnet default: interpolate
    x = torch.randn(2, 3, 14, 14)
    near.switch(14)
    interp.switch(14)
    with torch.no_grad(), interp.net.switch(SubnetConfig(14), "interpolate"):
        expected = interp.net(x)
    assert torch.allclose(interp(x), expected) and not torch.allclose(near(x), expected)


def test_san_generates_kernels_once_per_configuration(ckpts, monkeypatch):
    clf = SwitchableClassifier.from_checkpoint(ckpts["san"], device="cpu")
    conv = next(m for m in clf.net.modules() if isinstance(m, ScaleConv2d))
    calls = []
    original = type(conv.meta).forward
    monkeypatch.setattr(type(conv.meta), "forward", lambda self, eps: calls.append(eps) or original(self, eps))
    x = torch.randn(1, 3, 12, 12)
    clf.switch(12)
    first = clf(x)
    generated = len(calls)
    assert generated > 0  # the switch made the 12-px kernels (16 px: made when loading)
    for r in (16, 12, 16, 12):
        clf.switch(r)
        clf(torch.randn(1, 3, r, r))
    assert len(calls) == generated  # cached per configuration: nothing regenerated
    assert torch.equal(clf(x), first)
    with torch.no_grad():
        cached = conv.kernel()  # the active (12 px) kernel: a cache hit
    assert len(calls) == generated
    assert torch.equal(cached, conv.meta(conv.scale * 12 / 32))
    conv.reset_cache()
    with torch.no_grad():
        conv.kernel()
    assert len(calls) == generated + 2  # regenerated after the public reset (the reference above is one call)


@pytest.mark.parametrize("name", BN_MODES)
def test_bn_mode_runs_with_its_inference_mode(ckpts, name):
    """The runtime takes the state's BN mode and scale encoding from the one table of inference modes;
    training resolutions always use their own BN set."""
    clf = SwitchableClassifier.from_checkpoint(ckpts["san"], device="cpu", bn_mode=name)
    assert clf.net.state.scale_encoding == INFERENCE_MODES[name].scale_encoding
    assert clf.state_bn_mode(SubnetConfig(14)) == INFERENCE_MODES[name].bn_mode
    assert clf.state_bn_mode(SubnetConfig(16)) == "nearest"


def test_mutualnet_uses_stored_statistics_and_calibrate_adds_more(ckpts):
    clf = SwitchableClassifier.from_checkpoint(ckpts["mutualnet"], device="cpu")
    stored = clf.stored_configs()
    assert SubnetConfig(12, 0.5) in stored and SubnetConfig(16, 1.0) in stored
    x = torch.randn(2, 3, 12, 12)
    clf.switch(12, 0.5)
    with torch.no_grad(), clf.net.switch(SubnetConfig(12, 0.5), "calibrated"):
        expected = clf.net(x)
    assert torch.equal(clf(x), expected)
    plain = clf.materialize()
    with torch.no_grad():
        assert (plain(x) - expected).abs().max() <= 1e-5
    with pytest.raises(ValueError, match=r"^width: no BN statistics stored for width 1 @ 14px"):
        clf.switch(14, 1.0)
    clf.calibrate(torch.randint(0, 256, (8, 3, 20, 20), dtype=torch.uint8), 14, 1.0)
    assert clf.switch(14, 1.0) == SubnetConfig(14, 1.0)
    assert clf.predict(torch.rand(1, 3, 20, 20)).shape == (1, 10)


def test_select_under_a_budget_switches_to_the_best_row(ckpts, tmp_path):
    clf = SwitchableClassifier.from_checkpoint(ckpts["mutualnet"], device="cpu")
    rows = [
        {"width": 1.0, "resolution": 16, "madds": 400, "params": 10, "latency_ms": 4.0, "top1": 80.0, "top5": 99.0},
        {"width": 0.75, "resolution": 16, "madds": 250, "params": 8, "latency_ms": 3.0, "top1": 76.0, "top5": 98.0},
        {"width": 0.5, "resolution": 12, "madds": 100, "params": 5, "latency_ms": 1.0, "top1": 70.0, "top5": 95.0},
    ]
    path = qt.write_query_table(rows, tmp_path)[0]
    row = clf.select(path, madds=300)
    assert (row["width"], row["resolution"]) == (0.75, 16) and clf.config == SubnetConfig(16, 0.75)
    row = clf.select(path, latency_ms=2)
    assert clf.config == SubnetConfig(12, 0.5) and row["top1"] == 70.0
    with pytest.raises(ValueError, match="^budget: no configuration fits"):
        clf.select(path, madds="50")
    with pytest.raises(FileNotFoundError, match="^query_table: no file"):
        clf.select(tmp_path / "missing.csv", madds=300)


@pytest.mark.parametrize("call, field", [
    (lambda c: c.switch(0), "resolution"),
    (lambda c: c.switch(16, 0.5), "width"),
    (lambda c: c.predict(torch.zeros(2, 4, 8, 8)), "images"),
    (lambda c: c.predict(torch.zeros(2, 3, 8, 8, dtype=torch.int32)), "images"),
])
def test_bad_calls_raise_one_line_errors_naming_the_field(ckpts, call, field):
    clf = SwitchableClassifier.from_checkpoint(ckpts["rsnet"], device="cpu")
    with pytest.raises(ValueError) as info:
        call(clf)
    assert str(info.value).startswith(f"{field}:") and "\n" not in str(info.value)
