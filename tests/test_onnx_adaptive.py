"""``SwitchableSession.predict_adaptive`` (numpy, no torch) against ``SwitchableClassifier.predict_adaptive``:
the policy travels in the one ONNX file's metadata (or comes as ``policy=PATH``)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from resnet_switch import export
from resnet_switch.deploy.runtime import SwitchableClassifier
from resnet_switch.evaluation.adaptive import AdaptivePolicy, Fit, max_softmax, policy_path
from resnet_switch.switch import SubnetConfig

from .ckpt_factory import write_checkpoint
from .helpers import needs

pytestmark = [needs("onnxscript"), needs("onnxruntime")]

STAGES = [SubnetConfig(12, 1.0), SubnetConfig(16, 1.0)]


def split_threshold(clf, images):
    """A threshold between two of stage 0's scores on ``images``: half stop there, half go on (no ties)."""
    x = clf.preprocess(images, 16, crop_ratio=1.0)
    with torch.no_grad():
        clf.switch(12)
        from resnet_switch.data.multires import resize_images

        scores = np.sort(max_softmax(clf.net(resize_images(x, 12))).numpy())
    clf.switch(16)
    half = len(scores) // 2
    return float(scores[half - 1] + scores[half]) / 2


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx_adaptive")
    ckpt = write_checkpoint(root / "rsnet.ckpt", "rsnet")
    clf = SwitchableClassifier.from_checkpoint(ckpt, device="cpu")
    images = np.random.default_rng(1).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    t = split_threshold(clf, torch.from_numpy(images).permute(0, 3, 1, 2))
    policy = AdaptivePolicy(stages=STAGES, stage_madds=[3.7e5, 6.6e5], ensemble=False,
                            fits=[Fit(budget_madds=5e5, thresholds=[t], top1=0.0, mean_madds=0.0),
                                  Fit(budget_madds=1e6, thresholds=[None], top1=0.0, mean_madds=0.0)],
                            checkpoint=str(ckpt))
    policy.save(policy_path(ckpt))
    out = root / "rsnet_all.onnx"
    export.main([f"ckpt={ckpt}", "format=onnx", "configs=all", f"out={out}", "size_bound=1.5"])
    return ckpt, out, images, policy


NO_TORCH = textwrap.dedent("""
    import json, sys
    sys.modules["torch"] = None  # `import torch` raises ImportError from here on
    import numpy as np
    from resnet_switch.deploy.onnx import SwitchableSession
    path, folder, policy = sys.argv[1], sys.argv[2], sys.argv[3]
    session = SwitchableSession.from_file(path)
    images = np.load(f"{folder}/images.npy")
    out, configs = {}, {}
    for name, kwargs in [("meta", {"budget": "0.5M"}), ("top", {"budget": 1e6}),
                         ("from_path", {"budget": "500k", "policy": policy})]:
        out[name], stops = session.predict_adaptive(images, crop_ratio=1.0, **kwargs)
        configs[name] = stops
    assert not any(n == "torch" or n.startswith("torch.") for n in sys.modules if sys.modules[n])
    np.savez(f"{folder}/logits.npz", **out)
    with open(f"{folder}/configs.json", "w") as handle:
        json.dump(configs, handle)
""")


def test_predict_adaptive_without_torch_matches_the_pytorch_runtime(exported, tmp_path):
    ckpt, out, images, policy = exported
    np.save(tmp_path / "images.npy", images)
    ensemble = AdaptivePolicy.load(policy_path(ckpt))  # the same stages, scored on the running ensemble
    ensemble.ensemble, ensemble.log_weights, ensemble.score = True, [0.3, -0.2], "margin"
    ensemble.save(tmp_path / "ensemble.json")
    done = subprocess.run([sys.executable, "-c", NO_TORCH, str(out), str(tmp_path), str(tmp_path / "ensemble.json")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    got = np.load(tmp_path / "logits.npz")
    configs = json.loads((tmp_path / "configs.json").read_text())
    clf = SwitchableClassifier.from_checkpoint(ckpt, device="cpu")
    tensors = torch.from_numpy(images).permute(0, 3, 1, 2)
    for name, kwargs in [("meta", {"budget": "0.5M"}), ("top", {"budget": 1e6}),
                         ("from_path", {"budget": "500k", "policy": ensemble})]:
        logits, stops = clf.predict_adaptive(tensors, crop_ratio=1.0, **kwargs)
        assert [tuple(c) for c in configs[name]] == [(c.resolution, c.width) for c in stops], name
        expected = logits.numpy()
        assert np.abs(got[name] - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max()), name
    assert {tuple(c) for c in configs["meta"]} == {(12, 1.0), (16, 1.0)}  # both stages decide some images
    assert {tuple(c) for c in configs["top"]} == {(16, 1.0)}


def test_predict_adaptive_checks_its_options(exported, tmp_path):
    from resnet_switch.deploy.onnx import SwitchableSession
    from resnet_switch.errors import ConfigError

    _, out, images, _ = exported
    session = SwitchableSession.from_file(out)
    assert session.metadata["adaptive"]["stages"][0]["resolution"] == 12
    logits, stops = session.predict_adaptive(images[:3], thresholds=[0.0])
    assert stops == [(12, 1.0)] * 3 and logits.shape == (3, 10)
    for kwargs, field in [({}, "budget / thresholds"), ({"budget": "1k"}, "budget"), ({"budget": "lots"}, "budget"),
                          ({"thresholds": [0.1, 0.2]}, "thresholds"),
                          ({"budget": "1M", "policy": tmp_path / "none.json"}, "policy")]:
        with pytest.raises(ConfigError, match=f"^{field}:"):
            session.predict_adaptive(images, **kwargs)


def test_predict_adaptive_runs_slimmable_stages_at_their_width(tmp_path):
    from resnet_switch.deploy.onnx import SwitchableSession
    from resnet_switch.evaluation.adaptive import NEVER

    ckpt = write_checkpoint(tmp_path / "mutualnet.ckpt", "mutualnet", method_kwargs={"width_range": [0.5, 1.0]})
    out = tmp_path / "mutualnet_all.onnx"
    export.main([f"ckpt={ckpt}", "format=onnx", "configs=all", f"out={out}", "size_bound=3"])
    policy = AdaptivePolicy(stages=[SubnetConfig(12, 0.5), SubnetConfig(16, 1.0)], stage_madds=[1.0, 4.0])
    policy.save(tmp_path / "policy.json")
    session = SwitchableSession.from_file(out)
    clf = SwitchableClassifier.from_checkpoint(ckpt, device="cpu")
    images = np.random.default_rng(2).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    tensors = torch.from_numpy(images).permute(0, 3, 1, 2)
    for thresholds in ([0.0], [NEVER]):
        got, stops = session.predict_adaptive(images, thresholds=thresholds, policy=tmp_path / "policy.json")
        expected, configs = clf.predict_adaptive(tensors, thresholds=thresholds, policy=policy)
        assert stops == [(c.resolution, c.width) for c in configs]
        assert np.abs(got - expected.numpy()).max() <= 1e-4 * max(1.0, float(expected.abs().max()))
