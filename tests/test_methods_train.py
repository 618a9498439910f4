"""Every method trains through the real Hydra config (its first step lowers the loss of the batch it
was taken on, the weights move and stay finite), and its checkpoint alone rebuilds a network with the
same outputs (calibrated BN statistics and method state included)."""

import pytest
import torch

from resnet_switch.evaluation.accuracy import evaluate_configs
from resnet_switch.switch import SubnetConfig
from resnet_switch.train import build_datamodule, train
from resnet_switch.training.checkpointing import load_checkpoint, rebuild_from_checkpoint
from resnet_switch.training.lit_module import metric_suffix

from .helpers import FirstBatchProbe, MethodEpochProbe, tiny_cfg

PROBE = ["+callbacks.probe._target_=tests.helpers.FirstBatchProbe"]

METHODS = [
    ("individual", ["data.resolutions=[16]"]),
    ("parallel", ["method.private_bn=false"]),
    ("rsnet", ["method.distill=vanilla", "method.crop=multi"]),
    ("san", []),
    ("san", ["method.meta=mlp8", "method.conv=private"]),
    ("mutualnet", ["method.width_range=[0.5,1.0]", "calibration_samples=24"]),
    ("usnet", ["method.width_range=[0.5,1.0]", "calibration_samples=24"]),
    ("snet", ["method.widths=[1.0,0.5]", "calibration_samples=24"]),
]


@pytest.mark.parametrize("method,extra", METHODS, ids=[f"{m}-{i}" for i, (m, _) in enumerate(METHODS)])
def test_method_trains_and_checkpoint_rebuilds_it(method, extra, tmp_path):
    cfg = tiny_cfg(tmp_path, f"method={method}", "trainer.limit_train_batches=2", "data.val_samples=16", *extra,
                   *PROBE)
    metrics = train(cfg)
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert ckpt["resnet_switch"]["method"]["name"] == method
    m, net, _ = rebuild_from_checkpoint(ckpt)
    # learning: the first step lowers the cross-entropy of its own batch against the untrained net
    # (seeds 0-2: by 0.13-0.40 nats from ~2.4; no step: exactly 0), and the trained weights moved and are finite
    probe = FirstBatchProbe.made[-1]
    assert probe.loss_after_step < probe.loss_before - 0.03, (probe.loss_before, probe.loss_after_step)
    trained = net.state_dict()
    floats = [k for k, v in probe.start.items() if isinstance(v, torch.Tensor) and v.is_floating_point()]
    assert any(not torch.equal(trained[k], probe.start[k]) for k in floats if k.endswith("weight"))
    assert all(torch.isfinite(trained[k]).all() for k in floats)
    bn_mode = "calibrated" if m.needs_calibration else None
    # the rebuilt network scores exactly what the trained one scored on the same validation split
    rows = evaluate_configs(net, build_datamodule(cfg, cfg.data.resolutions), m.eval_configs(),
                            bn_mode=bn_mode, progress=False)
    rebuilt = {f"acc1@{metric_suffix(SubnetConfig(r['resolution'], r['width']))}": r["top1"] for r in rows}
    assert rebuilt == pytest.approx(metrics, abs=1e-6)


def test_mutualnet_distillation_warmup_follows_training_progress(tmp_path):
    # 64 images at batch 16: 4 steps an epoch; the method sees global_step / 4 before each step and
    # distils from epoch 1.5 on (steps 6 and 7 of 8)
    cfg = tiny_cfg(tmp_path, "method=mutualnet", "method.width_range=[0.5,1.0]", "calibration_samples=16",
                   "method.distill_warmup_epochs=1.5", "trainer.max_epochs=2", "data.val_samples=16",
                   "+callbacks.epochs._target_=tests.helpers.MethodEpochProbe")
    train(cfg)
    seen = MethodEpochProbe.made[-1].seen
    assert [e for e, _ in seen] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
    assert [d for _, d in seen] == [False] * 6 + [True] * 2
