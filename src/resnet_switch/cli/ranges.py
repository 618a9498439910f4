"""Type and range checks of every numeric setting, made before any work starts.

The rules of the shared groups (``data``, ``optim``, ``trainer``, a few top-level ones) are listed in
:data:`RULES`; a backbone's or a method's own arguments carry theirs in its registration
(``register_backbone(..., settings=...)``, ``register_method(..., settings=...)``) and
:func:`rules_for` collects those of the chosen ``model.name`` and ``method.name``. A value of the
wrong type or out of range fails with one line naming the field, what it must be and what it got,
e.g. ``model.base_width: expected an integer >= 1, got 0``. A field that is absent or ``null`` passes
(``null`` means "unset"/"all" where allowed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from ..errors import ConfigError
from ..methods.registry import method_settings
from ..models.registry import backbone_settings
from ..rules import CountOrFraction, Devices, Int, Interval, Real, Rule

RULES: dict[str, Rule] = {
    "seed": Int(0),
    "calibration_samples": Int(1),
    # data/
    "data.batch_size": Int(1),
    "data.num_workers": Int(0),
    "data.crop_scale": Interval(0.0, 1.0),
    "data.val_crop_ratio": Real(0.0, 1.0, open_low=True),
    "data.train_samples": Int(1),
    "data.val_samples": Int(1),
    "data.holdout": Int(0),
    "data.val_reference": Int(1),
    "data.seed": Int(0),
    "data.synthetic.num_classes": Int(2, 15),
    "data.synthetic.native_size": Int(8),
    "data.synthetic.image_seed": Int(0),
    "data.synthetic.cache_mb": Real(0.0),
    "data.calibration_samples": Int(1),
    "data.hflip": Real(0.0, 1.0),
    # data/ of task=detection (synthetic_detection: the split's settings)
    **{f"data.{split}.{key}": rule for split in ("train", "val") for key, rule in (
        ("num_samples", Int(1)), ("image_size", Int(32)), ("num_classes", Int(1, 5)),
        ("max_objects", Int(1, 4)), ("seed", Int(0)))},
    # optim/
    "optim.lr": Real(0.0, open_low=True),
    "optim.momentum": Real(0.0, 1.0, open_high=True),
    "optim.weight_decay": Real(0.0),
    "optim.warmup_epochs": Real(0.0),
    # trainer/
    "trainer.max_epochs": Int(1),
    "trainer.max_steps": Int(-1),
    "trainer.devices": Devices(),
    "trainer.num_nodes": Int(1),
    "trainer.log_every_n_steps": Int(1),
    "trainer.check_val_every_n_epoch": Int(1),
    "trainer.num_sanity_val_steps": Int(-1),
    "trainer.limit_train_batches": CountOrFraction(),
    "trainer.limit_val_batches": CountOrFraction(),
    "callbacks.last_checkpoint.every_n_train_steps": Int(1),
    "callbacks.progress_bar.refresh_rate": Int(0),
    "callbacks.progress_bar.every_n_steps": Int(1),
}


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def rules_for(cfg: DictConfig) -> dict[str, Rule]:
    """:data:`RULES` and the rules the chosen backbone and method register for their arguments
    (``model.<argument>``, ``method.<argument>``; none for a name that is not registered)."""
    rules = dict(RULES)
    for group, settings_of in (("model", backbone_settings), ("method", method_settings)):
        name = OmegaConf.select(cfg, f"{group}.name")
        if isinstance(name, str):
            rules.update({f"{group}.{key}": rule for key, rule in settings_of(name).items()})
    return rules


def check_ranges(cfg: DictConfig, rules: Mapping[str, Rule] | None = None) -> None:
    """Raise :class:`ConfigError` for the first field of ``cfg`` that breaks its rule (``rules``:
    default :func:`rules_for` ``cfg``)."""
    for field, rule in (rules_for(cfg) if rules is None else rules).items():
        value = _plain(OmegaConf.select(cfg, field))
        if value is None:
            continue
        problem = rule.check(value)
        if problem:
            raise ConfigError(f"{field}: {problem}, got {value!r}")
