"""``export ... format=onnx configs=all`` on slimmable checkpoints (mutualnet, usnet, snet): ONE ONNX file
for every stored (width, resolution), the width a second input (:mod:`resnet_switch.deploy.one_file_widths`),
and the runtime without torch at those widths."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from resnet_switch import export
from resnet_switch.deploy.one_file import METADATA_KEY
from resnet_switch.deploy.runtime import SwitchableClassifier

from .ckpt_factory import write_checkpoint
from .helpers import needs

pytestmark = [needs("onnxscript"), needs("onnxruntime")]

# resnet20 at base width 4: the graph (one branch per channel signature), not the weights, dominates the file
TINY_SIZE_BOUND = "size_bound=3"
METHODS = {
    "mutualnet": {"width_range": [0.5, 1.0]},  # stores widths 1.0, 0.75 (a twin of 1.0), 0.5
    "usnet": {"width_range": [0.5, 1.0]},
    "snet": {"widths": [1.0, 0.5]},  # one private BN set per width
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """``{method: (ckpt, one file, export result)}``, exported once per module."""
    root = tmp_path_factory.mktemp("widths")
    out = {}
    for method, kwargs in METHODS.items():
        ckpt = write_checkpoint(root / f"{method}.ckpt", method, method_kwargs=kwargs)
        path = root / f"{method}_all.onnx"
        result = export.main([f"ckpt={ckpt}", "format=onnx", "configs=all", f"out={path}", TINY_SIZE_BOUND])
        out[method] = (ckpt, path, result)
    return out


def ort_run(path):
    import onnxruntime

    s = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x, k: torch.from_numpy(s.run(None, {"images": x.numpy(), "width_index": np.array(k, np.int64)})[0])


@pytest.mark.parametrize("method, branches", [("mutualnet", 2), ("usnet", 2), ("snet", 2)])
def test_one_file_runs_every_stored_width_and_resolution(files, method, branches):
    import onnx

    ckpt, path, result = files[method]
    clf = SwitchableClassifier.from_checkpoint(ckpt, device="cpu")
    stored = clf.stored_configs()
    assert path.is_file() and result["branches"] == branches
    assert result["widths"] == sorted({c.width for c in stored}, reverse=True)
    assert sorted((c["resolution"], c["width"]) for c in result["checks"]) == sorted(
        (c.resolution, c.width) for c in stored)
    assert all(c["max_abs_diff"] <= c["allowed"] for c in result["checks"])
    assert result["size_ratio"] == pytest.approx(result["bytes"] / result["single_bytes_stripped"])
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == ["images", "width_index"]
    assert len([t for t in model.graph.initializer if len(t.dims) == 4]) == 21  # every full-width kernel once
    meta = json.loads({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    assert meta["widths"] == result["widths"] and meta["width_input"] == "width_index"
    # a batch size the exporter never saw, at every stored configuration
    run = ort_run(path)
    for config in stored:
        x = torch.randn(3, 3, config.resolution, config.resolution)
        clf.switch(config.resolution, config.width)
        expected = clf(x)
        got = run(x, result["widths"].index(config.width))
        assert (got - expected).abs().max() <= 1e-4 * max(1.0, float(expected.abs().max())), config


def test_widths_differ_in_the_file(files):
    """The width input matters: the 0.5 branch is not the 1.0 one."""
    _, path, result = files["mutualnet"]
    x = torch.randn(2, 3, 16, 16)
    run = ort_run(path)
    assert (run(x, 0) - run(x, result["widths"].index(0.5))).abs().max() > 1e-3


def test_failed_check_exits_1_and_leaves_no_file(files, tmp_path, capsys):
    ckpt = files["snet"][0]
    out = tmp_path / "bad.onnx"
    with pytest.raises(SystemExit) as info:
        export.main([f"ckpt={ckpt}", "format=onnx", "configs=all", f"out={out}", "tolerance=1e-30",
                     TINY_SIZE_BOUND])
    assert info.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: verify: at width 1 16px max abs difference"), lines
    assert list(tmp_path.iterdir()) == []


NO_TORCH = textwrap.dedent("""
    import sys
    sys.modules["torch"] = None  # `import torch` raises ImportError from here on
    import numpy as np
    from resnet_switch.deploy.onnx import SwitchableSession
    path, folder = sys.argv[1], sys.argv[2]
    session = SwitchableSession.from_file(path)
    arrays = [np.load(f"{folder}/img{i}.npy") for i in range(3)]
    out = {}
    for w in session.widths:
        for r in (16, 12):
            out[f"w{w:g}_r{r}"] = session.predict(arrays, resolution=r, width=w)
    out["default"] = session.predict(arrays[0])
    assert not any(name == "torch" or name.startswith("torch.") for name in sys.modules if sys.modules[name])
    np.savez(f"{folder}/logits.npz", **out)
""")


def test_runtime_without_torch_runs_every_width(files, tmp_path):
    ckpt, path, result = files["mutualnet"]
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size, dtype=np.uint8) for size in ((16, 16, 3), (21, 30, 3), (40, 33, 3))]
    for i, image in enumerate(images):
        np.save(tmp_path / f"img{i}.npy", image)
    done = subprocess.run([sys.executable, "-c", NO_TORCH, str(path), str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    got = np.load(tmp_path / "logits.npz")
    clf = SwitchableClassifier.from_checkpoint(ckpt, device="cpu")
    tensors = [torch.from_numpy(image).permute(2, 0, 1) for image in images]
    for w in result["widths"]:
        for r in (16, 12):
            expected = clf.predict(tensors, resolution=r, width=w).numpy()
            assert np.abs(got[f"w{w:g}_r{r}"] - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max()), (w, r)
    expected = clf.predict(tensors[0], resolution=16, width=1.0).numpy()
    assert np.abs(got["default"] - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())


def test_runtime_checks_widths_and_resolutions(files):
    from resnet_switch.deploy.onnx import SwitchableSession
    from resnet_switch.errors import ConfigError

    session = SwitchableSession.from_file(files["mutualnet"][1])
    assert session.widths == [1.0, 0.75, 0.5]
    image = np.zeros((16, 16, 3), np.uint8)
    assert session.predict([image, image], resolution=12, width=0.5).shape == (2, 10)
    for kwargs, field in [({"width": 0.6}, "width"), ({"width": "0.5"}, "width"), ({"width": 1.5}, "width"),
                          ({"resolution": 14, "width": 0.5}, "resolution"), ({"resolution": 2}, "resolution")]:
        with pytest.raises(ConfigError, match=f"^{field}:") as info:
            session.predict(image, **kwargs)
        assert "\n" not in str(info.value)


def test_unseen_is_refused_for_slimmable(files, tmp_path, capsys):
    from resnet_switch.cli.options import run_tool

    out = tmp_path / "x.onnx"
    with pytest.raises(SystemExit) as info:
        run_tool(export.main, [f"ckpt={files['usnet'][0]}", "configs=all", "format=onnx", "unseen=[14]", f"out={out}"])
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unseen:"), lines
    assert not out.exists()
