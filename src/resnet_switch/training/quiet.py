"""Keep third-party noise out of a run's output: what the user can act on stays, the rest goes.

Dropped: Lightning's advertisement for its cloud logger and its "Loading `train_dataloader` to
estimate number of stepping batches" note; the deprecation warning Lightning's own pytree helper
raises inside torch (Lightning's code, not the user's); Hydra's notice that our
``hydra/launcher/submitit_*.yaml`` are validated against the plugin's schema (the validation is what
we want: a mistyped field fails). Kept: every warning and error about the user's settings, and
Lightning's device lines ("GPU available: ...").
"""

from __future__ import annotations

import logging
import warnings

DROPPED_LOG_MESSAGES = ("litlogger", "to estimate number of stepping batches")
DROPPED_WARNINGS = (
    r"(?s).*is validated against ConfigStore schema with the same name",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
)
LIGHTNING_INFO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _DropMessages(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(part in message for part in DROPPED_LOG_MESSAGES)


def quiet_third_party() -> None:
    """Install the filters (idempotent)."""
    for pattern in DROPPED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in LIGHTNING_INFO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages())
