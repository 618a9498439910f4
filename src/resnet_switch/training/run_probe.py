"""``RunProbe``: a callback recording what a training run did, as JSON (the GPU check reads it)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback


class RunProbe(Callback):
    """The loss of every training step, the device, the precision, the process-group backend and
    world size, how many BN layers synchronise over processes, and under ``16-mixed`` the gradient
    scaler's scale after every step (``scales``; empty without a scaler); written to ``path`` (JSON)
    by the global-zero process when training ends. Added with ``+callbacks.<name>._target_=...``."""

    def __init__(self, path: str):
        self.path = path
        self.losses: list[float] = []
        self.scales: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(trainer.callback_metrics["train/loss"]))
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if scaler is not None:
            self.scales.append(float(scaler.get_scale()))

    def on_train_end(self, trainer, pl_module):
        dist = torch.distributed
        synced = sum(1 for m in pl_module.net.modules()
                     if type(m).__name__ == "SyncedBatchNorm2d" or getattr(m, "sync_stats", False))
        record = {"losses": self.losses, "device": str(pl_module.device), "precision": str(trainer.precision),
                  "world_size": trainer.world_size,
                  "backend": dist.get_backend() if dist.is_available() and dist.is_initialized() else None,
                  "synced_bn_layers": synced, "scales": self.scales}
        if trainer.is_global_zero:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            Path(self.path).write_text(json.dumps(record))
