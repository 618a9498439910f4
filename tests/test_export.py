"""``python -m resnet_switch.export``: plain artifacts that reproduce the switchable network."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
import torchvision
from torch import nn

from resnet_switch import export
from resnet_switch.cli.options import run_tool
from resnet_switch.deploy.export import fold_batchnorm
from resnet_switch.models import create_model
from resnet_switch.switch import SubnetConfig
from resnet_switch.training.checkpointing import load_checkpoint, rebuild_from_checkpoint

from .ckpt_factory import randomize_bn, write_checkpoint, write_method_checkpoints
from .helpers import needs


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    return write_method_checkpoints(tmp_path_factory.mktemp("ckpts"))


def reference_logits(ckpt, x, config, bn_mode):
    """The switchable network of ``ckpt`` at ``config`` (rebuilt independently of export)."""
    _, net, _ = rebuild_from_checkpoint(load_checkpoint(ckpt))
    net.state.set_scale_encoding("nearest")
    with torch.no_grad(), net.switch(config, bn_mode):
        return net(x)


def load_any(fmt, path):
    """Load an exported file the way a user would and return ``x -> logits``."""
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.load(str(path))
        return lambda x: module(x)
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    raise AssertionError(fmt)


@pytest.mark.parametrize("fmt", ["torchscript", pytest.param("onnx", marks=needs("onnxscript"))])
@pytest.mark.parametrize("fold", [False, True])
def test_export_reproduces_switchable_outputs(ckpts, tmp_path, fmt, fold):
    out = tmp_path / f"model.{fmt}"
    # 14: an unseen resolution, BN interpolated between the 16 and 12 sets
    result = export.main([f"ckpt={ckpts['rsnet']}", "resolution=14", f"format={fmt}", f"fold_bn={str(fold).lower()}",
                          f"out={out}", "bn_mode=interpolate"])
    assert out.is_file() and result["max_abs_diff"] <= 1e-4
    # float32 rounding grows with the logits: the allowance is the tolerance times max(1, |logit|max)
    assert result["allowed"] == pytest.approx(1e-4 * max(1.0, result["max_abs_logit"]))
    assert result["max_abs_logit"] > 0
    if fold:
        assert result["folded_pairs"] == 21  # every BN of ResNet-20: stem, 9 blocks x 2, 2 projection shortcuts
    x = torch.randn(3, 3, 14, 14)  # a batch size never seen by the exporter (ONNX batch is dynamic)
    expected = reference_logits(ckpts["rsnet"], x, SubnetConfig(14), "interpolate")
    assert (load_any(fmt, out)(x) - expected).abs().max() <= 1e-4


def test_bn_choice_matters_so_the_check_is_meaningful(ckpts):
    x = torch.randn(2, 3, 14, 14)
    near = reference_logits(ckpts["rsnet"], x, SubnetConfig(14), "nearest")
    interp = reference_logits(ckpts["rsnet"], x, SubnetConfig(14), "interpolate")
    assert (near - interp).abs().max() > 1e-3


def test_san_export_bakes_the_generated_kernels(ckpts, tmp_path):
    out = tmp_path / "san.pth"
    result = export.main([f"ckpt={ckpts['san']}", "resolution=12", "format=state_dict", f"out={out}"])
    assert result["max_abs_diff"] <= 1e-4
    state = torch.load(out, weights_only=True)
    assert not any("meta" in k for k in state)  # plain conv weights, no meta-learner left
    _, net, _ = rebuild_from_checkpoint(load_checkpoint(ckpts["san"]))
    conv = net.net.layer1[0].conv1
    assert torch.allclose(state["layer1.0.conv1.weight"], conv.meta(conv.scale * 12 / 32))


def test_mutualnet_export_slices_width_and_uses_stored_bn(ckpts, tmp_path):
    out = tmp_path / "mn.pt"
    result = export.main([f"ckpt={ckpts['mutualnet']}", "resolution=12", "width=0.5", "format=torchscript",
                          "fold_bn=true", f"out={out}"])
    assert result["bn"] == "calibrated" and result["max_abs_diff"] <= 1e-4
    x = torch.randn(2, 3, 12, 12)
    expected = reference_logits(ckpts["mutualnet"], x, SubnetConfig(12, 0.5), "calibrated")
    assert (load_any("torchscript", out)(x) - expected).abs().max() <= 1e-4


@pytest.mark.parametrize("model, tv_name", [("resnet18", "resnet18"), ("resnet50", "resnet50"),
                                            ("mobilenetv2", "mobilenet_v2")])
def test_state_dict_loads_into_torchvision_strictly(tmp_path, model, tv_name):
    ckpt = write_checkpoint(tmp_path / f"{model}.ckpt", "rsnet", model, resolutions=(32, 24), model_kwargs={})
    out = tmp_path / f"{model}.pth"
    result = export.main([f"ckpt={ckpt}", "resolution=28", "format=state_dict", f"out={out}",
                          "bn_mode=interpolate"])
    assert result["checked_with"].startswith(f"torchvision.models.{tv_name}")
    tv = getattr(torchvision.models, tv_name)(num_classes=10)
    tv.load_state_dict(torch.load(out, weights_only=True), strict=True)
    x = torch.randn(2, 3, 28, 28)
    expected = reference_logits(ckpt, x, SubnetConfig(28), "interpolate")
    with torch.no_grad():
        assert (tv.eval()(x) - expected).abs().max() <= 1e-4


def test_fold_batchnorm_leaves_no_bn_and_same_outputs():
    net = create_model("mobilenetv2", [32], layers="plain", num_classes=10).eval()
    randomize_bn(net)
    plain = net.materialize(SubnetConfig(32))
    folded, pairs = fold_batchnorm(plain)
    assert pairs == sum(isinstance(m, nn.BatchNorm2d) for m in plain.modules()) == 52
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (folded(x) - plain(x)).abs().max() <= 1e-4


def test_failed_verification_exits_1_and_removes_the_file(ckpts, tmp_path, capsys):
    out = tmp_path / "bad.pt"
    with pytest.raises(SystemExit) as info:
        export.main([f"ckpt={ckpts['rsnet']}", "resolution=16", "format=torchscript", "fold_bn=true",
                     "tolerance=1e-30", f"out={out}"])
    assert info.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: verify: max abs difference"), lines
    assert not out.exists()


@pytest.mark.parametrize("args, field", [
    (["resolution=16"], "ckpt"),
    (["ckpt=/no/such.ckpt", "resolution=16"], "ckpt"),
    (["CKPT", "resolution=0"], "resolution"),
    (["CKPT", "resolution=-3"], "resolution"),
    (["CKPT"], "resolution"),
    (["CKPT", "resolution=16", "format=tflite"], "format"),
    (["CKPT", "resolution=16", "width=0.5"], "width"),  # rsnet is not slimmable
    (["CKPT", "resolution=16", "width=1.5"], "width"),
    (["MN", "resolution=16", "width=0.25"], "width"),  # below the trained range [0.5, 1]
    (["CKPT", "resolution=16", "bn_mode=magic"], "bn_mode"),
    (["CKPT", "resolution=16", "colour=red"], "colour"),
])
def test_bad_input_exits_2_with_one_line_naming_the_field(ckpts, args, field, capsys):
    argv = [f"ckpt={ckpts['rsnet']}" if a == "CKPT" else f"ckpt={ckpts['mutualnet']}" if a == "MN" else a
            for a in args]
    with pytest.raises(SystemExit) as info:
        run_tool(export.main, argv)
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}:"), lines


def test_cli_subprocess(ckpts, tmp_path):
    out = tmp_path / "cli.pth"
    ok = subprocess.run([sys.executable, "-m", "resnet_switch.export", f"ckpt={ckpts['rsnet']}", "resolution=12",
                         "format=state_dict", f"out={out}"], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and out.is_file(), ok.stderr
    assert "max abs difference" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "resnet_switch.export", f"ckpt={ckpts['rsnet']}", "resolution=0"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: resolution:")
    assert len(bad.stderr.strip().splitlines()) == 1
