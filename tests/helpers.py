"""Shared test helpers: compose the real Hydra config with tiny, fast overrides."""

from __future__ import annotations

import copy
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from lightning.pytorch.callbacks import Callback

from resnet_switch.cli.overrides import CONF_DIR

REPO = Path(__file__).resolve().parents[1]

TINY = [
    "model=resnet20", "model.base_width=4",
    "data.resolutions=[16,12]", "data.batch_size=16", "data.num_workers=0",
    "data.train_samples=64", "data.val_samples=32",
    "trainer.max_epochs=1", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1", "logger=csv", "callbacks.progress_bar=null",
    "optim.warmup_epochs=1",  # 4 steps of warm-up: the first step is small (the first-step probes)
]


def tiny_cfg(run_dir: Path, *overrides: str, config_name: str = "train"):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(config_name, overrides=[*TINY, f"run_dir={run_dir}", *overrides])


def compose_train(*overrides: str, config_name: str = "train"):
    """The real config with only ``overrides`` (no tiny settings): for checks that build nothing."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(config_name, overrides=["run_dir=/tmp/rs_compose", *overrides])


def run_cli(module: str, *args: str, cwd: Path | None = None, timeout: int = 120,
            env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline", HYDRA_FULL_ERROR="0", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          cwd=cwd or REPO, env=env, timeout=timeout)


class StopAfterEpochs:
    """A Lightning callback that ends fit after ``epochs`` epochs, as if the run had been killed
    right after its checkpoint (the LR schedule still spans the configured max_epochs)."""

    def __new__(cls, epochs: int):
        from lightning.pytorch.callbacks import Callback

        class _Stop(Callback):
            def on_validation_end(self, trainer, pl_module):
                if trainer.current_epoch + 1 >= epochs:
                    trainer.should_stop = True

        return _Stop()


class TrainingCrash(RuntimeError):
    """Raised by :class:`CrashAtStep` (a stand-in for a killed process)."""


class CrashAtStep(Callback):
    """Raises :class:`TrainingCrash` when the batch after optimizer step ``step`` starts (every
    checkpoint of that step has been written by then)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise TrainingCrash(f"crash at global step {self.step}")


class HangAtStep(Callback):
    """When the batch after optimizer step ``step`` starts: touch ``marker`` and sleep (the test
    then kills the process with SIGKILL)."""

    def __init__(self, step: int, marker: str):
        self.step, self.marker = step, marker

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            Path(self.marker).write_text(str(self.step))
            time.sleep(600)


class PoisonAtStep(Callback):
    """Sets the BN weights of private BN set ``set_index`` (the ``set_index``-th training
    resolution) to NaN when optimizer step ``step`` begins."""

    def __init__(self, step: int, set_index: int = 1):
        self.step, self.set_index = step, set_index

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                for name, p in pl_module.net.named_parameters():
                    if f"sets.{self.set_index}.weight" in name:
                        p.fill_(float("nan"))


class RecordRankState(Callback):
    """Writes ``<folder>/rank<r>.pt`` at the end of fit: this process's per-step ``train/loss``
    and targets, and its network's tensors (parameters and buffers)."""

    def __init__(self, folder: str):
        self.folder = folder
        self.losses, self.targets = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(trainer.callback_metrics["train/loss"]))
        self.targets.append(batch.targets.tolist())

    def on_train_end(self, trainer, pl_module):
        state = {k: v.detach().cpu().clone() for k, v in pl_module.net.state_dict().items()
                 if isinstance(v, torch.Tensor)}
        Path(self.folder).mkdir(parents=True, exist_ok=True)
        torch.save({"losses": self.losses, "targets": self.targets, "state": state},
                   Path(self.folder) / f"rank{trainer.global_rank}.pt")


