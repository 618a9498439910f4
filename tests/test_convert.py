"""Published checkpoints: every official architecture converted and compared with the logits of the
official code (fixtures of ``tests/data/official/``, see ``tests/official_fixtures.py``), exported
files that load into torchvision, and one-line errors for files that do not fit."""

from __future__ import annotations

import pytest
import torch
import torchvision

from resnet_switch.cli.options import run_tool
from resnet_switch.convert import DEFAULTS, convert
from resnet_switch.convert import __main__ as convert_cli
from resnet_switch.convert.common import ConvertError
from resnet_switch.deploy import SwitchableClassifier
from resnet_switch.deploy.export import DEFAULTS as EXPORT_DEFAULTS
from resnet_switch.deploy.export import export
from resnet_switch.switch import SubnetConfig
from resnet_switch.training.checkpointing import CheckpointError, load_checkpoint, rebuild_from_checkpoint
from tests.official_fixtures import build_state_dict, fixture_names, load_fixture, official_input, wrapped

FIXTURES = fixture_names()
_converted: dict[str, tuple[dict, object]] = {}


def converted(name: str, tmp_path_factory) -> tuple[dict, object]:
    """``(fixture, checkpoint path)``: the official-layout file rebuilt from the recipe, saved the
    way its repository saves it, converted once per test session."""
    if name not in _converted:
        fx = load_fixture(name)
        folder = tmp_path_factory.mktemp(name)
        src = folder / "official.pth.tar"
        torch.save(wrapped(fx, build_state_dict(fx)), src)
        result = convert({**DEFAULTS, **fx["convert"], "src": str(src), "out": str(folder / "converted.ckpt")})
        _converted[name] = (fx, result)
    return _converted[name]


def switch_mode(method) -> str:
    return "calibrated" if method.needs_calibration else "nearest"


def test_every_covered_architecture_has_a_fixture():
    covered = {"rsnets_resnet18", "rsnets_resnet50", "rsnets_mobilenetv2", "san_resnet18", "san_resnet50",
               "san_mobilenetv2", "mutualnet_mobilenet_v1", "mutualnet_mobilenet_v2", "mutualnet_resnet50",
               "usnet_mobilenet_v1", "usnet_mobilenet_v2", "snet_mobilenet_v1", "snet_mobilenet_v2"}
    assert covered <= set(FIXTURES)


@pytest.mark.parametrize("name", FIXTURES)
def test_logits_equal_the_official_code(name, tmp_path_factory):
    """Our network on the converted file gives the official eval-mode logits at every stored
    (resolution, width): max abs difference <= 1e-4 x max(1, largest |logit|)."""
    fx, result = converted(name, tmp_path_factory)
    method, net, meta = rebuild_from_checkpoint(load_checkpoint(result["out"]))
    width_mult = float(meta["net"].get("width_mult", 1.0))
    full_width = {}
    for k, (resolution, width) in enumerate(fx["configs"]):
        official = fx["logits"][k]
        with torch.no_grad(), net.switch(SubnetConfig(resolution, width / width_mult), switch_mode(method)):
            ours = net(official_input(fx, resolution))
        diff = float((ours - official).abs().max())
        allowed = 1e-4 * max(1.0, float(official.abs().max()))
        print(f"{name} r{resolution} w{width:g}: max abs logit difference {diff:.3g} (allowed {allowed:.3g})")
        assert diff <= allowed, (name, resolution, width, diff)
        full_width[resolution] = ours
    if "ensemble" in fx:  # RS-Net's validation ensemble: softmax(alpha)-weighted logits
        ours = method.ensemble(full_width)
        assert float((ours - fx["ensemble"]).abs().max()) <= 1e-4 * max(1.0, float(fx["ensemble"].abs().max()))


