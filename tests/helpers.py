"""Shared test helpers: compose the real Hydra config with tiny, fast overrides."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from resnet_switch.config_checks import CONF_DIR

REPO = Path(__file__).resolve().parents[1]

TINY = [
    "model=resnet20", "model.base_width=4",
    "data.resolutions=[16,12]", "data.batch_size=16", "data.num_workers=0",
    "data.train_samples=64", "data.val_samples=32",
    "trainer.max_epochs=1", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1", "logger=csv", "callbacks.progress_bar=null",
]


def tiny_cfg(run_dir: Path, *overrides: str, config_name: str = "train"):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(config_name, overrides=[*TINY, f"run_dir={run_dir}", *overrides])


def run_cli(module: str, *args: str, cwd: Path | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline", HYDRA_FULL_ERROR="0")
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
