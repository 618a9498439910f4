"""Fine-tuning from a switchable checkpoint (``model.init.ckpt``): what is kept, what is refused."""

import logging

import pytest
import torch

from resnet_switch.errors import ConfigError
from resnet_switch.methods import build_method
from resnet_switch.models import create_model
from resnet_switch.switch import SubnetConfig
from resnet_switch.train import train
from resnet_switch.training.checkpointing import CheckpointError, load_checkpoint, rebuild_from_checkpoint
from resnet_switch.training.init_from import init_from_checkpoint

from .ckpt_factory import write_checkpoint
from .helpers import tiny_cfg

SMALL = {"base_width": 4}
# method -> (method kwargs, configurations compared: (resolution, width, bn_mode))
FAMILIES = {
    "rsnet": ({}, [(16, 1.0, None), (12, 1.0, None), (14, 1.0, "interpolate")]),
    "san": ({}, [(16, 1.0, None), (12, 1.0, None), (14, 1.0, "nearest")]),
    "mutualnet": ({"width_range": [0.5, 1.0]}, [(16, 1.0, "calibrated"), (12, 0.75, "calibrated"),
                                                (12, 0.5, "calibrated"), (16, 0.5, "calibrated")]),
    "snet": ({"widths": [1.0, 0.5]}, [(16, 1.0, None), (16, 0.5, None)]),
}


def target_net(method, resolutions=(16, 12), num_classes=10, method_kwargs=None, model="resnet20", model_kwargs=None):
    torch.manual_seed(1)  # not the checkpoint's seed: every copied tensor starts different
    return create_model(model, method=build_method(method, list(resolutions), **(method_kwargs or {})),
                        num_classes=num_classes, **(SMALL if model_kwargs is None else model_kwargs))


def outputs(net, configs, x16):
    net.eval()
    out = []
    with torch.no_grad():
        for r, w, mode in configs:
            x = torch.nn.functional.interpolate(x16, size=(r, r), mode="bilinear", antialias=True)
            with net.switch(SubnetConfig(r, w), mode):
                out.append(net(x))
    return out


