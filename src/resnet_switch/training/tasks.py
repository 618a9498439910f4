"""What a task supplies to the one ``train()`` path: data, method, network, module and result rows.

``train()`` (:mod:`resnet_switch.pipeline`) does what every task shares: seeding, the trainer, loggers
and callbacks, ``model.pretrained`` and ``model.init`` loading, resume checks, fitting, publishing the
results and finishing W&B. A task (``task=`` in the config) is a :class:`Task` registered in
:data:`TASKS`; ``classification`` is here, ``detection`` in :mod:`resnet_switch.detection.task`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError
from ..evaluation.results import CLASSIFICATION_LAYOUT, ResultsLayout, final_results
from ..layers.quant import quant_spec_from_config
from ..methods import Method, build_method
from ..models import ModelConfig, check_min_resolution, create_model, load_plain_weights
from ..registry import Registry
from ..switch import SubnetConfig, check_resolutions
from .checkpointing import check_compatible
from .init_from import init_from_checkpoint
from .instantiate import instantiate_checked
from .lit_module import SwitchModule
from .module import SwitchTrainingModule, metric_suffix
from .speed import resolve_memory_format


@dataclass
class TaskParts:
    """What a task builds from a config: the data module, the method and its network."""

    datamodule: L.LightningDataModule
    method: Method
    net: torch.nn.Module
    method_meta: dict[str, Any]


class Task(Protocol):
    """One kind of training job (the hooks :func:`resnet_switch.pipeline.train` calls, in this order)."""

    layout: ResultsLayout  # how the result rows are tabulated and plotted

    def check(self, cfg: DictConfig) -> None:
        """One-line refusals of options that belong to another task or do not apply."""

    def build(self, cfg: DictConfig, pretrained: dict | None) -> TaskParts:
        """Data, method and network; ``pretrained``: a plain state dict (``model.pretrained``) to start from."""

    def check_resume(self, meta: dict[str, Any], cfg: DictConfig, parts: TaskParts) -> None:
        """One line when the checkpoint of ``ckpt_path`` (its ``resnet_switch`` meta) is another run's."""

    def init_from(self, cfg: DictConfig, parts: TaskParts, init: dict[str, Any]) -> None:
        """Fine-tune from ``model.init.ckpt`` (a fresh run, not a resume)."""

    def module(self, cfg: DictConfig, parts: TaskParts) -> SwitchTrainingModule:
        """The LightningModule."""

    def results(self, trainer: L.Trainer, module: SwitchTrainingModule, datamodule) -> list[dict]:
        """Rows ``{resolution, width, <metrics>, madds, params}`` of the trained network."""

    def title(self, cfg: DictConfig) -> str:
        """The title of the results table and plot."""

    def metrics(self, rows: list[dict]) -> dict[str, float]:
        """``{metric@config: value}``, the return value of ``train()`` (the sweeps' objective)."""


TASKS: Registry[type] = Registry("task", field="task")


def container(node) -> dict[str, Any]:
    """A resolved plain dict of a config node (``{}`` for ``None``)."""
    return OmegaConf.to_container(node, resolve=True) if node is not None else {}


def method_arguments(method_cfg: dict[str, Any]) -> dict[str, Any]:
    """A method config's constructor arguments: every entry but ``name`` (the registry key)."""
    return {k: v for k, v in method_cfg.items() if k != "name"}


def build_datamodule(cfg: DictConfig, resolutions, test_resolutions=None) -> L.LightningDataModule:
    """The classification data module of ``cfg.data``, training at ``resolutions`` (validating at
    ``test_resolutions``, default: the data config's, else the training ones)."""
    data = container(cfg.data)
    data.pop("resolutions")
    data["train_resolutions"] = list(resolutions)
    if test_resolutions:
        data["test_resolutions"] = list(test_resolutions)
    return instantiate_checked(data, "data", _convert_="all")


