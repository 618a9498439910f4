"""Logger helpers shared by every command: W&B's offline default and its per-job ``finish()``.

Importing this module registers the ``${wandb_offline:}`` resolver the ``logger/wandb`` config uses.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf


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


def finish_wandb(loggers: Sequence) -> None:
    """W&B needs ``finish()`` between multirun jobs, or every job logs into the first run."""
    if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
        import wandb

        wandb.finish()