def test_converted_checkpoint_carries_method_architecture_and_protocol(tmp_path_factory):
    _, rs = converted("rsnets_resnet18", tmp_path_factory)
    meta = load_checkpoint(rs["out"])["resnet_switch"]
    assert meta["method"]["name"] == "rsnet" and meta["net"]["name"] == "resnet18"
    assert meta["net"]["resolutions"] == [224, 192, 160, 128, 96] and meta["net"]["widths"] == [1.0]
    assert meta["run"]["mean"] == [0.0, 0.0, 0.0] and meta["run"]["std"] == [1.0, 1.0, 1.0]  # no normalisation
    assert meta["run"]["data"]["protocol"] == "rsnets"
    _, us = converted("usnet_mobilenet_v1", tmp_path_factory)
    meta = load_checkpoint(us["out"])["resnet_switch"]
    assert meta["net"]["act"] == "relu6" and meta["net"]["layer_kwargs"]["min_channels"] == 1
    assert meta["method"]["kwargs"]["width_range"] == [0.1, 1.0]
    assert meta["run"]["data"]["protocol"] == "slimmable" and meta["run"]["mean"] == [0.485, 0.456, 0.406]
    _, wide = converted("mutualnet_mobilenet_v1_wide", tmp_path_factory)
    meta = load_checkpoint(wide["out"])["resnet_switch"]
    assert meta["net"]["width_mult"] == 2.0 and meta["net"]["widths"] == [1.0, 0.5]  # their 2.0 .. 1.0
    _, r50 = converted("mutualnet_resnet50", tmp_path_factory)
    assert load_checkpoint(r50["out"])["resnet_switch"]["net"]["layer_kwargs"]["role_ratios"] == {"stem": 0.25,
                                                                                                  "mid": 0.25}


def test_san_keeps_the_official_encodings_of_a_non_default_list(tmp_path_factory):
    _, default = converted("san_resnet18", tmp_path_factory)  # [224..96]: 0.7..0.3 = 0.1 * S / 32
    assert "encodings" not in load_checkpoint(default["out"])["resnet_switch"]["net"]["layer_kwargs"]
    _, other = converted("san_resnet50", tmp_path_factory)  # [128, 96, 64] got 0.7, 0.6, 0.5 by position
    kwargs = load_checkpoint(other["out"])["resnet_switch"]["net"]["layer_kwargs"]
    assert kwargs["encodings"] == pytest.approx([0.7, 0.6, 0.5])


def test_bn_set_order_matters(tmp_path_factory, tmp_path):
    """The same file read with its resolutions in the other order puts the 96-px BN set at 224 px:
    the logits at 224 move far from the official ones (so the fixture test checks the mapping)."""
    fx, result = converted("rsnets_resnet18", tmp_path_factory)
    swapped = convert({**DEFAULTS, **fx["convert"], "resolutions": [96, 128, 160, 192, 224],
                       "src": result["src"], "out": str(tmp_path / "swapped.ckpt")})
    _, net, _ = rebuild_from_checkpoint(load_checkpoint(swapped["out"]))
    with torch.no_grad(), net.switch(SubnetConfig(224)):
        ours = net(official_input(fx, 224))
    assert float((ours - fx["logits"][0]).abs().max()) > 0.05


@pytest.mark.parametrize("name, resolution, tv_name", [
    ("rsnets_mobilenetv2", 160, "mobilenet_v2"),
    ("san_resnet18", 128, "resnet18"),
    ("usnet_mobilenet_v2", 64, "mobilenet_v2"),
])
def test_exported_state_dict_loads_strictly_into_torchvision(name, resolution, tv_name, tmp_path_factory, tmp_path):
    _, result = converted(name, tmp_path_factory)
    out = tmp_path / "plain.pth"
    report = export({**EXPORT_DEFAULTS, "ckpt": result["out"], "resolution": resolution, "format": "state_dict",
                     "out": str(out)})
    assert report["checked_with"].startswith(f"torchvision.models.{tv_name}(")
    model = getattr(torchvision.models, tv_name)(num_classes=10).eval()
    model.load_state_dict(torch.load(out, weights_only=True), strict=True)
    clf = SwitchableClassifier.from_checkpoint(result["out"], device="cpu")
    clf.switch(resolution, 1.0)
    x = torch.randn(2, 3, resolution, resolution)
    with torch.no_grad():
        assert torch.allclose(model(x), clf(x), atol=1e-5)


# ----------------------------------------------------------------------------- bad files
@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    """An official US-Net MobileNetV1 file (bare state dict, no prefix) and its fixture."""
    fx = load_fixture("usnet_mobilenet_v1")
    path = tmp_path_factory.mktemp("bad") / "us.pth"
    state = build_state_dict(fx)
    torch.save(state, path)
    return fx, state, path


