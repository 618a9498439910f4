"""``last.ckpt``: the resume point of ``ckpt_path=last``, refreshed every epoch and every N steps.

Lightning's ``ModelCheckpoint`` treats ``every_n_train_steps`` and per-epoch saving as mutually
exclusive (and warns on every step save under manual optimisation); a day-long epoch needs both.
A step checkpoint holds the data loader's position in the epoch and the RNG states, so a run killed
mid-epoch resumes exactly where the checkpoint was taken (:mod:`resnet_switch.data.sampling`).
Writes go through the trainer's CheckpointIO (atomic: temporary file + rename).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint

from ..errors import ConfigError


class LastCheckpoint(ModelCheckpoint):
    """``<dirpath>/<filename>.ckpt`` after every epoch (after its validation; at the end of training
    an epoch that has none, e.g. with ``check_val_every_n_epoch > 1``) and, with
    ``every_n_train_steps=N``, after every N-th optimizer step inside an epoch. A step that ends an
    epoch is left to the per-epoch save that follows its validation.

    Args:
        dirpath: checkpoint folder. filename: file stem (``last``).
        every_n_train_steps: ``None`` (per epoch only) or an integer >= 1.
    """

    def __init__(self, dirpath: str, filename: str = "last", every_n_train_steps: int | None = None,
                 **kwargs: Any) -> None:
        n = every_n_train_steps
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ConfigError(f"callbacks.last_checkpoint.every_n_train_steps: expected null or an integer >= 1, got {n!r}")
        kwargs.setdefault("enable_version_counter", False)
        super().__init__(dirpath=dirpath, filename=filename, monitor=None, save_top_k=1, **kwargs)
        self.step_interval = n or 0

    @property
    def path(self) -> Path:
        return Path(self.dirpath) / f"{self.filename}{self.FILE_EXTENSION}"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if (not self.step_interval or trainer.global_step % self.step_interval or trainer.sanity_checking
                or trainer.fast_dev_run or trainer.fit_loop.epoch_loop.batch_progress.is_last_batch):
            return
        trainer.save_checkpoint(self.path)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_skip_saving_checkpoint(trainer) or self._should_save_on_train_epoch_end(trainer):
            return  # saving is off here (sanity check, fast_dev_run), or the parent just saved
        every = trainer.check_val_every_n_epoch
        validates = trainer.enable_validation and (every is None or (trainer.current_epoch + 1) % every == 0)
        if not validates:  # no validation end follows this epoch to save it
            trainer.save_checkpoint(self.path)