@TASKS.register("classification")
class ClassificationTask:
    """A switchable image classifier (:class:`~.lit_module.SwitchModule`): top-1/top-5 per configuration."""

    layout = CLASSIFICATION_LAYOUT

    def check(self, cfg: DictConfig) -> None:
        for group in ("method", "data"):
            if cfg[group].get("task") == "detection":
                raise ConfigError(f"{group}: {cfg[group].get('name')!r} is a detection option; add task=detection")

    def build(self, cfg: DictConfig, pretrained: dict | None) -> TaskParts:
        resolutions = check_resolutions(list(cfg.data.resolutions), "data.resolutions")
        quant = self.quant(cfg)
        method_cfg = container(cfg.method)
        method = build_method(method_cfg["name"], resolutions, **method_arguments(method_cfg))
        model = ModelConfig.from_config(container(cfg.model))
        method.check_backbone(model.name, quant)  # before the data: create_model asks again
        check_min_resolution(model.name, resolutions)
        if quant is not None and cfg.get("compile", False):
            raise ConfigError("compile: quant=lq is not supported with compile=true (its quantizers keep per-step "
                              "caches and update their bases in place); use compile=false")
        datamodule = build_datamodule(cfg, resolutions)
        net = create_model(model.name, method=method, num_classes=datamodule.num_classes,
                           in_channels=datamodule.in_channels, quant=quant, **model.backbone)
        if pretrained is not None:
            load_plain_weights(net, pretrained)
        return TaskParts(datamodule, method, net, {"name": method_cfg["name"], "kwargs": method_arguments(method_cfg)})

    @staticmethod
    def quant(cfg: DictConfig) -> dict | None:
        return quant_spec_from_config(container(cfg.quant) if cfg.get("quant") else None)

    def check_resume(self, meta: dict[str, Any], cfg: DictConfig, parts: TaskParts) -> None:
        check_compatible(meta, cfg.method.name, cfg.model.name, parts.method.resolutions, spec=parts.net.spec,
                         quant=self.quant(cfg))

    def init_from(self, cfg: DictConfig, parts: TaskParts, init: dict[str, Any]) -> None:
        method = parts.method
        init_from_checkpoint(parts.net, init["ckpt"], cfg.method.name, init.get("bn_mode"),
                             init.get("classifier", "auto"),
                             keep_statistics=method.eval_configs() if method.needs_calibration else [])

    def module(self, cfg: DictConfig, parts: TaskParts) -> SwitchModule:
        datamodule = parts.datamodule
        return SwitchModule(
            parts.method, parts.net, optim=container(cfg.optim), method_meta=parts.method_meta,
            run_meta={"data": container(cfg.data), "mean": list(datamodule.mean), "std": list(datamodule.std),
                      "model": container(cfg.model)},
            calibration_samples=cfg.calibration_samples,
            sync_bn=bool(cfg.trainer.get("sync_batchnorm", False)),
            memory_format=resolve_memory_format(cfg.get("memory_format", "auto"), parts.net, on_cuda(cfg.trainer)),
            compile_net=cfg.get("compile", False),
            test_resolutions=datamodule.test_resolutions,
        )

    def results(self, trainer: L.Trainer, module: SwitchTrainingModule, datamodule) -> list[dict]:
        return final_results(trainer, module, datamodule)

    def title(self, cfg: DictConfig) -> str:
        quant = self.quant(cfg)
        bits = f" / w{quant['weight_bits']}a{quant['act_bits']}" if quant else ""
        return f"{cfg.method.name} / {cfg.model.name}{bits} / {cfg.data.name}"

    def metrics(self, rows: list[dict]) -> dict[str, float]:
        return {f"acc1@{metric_suffix(SubnetConfig(r['resolution'], r['width']))}": r["top1"] for r in rows}


def on_cuda(trainer_cfg: DictConfig) -> bool:
    """Whether the Trainer will run on CUDA (``accelerator`` gpu/cuda, or auto with a CUDA device)."""
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
