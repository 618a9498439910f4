"""SGD with a weight-decay split and a per-iteration cosine schedule (``optim/sgd_cosine``), for
every task's LightningModule."""

from __future__ import annotations

import math

import lightning as L
import torch
from torch import nn

from ..errors import ConfigError


def sgd_cosine(optim: dict, net: nn.Module, trainer: L.Trainer, extra_no_decay: list[nn.Parameter] = ()) -> dict:
    """Lightning's ``configure_optimizers`` answer for an ``optim/sgd_cosine`` config: SGD with the
    weight-decay split of :func:`split_weight_decay` (``extra_no_decay``: e.g. RS-Net's alpha), and
    :func:`cosine_with_warmup` stepped per iteration over the trainer's estimated steps."""
    decay, no_decay = split_weight_decay(net, optim.get("decay_scope", "all"))
    groups = [{"params": decay, "weight_decay": optim["weight_decay"]},
              {"params": no_decay + list(extra_no_decay), "weight_decay": 0.0}]
    optimizer = torch.optim.SGD(groups, lr=optim["lr"], momentum=optim.get("momentum", 0.9),
                                nesterov=optim.get("nesterov", False))
    total = max(1, int(trainer.estimated_stepping_batches))
    steps_per_epoch = max(1, total // max(1, trainer.max_epochs or 1))
    warmup = int(optim.get("warmup_epochs", 0) * steps_per_epoch)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(total, warmup))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def cosine_with_warmup(total_steps: int, warmup_steps: int = 0):
    """LR factor: linear warm-up to 1, then cosine to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def split_weight_decay(net: nn.Module, scope: str = "all") -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``all``: every parameter decays. ``conv_fc``: only weights of non-depthwise convs and linear
    layers decay (MutualNet's recipe); BN, biases and depthwise kernels do not."""
    if scope not in ("all", "conv_fc"):
        raise ConfigError(f"optim.decay_scope: unknown {scope!r}; choose all or conv_fc")
    if scope == "all":
        return list(net.parameters()), []
    decay_ids = set()
    for m in net.modules():
        weight = getattr(m, "weight", None)
        if isinstance(weight, nn.Parameter) and weight.dim() in (2, 4):
            if weight.dim() == 2 or getattr(m, "groups", 1) == 1:
                decay_ids.add(id(weight))
    decay = [p for p in net.parameters() if id(p) in decay_ids]
    no_decay = [p for p in net.parameters() if id(p) not in decay_ids]
    return decay, no_decay
