"""Every method trains through the real Hydra config, and its checkpoint alone rebuilds a network
with the same outputs (calibrated BN statistics and method state included)."""

import pytest

from resnet_switch.evaluation.accuracy import evaluate_configs
from resnet_switch.switch import SubnetConfig
from resnet_switch.train import build_datamodule, train
from resnet_switch.training.checkpointing import load_checkpoint, rebuild_from_checkpoint
from resnet_switch.training.lit_module import metric_suffix

from .helpers import tiny_cfg

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
    cfg = tiny_cfg(tmp_path, f"method={method}", "trainer.limit_train_batches=2", "data.val_samples=16", *extra)
    metrics = train(cfg)
    assert metrics and all(0.0 <= v <= 100.0 for v in metrics.values())
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert ckpt["resnet_switch"]["method"]["name"] == method
    m, net, _ = rebuild_from_checkpoint(ckpt)
    bn_mode = "calibrated" if m.needs_calibration else None
    # the rebuilt network scores exactly what the trained one scored on the same validation split
    rows = evaluate_configs(net, build_datamodule(cfg, cfg.data.resolutions), m.eval_configs(),
                            bn_mode=bn_mode, progress=False)
    rebuilt = {f"acc1@{metric_suffix(SubnetConfig(r['resolution'], r['width']))}": r["top1"] for r in rows}
    assert rebuilt == pytest.approx(metrics, abs=1e-6)
