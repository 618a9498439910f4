"""Detection training: one step of each method, the task=detection command end to end, and the
one-line refusals of options from the other task."""

from __future__ import annotations

import csv

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from torch.utils.data import DataLoader

from resnet_switch.cli.overrides import CONF_DIR
from resnet_switch.detection.datamodule import collate_detection, to_float_image
from resnet_switch.detection.lit_module import DetectionModule, metric_inputs
from resnet_switch.detection.methods import build_detection_method
from resnet_switch.detection.model import build_detector, load_detector
from resnet_switch.detection.synthetic import SyntheticDetection
from resnet_switch.detection.task import check_resumable
from resnet_switch.errors import ConfigError
from resnet_switch.switch import SubnetConfig
from resnet_switch.train import train
from resnet_switch.training.checkpointing import CheckpointError, load_checkpoint, rebuild_from_checkpoint
from resnet_switch.training.module import module_key

SIZES = [64, 48]
TINY_DETECTOR = dict(fpn_channels=16, box_head_dim=32, mask_head_channels=[8], anchor_base=8,
                     backbone_kwargs={"base_width": 8},
                     detector_kwargs=dict(rpn_pre_nms_top_n_train=50, rpn_post_nms_top_n_train=20,
                                          rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20,
                                          box_batch_size_per_image=16, box_detections_per_img=10))
TINY_TASK = [
    "task=detection", "model.base_width=8", "data.resolutions=[64,48]", "data.batch_size=2", "data.num_workers=0",
    "data.train.num_samples=4", "data.val.num_samples=2", "data.train.image_size=64", "data.calibration_samples=2",
    "detector.fpn_channels=16", "detector.box_head_dim=32", "detector.mask_head_channels=[8]",
    "trainer.max_epochs=1", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1", "logger=csv", "callbacks.progress_bar=null",
]


def compose_train(run_dir, *overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[f"run_dir={run_dir}", *overrides])


class RecordConfigs(L.Callback):
    """Records the configurations the detector was switched to during training steps."""

    def __init__(self):
        self.steps: list[list[SubnetConfig]] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.steps.append([])
        net = module.net
        original = net.set_active

        def spy(config, bn_mode=None):
            self.steps[-1].append(config)
            original(config, bn_mode)

        net.set_active = spy


@pytest.mark.parametrize("name,expected", [
    ("mutualnet", "full width at 64 first, then 3 sub-networks at drawn sizes"),
    ("usnet", "full width at 64 first, then 3 sub-networks at 64"),
    ("rsnet", "width 1 at 64 and 48"),
])
def test_a_detection_training_step_runs_for_each_method(name, expected, tmp_path):
    method = build_detection_method(name, SIZES, **({"width_range": [0.25, 1.0]} if name != "rsnet" else {}))
    det = build_detector("resnet20", SIZES, num_classes=4, layers=method.layers, widths=method.net_widths(),
                         layer_kwargs=method.layer_kwargs(), **TINY_DETECTOR)
    module = DetectionModule(method, det, optim={"lr": 0.01, "weight_decay": 1e-4, "clip_grad_norm": 10.0},
                             method_meta={"name": name})
    data = SyntheticDetection(2, image_size=64)
    loader = DataLoader(data, batch_size=2, collate_fn=lambda b: _float_batch(collate_detection(b)))
    before = {k: v.detach().clone() for k, v in det.named_parameters()}
    recorder = RecordConfigs()
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[recorder],
                        limit_val_batches=0)
    trainer.fit(module, train_dataloaders=loader)
    configs = recorder.steps[0]
    if name == "rsnet":
        assert configs == [SubnetConfig(64), SubnetConfig(48)]
    else:
        assert len(configs) == 4 and configs[0] == SubnetConfig(64, 1.0) and configs[1].width == 0.25
        sizes = {c.resolution for c in configs[1:]}
        assert sizes == {64} if name == "usnet" else sizes <= {64, 48}
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    after = dict(det.named_parameters())
    neck = [k for k in after if k.startswith("net.backbone.fpn.") and k.endswith("weight")]
    heads = [k for k in after if k.startswith(("net.rpn.", "net.roi_heads.")) and k.endswith("weight")]
    for key in neck + heads + ["net.backbone.body.conv1.weight"]:
        assert not torch.equal(before[key], after[key]), key  # one SGD step moved every shared part


def _float_batch(batch):
    images, targets = batch
    return [to_float_image(im) for im in images], targets


