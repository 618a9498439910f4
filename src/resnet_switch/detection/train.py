"""``python -m resnet_switch.train task=detection [overrides]``: train one switchable detector.

The same orchestration as classification (Hydra ``instantiate`` for data, trainer, loggers,
callbacks): build the detection data, method and detector, fit, then evaluate every configuration
and write ``results.md``, ``results.csv`` and ``ap_vs_madds.png`` (AP against backbone MAdds) in
the run directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ProgressBar
from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError
from ..evaluation.reporting import human_count, markdown_table, plot_accuracy_vs_madds, write_csv
from ..methods.build import backbone_kwargs as backbone_arguments
from ..switch import SubnetConfig, check_resolutions
from ..training.checkpointing import AtomicCheckpointIO, CheckpointError, check_task, load_checkpoint
from ..training.lit_module import metric_suffix
from ..training.sweeps import cluster_plugins
from .lit_module import DetectionModule
from .methods import build_detection_method
from .model import build_detector

DATA_KEYS_NOT_ARGS = ("name", "task", "resolutions", "root", "calibration_samples")
METHOD_KEYS_NOT_ARGS = ("name", "task")
DETECTOR_ARGS = ("masks", "fpn_channels", "anchor_base", "aspect_ratios", "max_size", "box_head_dim",
                 "mask_head_channels", "image_mean", "image_std")


def check_detection_config(cfg: DictConfig) -> None:
    """One line when a classification method/data set is combined with task=detection."""
    for group in ("method", "data"):
        if cfg[group].get("task") != "detection":
            choice = f"{group}.name={cfg[group].get('name')}"
            options = "detection_mutualnet, detection_usnet, detection_rsnet" if group == "method" else \
                "synthetic_detection, coco"
            raise ConfigError(f"{group}: {choice} is a classification option; with task=detection use {group}= one "
                              f"of {options}")
    if cfg.get("detector") is None:
        raise ConfigError("detector: task=detection needs a detector; use detector=mask_rcnn_small|mask_rcnn|faster_rcnn")


def _container(node) -> dict[str, Any]:
    return OmegaConf.to_container(node, resolve=True) if node is not None else {}


def build_detection_run(cfg: DictConfig):
    """``(datamodule, method, detector, method_meta)`` from a composed config."""
    from ..train import instantiate_checked  # the train command's one-line instantiate errors

    check_detection_config(cfg)
    sizes = check_resolutions(list(cfg.data.resolutions), "data.resolutions")
    data = {k: v for k, v in _container(cfg.data).items() if k not in DATA_KEYS_NOT_ARGS}
    datamodule = instantiate_checked(data, "data")
    method_args = {k: v for k, v in _container(cfg.method).items() if k not in METHOD_KEYS_NOT_ARGS}
    method = build_detection_method(cfg.method.name, sizes, **method_args)
    model = _container(cfg.model)
    detector = _container(cfg.detector)
    pretrained = None
    if model.get("pretrained"):
        path = Path(model["pretrained"])
        if not path.is_file():
            raise FileNotFoundError(f"model.pretrained: no file {path}; give a torchvision-style state_dict path")
        pretrained = torch.load(path, map_location="cpu", weights_only=True)
    net = build_detector(
        model["name"], sizes, datamodule.num_classes, layers=method.layers, widths=method.net_widths(),
        layer_kwargs=method.layer_kwargs(),
        backbone_kwargs=backbone_arguments(model, also_drop=("dropout",)),
        detector_kwargs=detector.get("kwargs") or {}, pretrained_backbone=pretrained,
        **{k: detector[k] for k in DETECTOR_ARGS if k in detector},
    )
    return datamodule, method, net, {"name": cfg.method.name, "task": "detection", "kwargs": method_args}


def train_detection(cfg: DictConfig) -> dict[str, float]:
    """Fit, then evaluate every configuration; returns ``{bbox_ap@R: AP}``."""
    from ..train import _finish_wandb, instantiate_checked, instantiate_group, resolve_ckpt_path

    run_dir = Path(cfg.run_dir)
    L.seed_everything(cfg.seed, workers=True)
    datamodule, method, net, method_meta = build_detection_run(cfg)
    module = DetectionModule(
        method, net, optim=_container(cfg.optim), method_meta=method_meta,
        run_meta={"task": "detection", "data": _container(cfg.data), "model": _container(cfg.model),
                  "detector": _container(cfg.detector)},
        calibration_samples=cfg.calibration_samples,
    )
    loggers = instantiate_group(cfg.get("logger"), "logger")
    callbacks = instantiate_group(cfg.get("callbacks"), "callbacks")
    if not cfg.trainer.get("enable_progress_bar", True):
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    trainer: L.Trainer = instantiate_checked(cfg.trainer, "trainer", logger=loggers or False, callbacks=callbacks,
                                             plugins=[AtomicCheckpointIO(), *cluster_plugins()])
    ckpt_path = resolve_ckpt_path(cfg.ckpt_path, run_dir, cfg.task_name)
    if ckpt_path is not None:
        check_resumable(load_checkpoint(ckpt_path)["resnet_switch"], method_meta["name"], net.spec)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)

    rows = final_ap(trainer, module, datamodule)
    if trainer.is_global_zero:
        publish_detection_results(rows, run_dir, loggers, title=f"{cfg.method.name} / {cfg.model.name} / {cfg.data.name}")
    _finish_wandb(loggers)
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
    from .datamodule import to_float_image

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


def publish_detection_results(rows: list[dict[str, Any]], run_dir: Path, loggers: Sequence = (), title: str = "") -> str:
    """Print the AP table; write ``results.md``, ``results.csv`` and ``ap_vs_madds.png`` in ``run_dir``;
    log the table and plot to W&B when a W&B logger is present."""
    run_dir = Path(run_dir)
    kinds = [k[:-3] for k in rows[0] if k.endswith("_ap")]
    table = markdown_table([{**{k: v for k, v in r.items() if k not in ("madds", "params")},
                             "backbone MAdds": human_count(r["madds"]), "backbone params": human_count(r["params"])}
                            for r in rows], formats={"width": "g"})
    write_csv(rows, run_dir / "results.csv")
    (run_dir / "results.md").write_text(f"# {title}\n\nAP in % (COCO AP@[.5:.95] and AP@.5), torchmetrics "
                                        f"MeanAveragePrecision; MAdds of the backbone at a square image.\n\n{table}\n")
    series: dict[str, list] = {}
    for r in rows:
        for kind in kinds:
            series.setdefault(f"{kind} AP, width {r['width']:g}", []).append((r["madds"], r[f"{kind}_ap"], str(r["resolution"])))
    plot = plot_accuracy_vs_madds(series, run_dir / "ap_vs_madds.png", title=title, ylabel="AP (%)",
                                  xlabel="backbone MAdds (M)")
    print(f"\n{title}\n{table}\nresults: {run_dir / 'results.md'}  plot: {plot}", flush=True)
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            import wandb

            logger.experiment.log({"results": wandb.Table(columns=list(rows[0]), data=[list(r.values()) for r in rows]),
                                   "ap_vs_madds": wandb.Image(str(plot))})
    return table
