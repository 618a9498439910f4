"""The classification LightningModule: per-configuration top-1/top-5 on the shared manual step.

The step, the optimiser, the NaN guard, DDP gradient averaging, RNG states, BN recalibration and the
checkpoint metadata are :class:`~.module.SwitchTrainingModule`'s; classification adds the method's
own step (``Method.training_step`` on a :class:`~resnet_switch.data.multires.MultiResBatch`) and its
metrics: ``val/acc1@R``, ``val/acc5@R`` per evaluation configuration (``@R_w0.5`` at other widths),
``val/acc1_mean`` and, for RS-Net, ``val/acc1_ensemble``. ``memory_format=channels_last`` and
``compile=True`` are applied to the network by the base (:mod:`.speed`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from ..data.multires import MultiResBatch
from ..methods import Method
from ..methods.base import Backward
from ..models.switchable import SwitchableNet
from .module import SwitchTrainingModule, metric_suffix, module_key

__all__ = ["SwitchModule", "metric_suffix"]


class SwitchModule(SwitchTrainingModule):
    """A switchable classifier trained by ``method``; arguments as :class:`~.module.SwitchTrainingModule`."""

    def __init__(self, method: Method, net: SwitchableNet, optim: dict[str, Any],
                 method_meta: dict[str, Any], run_meta: dict[str, Any] | None = None,
                 calibration_samples: int = 2048, sync_bn: bool = False,
                 memory_format: str = "contiguous", compile_net: bool = False,
                 test_resolutions: Sequence[int] = ()):
        super().__init__(method, net, optim, method_meta, run_meta, calibration_samples, sync_bn=sync_bn,
                         memory_format=memory_format, compile_net=compile_net, test_resolutions=test_resolutions)
        # (global step, rows {resolution, width, top1, top5}) of the last full validation
        self.last_validation: tuple[int, list[dict]] | None = None
        num_classes = net.spec["num_classes"]
        top5 = min(5, num_classes)
        self.acc1 = nn.ModuleDict({module_key(c): MulticlassAccuracy(num_classes, top_k=1, average="micro")
                                   for c in self.eval_configs})
        self.acc5 = nn.ModuleDict({module_key(c): MulticlassAccuracy(num_classes, top_k=top5, average="micro")
                                   for c in self.eval_configs})
        # the method's ensemble of its evaluation configurations (RS-Net): val/acc1_ensemble
        self.acc1_ensemble = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self._ensemble_seen = False

    def task_step(self, batch: MultiResBatch, backward: Backward) -> dict[str, Tensor]:
        return self.method.training_step(self.net, batch, backward)

    def validation_step(self, batch: MultiResBatch, batch_idx: int) -> None:
        full_width: dict[int, Tensor] = {}
        for config in self.eval_configs:
            with self.policy.switch(config):
                logits = self.net(batch.at(config.resolution))
            self.acc1[module_key(config)].update(logits, batch.targets)
            self.acc5[module_key(config)].update(logits, batch.targets)
            if config.width == 1.0 and config.resolution in self.method.resolutions:  # the ensemble's members
                full_width[config.resolution] = logits
        ensemble = self.method.ensemble(full_width)
        if ensemble is not None:
            self.acc1_ensemble.update(ensemble, batch.targets)
            self._ensemble_seen = True

    def on_validation_epoch_end(self) -> None:
        top1, top5 = [], []
        for config in self.eval_configs:
            metric1, metric5 = self.acc1[module_key(config)], self.acc5[module_key(config)]
            acc1, acc5 = metric1.compute(), metric5.compute()
            metric1.reset()
            metric5.reset()
            suffix = metric_suffix(config)
            self.log(f"val/acc1@{suffix}", acc1 * 100, sync_dist=True)
            self.log(f"val/acc5@{suffix}", acc5 * 100, sync_dist=True)
            top1.append(acc1)
            top5.append(acc5)
        self.log("val/acc1_mean", torch.stack(top1).mean() * 100, prog_bar=True, sync_dist=True)
        if self._ensemble_seen:
            self.log("val/acc1_ensemble", self.acc1_ensemble.compute() * 100, sync_dist=True)
            self.acc1_ensemble.reset()
            self._ensemble_seen = False
        if not self.trainer.sanity_checking:  # one host copy per validation, for the final report
            values = (torch.stack([*top1, *top5]) * 100).tolist()
            n = len(self.eval_configs)
            self.last_validation = (self.global_step, [
                {"resolution": c.resolution, "width": c.width, "top1": values[k], "top5": values[n + k]}
                for k, c in enumerate(self.eval_configs)])
