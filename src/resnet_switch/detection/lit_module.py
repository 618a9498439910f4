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

from collections.abc import Iterator
from typing import Any

from torch import Tensor, nn
from torchmetrics.detection import MeanAveragePrecision

from ..methods import Method
from ..methods.base import Backward
from ..switch import SubnetConfig
from ..training.module import SwitchTrainingModule, metric_suffix, module_key
from .calibration import BackboneProbe
from .datamodule import to_float_image
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


class DetectionModule(SwitchTrainingModule):
    """Args:
        method: the detection method (:func:`~resnet_switch.detection.methods.build_detection_method`).
        net: the detector built for it.
        optim, method_meta, run_meta, calibration_samples, sync_bn: as
            :class:`~resnet_switch.training.module.SwitchTrainingModule` (``optim.clip_grad_norm``:
            detection losses spike early when training from scratch).
    """

    def __init__(self, method: Method, net: SwitchableDetector, optim: dict[str, Any],
                 method_meta: dict[str, Any], run_meta: dict[str, Any] | None = None,
                 calibration_samples: int = 256, sync_bn: bool = False):
        super().__init__(method, net, optim, method_meta, run_meta, calibration_samples, sync_bn=sync_bn)
        self.iou_types = iou_types(net)
        self.ap = nn.ModuleDict({module_key(c): MeanAveragePrecision(iou_type=self.iou_types)
                                 for c in self.eval_configs})

    # ----------------------------------------------------------------- training
    def backward_calls(self) -> int:
        """One backward per configuration of the step (:meth:`Method.configs_per_step`)."""
        return self.method.configs_per_step()

    @property
    def per_config_backward(self) -> bool:
        return True

    def batch_size(self, batch) -> int:
        return len(batch[0])

    def task_step(self, batch, backward: Backward) -> dict[str, Tensor]:
        """Every configuration of the step learns from the labels: the sum of torchvision's RPN, box
        (and mask) losses on the same batch, resized to the configuration's size by the detector."""
        images, targets = batch
        logs: dict[str, Tensor] = {}
        total = 0
        for i, config in enumerate(self.method.step_configs()):
            self.net.set_active(config)
            losses = self.net(images, targets)
            loss = sum(losses.values())
            backward(loss)
            total = total + loss.detach()
            for name, value in losses.items():
                logs[name] = logs.get(name, 0) + value.detach()
            if i == 0:
                logs["loss_full"] = loss.detach()
        return {"loss": total, **logs}

    # --------------------------------------------------- BN recalibration
    def calibration_probe(self) -> nn.Module:
        return BackboneProbe(self.net)

    def calibration_images(self, datamodule):
        """The same first training images (floats on the device) for every configuration."""

        def images(config: SubnetConfig) -> Iterator[list[Tensor]]:
            for batch_images, _ in datamodule.calibration_loader():
                yield [to_float_image(im.to(self.device)) for im in batch_images]

        return images

    # --------------------------------------------------------------- validation
    def validation_step(self, batch, batch_idx: int) -> None:
        images, targets = batch
        for config in self.eval_configs:
            with self.policy.switch(config):
                preds = self.net(images)
            self.ap[module_key(config)].update(*metric_inputs(preds, targets, "segm" in self.iou_types))

    def compute_ap(self) -> list[dict[str, Any]]:
        """Rows ``{resolution, width, bbox_ap, bbox_ap50, [segm_ap, segm_ap50]}`` (%), metrics reset."""
        rows = []
        for config in self.eval_configs:
            metric = self.ap[module_key(config)]
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
