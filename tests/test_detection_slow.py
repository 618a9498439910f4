"""Slow: a short MutualNet-style run of ``task=detection`` on the synthetic set lifts AP clearly
above the untrained detector's (same seed, same evaluation)."""

from __future__ import annotations

import csv

import pytest
from omegaconf import OmegaConf

from resnet_switch.detection.lit_module import DetectionModule
from resnet_switch.detection.task import build_detection_run, evaluate_detector
from resnet_switch.train import train

from .test_detection_train import compose_train

RUN = ["task=detection", "trainer.max_epochs=3", "trainer.check_val_every_n_epoch=3", "data.num_workers=0",
       "data.train.num_samples=384", "data.val.num_samples=64", "trainer.enable_progress_bar=false",
       "logger=csv", "callbacks.progress_bar=null"]


@pytest.mark.slow
def test_short_detection_run_lifts_ap_clearly_above_an_untrained_model(tmp_path):
    cfg = compose_train(tmp_path, *RUN)
    datamodule, method, net, meta = build_detection_run(cfg)
    untrained = DetectionModule(method, net, optim=OmegaConf.to_container(cfg.optim), method_meta=meta,
                                calibration_samples=cfg.calibration_samples)
    untrained.recalibrate(datamodule)
    before = {(r["resolution"], r["width"]): r for r in evaluate_detector(untrained, datamodule)}

    train(cfg)
    after = {(int(r["resolution"]), float(r["width"])): {k: float(v) for k, v in r.items()}
             for r in csv.DictReader((tmp_path / "results.csv").open())}
    full = (128, 1.0)
    assert before[full]["bbox_ap"] < 1.0  # an untrained detector finds nothing
    assert after[full]["bbox_ap"] > before[full]["bbox_ap"] + 5.0
    assert after[full]["bbox_ap50"] > before[full]["bbox_ap50"] + 15.0
    mean_before = sum(r["bbox_ap"] for r in before.values()) / len(before)
    mean_after = sum(r["bbox_ap"] for r in after.values()) / len(after)
    assert mean_after > mean_before + 4.0  # every sub-network learned, not only the full one
