"""``export ... format=onnx configs=all``: ONE ONNX file for every resolution, and the runtime without
torch (:mod:`resnet_switch.deploy.onnx`)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from resnet_switch import export
from resnet_switch.cli.options import run_tool
from resnet_switch.deploy.one_file import METADATA_KEY, ResolutionBlendNet, default_unseen
from resnet_switch.deploy.runtime import SwitchableClassifier
from resnet_switch.switch import SubnetConfig

from .ckpt_factory import MEAN, STD, write_checkpoint
from .helpers import needs

pytestmark = [needs("onnxscript"), needs("onnxruntime")]

TINY_SIZE_BOUND = "size_bound=1.5"  # resnet20 at base width 4: the graph, not the weights, dominates the file
W2A2 = {"weight_bits": 2, "act_bits": 2}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("one_file")
    return {
        "individual": write_checkpoint(root / "individual.ckpt", "individual", resolutions=(16,)),
        "parallel": write_checkpoint(root / "parallel.ckpt", "parallel"),
        "rsnet": write_checkpoint(root / "rsnet.ckpt", "rsnet"),
        "rsnet_lq": write_checkpoint(root / "rsnet_lq.ckpt", "rsnet", quant=W2A2),
        "san": write_checkpoint(root / "san.ckpt", "san"),
        "san_mlp8": write_checkpoint(root / "san_mlp8.ckpt", "san", method_kwargs={"meta": "mlp8"}),
        "san_private_conv": write_checkpoint(root / "san_pc.ckpt", "san", method_kwargs={"conv": "private"}),
        "mutualnet": write_checkpoint(root / "mutualnet.ckpt", "mutualnet", method_kwargs={"width_range": [0.5, 1.0]}),
    }


@pytest.fixture(scope="module")
def rsnet_file(ckpts, tmp_path_factory):
    out = tmp_path_factory.mktemp("rsnet_file") / "rsnet_all.onnx"
    result = export.main([f"ckpt={ckpts['rsnet']}", "format=onnx", "configs=all", f"out={out}", TINY_SIZE_BOUND])
    return out, result


def session(path):
    import onnxruntime

    s = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(s.run(None, {s.get_inputs()[0].name: x.numpy()})[0])


def reference(ckpt, x, resolution):
    """The switchable network of ``ckpt`` at ``resolution``, through the runtime (its inference policy)."""
    clf = SwitchableClassifier.from_checkpoint(ckpt, device="cpu")
    clf.switch(resolution)
    return clf(x)


@pytest.mark.parametrize("name, blended, generated", [("individual", 0, 0), ("parallel", 21, 0), ("rsnet_lq", 21, 0),
                                                     ("san", 21, 20), ("san_mlp8", 21, 20)])
def test_one_file_per_method_reproduces_every_resolution(ckpts, tmp_path, name, blended, generated):
    out = tmp_path / f"{name}.onnx"
    # SAN (linear): its default bound 2.2 holds even here; mlp8 stores 8 hidden units per kernel entry
    bound = {"san": [], "san_mlp8": ["size_bound=20"]}.get(name, [TINY_SIZE_BOUND])
    result = export.main([f"ckpt={ckpts[name]}", "format=onnx", "configs=all", f"out={out}", *bound])
    _check_result(result, out, blended)
    assert result["generated_convs"] == generated
    # resolutions the exporter never checked, and a batch size it never saw
    run = session(out)
    for r in (11, 13, 17):
        x = torch.randn(3, 3, r, r)
        expected = reference(ckpts[name], x, r)
        assert (run(x) - expected).abs().max() <= 1e-4 * max(1.0, float(expected.abs().max()))


def _check_result(result, out, blended):
    assert out.is_file() and result["blended_bn"] == blended
    checked = [c["resolution"] for c in result["checks"]]
    assert checked[:len(result["train_resolutions"])] == result["train_resolutions"]
    assert len(result["unseen"]) == 2 and not set(result["unseen"]) & set(result["train_resolutions"])
    assert all(c["max_abs_diff"] <= c["allowed"] for c in result["checks"])
    assert result["size_ratio"] == pytest.approx(result["bytes"] / result["single_bytes_stripped"])


def test_rsnet_one_file_interpolates_and_stores_weights_once(ckpts, rsnet_file):
    import onnx

    out, result = rsnet_file
    _check_result(result, out, 21)
    assert [c["bn"] for c in result["checks"]] == ["own", "own", "interpolated", "nearest"]  # 16, 12, 14, 18 (clamped)
    model = onnx.load(str(out))
    convs = [t for t in model.graph.initializer if len(t.dims) == 4]
    assert len(convs) == 21  # every conv kernel once (BN tables are (K, C))
    meta = json.loads({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    assert meta["train_resolutions"] == [16, 12] and meta["bn_mode"] == "interpolate"
    assert meta["mean"] == pytest.approx(MEAN) and meta["std"] == pytest.approx(STD) and meta["crop_ratio"] == 0.875
    # the blend matters at 14 px: nearest BN would give other logits
    x = torch.randn(2, 3, 14, 14)
    clf = SwitchableClassifier.from_checkpoint(ckpts["rsnet"], device="cpu", bn_mode="nearest")
    clf.switch(14)
    assert (session(out)(x) - clf(x)).abs().max() > 1e-3
    assert (session(out)(x) - reference(ckpts["rsnet"], x, 14)).abs().max() <= 1e-4 * 10


@pytest.mark.parametrize("method, bn_mode", [("rsnet", "interpolate"), ("rsnet", "nearest"), ("san", "proxy"),
                                             ("san", "interpolate")])
def test_graph_weights_follow_the_inference_policy(ckpts, method, bn_mode):
    """The blend of BN sets and the encoding's resolution the graph computes from H are the plan's."""
    path = write_checkpoint(ckpts["rsnet"].with_name(f"three_{method}.ckpt"), method, resolutions=(24, 16, 12))
    clf = SwitchableClassifier.from_checkpoint(path, device="cpu", bn_mode=bn_mode)
    trained = clf.net.state.train_resolutions
    net = ResolutionBlendNet(torch.nn.Identity(), None, trained, clf.policy.mode.bn_mode)
    for r in range(6, 31):
        plan = clf.policy.plan(SubnetConfig(r))
        expected = torch.zeros(3)
        for k, w in zip(plan.blend.indices, plan.blend.weights):
            expected[k] = w
        assert torch.allclose(net.blend_weights(r), expected, atol=1e-6), (r, plan.blend)
        encoding = torch.zeros(3)
        encoding[trained.index(plan.encoded_resolution)] = 1.0
        assert torch.equal(net.nearest_weights(r), encoding), (r, plan.encoded_resolution)


def test_default_unseen_resolutions():
    assert default_unseen([16, 12]) == [14, 18]
    assert default_unseen([224, 192, 160]) == [208, 252]
    assert default_unseen([16]) == [18, 14]
    assert default_unseen([16, 15]) == [18, 13]


@pytest.mark.parametrize("args, message", [
    (["size_bound=1.0"], "error: size: the one file"),
    (["tolerance=1e-30", TINY_SIZE_BOUND], "error: verify: at 16px max abs difference"),
])
def test_failed_check_exits_1_and_leaves_no_file(ckpts, tmp_path, capsys, args, message):
    out = tmp_path / "bad.onnx"
    with pytest.raises(SystemExit) as info:
        export.main([f"ckpt={ckpts['rsnet']}", "format=onnx", "configs=all", f"out={out}", *args])
    assert info.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), lines
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary one


@pytest.mark.parametrize("args, field", [
    (["RS", "configs=some"], "configs"),
    (["RS", "configs=all", "format=torchscript"], "format"),
    (["RS", "configs=all", "format=onnx", "resolution=16"], "resolution"),
    (["RS", "configs=all", "format=onnx", "fold_bn=true"], "fold_bn"),
    (["RS", "configs=all", "format=onnx", "unseen=[2]"], "unseen"),
    (["RS", "configs=all", "format=onnx", "size_bound=0"], "size_bound"),
    (["RS", "configs=all", "format=onnx", "bn_mode=calibrate"], "configs"),
    (["SANPC", "configs=all", "format=onnx"], "configs"),  # SAN's private-conv ablation
    (["SAN", "configs=all", "format=onnx", "bn_mode=ideal"], "configs"),
    (["MN", "configs=all", "format=onnx", "width=0.5"], "width"),  # slimmable: every stored width in one file
    (["configs=all", "format=onnx"], "ckpt"),
])
def test_bad_option_is_one_line_exit_2(ckpts, tmp_path, capsys, args, field):
    names = {"RS": "rsnet", "SAN": "san", "SANPC": "san_private_conv", "MN": "mutualnet"}
    argv = [f"ckpt={ckpts[names[a]]}" if a in names else a for a in args] + [f"out={tmp_path / 'x.onnx'}"]
    with pytest.raises(SystemExit) as info:
        run_tool(export.main, argv)
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}:"), lines
    assert not (tmp_path / "x.onnx").exists()


# ------------------------------------------------------------------------------ torch-free runtime
NO_TORCH = textwrap.dedent("""
    import sys
    sys.modules["torch"] = None  # `import torch` raises ImportError from here on
    import numpy as np
    from PIL import Image
    from resnet_switch.deploy.onnx import SwitchableSession
    try:
        import torch
    except ImportError:
        pass
    else:
        raise SystemExit("torch importable")
    path, folder = sys.argv[1], sys.argv[2]
    session = SwitchableSession.from_file(path)
    arrays = [np.load(f"{folder}/img{i}.npy") for i in range(3)]
    pil = Image.open(f"{folder}/img0.png")
    out = {}
    for r in (16, 12, 14, 18):
        out[f"r{r}"] = session.predict(arrays + [pil], resolution=r)
    out["default"] = session.predict(arrays[1])
    assert not any(name == "torch" or name.startswith("torch.") for name in sys.modules if sys.modules[name])
    np.savez(f"{folder}/logits.npz", **out)