def corrupt(state: dict, path, kind: str):
    state = dict(state)
    if kind == "renamed":
        state["features.1.body.0.wieght"] = state.pop("features.1.body.0.weight")
    elif kind == "shape":
        state["features.2.body.3.weight"] = state["features.2.body.3.weight"][:, :-8]
    elif kind == "extra":
        state["head.weight"] = torch.zeros(3)
    elif kind == "classes":
        state["classifier.0.weight"] = torch.zeros(5, state["classifier.0.weight"].shape[1])
        state["classifier.0.bias"] = torch.zeros(5)
    torch.save(state, path)
    return path


@pytest.mark.parametrize("kind, message", [
    ("renamed", "src: missing key 'features.1.body.0.weight' (shape (32, 1, 3, 3)) that format=usnet model=mobilenetv1 "
                "resolutions=[64] widths=[0.1, 0.25, 0.6, 1.0] expects; the file has 1 unexpected key(s), first "
                "'features.1.body.0.wieght'"),
    ("shape", "src: key 'features.2.body.3.weight' has shape (128, 56, 1, 1) but format=usnet model=mobilenetv1 "
              "resolutions=[64] widths=[0.1, 0.25, 0.6, 1.0] expects (128, 64, 1, 1)"),
    ("extra", "src: unexpected key 'head.weight' (shape (3)) for format=usnet model=mobilenetv1"),
    ("classes", "src: key 'classifier.0.weight' has shape (5, 1024) but format=usnet model=mobilenetv1 "
                "resolutions=[64] widths=[0.1, 0.25, 0.6, 1.0] expects (10, 1024) (a classifier with 5 classes: "
                "pass num_classes=5)"),
])
def test_a_file_that_does_not_fit_exits_2_with_one_line(small_file, tmp_path, capsys, kind, message):
    fx, state, _ = small_file
    src = corrupt(state, tmp_path / "bad.pth", kind)
    args = [f"src={src}", "format=usnet", "model=mobilenetv1", "resolutions=[64]", "widths=[0.1,0.25,0.6,1.0]",
            "num_classes=10", f"out={tmp_path / 'x.ckpt'}"]
    with pytest.raises(SystemExit) as info:
        run_tool(convert_cli.main, args)
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), lines
    assert not (tmp_path / "x.ckpt").exists()


@pytest.mark.parametrize("args, field", [
    (["format=rsnets", "model=resnet18"], "src"),
    (["SRC", "model=resnet18"], "format"),
    (["SRC", "format=caffe", "model=resnet18"], "format"),
    (["SRC", "format=usnet", "model=resnet18"], "model"),
    (["SRC", "format=rsnets", "model=resnet18", "resolutions=[224,224]"], "resolutions"),
    (["SRC", "format=rsnets", "model=resnet18", "widths=[1.0,0.5]"], "widths"),
    (["SRC", "format=usnet", "model=mobilenetv1", "widths=[0.5,-1]"], "widths"),
    (["SRC", "format=usnet", "model=mobilenetv1", "normalize=yes"], "normalize"),
    (["SRC", "format=rsnets", "model=resnet18", "model.width_mult=2"], "model.width_mult"),
    (["SRC", "format=mutualnet", "model=mobilenetv1", "width_mult=2"], "width_mult"),  # retired: model.width_mult
    (["SRC", "format=rsnets", "model=resnet18", "num_classes=0"], "num_classes"),
    (["src=/no/such.pth", "format=rsnets", "model=resnet18"], "src"),
    (["SRC", "format=rsnets", "model=resnet18", "colour=red"], "colour"),
])
def test_bad_options_exit_2_naming_the_field(small_file, capsys, args, field):
    argv = [f"src={small_file[2]}" if a == "SRC" else a for a in args]
    with pytest.raises(SystemExit) as info:
        run_tool(convert_cli.main, argv)
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}:"), lines


def test_another_format_names_the_first_key_it_misses(small_file, tmp_path):
    with pytest.raises(ConvertError, match=r"^src: missing key 'conv1.module.weight' \(shape \(64, 3, 7, 7\)\) "
                                            r"that format=rsnets model=resnet18"):
        convert({**DEFAULTS, "src": str(small_file[2]), "format": "rsnets", "model": "resnet18",
                 "out": str(tmp_path / "x.ckpt")})


