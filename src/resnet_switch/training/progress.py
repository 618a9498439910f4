"""Progress output that suits where it goes: Lightning's redrawn tqdm bar on a terminal, plain lines
in a log file or a CI log (a redrawn bar there is hundreds of carriage-return fragments).

:func:`progress_bar` is the ``callbacks.progress_bar`` target: it returns a ``TQDMProgressBar`` when
stdout is a terminal and a :class:`LineProgressBar` otherwise.
"""

from __future__ import annotations

import sys
import time

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

from ..errors import ConfigError


class LineProgressBar(ProgressBar):
    """One line every ``every_n_steps`` training steps (epoch, step, the progress-bar metrics such as
    ``train/loss``, steps per second) and one after each validation (``val/acc1_mean``)."""

    def __init__(self, every_n_steps: int = 25) -> None:
        super().__init__()
        if every_n_steps < 1:
            raise ConfigError(f"callbacks.progress_bar.every_n_steps: expected an integer >= 1, got {every_n_steps}")
        self.every_n_steps = int(every_n_steps)
        self._enabled = True
        self._epoch_start = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _print(self, text: str) -> None:
        if self._enabled and self.trainer.is_global_zero:
            print(text, flush=True)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        done = batch_idx + 1
        total = self.total_train_batches
        if done % self.every_n_steps and done != total:
            return
        rate = done / max(1e-9, time.perf_counter() - self._epoch_start)
        metrics = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in self.get_metrics(trainer, pl_module).items() if k != "v_num")
        total_text = f"/{total}" if isinstance(total, int) else ""
        self._print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}  step {done}{total_text}  "
                    f"{metrics}  ({rate:.2f} it/s)")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        mean = trainer.callback_metrics.get("val/acc1_mean")
        if mean is not None:
            self._print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}  validation  "
                        f"val/acc1_mean {float(mean):.2f}")


def progress_bar(refresh_rate: int = 10, every_n_steps: int = 25) -> ProgressBar:
    """``TQDMProgressBar(refresh_rate)`` on a terminal, else ``LineProgressBar(every_n_steps)``."""
    if sys.stdout.isatty():
        return TQDMProgressBar(refresh_rate=refresh_rate)
    return LineProgressBar(every_n_steps)
