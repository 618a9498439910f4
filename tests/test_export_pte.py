"""``export ... format=pte configs=all``: ONE ExecuTorch program for every resolution, checked here in
``executorch.runtime`` against the switchable network (tests that need ExecuTorch skip without it);
without ExecuTorch, ``format=pte`` is a one-line error (simulated, so it runs everywhere)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from resnet_switch import export
from resnet_switch.cli.options import run_tool
from resnet_switch.deploy import pte
from resnet_switch.deploy.runtime import SwitchableClassifier

from .ckpt_factory import MEAN, STD, write_checkpoint


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("pte_ckpts")
    return {
        "rsnet": write_checkpoint(root / "rsnet.ckpt", "rsnet"),
        "san": write_checkpoint(root / "san.ckpt", "san"),
        "mutualnet": write_checkpoint(root / "mutualnet.ckpt", "mutualnet", method_kwargs={"width_range": [0.5, 1.0]}),
    }


def executorch_runtime():
    pytest.importorskip("executorch")
    pytest.importorskip("executorch.runtime")
    from executorch.runtime import Runtime

    return Runtime.get()


@pytest.fixture(scope="module")
def exported(ckpts, tmp_path_factory):
    """Each checkpoint exported once: ``name -> (folder, out, result, printed report)``."""
    executorch_runtime()
    done = {}

    def get(name):
        if name not in done:
            folder = tmp_path_factory.mktemp(f"pte_{name}")
            out = folder / f"{name}_all.pte"
            result = export.main([f"ckpt={ckpts[name]}", "format=pte", "configs=all", f"out={out}"])
            done[name] = folder, out, result, export.report(result)
        return done[name]

    return get


def reference(ckpt, x, resolution):
    """The switchable network of ``ckpt`` at ``resolution``, through the runtime (its inference policy)."""
    clf = SwitchableClassifier.from_checkpoint(ckpt, device="cpu")
    clf.switch(resolution)
    with torch.no_grad():
        return clf(x)


@pytest.mark.parametrize("name", ["rsnet", "san"])
def test_one_pte_reproduces_a_training_and_an_unseen_resolution(ckpts, exported, name):
    folder, out, result, printed = exported(name)
    assert sorted(p.name for p in folder.iterdir()) == [out.name]  # no temporary file left
    assert result["format"] == "pte" and result["train_resolutions"] == [16, 12] and result["unseen"] == [14, 18]
    assert [c["resolution"] for c in result["checks"]] == [16, 12, 14, 18]
    assert all(c["max_abs_diff"] <= c["allowed"] for c in result["checks"])
    # lowered to XNNPACK: every conv in the delegate but SAN's generated ones (XNNPACK takes constant weights only)
    assert result["delegate_calls"] > 0 and result["blended_bn"] == 21
    assert result["generated_convs"] == {"rsnet": 0, "san": 20}[name]
    assert result["portable_ops"].get("aten.convolution.default", 0) == result["generated_convs"]
    for r in (16, 12, 14, 18):
        assert f"verify {r}px" in printed
    # the file loaded here, at batch sizes and an unseen resolution the exporter never checked
    method = executorch_runtime().load_program(out).load_method("forward")
    gen = torch.Generator().manual_seed(1)
    for r, batch in ((16, 1), (12, 4), (13, 3), (15, 1)):
        x = torch.randn(batch, 3, r, r, generator=gen)
        expected = reference(ckpts[name], x, r)
        got = method.execute([x])[0]
        assert got.shape == expected.shape
        assert (got - expected).abs().max() <= 1e-4 * max(1.0, float(expected.abs().max())), (name, r)


def test_rsnet_pte_blends_bn_sets_and_carries_the_metadata(ckpts, exported):
    _, out, result, printed = exported("rsnet")
    meta = pte.pte_metadata(out)
    assert meta["train_resolutions"] == [16, 12] and meta["bn_mode"] == "interpolate"
    assert meta["mean"] == pytest.approx(MEAN) and meta["std"] == pytest.approx(STD) and meta["crop_ratio"] == 0.875
    assert meta["max_side"] == result["max_side"] == 32 and meta["max_batch"] == result["max_batch"] == 16
    assert [c["bn"] for c in result["checks"]] == ["own", "own", "interpolated", "nearest"]
    # at 14 px the blend matters: the nearest set alone gives other logits
    x = torch.randn(2, 3, 14, 14)
    clf = SwitchableClassifier.from_checkpoint(ckpts["rsnet"], device="cpu", bn_mode="nearest")
    clf.switch(14)
    run, _ = pte.pte_runner(out)
    with torch.no_grad():
        assert (run(x) - clf(x)).abs().max() > 1e-3
    assert "pte," in printed and "planned memory" in printed
    assert result["bytes"] == out.stat().st_size > result["weight_bytes"] > 0


def test_failed_check_exits_1_and_leaves_no_file(ckpts, exported, tmp_path, monkeypatch, capsys):
    _, done, _, _ = exported("rsnet")
    # the lowering is the slow part: hand the check the program already written (same checkpoint)
    monkeypatch.setattr(pte, "lower_to_pte", lambda *args, **kwargs: (done.read_bytes(), 0, {}))
    out = tmp_path / "bad.pte"
    with pytest.raises(SystemExit) as info:
        export.main([f"ckpt={ckpts['rsnet']}", "format=pte", "configs=all", f"out={out}", "tolerance=1e-30"])
    assert info.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: verify: at 16px max abs difference"), lines
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary one


@pytest.mark.parametrize("args, message", [
    (["MN", "configs=all", "format=pte"], "format: pte does not take slimmable checkpoints"),
    (["RS", "configs=all", "format=pte", "max_side=16"], "max_side: 16 px is below"),  # 18 px is checked
])
def test_refusals_after_reading_the_checkpoint(ckpts, tmp_path, capsys, args, message):
    executorch_runtime()
    names = {"RS": "rsnet", "MN": "mutualnet"}
    argv = [f"ckpt={ckpts[names[a]]}" if a in names else a for a in args] + [f"out={tmp_path / 'x.pte'}"]
    with pytest.raises(SystemExit) as info:
        run_tool(export.main, argv)
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), lines
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- with or without ExecuTorch
@pytest.fixture
def no_executorch(monkeypatch):
    """``import executorch`` (and any of its modules already loaded) raises ImportError from here on."""
    for name in [n for n in sys.modules if n.startswith("executorch.")] + ["executorch"]:
        monkeypatch.setitem(sys.modules, name, None)


def test_without_executorch_format_pte_is_one_line_exit_2(ckpts, tmp_path, capsys, no_executorch):
    out = tmp_path / "x.pte"
    with pytest.raises(SystemExit) as info:
        run_tool(export.main, [f"ckpt={ckpts['rsnet']}", "format=pte", "configs=all", f"out={out}"])
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["error: format: pte needs ExecuTorch: pip install 'resnet_switch[executorch]' "
                     "(executorch 1.5, with torch 2.14), or use format=onnx"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, field", [
    (["RS", "format=pte"], "format"),  # one configuration: not as a .pte
    (["RS", "format=pte", "resolution=16"], "format"),
    (["RS", "format=pte", "configs=all", "resolution=16"], "resolution"),
    (["RS", "format=pte", "configs=all", "fold_bn=true"], "fold_bn"),
    (["RS", "format=pte", "configs=all", "unseen=[2]"], "unseen"),
    (["RS", "format=pte", "configs=all", "size_bound=2"], "size_bound"),
    (["RS", "format=pte", "configs=all", "max_side=4"], "max_side"),
    (["RS", "format=pte", "configs=all", "max_batch=0"], "max_batch"),
    (["RS", "format=pte", "configs=all", "max_batch=1.5"], "max_batch"),
    (["RS", "format=onnx", "configs=all", "max_batch=4"], "max_batch"),
    (["RS", "format=onnx", "resolution=16", "max_side=64"], "max_side"),
    (["format=pte", "configs=all"], "ckpt"),
])
def test_bad_option_is_one_line_exit_2(ckpts, tmp_path, capsys, args, field):
    argv = [f"ckpt={ckpts['rsnet']}" if a == "RS" else a for a in args] + [f"out={tmp_path / 'x.pte'}"]
    with pytest.raises(SystemExit) as info:
        run_tool(export.main, argv)
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}:"), lines
    assert list(tmp_path.iterdir()) == []


def test_the_extra_pins_executorch_1_5_outside_dev():
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert extras["executorch"] == ["executorch>=1.5,<1.6"]
    assert not any("executorch" in dep for dep in extras["dev"])
