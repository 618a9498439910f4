"""The one ``train()`` path of every task, shared by the ``train`` command and the GPU check.

Thin orchestration (lightning-hydra-template's ``train()``): the task (``task=classification`` or
``detection``, :data:`resnet_switch.training.tasks.TASKS`) builds the data, method, network and
LightningModule; everything else is shared here: seeding, ``model.pretrained`` / ``model.init``,
resume checks, the trainer with its loggers and callbacks (Hydra ``instantiate``), the result table
(``results.md``, ``results.csv`` and a plot of the metric against MAdds next to ``checkpoints/``) and
W&B's finish.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import ProgressBar
from omegaconf import DictConfig

from .cli.options import check_type
from .cli.ranges import check_ranges
from .detection import task as _detection_task  # noqa: F401  (registers task=detection)
from .errors import ConfigError
from .evaluation.results import publish_results
from .evaluation.runs import default_label, write_run_info
from .training.allocator import keep_freed_memory
from .training.checkpointing import AtomicCheckpointIO, CheckpointError, load_checkpoint
from .training.instantiate import instantiate_checked, instantiate_group
from .training.loggers import finish_wandb
from .training.quiet import quiet_third_party
from .training.speed import check_memory_format
from .training.sweeps import cluster_plugins
from .training.tasks import TASKS, Task
from .user_files import load_tensor_dict

log = logging.getLogger(__name__)

INIT_REQUIRED = "required"  # an experiment's model.init.ckpt that the command line must fill


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


def check_speed_options(cfg: DictConfig) -> None:
    """One-line errors for ``memory_format`` and ``compile`` (before any work starts)."""
    check_memory_format(cfg.get("memory_format", "auto"))
    check_type("compile", cfg.get("compile", False), False)


def check_init_options(cfg: DictConfig) -> None:
    """``model.init.ckpt``: given when an experiment requires it (``ckpt: required``; Hydra's ``???``
    cannot override the init file's ``null``), not with ``model.pretrained``."""
    ckpt = (cfg.model.get("init") or {}).get("ckpt")
    if ckpt == INIT_REQUIRED:
        raise ConfigError("model.init.ckpt: this experiment fine-tunes a trained network; pass "
                          "model.init.ckpt=PATH of a checkpoint written by resnet_switch.train")
    if ckpt and cfg.model.get("pretrained"):
        raise ConfigError("model.pretrained: give either model.pretrained (a plain torchvision state dict) or "
                          "model.init.ckpt (a resnet_switch checkpoint), not both")


def check_task(cfg: DictConfig) -> Task:
    """The task of ``cfg.task``, after its one-line refusals of the other task's options."""
    task: Task = TASKS.get(cfg.get("task", "classification"))()
    task.check(cfg)
    return task


def load_pretrained(cfg: DictConfig) -> dict | None:
    """The plain (torchvision-style) state dict of ``model.pretrained``, or ``None``."""
    if not cfg.model.get("pretrained"):
        return None
    return load_tensor_dict(cfg.model.pretrained, "model.pretrained")


def pair_files() -> list[str]:
    """The (method, model) pairs that have their own file in ``conf/method_model/``."""
    if not GlobalHydra.instance().is_initialized():
        return []
    return GlobalHydra.instance().config_loader().get_group_options("method_model")


def log_pair_settings(cfg: DictConfig) -> None:
    """Say when train.yaml's ``method_model`` entry picked a (method, model) pair's own file (its lr):
    a value no group file of the command line names."""
    choice = HydraConfig.get().runtime.choices.get("method_model") if HydraConfig.initialized() else None
    # Hydra records an optional entry's choice even when the pair has no file: log only a file that exists
    if choice and choice in pair_files():
        log.info("method_model=%s: this pair's own settings (conf/method_model/%s.yaml): optim.lr=%s",
                 choice, choice, cfg.optim.get("lr"))


def run_info(cfg: DictConfig, resolutions, wall_s: float, resumed: bool) -> dict:
    """What names this run in ``report`` tables (``run.json``, :mod:`.evaluation.runs`); ``wall_s``:
    seconds from the start of ``train`` to its results in this process (``resumed``: it went on from a
    checkpoint, so the time is of the last part only)."""
    return {"label": cfg.get("label") or default_label(cfg.method.name, list(resolutions)), "seed": int(cfg.seed),
            "task": cfg.get("task", "classification"), "method": cfg.method.name, "model": cfg.model.name,
            "data": cfg.data.name, "resolutions": [int(r) for r in resolutions], "wall_s": round(wall_s, 1),
            "resumed": resumed}


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then evaluate the final model per configuration; returns ``{metric@config: value}``."""
    started = time.perf_counter()
    quiet_third_party()  # again here: sweep launchers and spawned processes call train() directly
    check_init_options(cfg)
    check_ranges(cfg)
    check_speed_options(cfg)
    keep_freed_memory()
    task = check_task(cfg)
    log_pair_settings(cfg)
    run_dir = Path(cfg.run_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # a refusal below stays one line; run.json has the seed

    parts = task.build(cfg, load_pretrained(cfg))
    ckpt_path = resolve_ckpt_path(cfg.ckpt_path, run_dir, cfg.task_name)
    init = dict(cfg.model.get("init") or {})
    if ckpt_path is not None:
        task.check_resume(load_checkpoint(ckpt_path)["resnet_switch"], cfg, parts)
    elif init.get("ckpt"):  # a resumed run already holds the fine-tuned weights
        task.init_from(cfg, parts, init)
    module = task.module(cfg, parts)

    loggers = instantiate_group(cfg.get("logger"), "logger")
    callbacks = instantiate_group(cfg.get("callbacks"), "callbacks")
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a bar callback then
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    # trainer.sync_batchnorm is done by the module (sync_bn=...): Lightning's would merge private BN sets
    trainer: L.Trainer = instantiate_checked(cfg.trainer, "trainer", logger=loggers or False, callbacks=callbacks,
                                             plugins=[AtomicCheckpointIO(), *cluster_plugins()],
                                             sync_batchnorm=False)
    trainer.fit(module, datamodule=parts.datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)

    rows = task.results(trainer, module, parts.datamodule)
    if trainer.is_global_zero:
        publish_results(rows, run_dir, loggers, title=task.title(cfg), layout=task.layout)
        write_run_info(run_dir, run_info(cfg, parts.method.resolutions, time.perf_counter() - started,
                                                resumed=ckpt_path is not None))
    finish_wandb(loggers)
    return task.metrics(rows)
