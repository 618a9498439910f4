"""``task=detection``: what detection supplies to the one ``train()`` path (:mod:`resnet_switch.pipeline`).

The detection data module, method and detector (:func:`build_detection_run`), the LightningModule
(:class:`~.lit_module.DetectionModule`), the resume check and the result rows: AP per configuration
against backbone MAdds, published as ``results.md``, ``results.csv`` and ``ap_vs_madds.png``.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from ..errors import ConfigError
from ..evaluation.results import ResultsLayout
from ..models import ModelConfig
from ..switch import SubnetConfig, check_resolutions
from ..training.checkpointing import CheckpointError, check_task
from ..training.instantiate import instantiate_checked
from ..training.module import metric_suffix
from ..training.tasks import TASKS, TaskParts, container, method_arguments
from .datamodule import to_float_image
from .lit_module import DetectionModule
from .methods import build_detection_method
from .model import build_detector

# the classification head's constructor arguments of a backbone config: a detector has no such head
CLASSIFIER_HEAD_ARGS = ("dropout",)

DETECTION_LAYOUT = ResultsLayout(
    plotted={"bbox_ap": "bbox AP, ", "segm_ap": "segm AP, "}, plot_file="ap_vs_madds.png", ylabel="AP (%)",
    xlabel="backbone MAdds (M)", cost_prefix="backbone ", formats={"width": "g"},
    note="AP in % (COCO AP@[.5:.95] and AP@.5), torchmetrics MeanAveragePrecision; MAdds of the backbone at a "
         "square image.")


def check_detection_config(cfg: DictConfig) -> None:
    """One line when a classification method/data set or option is combined with task=detection."""
    for group in ("method", "data"):
        if cfg[group].get("task") != "detection":
            choice = f"{group}.name={cfg[group].get('name')}"
            options = "detection_mutualnet, detection_usnet, detection_rsnet" if group == "method" else \
                "synthetic_detection, coco"
            raise ConfigError(f"{group}: {choice} is a classification option; with task=detection use {group}= one "
                              f"of {options}")
    if cfg.get("detector") is None:
        raise ConfigError("detector: task=detection needs a detector; use detector=mask_rcnn_small|mask_rcnn|faster_rcnn")
    if cfg.get("compile"):
        raise ConfigError("compile: not supported with task=detection; drop it")
    if cfg.get("quant") and cfg.quant.get("name", "none") != "none":
        raise ConfigError("quant: quant=lq is a classification option; drop it with task=detection")
    if cfg.get("memory_format", "auto") not in ("auto", "contiguous"):
        raise ConfigError(f"memory_format={cfg.memory_format}: not supported with task=detection "
                          "(it trains contiguous); drop it")


def build_detection_run(cfg: DictConfig, pretrained: dict | None = None):
    """``(datamodule, method, detector, method_meta)`` from a composed config; ``pretrained``: a plain
    (torchvision) classification state dict for the backbone."""
    check_detection_config(cfg)
    sizes = check_resolutions(list(cfg.data.resolutions), "data.resolutions")
    datamodule = instantiate_checked(container(cfg.data), "data")
    method_cfg = container(cfg.method)
    method_args = method_arguments(method_cfg)
    method = build_detection_method(method_cfg["name"], sizes, **method_args)
    model = ModelConfig.from_config(container(cfg.model))
    backbone = {k: v for k, v in model.backbone.items() if k not in CLASSIFIER_HEAD_ARGS}
    detector = container(cfg.detector)
    net = build_detector(
        model.name, sizes, datamodule.num_classes, layers=method.layers, widths=method.net_widths(),
        layer_kwargs=method.layer_kwargs(model.name), backbone_kwargs=backbone,
        detector_kwargs=detector.pop("kwargs", None) or {}, pretrained_backbone=pretrained, **detector,
    )
    return datamodule, method, net, {"name": method_cfg["name"], "task": "detection", "kwargs": method_args}


@TASKS.register("detection")
class DetectionTask:
    """A switchable detector (:class:`~.lit_module.DetectionModule`): AP per configuration."""

    layout = DETECTION_LAYOUT

    def check(self, cfg: DictConfig) -> None:
        check_detection_config(cfg)

    def build(self, cfg: DictConfig, pretrained: dict | None) -> TaskParts:
        datamodule, method, net, method_meta = build_detection_run(cfg, pretrained)
        return TaskParts(datamodule, method, net, method_meta)

    def check_resume(self, meta: dict[str, Any], cfg: DictConfig, parts: TaskParts) -> None:
        check_resumable(meta, parts.method_meta["name"], parts.net.spec)

    def init_from(self, cfg: DictConfig, parts: TaskParts, init: dict[str, Any]) -> None:
        raise ConfigError("model.init.ckpt: not supported with task=detection; start the backbone from a plain "
                          "state dict with model.pretrained=PATH")

    def module(self, cfg: DictConfig, parts: TaskParts) -> DetectionModule:
        return DetectionModule(
            parts.method, parts.net, optim=container(cfg.optim), method_meta=parts.method_meta,
            run_meta={"task": "detection", "data": container(cfg.data), "model": container(cfg.model),
                      "detector": container(cfg.detector)},
            calibration_samples=cfg.calibration_samples,
            sync_bn=bool(cfg.trainer.get("sync_batchnorm", False)),
        )

    def results(self, trainer: L.Trainer, module: DetectionModule, datamodule) -> list[dict]:
        return final_ap(trainer, module, datamodule)

    def title(self, cfg: DictConfig) -> str:
        return f"{cfg.method.name} / {cfg.model.name} / {cfg.data.name}"

    def metrics(self, rows: list[dict]) -> dict[str, float]:
        return {f"bbox_ap@{metric_suffix(SubnetConfig(r['resolution'], r['width']))}": r["bbox_ap"] for r in rows}


def check_resumable(meta: dict[str, Any], method: str, spec: dict[str, Any]) -> None:
    """One line when ``ckpt_path`` holds another task, method, backbone or size list."""
    check_task(meta, "detection", "ckpt_path")
    got = (meta["method"]["name"], meta["net"]["backbone"], list(meta["net"]["sizes"]))
    want = (method, spec["backbone"], list(spec["sizes"]))
    for field, g, w in zip(("method", "model", "data.resolutions"), got, want):
        if g != w:
            raise CheckpointError(f"ckpt_path: checkpoint was trained with {field}={g} but this run has {field}={w}; "
                                  f"use {field}={g} or start a new run")


def final_ap(trainer: L.Trainer, module: DetectionModule, datamodule) -> list[dict[str, Any]]:
    """AP per evaluation configuration of the trained detector (the validation split), with the
    backbone's MAdds and parameters."""
    module.recalibrate(datamodule)
    rows = evaluate_detector(module, datamodule, trainer.limit_val_batches)
    for row in rows:
        row["madds"], row["params"] = module.net.backbone_costs(SubnetConfig(row["resolution"], row["width"]))
    return rows


@torch.no_grad()
def evaluate_detector(module: DetectionModule, datamodule, limit_batches=None) -> list[dict[str, Any]]:
    """AP rows of :meth:`DetectionModule.compute_ap` over the validation loader (no Trainer)."""
    was_training = module.training
    module.eval()
    limit = limit_batches if isinstance(limit_batches, int) else None
    for i, (images, targets) in enumerate(datamodule.val_dataloader()):
        if limit is not None and i >= limit:
            break
        images = [to_float_image(im.to(module.device)) for im in images]
        targets = [{k: v.to(module.device) if isinstance(v, torch.Tensor) else v for k, v in t.items()} for t in targets]
        module.validation_step((images, targets), i)
    module.train(was_training)
    return module.compute_ap()
