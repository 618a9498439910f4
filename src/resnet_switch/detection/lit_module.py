"""The detection LightningModule: one switchable detector, one method, per-configuration AP.

A training step runs the method's configurations of the step (full network first), each on the same
batch: the detector resizes the images to the configuration's size and runs the backbone at its
width; ``backward`` once per configuration (one graph alive at a time), ONE optimizer step. Each
configuration learns from the labels (torchvision's RPN, box and mask losses, summed).

Validation: per evaluation configuration a torchmetrics ``MeanAveragePrecision`` (``bbox`` and, for
Mask R-CNN, ``segm``; COCO's AP@[.5:.95] in %): ``val/bbox_ap@R``, ``val/segm_ap@R``
(``@R_w0.5`` at other widths), ``val/bbox_ap50@R`` and the means ``val/bbox_ap_mean``,
``val/segm_ap_mean``. Slimmable backbones get exact BN statistics per configuration first.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics.detection import MeanAveragePrecision

from ..methods import Method
from ..switch import SubnetConfig
from ..training.checkpointing import CHECKPOINT_KEY, checkpoint_meta
from ..training.distributed import all_reduce_sum, average_gradients, world_size
from ..training.finite_guard import FiniteGuard
from ..training.lit_module import _module_key, metric_suffix, sgd_cosine
from .calibration import calibrate_detector
from .datamodule import to_float_image
from .methods import step_configs
from .model import SwitchableDetector

MASK_THRESHOLD = 0.5  # Mask R-CNN's per-pixel probabilities -> binary instance masks


def iou_types(detector: SwitchableDetector) -> tuple[str, ...]:
    return ("bbox", "segm") if detector.spec["masks"] else ("bbox",)


def metric_inputs(preds: list[dict[str, Tensor]], targets: list[dict[str, Tensor]], masks: bool):
    """torchvision detections/targets -> torchmetrics' ``MeanAveragePrecision`` inputs."""
    p_out, t_out = [], []
    for p, t in zip(preds, targets):
        p_item = {"boxes": p["boxes"], "scores": p["scores"], "labels": p["labels"]}
        t_item = {"boxes": t["boxes"], "labels": t["labels"]}
        if masks:
            p_item["masks"] = p["masks"][:, 0] > MASK_THRESHOLD
            t_item["masks"] = t["masks"].bool()
        p_out.append(p_item)
        t_out.append(t_item)
    return p_out, t_out


