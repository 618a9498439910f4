"""Evaluate a switchable network over configurations on a data module's validation split.

One pass over the loader serves every configuration: each batch is ONE centre crop at the data
module's reference resolution (plus one per test resolution above it), and every smaller resolution
is made from it on the device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial

import torch
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy
from tqdm.auto import tqdm

from ..data.multires import MultiResBatch
from ..layers.calibration import calibrate_bn
from ..models.inference_policy import InferencePolicy
from ..models.switchable import SwitchableNet
from ..switch import SubnetConfig


def to_device(batch, device: torch.device):
    """``(images | tuple of images, targets)`` -> same structure on ``device`` (non-blocking); a batch
    object (``data.decode=device``) moves itself."""
    if not isinstance(batch, (tuple, list)):
        return batch.to(device, non_blocking=True)
    images, targets = batch
    if isinstance(images, Tensor):
        images = images.to(device, non_blocking=True)
    else:
        images = tuple(x.to(device, non_blocking=True) for x in images)
    return images, targets.to(device, non_blocking=True)


def device_batches(datamodule, loader, device: torch.device) -> Iterator[MultiResBatch]:
    for batch in loader:
        yield datamodule.on_after_batch_transfer(to_device(batch, device), 0)


@torch.no_grad()
def evaluate_configs(net: SwitchableNet, datamodule, configs: Sequence[SubnetConfig],
                     bn_mode: str | None = None, limit_batches: int | None = None,
                     progress: bool = True, ensemble: Callable[[dict[int, Tensor]], Tensor | None] | None = None,
                     extra: dict | None = None, policy: InferencePolicy | None = None) -> list[dict]:
    """Top-1/top-5 (%) per configuration: rows ``{resolution, width, top1, top5}``.

    Each configuration runs as ``policy`` says (:meth:`InferencePolicy.switch`: its BN mode and
    scale encoding; its statistics must be ready), else in ``net.switch(config, bn_mode)``.

    ``ensemble``: ``{resolution: logits at width 1} -> logits or None`` (a method's ensemble, e.g.
    RS-Net's ``softmax(alpha)``-weighted sum); when it gives logits, their ``{top1, top5}`` go to
    ``extra["ensemble"]``.
    """
    device = next(net.parameters()).device
    num_classes = net.spec["num_classes"]
    configs = list(configs)
    slots = range(len(configs) + 1)  # the last one: the ensemble
    acc1 = [MulticlassAccuracy(num_classes, top_k=1, average="micro").to(device) for _ in slots]
    acc5 = [MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro").to(device) for _ in slots]
    ensemble_seen = False
    was_training = net.training
    net.eval()
    loader = datamodule.val_dataloader()
    batches = device_batches(datamodule, loader, device)
    for i, batch in enumerate(tqdm(batches, total=len(loader), desc="evaluate", disable=None if progress else True,
                                  leave=False)):
        if limit_batches is not None and i >= limit_batches:
            break
        full_width: dict[int, Tensor] = {}
        for k, config in enumerate(configs):
            with net.switch(config, bn_mode) if policy is None else policy.switch(config):
                logits = net(batch.at(config.resolution))
            acc1[k].update(logits, batch.targets)
            acc5[k].update(logits, batch.targets)
            if config.width == 1.0:
                full_width[config.resolution] = logits
        combined = ensemble(full_width) if ensemble is not None else None
        if combined is not None:
            acc1[-1].update(combined, batch.targets)
            acc5[-1].update(combined, batch.targets)
            ensemble_seen = True
    net.train(was_training)
    if ensemble_seen and extra is not None:
        extra["ensemble"] = {"top1": float(acc1[-1].compute()) * 100, "top5": float(acc5[-1].compute()) * 100}
    return [
        {"resolution": c.resolution, "width": c.width,
         "top1": float(a1.compute()) * 100, "top5": float(a5.compute()) * 100}
        for c, a1, a5 in zip(configs, acc1, acc5)
    ]


def calibrate_configs(net: nn.Module, datamodule, configs: Sequence[SubnetConfig], num_samples: int,
                      progress: bool = True, images: Callable[[SubnetConfig], Iterable] | None = None) -> None:
    """Exact BN recalibration of ``net`` (a :class:`SwitchableNet`, or a module with its ``state`` and
    ``switch``, e.g. a detector's backbone probe) for each configuration on ``num_samples`` images.

    ``images(config)``: fresh inputs of ``net`` for ``config`` (any task); default: training crops of
    ``datamodule``'s calibration loader made at the configuration's resolution on the device."""
    if images is None:
        images = partial(calibration_crops, datamodule, next(net.parameters()).device)
    for config in tqdm(configs, desc="calibrate BN", disable=None if progress else True, leave=False):
        calibrate_bn(net, images(config), config, num_samples)


def calibration_crops(datamodule, device: torch.device, config: SubnetConfig) -> Iterator[Tensor]:
    """The classification default of :func:`calibrate_configs`: calibration images at ``config.resolution``."""
    loader = datamodule.calibration_dataloader()
    return (b.at(config.resolution) for b in device_batches(datamodule, loader, device))
