"""Hydra ``instantiate`` with one-line errors, for every part a config names (lightning-hydra-template's
``instantiators``): data modules, loggers, callbacks, the trainer."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from ..errors import ConfigError


def instantiate_checked(cfg: Any, field: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` with a one-line :class:`ConfigError` naming ``field`` on failure."""
    try:
        return instantiate(cfg, **kwargs)
    except Exception as err:  # instantiate wraps the target's TypeError/ValueError in its own types
        cause = err.__cause__ or err
        message = str(cause).strip().splitlines()[0]
        raise ConfigError(message if message.startswith(field) else f"{field}: {message}") from None


def instantiate_group(cfg: DictConfig | None, field: str) -> list:
    """Every entry of a config group with a ``_target_`` (``logger``, ``callbacks``), instantiated."""
    return [instantiate_checked(c, f"{field}.{name}") for name, c in (cfg or {}).items()
            if c is not None and "_target_" in c]