class DetectionModule(L.LightningModule):
    """Args:
        method: the detection method (:func:`~resnet_switch.detection.methods.build_detection_method`).
        net: the detector built for it.
        optim: as :class:`~resnet_switch.training.lit_module.SwitchModule` (``lr``, ``momentum``,
            ``weight_decay``, ``nesterov``, ``decay_scope``, ``warmup_epochs``) plus
            ``clip_grad_norm`` (null: no clipping).
        method_meta, run_meta: facts stored in every checkpoint.
        calibration_samples: training images for the BN post-statistics of slimmable backbones.
    """

    def __init__(self, method: Method, net: SwitchableDetector, optim: dict[str, Any],
                 method_meta: dict[str, Any], run_meta: dict[str, Any] | None = None,
                 calibration_samples: int = 256):
        super().__init__()
        self.automatic_optimization = False
        self.method, self.net = method, net
        self.optim, self.method_meta, self.run_meta = dict(optim), dict(method_meta), dict(run_meta or {})
        self.eval_configs = method.eval_configs()
        self.calibration_samples = int(calibration_samples)
        self.calibrated_step: int | None = None
        self.finite_guard = FiniteGuard()
        self.iou_types = iou_types(net)
        self.ap = nn.ModuleDict({_module_key(c): MeanAveragePrecision(iou_type=self.iou_types)
                                 for c in self.eval_configs})

    # ----------------------------------------------------------------- training
    def training_step(self, batch, batch_idx: int) -> None:
        images, targets = batch
        opt, sched = self.optimizers(), self.lr_schedulers()
        opt.zero_grad(set_to_none=True)
        configs = step_configs(self.method)
        average_after = world_size() > 1 and len(configs) > 1
        parts: dict[str, Tensor] = {}
        total = torch.zeros((), device=self.device)
        for i, config in enumerate(configs):
            self.net.set_active(config)
            losses = self.net(images, targets)
            loss = sum(losses.values())
            self.finite_guard.record_loss(loss, config)
            last = i == len(configs) - 1 and not average_after
            with nullcontext() if last or world_size() == 1 else self._no_sync():
                self.manual_backward(loss)
            total += loss.detach()
            for name, value in losses.items():
                parts[name] = parts.get(name, 0) + value.detach()
            if i == 0:
                parts["loss_full"] = loss.detach()
        self.finite_guard.check(self.global_step)
        if average_after:
            average_gradients(self.parameters())
        if self.optim.get("clip_grad_norm"):
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), float(self.optim["clip_grad_norm"]))
        opt.step()
        sched.step()
        bs = len(images)
        self.log("train/loss", total, prog_bar=True, batch_size=bs)
        for name, value in parts.items():
            self.log(f"train/{name}", value, batch_size=bs)
        self.log("train/lr", sched.get_last_lr()[0], batch_size=bs)

    def _no_sync(self):
        strategy_model = getattr(self.trainer.strategy, "model", None)
        return strategy_model.no_sync() if hasattr(strategy_model, "no_sync") else nullcontext()

    # --------------------------------------------------------------- validation
    @property
    def eval_bn_mode(self) -> str | None:
        return "calibrated" if self.method.needs_calibration else None

    def recalibrate(self, datamodule=None) -> None:
        """Exact BN statistics per evaluation configuration (slimmable backbones), once per step."""
        if not self.method.needs_calibration or self.calibrated_step == self.global_step:
            return
        datamodule = datamodule or self.trainer.datamodule

        def images():
            for batch_images, _ in datamodule.calibration_loader():
                yield [to_float_image(im.to(self.device)) for im in batch_images]

        calibrate_detector(self.net, images, self.eval_configs, self.calibration_samples)
        self.calibrated_step = self.global_step

    def on_validation_epoch_start(self) -> None:
        self.recalibrate()

    def validation_step(self, batch, batch_idx: int) -> None:
        images, targets = batch
        for config in self.eval_configs:
            with self.net.switch(config, self.eval_bn_mode):
                preds = self.net(images)
            self.ap[_module_key(config)].update(*metric_inputs(preds, targets, "segm" in self.iou_types))

    def compute_ap(self) -> list[dict[str, Any]]:
        """Rows ``{resolution, width, bbox_ap, bbox_ap50, [segm_ap, segm_ap50]}`` (%), metrics reset."""
        rows = []
        for config in self.eval_configs:
            metric = self.ap[_module_key(config)]
            values = metric.compute()
            metric.reset()
            row: dict[str, Any] = {"resolution": config.resolution, "width": config.width}
            for kind in self.iou_types:
                prefix = f"{kind}_" if len(self.iou_types) > 1 else ""
                row[f"{kind}_ap"] = float(values[f"{prefix}map"]) * 100
                row[f"{kind}_ap50"] = float(values[f"{prefix}map_50"]) * 100
            rows.append(row)
        return rows

    def on_validation_epoch_end(self) -> None:
        rows = self.compute_ap()
        for row in rows:
            suffix = metric_suffix(SubnetConfig(row["resolution"], row["width"]))
            for key, value in row.items():
                if key not in ("resolution", "width"):
                    self.log(f"val/{key}@{suffix}", value, sync_dist=True)
        for kind in self.iou_types:
            mean = sum(r[f"{kind}_ap"] for r in rows) / len(rows)
            self.log(f"val/{kind}_ap_mean", mean, prog_bar=True, sync_dist=True)

    # ------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        return sgd_cosine(self.optim, self.net, self.trainer)

    # ------------------------------------------------------ faults and resuming
    def on_fit_start(self) -> None:
        self.finite_guard.reduce = all_reduce_sum if world_size() > 1 else None

    def on_train_epoch_end(self) -> None:
        self.finite_guard.flush()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.finite_guard.flush()
        checkpoint[CHECKPOINT_KEY] = checkpoint_meta(self.net, self.method_meta, self.run_meta)