@pytest.mark.parametrize("method", sorted(FAMILIES))
def test_same_task_keeps_every_switchable_part(tmp_path, method, caplog):
    """Private BN sets, SAN generators, slimmable weights and calibrated statistics, S-Net's
    per-width sets: the target gives the source's outputs at every configuration."""
    kwargs, configs = FAMILIES[method]
    path = write_checkpoint(tmp_path / "src.ckpt", method, method_kwargs=kwargs)
    _, source, _ = rebuild_from_checkpoint(load_checkpoint(path))
    target = target_net(method, method_kwargs=kwargs)
    x = torch.randn(3, 3, 16, 16)
    assert not torch.equal(target.net.conv1.weight, source.net.conv1.weight)  # the stem is plain in SAN too
    with caplog.at_level(logging.INFO, logger="resnet_switch.training.init_from"):
        summary = init_from_checkpoint(target, path, method)
    assert not summary["replaced"] and summary["remapped_bn"] == 0
    assert "init_from: classifier fc kept (10 -> 10 classes)" in caplog.text
    for got, want in zip(outputs(target, configs, x), outputs(source, configs, x)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("method", ["rsnet", "mutualnet"])
def test_new_class_count_replaces_only_the_classifier(tmp_path, method, caplog):
    kwargs = FAMILIES[method][0]
    path = write_checkpoint(tmp_path / "src.ckpt", method, method_kwargs=kwargs)
    source_state = rebuild_from_checkpoint(load_checkpoint(path))[1].state_dict()
    target = target_net(method, num_classes=4, method_kwargs=kwargs)
    fresh_fc = target.net.fc.weight.clone()
    with caplog.at_level(logging.INFO, logger="resnet_switch.training.init_from"):
        init_from_checkpoint(target, path, method)
    assert "init_from: classifier fc replaced (10 -> 4 classes)" in caplog.text
    state = target.state_dict()
    assert state["net.fc.weight"].shape == (4, 16) and torch.equal(state["net.fc.weight"], fresh_fc)
    for key, value in source_state.items():
        if not key.startswith("net.fc.") and isinstance(value, torch.Tensor):
            assert torch.equal(state[key], value), key
    if method == "mutualnet":  # stored per-(width, resolution) statistics come along
        bn = target.net.bn1
        assert bn.calibrated and bn.calibrated.keys() == rebuild_from_checkpoint(load_checkpoint(path))[1].net.bn1.calibrated.keys()


def test_statistics_of_configurations_not_recalibrated_are_dropped(tmp_path, caplog):
    """A target evaluating widths {1, 0.75, 0.5} keeps those statistics and drops the checkpoint's
    0.625 ones (range [0.25, 1]: 0.625 is its middle width), which no validation would refresh."""
    path = write_checkpoint(tmp_path / "src.ckpt", "mutualnet", method_kwargs={"width_range": [0.25, 1.0]})
    source_keys = set(rebuild_from_checkpoint(load_checkpoint(path))[1].net.bn1.calibrated)
    method = build_method("mutualnet", [16, 12], width_range=[0.5, 1.0])
    target = create_model("resnet20", method=method, num_classes=10, **SMALL)
    keep = method.eval_configs()
    with caplog.at_level(logging.INFO, logger="resnet_switch.training.init_from"):
        summary = init_from_checkpoint(target, path, "mutualnet", keep_statistics=keep)
    kept = set(target.net.bn1.calibrated)
    assert kept == source_keys & {c.key() for c in keep} and {"r16_w1", "r12_w1"} <= kept
    assert summary["dropped_statistics"] == len(source_keys - kept) == 4  # 0.625 and 0.25 x 2 resolutions
    assert "statistics of 4 configurations dropped" in caplog.text


def test_classifier_replace_forces_a_new_head_with_the_same_classes(tmp_path):
    path = write_checkpoint(tmp_path / "src.ckpt", "rsnet")
    target = target_net("rsnet")
    fresh = target.net.fc.weight.clone()
    assert init_from_checkpoint(target, path, "rsnet", classifier="replace")["replaced"]
    assert torch.equal(target.net.fc.weight, fresh)


def test_other_resolutions_build_bn_sets_from_the_checkpoints(tmp_path):
    """RS-Net at [16, 12] -> [16, 14, 12]: 16 and 12 keep their sets, 14's is interpolated (RS-Net
    4.3), so every target resolution gives the source's interpolated-BN outputs."""
    path = write_checkpoint(tmp_path / "src.ckpt", "rsnet")
    _, source, _ = rebuild_from_checkpoint(load_checkpoint(path))
    target = target_net("rsnet", resolutions=(16, 14, 12))
    with pytest.raises(ConfigError, match=r"^model.init.ckpt: .*\[14\].*model.init.bn_mode=interpolate"):
        init_from_checkpoint(target, path, "rsnet")
    assert init_from_checkpoint(target, path, "rsnet", bn_mode="interpolate")["remapped_bn"] > 0
    configs = [(16, 1.0, None), (14, 1.0, "interpolate"), (12, 1.0, None)]
    x = torch.randn(2, 3, 16, 16)
    for got, want in zip(outputs(target, [(r, w, None) for r, w, _ in configs], x), outputs(source, configs, x)):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    # a subset of the checkpoint's resolutions needs no mode: each set is the same-resolution one
    subset = target_net("rsnet", resolutions=(12,))
    init_from_checkpoint(subset, path, "rsnet")
    torch.testing.assert_close(outputs(subset, [(12, 1.0, None)], x)[0], outputs(source, [(12, 1.0, None)], x)[0])


def test_plain_source_fills_every_private_set(tmp_path):
    """``individual`` (plain BN) -> ``rsnet``: each resolution runs the single-resolution network."""
    path = write_checkpoint(tmp_path / "src.ckpt", "individual", resolutions=(16,))
    _, source, _ = rebuild_from_checkpoint(load_checkpoint(path))
    target = target_net("rsnet")
    init_from_checkpoint(target, path, "rsnet")
    x = torch.randn(2, 3, 16, 16)
    for r in (16, 12):
        torch.testing.assert_close(outputs(target, [(r, 1.0, None)], x)[0], outputs(source, [(r, 1.0, None)], x)[0])


@pytest.mark.parametrize("source,target,match", [
    (("rsnet", {}, "resnet20", SMALL), ("rsnet", {}, "mobilenetv1", {}), r"backbone is resnet20.*use model=resnet20"),
    (("rsnet", {}, "resnet20", SMALL), ("rsnet", {}, "resnet20", {"base_width": 8}),
     r"base_width=4.*this run has 8; use model.base_width=4"),
    (("san", {}, "resnet20", SMALL), ("rsnet", {}, "resnet20", SMALL), r"method=san has san layers.*do not map"),
    (("mutualnet", {}, "resnet20", SMALL), ("parallel", {}, "resnet20", SMALL), r"slimmable layers"),
    (("mutualnet", {}, "resnet20", SMALL), ("mutualnet", {"divisor": 4}, "resnet20", SMALL),
     r"divisor=8, this run's 4; set method.divisor"),
    (("mutualnet", {}, "resnet20", SMALL), ("snet", {}, "resnet20", SMALL), r"one BN set per width \(snet\)"),
    (("snet", {"widths": [1.0, 0.5]}, "resnet20", SMALL), ("snet", {"widths": [1.0, 0.75]}, "resnet20", SMALL),
     r"S-Net has BN sets for widths \[1.0, 0.5\].*method.widths"),
    (("san", {"conv": "private"}, "resnet20", SMALL), ("san", {"conv": "private"}, "resnet20", SMALL),
     r"private convs are per resolution"),
])
def test_what_does_not_fit_is_refused_in_one_line(tmp_path, source, target, match):
    method, kwargs, model, model_kwargs = source
    path = write_checkpoint(tmp_path / "src.ckpt", method, model=model, method_kwargs=kwargs, model_kwargs=model_kwargs)
    t_method, t_kwargs, t_model, t_model_kwargs = target
    resolutions = (20, 16) if "private convs" in match else (16, 12)
    net = target_net(t_method, resolutions, method_kwargs=t_kwargs, model=t_model, model_kwargs=t_model_kwargs)
    with pytest.raises(ConfigError, match=match) as err:
        init_from_checkpoint(net, path, t_method, bn_mode="nearest")
    assert "\n" not in str(err.value) and str(err.value).startswith("model.init.ckpt: ")


def test_bad_files_and_channel_counts_are_refused(tmp_path):
    net = target_net("rsnet")
    with pytest.raises(CheckpointError, match=r"^model.init.ckpt: no file"):
        init_from_checkpoint(net, tmp_path / "missing.ckpt", "rsnet")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"^model.init.ckpt: .* damaged, truncated or not a checkpoint"):
        init_from_checkpoint(net, tmp_path / "junk.ckpt", "rsnet")
    path = write_checkpoint(tmp_path / "src.ckpt", "rsnet")
    grey = create_model("resnet20", method=build_method("rsnet", [16, 12]), num_classes=10, in_channels=1, **SMALL)
    with pytest.raises(ConfigError, match=r"3-channel images, this data set has 1"):
        init_from_checkpoint(grey, path, "rsnet")
    with pytest.raises(ConfigError, match=r"^model.init.bn_mode: unknown"):
        init_from_checkpoint(net, path, "rsnet", bn_mode="closest")


def test_train_fine_tunes_from_a_checkpoint(tmp_path, caplog):
    """``python -m resnet_switch.train model.init.ckpt=CKPT``: a new run (epoch 0, fresh optimizer)
    on a new class count, with any method of the same layer family."""
    path = write_checkpoint(tmp_path / "src.ckpt", "rsnet")
    with caplog.at_level(logging.INFO, logger="resnet_switch.training.init_from"):
        train(tiny_cfg(tmp_path / "run", "method=parallel", f"model.init.ckpt={path}", "data.synthetic.num_classes=6"))
    assert "init_from: classifier fc replaced (10 -> 6 classes)" in caplog.text
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert ckpt["epoch"] == 0 and ckpt["resnet_switch"]["run"]["model"]["init"]["ckpt"] == str(path)
    with pytest.raises(ConfigError, match=r"^model.pretrained: give either"):
        train(tiny_cfg(tmp_path / "run2", f"model.init.ckpt={path}", f"model.pretrained={path}"))
