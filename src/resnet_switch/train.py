"""``python -m resnet_switch.train [overrides]``: train one switchable network.

Thin orchestration over Hydra ``instantiate`` (data, trainer, loggers, callbacks) and the method
registry. Ends by printing the per-configuration accuracy table and writing ``results.md``,
``results.csv`` and ``acc_vs_madds.png`` next to ``checkpoints/`` in the run directory.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar
from omegaconf import DictConfig, OmegaConf

from .cli.options import check_type
from .cli.overrides import CONF_DIR, check_group_choices, check_overrides, parse_hydra_args
from .cli.ranges import check_ranges
from .errors import ConfigError, user_errors
from .evaluation.results import final_results, publish_results
from .layers.quant import quant_spec_from_config
from .methods import build_method
from .methods.build import backbone_kwargs as backbone_arguments
from .methods.build import build_net_for_method, check_quant_method
from .models import load_plain_weights
from .switch import check_resolutions
from .training.allocator import keep_freed_memory
from .training.checkpointing import AtomicCheckpointIO, CheckpointError, check_compatible, load_checkpoint
from .training.init_from import init_from_checkpoint
from .training.lit_module import SwitchModule, metric_suffix
from .training.quiet import quiet_third_party
from .training.speed import check_memory_format, resolve_memory_format
from .training.sweeps import cluster_plugins

METHOD_KEYS_FOR_DATA = ("name", "crop")  # method.* entries that are not method arguments
INIT_FROM_REQUIRED = "required"  # an experiment's model.init_from that the command line must fill


def wandb_offline() -> bool:
    """Offline unless the user configured W&B (WANDB_MODE=online, WANDB_API_KEY or a netrc login)."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "disabled", "dryrun"):
        return True
    if mode == "online" or os.environ.get("WANDB_API_KEY"):
        return False
    netrc = Path.home() / ".netrc"
    return not (netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"))


if not OmegaConf.has_resolver("wandb_offline"):
    OmegaConf.register_new_resolver("wandb_offline", wandb_offline)


def method_kwargs(cfg: DictConfig) -> dict[str, Any]:
    return {k: v for k, v in OmegaConf.to_container(cfg.method, resolve=True).items()
            if k not in METHOD_KEYS_FOR_DATA}


def backbone_kwargs(cfg: DictConfig) -> dict[str, Any]:
    return backbone_arguments(OmegaConf.to_container(cfg.model, resolve=True))


def build_datamodule(cfg: DictConfig, resolutions, test_resolutions=None) -> L.LightningDataModule:
    data = OmegaConf.to_container(cfg.data, resolve=True)
    data.pop("resolutions")
    data["train_resolutions"] = list(resolutions)
    if test_resolutions:
        data["test_resolutions"] = list(test_resolutions)
    return instantiate_checked(data, "data", _convert_="all")


def resolve_ckpt_path(value: str | None, run_dir: Path, task_name: str) -> Path | None:
    """``None``; a path; ``last``: the run directory's own last.ckpt, else the newest
    ``outputs/<task_name>/*/checkpoints/last.ckpt``; ``auto``: the run directory's own last.ckpt
    if it exists, else None (start fresh)."""
    if value in (None, ""):
        return None
    if value == "auto":
        own = run_dir / "checkpoints" / "last.ckpt"
        return own if own.is_file() else None
    if value == "last":
        own = run_dir / "checkpoints" / "last.ckpt"
        if own.is_file():
            return own
        found = sorted(Path("outputs", task_name).glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise CheckpointError(
                f"ckpt_path=last: no last.ckpt in {run_dir}/checkpoints or outputs/{task_name}/*/checkpoints; "
                "pass ckpt_path=PATH or drop it to start fresh"
            )
        return found[-1]
    return Path(value)


def instantiate_checked(cfg: Any, field: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` with a one-line :class:`ConfigError` naming ``field`` on failure."""
    try:
        return instantiate(cfg, **kwargs)
    except Exception as err:  # instantiate wraps the target's TypeError/ValueError in its own types
        cause = err.__cause__ or err
        message = str(cause).strip().splitlines()[0]
        raise ConfigError(message if message.startswith(field) else f"{field}: {message}") from None


def instantiate_group(cfg: DictConfig | None, field: str) -> list:
    return [instantiate_checked(c, f"{field}.{name}") for name, c in (cfg or {}).items()
            if c is not None and "_target_" in c]


def check_speed_options(cfg: DictConfig) -> None:
    """One-line errors for ``memory_format`` and ``compile`` (before any work starts)."""
    check_memory_format(cfg.get("memory_format", "auto"))
    check_type("compile", cfg.get("compile", False), False)


def on_cuda(trainer_cfg: DictConfig) -> bool:
    """Whether the Trainer will run on CUDA (``accelerator`` gpu/cuda, or auto with a CUDA device)."""
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def check_init_options(cfg: DictConfig) -> None:
    """``model.init_from``: given when an experiment requires it (``init_from: required``; Hydra's
    ``???`` cannot override the model file's ``null``), not with ``model.pretrained``."""
    if cfg.model.get("init_from") == INIT_FROM_REQUIRED:
        raise ConfigError("model.init_from: this experiment fine-tunes a trained network; pass "
                          "model.init_from=PATH of a checkpoint written by resnet_switch.train")
    if cfg.model.get("init_from") and cfg.model.get("pretrained"):
        raise ConfigError("model.pretrained: give either model.pretrained (a plain torchvision state dict) or "
                          "model.init_from (a resnet_switch checkpoint), not both")


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then evaluate the final model per configuration; returns ``{metric: value}``."""
    quiet_third_party()  # again here: sweep launchers and spawned processes call train() directly
    check_init_options(cfg)
    check_ranges(cfg)
    check_speed_options(cfg)
    keep_freed_memory()
    if check_task(cfg) != "classification":
        return train_other_task(cfg)
    resolutions = check_resolutions(list(cfg.data.resolutions), "data.resolutions")
    run_dir = Path(cfg.run_dir)
    L.seed_everything(cfg.seed, workers=True)

    quant = quant_spec_from_config(OmegaConf.to_container(cfg.quant, resolve=True) if cfg.get("quant") else None)
    method = build_method(cfg.method.name, resolutions, **method_kwargs(cfg))
    check_quant_method(method, quant)
    if quant is not None and cfg.get("compile", False):
        raise ConfigError("compile: quant=lq is not supported with compile=true (its quantizers keep per-step "
                          "caches and update their bases in place); use compile=false")
    datamodule = build_datamodule(cfg, resolutions)
    net = build_net_for_method(method, cfg.model.name, datamodule.num_classes, datamodule.in_channels,
                               quant=quant, **backbone_kwargs(cfg))
    if cfg.model.get("pretrained"):
        path = Path(cfg.model.pretrained)
        if not path.is_file():
            raise FileNotFoundError(f"model.pretrained: no file {path}; give a torchvision-style state_dict path")
        load_plain_weights(net, torch.load(path, map_location="cpu", weights_only=True))

    ckpt_path = resolve_ckpt_path(cfg.ckpt_path, run_dir, cfg.task_name)
    if ckpt_path is not None:
        check_compatible(load_checkpoint(ckpt_path)["resnet_switch"], cfg.method.name, cfg.model.name, resolutions,
                         spec=net.spec, quant=quant)
    elif cfg.model.get("init_from"):  # a resumed run already holds the fine-tuned weights
        init_from_checkpoint(net, cfg.model.init_from, cfg.method.name, cfg.model.get("init_bn_mode"),
                             cfg.model.get("init_classifier", "auto"),
                             keep_statistics=method.eval_configs() if method.needs_calibration else [])

    module = SwitchModule(
        method, net, optim=OmegaConf.to_container(cfg.optim, resolve=True),
        method_meta={"name": cfg.method.name, "kwargs": method_kwargs(cfg)},
        run_meta={"data": OmegaConf.to_container(cfg.data, resolve=True),
                  "mean": list(datamodule.mean), "std": list(datamodule.std),
                  "model": OmegaConf.to_container(cfg.model, resolve=True)},
        calibration_samples=cfg.calibration_samples,
        sync_bn=bool(cfg.trainer.get("sync_batchnorm", False)),
        memory_format=resolve_memory_format(cfg.get("memory_format", "auto"), net, on_cuda(cfg.trainer)),
        compile_net=cfg.get("compile", False),
    )
    loggers = instantiate_group(cfg.get("logger"), "logger")
    callbacks = instantiate_group(cfg.get("callbacks"), "callbacks")
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a bar callback then
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    # trainer.sync_batchnorm is done by SwitchModule(sync_bn=...): Lightning's would merge private BN sets
    trainer: L.Trainer = instantiate_checked(cfg.trainer, "trainer", logger=loggers or False, callbacks=callbacks,
                                             plugins=[AtomicCheckpointIO(), *cluster_plugins()],
                                             sync_batchnorm=False)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)

    rows = final_results(trainer, module, datamodule)
    if trainer.is_global_zero:
        bits = f" / w{quant['weight_bits']}a{quant['act_bits']}" if quant else ""
        publish_results(rows, run_dir, loggers, title=f"{cfg.method.name} / {cfg.model.name}{bits} / {cfg.data.name}")
    metrics = {f"acc1@{metric_suffix_row(r)}": r["top1"] for r in rows}
    _finish_wandb(loggers)
    return metrics


TASKS = ("classification", "detection")


def check_task(cfg: DictConfig) -> str:
    """The task; one line when a method or data option belongs to another task."""
    task = cfg.get("task", "classification")
    if task not in TASKS:
        raise ConfigError(f"task: unknown {task!r}; choose one of {list(TASKS)}")
    for group in ("method", "data"):
        if task == "classification" and cfg[group].get("task") == "detection":
            raise ConfigError(f"{group}: {cfg[group].get('name')!r} is a detection option; add task=detection")
    return task


def train_other_task(cfg: DictConfig) -> dict[str, float]:
    """``task=detection``: the detection package trains (README "Detection")."""
    if cfg.get("compile"):
        raise ConfigError("compile: not supported with task=detection; drop it")
    if cfg.get("quant") and cfg.quant.get("name", "none") != "none":
        raise ConfigError("quant: quant=lq is a classification option; drop it with task=detection")
    if cfg.get("memory_format", "auto") not in ("auto", "contiguous"):
        raise ConfigError(f"memory_format={cfg.memory_format}: not supported with task=detection "
                          "(it trains contiguous); drop it")
    from .detection.train import train_detection

    return train_detection(cfg)


def metric_suffix_row(row: dict[str, Any]) -> str:
    from .switch import SubnetConfig

    return metric_suffix(SubnetConfig(row["resolution"], row["width"]))


def _finish_wandb(loggers) -> None:
    """W&B needs ``finish()`` between multirun jobs, or every job logs into the first run."""
    if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
        import wandb

        wandb.finish()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> float:
    with user_errors():
        metrics = train(cfg)
    return sum(metrics.values()) / max(1, len(metrics))  # the Optuna sweeper's objective


def main() -> None:
    quiet_third_party()
    args = parse_hydra_args(sys.argv[1:])
    conf_dirs = [CONF_DIR, *args.config_dirs]
    with user_errors():
        if args.multirun:
            check_group_choices(args.overrides, conf_dirs)
        elif args.composes_a_run:
            check_overrides(args.overrides, "train", conf_dirs)
    _hydra_main()


if __name__ == "__main__":
    main()