def test_a_pickle_that_needs_code_is_refused(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "args": torch.nn.Linear(1, 1)}, path)
    with pytest.raises(ConvertError, match="weights_only=True"):
        convert({**DEFAULTS, "src": str(path), "format": "rsnets", "model": "resnet18"})


# ------------------------------------------------------------ the converted file in every command
def eval_cfg(*overrides):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from resnet_switch.cli.overrides import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("evaluate", overrides=["device=cpu", "calibration_samples=8", "data.batch_size=8",
                                              "data.num_workers=0", "+data.name=synthetic", "+data.val_samples=8",
                                              *overrides])


def test_cli_convert_then_evaluate_and_export(small_file, tmp_path, monkeypatch):
    """From a fixture-built file: the convert command, then evaluate (stored per-width BN statistics
    reused; ``recalibrate=true`` recomputes them) and export."""
    from resnet_switch import evaluate as evaluate_module
    from resnet_switch.evaluation import checkpoint_eval

    from .helpers import run_cli

    _, _, src = small_file
    out = tmp_path / "us.ckpt"
    done = run_cli("resnet_switch.convert", f"src={src}", "format=usnet", "model=mobilenetv1", "resolutions=[64]",
                   "widths=[0.1,0.25,0.6,1.0]", "num_classes=10", f"out={out}")
    assert done.returncode == 0, done.stderr
    assert f"wrote {out} (method=usnet" in done.stdout and "model.act=relu6" in done.stdout
    assert "model.small_input=false" in done.stdout  # the published network's ImageNet stem, at 64 px too
    calibrated = []
    real = checkpoint_eval.calibrate_configs

    def spy(net, datamodule, configs, num_samples, progress=True):
        calibrated.extend(c.key() for c in configs)
        real(net, datamodule, configs, num_samples, progress=False)

    monkeypatch.setattr(checkpoint_eval, "calibrate_configs", spy)
    rows = evaluate_module.evaluate(eval_cfg(f"ckpt={out}", "widths=[1.0,0.6]", f"run_dir={tmp_path / 'a'}"))
    assert [(r["width"], r["bn"]) for r in rows] == [(1.0, "stored"), (0.6, "stored")] and calibrated == []
    rows = evaluate_module.evaluate(eval_cfg(f"ckpt={out}", "widths=[0.6]", "recalibrate=true",
                                             f"run_dir={tmp_path / 'b'}"))
    assert calibrated == ["r64_w0.6"] and [r["bn"] for r in rows] == ["recalibrated"]
    report = export({**EXPORT_DEFAULTS, "ckpt": str(out), "resolution": 64, "width": 0.6, "format": "torchscript",
                     "out": str(tmp_path / "us.pt")})
    assert report["max_abs_diff"] <= report["allowed"] and (tmp_path / "us.pt").is_file()


@pytest.mark.slow
def test_train_fine_tunes_from_a_converted_checkpoint(small_file, tmp_path):
    """``train ckpt_path=`` takes a converted file (a step-0 Lightning checkpoint) with the options
    the converter printed, and refuses it without them."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from resnet_switch.cli.overrides import CONF_DIR
    from resnet_switch.train import train

    _, _, src = small_file
    out = tmp_path / "us.ckpt"
    convert({**DEFAULTS, "src": str(src), "format": "usnet", "model": "mobilenetv1", "resolutions": [64],
             "widths": [0.1, 0.25, 0.6, 1.0], "num_classes": 10, "out": str(out)})
    common = ["method=usnet", "model=mobilenetv1", "data.resolutions=[64]", "method.width_range=[0.1,1.0]",
              f"ckpt_path={out}", "trainer.max_epochs=1", "data.train_samples=16", "data.val_samples=8",
              "data.batch_size=8", "data.num_workers=0", "calibration_samples=8", "trainer.accelerator=cpu",
              "trainer.enable_progress_bar=false", "callbacks.progress_bar=null", "logger=csv"]

    def cfg(*extra):
        GlobalHydra.instance().clear()
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            return compose("train", overrides=[*common, f"run_dir={tmp_path / str(len(extra))}", *extra])

    with pytest.raises(CheckpointError, match="method.min_channels=1"):
        train(cfg())
    metrics = train(cfg("method.min_channels=1", "model.act=relu6", "model.small_input=false"))
    assert set(metrics) == {"acc1@64", "acc1@64_w0.55", "acc1@64_w0.1"}
