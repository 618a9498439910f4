"""Hydra ``instantiate`` for every part a config names (lightning-hydra-template's ``instantiators``):
data modules, loggers, callbacks, the trainer.

Contract: what the config got wrong becomes a one-line :class:`~resnet_switch.errors.ConfigError`
naming the field: a ``_target_`` that cannot be located, arguments the target's signature does not
take, a ``ConfigError`` our constructor raised itself, or a ``ValueError`` / Lightning
``MisconfigurationException`` with which another library's constructor (Lightning's ``Trainer``, a
logger, a callback) rejects an argument value. Anything else a constructor raises is a bug and
propagates unchanged, with its traceback.
"""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig

from ..errors import ConfigError


def _raised_by_the_call_itself(err: BaseException) -> bool:
    """A ``TypeError`` whose traceback ends in the frame that made the call: the arguments did not bind
    to the target's signature (no frame of the target's own code ran)."""
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_filename.replace("\\", "/").find("/hydra/") >= 0


def _ours(cfg: Any) -> bool:
    """Whether the config's ``_target_`` is one of this package's (whose validation is ``ConfigError``)."""
    target = cfg.get("_target_") if hasattr(cfg, "get") else None
    return str(target or "").startswith(("resnet_switch.", "__main__."))


def _one_line(field: str, err: BaseException) -> ConfigError:
    text = str(err).strip()
    message = text.splitlines()[0] if text else type(err).__name__
    return ConfigError(message if message.startswith(field) else f"{field}: {message}")


def instantiate_checked(cfg: Any, field: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` with the config's own mistakes as a one-line :class:`ConfigError`
    naming ``field`` (see the module docstring); bugs keep their traceback."""
    try:
        return instantiate(cfg, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, ConfigError):  # names its own field
            raise cause from None
        if isinstance(cause, (ImportError, AttributeError)) and "Error locating target" in str(err):
            raise ConfigError(f"{field}._target_: cannot import {cfg.get('_target_')!r} "
                              f"({type(cause).__name__}); give the dotted path of a class or function") from cause
        if isinstance(cause, TypeError) and _raised_by_the_call_itself(cause):
            raise _one_line(field, cause) from cause
        if isinstance(cause, (ValueError, MisconfigurationException)) and not _ours(cfg):
            raise _one_line(field, cause) from cause
        raise


def instantiate_group(cfg: DictConfig | None, field: str) -> list:
    """Every entry of a config group with a ``_target_`` (``logger``, ``callbacks``), instantiated."""
    return [instantiate_checked(c, f"{field}.{name}") for name, c in (cfg or {}).items()
            if c is not None and "_target_" in c]