class FirstBatchProbe(Callback):
    """The cross-entropy of the network on the first training forward (its configuration, input
    images and the batch's targets; BN in training mode as in the step, float32), before training
    (:attr:`loss_before`, the weights at the start of fit: :attr:`start`) and right after the first
    optimizer step (:attr:`loss_after_step`): a learning signal independent of the run's own
    metrics. The losses are computed on a twin built from the network's spec (no hooks of other
    callbacks fire). Instances made by Hydra are appended to :attr:`made` (newest last)."""

    made: list[FirstBatchProbe] = []

    def __init__(self):
        FirstBatchProbe.made.append(self)
        self.start: dict = {}
        self.config = self.images = self.targets = None
        self.loss_before = self.loss_after_step = None
        self._twin = self._handle = None

    def on_train_start(self, trainer, pl_module):
        from resnet_switch.models import create_model

        net = pl_module.net
        self.start = copy.deepcopy(net.state_dict())
        self._twin = create_model(**net.spec)

        def first_input(module, args):
            if module.training and self.images is None:
                self.config, self.images = module.state.config, args[0].detach().float().clone()

        self._handle = net.register_forward_pre_hook(first_input)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.targets is None:
            self.targets = batch.targets.detach().clone()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.loss_after_step is None:
            self._handle.remove()
            self.loss_before = self.loss(self.start)
            self.loss_after_step = self.loss(pl_module.net.state_dict())

    @torch.no_grad()
    def loss(self, state: dict) -> float:
        """Cross-entropy of the network with ``state`` (e.g. :attr:`start`) on the first training
        forward's images and targets, at its configuration, BN in training mode, float32."""
        net = self._twin
        net.load_state_dict(state)
        net.float().train()
        with torch.autocast(self.images.device.type, enabled=False), net.switch(self.config):
            logits = net(self.images)
        return float(torch.nn.functional.cross_entropy(logits.float(), self.targets))


def assert_crash_then_resume_is_exact(make_cfg, tmp_path: Path, overrides: list[str], crash_step: int,
                                      epoch: int, batches: int, total_steps: int) -> None:
    """Train ``overrides`` straight, and again with a crash after global step ``crash_step`` (epoch
    ``epoch``, ``batches`` into it) then ``ckpt_path=last``: the resumed run returns the same final
    metrics and ends with the same weights, bit for bit. ``make_cfg(run_dir, *overrides)`` composes."""
    from resnet_switch.pipeline import train
    from resnet_switch.training.checkpointing import load_checkpoint

    def last(run_dir: Path) -> dict:
        return load_checkpoint(run_dir / "checkpoints" / "last.ckpt")

    straight = train(make_cfg(tmp_path / "straight", *overrides))
    crashed = tmp_path / "crashed"
    try:
        train(make_cfg(crashed, *overrides, "+callbacks.crash._target_=tests.helpers.CrashAtStep",
                       f"+callbacks.crash.step={crash_step}"))
        raise AssertionError(f"the run did not crash at step {crash_step}")
    except TrainingCrash:
        pass
    ckpt = last(crashed)
    assert ckpt["global_step"] == crash_step and ckpt["epoch"] == epoch
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": epoch, "batches": batches}]
    assert "rng_states" in ckpt
    resumed = train(make_cfg(crashed, *overrides, "ckpt_path=last"))
    assert resumed == straight  # the final metric per configuration, exactly
    a, b = last(tmp_path / "straight"), last(crashed)
    assert a["global_step"] == b["global_step"] == total_steps
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=0, msg=key)


def needs(*modules: str):
    """Skip unless every module is importable: optional extras the lent GPU machines' image lacks
    (mkdocs, wandb, the Hydra launcher/sweeper plugins), so the whole fast suite runs there too."""
    def absent(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is None
        except ModuleNotFoundError:  # a dotted name whose parent package is missing
            return True

    missing = [m for m in modules if absent(m)]
    return pytest.mark.skipif(bool(missing), reason=f"optional package(s) not installed: {', '.join(missing)}")


class MethodEpochProbe(Callback):
    """The training progress the method was given (``method.epoch``, set before each step) and
    whether it distilled, after every training step. Instances made by Hydra are appended to
    :attr:`made` (newest last)."""

    made: list[MethodEpochProbe] = []

    def __init__(self):
        MethodEpochProbe.made.append(self)
        self.seen: list[tuple[float, bool]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen.append((pl_module.method.epoch, pl_module.method.distilling()))