def test_task_detection_trains_and_writes_ap_table_plot_and_checkpoint(tmp_path):
    cfg = compose_train(tmp_path, *TINY_TASK)
    metrics = train(cfg)
    assert set(metrics) == {"bbox_ap@64", "bbox_ap@48", "bbox_ap@64_w0.625", "bbox_ap@48_w0.625",
                            "bbox_ap@64_w0.25", "bbox_ap@48_w0.25"}
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert {(int(r["resolution"]), float(r["width"])) for r in rows} == {(s, w) for s in SIZES for w in (1.0, 0.625, 0.25)}
    assert {"bbox_ap", "bbox_ap50", "segm_ap", "segm_ap50", "madds", "params"} <= set(rows[0])
    madds = {(int(r["resolution"]), float(r["width"])): int(r["madds"]) for r in rows}
    assert madds[(64, 1.0)] > madds[(48, 1.0)] > madds[(48, 0.25)] > 0
    assert (tmp_path / "ap_vs_madds.png").stat().st_size > 0
    assert "| resolution | width | bbox_ap |" in (tmp_path / "results.md").read_text()
    logged = next(csv.DictReader((tmp_path / "csv" / "version_0" / "metrics.csv").open())).keys()
    assert {"val/bbox_ap@64", "val/segm_ap@48_w0.25", "val/bbox_ap_mean", "train/loss"} <= set(logged)
    detector, meta = load_detector(tmp_path / "checkpoints" / "last.ckpt")  # rebuilt from the file alone
    assert meta["run"]["task"] == "detection" and detector.spec["backbone"] == "resnet20"
    images = [torch.rand(3, 64, 64)]
    with torch.no_grad(), detector.switch(SubnetConfig(48, 0.25), bn_mode="calibrated"):  # stored post-statistics
        assert set(detector(images)[0]) == {"boxes", "labels", "scores", "masks"}
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    with pytest.raises(CheckpointError, match=r"^ckpt: this is a task=detection checkpoint, not task=classification; "
                                              r"load it with resnet_switch.detection.model.load_detector$"):
        rebuild_from_checkpoint(ckpt)  # what `evaluate` and classification resumes call
    with pytest.raises(CheckpointError, match=r"^ckpt_path: checkpoint was trained with method=mutualnet but this "
                                              r"run has method=usnet"):
        check_resumable(meta, "usnet", detector.spec)


@pytest.mark.parametrize("overrides,message", [
    (["task=detection", "method=rsnet"], r"^method: method.name=rsnet is a classification option; with "
                                         r"task=detection use method= one of detection_mutualnet"),
    (["task=detection", "data=synthetic"], r"^data: data.name=synthetic is a classification option"),
    (["method=detection_usnet"], r"^method: 'usnet' is a detection option; add task=detection$"),
    (["task=detection", "model=mobilenetv1"], r"^model.name: 'mobilenetv1' cannot be a detection backbone"),
    (["task=detection", "detector.anchor_base=0"], r"^detector.anchor_base: a positive integer"),
    (["task=detection", "quant=lq"], r"^quant: quant=lq is a classification option; drop it with task=detection$"),
    (["task=detection", "memory_format=channels_last"], r"^memory_format=channels_last: not supported with task=detection"),
])
def test_options_of_the_other_task_are_refused_in_one_line(tmp_path, overrides, message):
    cfg = compose_train(tmp_path, *overrides)
    with pytest.raises((ConfigError, ValueError), match=message) as err:
        train(cfg)
    assert "\n" not in str(err.value)


def test_coco_recipe_composes_with_the_papers_settings(tmp_path):
    cfg = compose_train(tmp_path, "experiment=detection_mutualnet_coco", "data.root=/coco")
    assert cfg.task == "detection" and cfg.detector.max_size == 1000 and cfg.detector.masks
    assert list(cfg.data.resolutions) == [600, 480, 360, 240] and cfg.data.train.ann_file.startswith("/coco/")
    method = build_detection_method(cfg.method.name, list(cfg.data.resolutions),
                                    **{k: v for k, v in cfg.method.items() if k not in ("name", "task")})
    assert method.width_range == (0.25, 1.0) and method.inplace_distill is False and method.layers == "slimmable"


def test_ap_per_configuration_is_100_for_perfect_detections_and_0_for_misses():
    """The metric path (torchvision outputs -> torchmetrics MeanAveragePrecision): detections equal
    to the targets score 100 (bbox and segm), boxes and masks elsewhere score 0."""
    method = build_detection_method("rsnet", SIZES)
    det = build_detector("resnet20", SIZES, num_classes=4, layers=method.layers, **TINY_DETECTOR)
    module = DetectionModule(method, det, optim={}, method_meta={"name": "rsnet"})
    _, target = SyntheticDetection(1, image_size=64)[0]
    perfect = {"boxes": target["boxes"], "labels": target["labels"], "scores": torch.ones(len(target["labels"])),
               "masks": target["masks"][:, None].float() * 0.9}  # Mask R-CNN gives (N, 1, H, W) probabilities
    miss = dict(perfect, boxes=torch.tensor([[0.0, 0.0, 2.0, 2.0]]).expand_as(target["boxes"]),
                masks=torch.zeros_like(perfect["masks"]))
    for config, prediction in zip(method.eval_configs(), (perfect, miss)):
        module.ap[module_key(config)].update(*metric_inputs([prediction], [target], masks=True))
    rows = module.compute_ap()
    assert rows[0]["bbox_ap"] == pytest.approx(100.0) and rows[0]["segm_ap"] == pytest.approx(100.0)
    assert rows[1]["bbox_ap"] == pytest.approx(0.0) and rows[1]["segm_ap"] == pytest.approx(0.0)