""")


def test_runtime_without_torch_matches_switchable_classifier(ckpts, rsnet_file, tmp_path):
    from PIL import Image

    out, _ = rsnet_file
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size, dtype=np.uint8) for size in ((16, 16, 3), (21, 30, 3), (40, 33, 3))]
    for i, image in enumerate(images):
        np.save(tmp_path / f"img{i}.npy", image)
    Image.fromarray(images[0]).save(tmp_path / "img0.png")
    done = subprocess.run([sys.executable, "-c", NO_TORCH, str(out), str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    got = np.load(tmp_path / "logits.npz")
    clf = SwitchableClassifier.from_checkpoint(ckpts["rsnet"], device="cpu")
    tensors = [torch.from_numpy(image).permute(2, 0, 1) for image in images]
    for r in (16, 12, 14, 18):
        expected = clf.predict(tensors + [tensors[0]], resolution=r).numpy()
        # same crop; Pillow's float bilinear-antialias resize vs torch's: ~1e-6 apart on the pixels
        assert np.abs(got[f"r{r}"] - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max()), r
    expected = clf.predict(tensors[1], resolution=16).numpy()
    assert np.abs(got["default"] - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())


def test_runtime_checks_its_inputs(rsnet_file):
    from resnet_switch.deploy.onnx import SwitchableSession
    from resnet_switch.errors import ConfigError

    session = SwitchableSession.from_file(rsnet_file[0])
    image = np.zeros((16, 16, 3), np.uint8)
    assert session.predict([image, image], resolution=12).shape == (2, 10)
    assert session.predict(np.zeros((2, 20, 20, 3), np.float32), resolution=12).shape == (2, 10)
    for kwargs, field in [({"resolution": 2}, "resolution"), ({"width": 0.5}, "width"),
                          ({"resolution": 16.0}, "resolution")]:
        with pytest.raises(ConfigError, match=f"^{field}:"):
            session.predict(image, **kwargs)
    with pytest.raises(ConfigError, match="^images:"):
        session.predict(np.zeros((16, 16, 4), np.uint8))
