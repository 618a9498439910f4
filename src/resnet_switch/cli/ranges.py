"""Type and range checks of every numeric setting of the ``model``, ``data``, ``optim`` and ``trainer``
groups (and a few top-level ones), made before any work starts.

Each rule is one line in :data:`RULES`; a value of the wrong type or out of range fails with one line
naming the field, what it must be and what it got, e.g. ``model.base_width: expected an integer >= 1,
got 0``. A field that is absent or ``null`` passes (``null`` means "unset"/"all" where allowed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from ..errors import ConfigError


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


@dataclass(frozen=True)
class Int:
    """An integer in ``[low, high]`` (``high`` None: no upper bound)."""

    low: int
    high: int | None = None

    def check(self, value: Any) -> str | None:
        if _is_int(value) and value >= self.low and (self.high is None or value <= self.high):
            return None
        span = f">= {self.low}" if self.high is None else f"in [{self.low}, {self.high}]"
        return f"expected an integer {span}"


@dataclass(frozen=True)
class Real:
    """A finite number with ``low <= x`` (or ``low < x`` when ``open_low``) and ``x <= high``
    (or ``x < high`` when ``open_high``)."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def check(self, value: Any) -> str | None:
        ok = _is_number(value)
        if ok and self.low is not None:
            ok = value > self.low if self.open_low else value >= self.low
        if ok and self.high is not None:
            ok = value < self.high if self.open_high else value <= self.high
        return None if ok else f"expected a number {self.describe()}"

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}{')' if self.open_high else ']'}"
        if self.low is not None:
            return f"{'>' if self.open_low else '>='} {self.low:g}"
        return f"{'<' if self.open_high else '<='} {self.high:g}"


@dataclass(frozen=True)
class CountOrFraction:
    """Lightning's ``limit_*_batches``: a batch count >= 1 or a fraction in (0, 1]."""

    def check(self, value: Any) -> str | None:
        if (_is_int(value) and value >= 1) or (isinstance(value, float) and 0.0 < value <= 1.0):
            return None
        return "expected a batch count >= 1 or a fraction in (0, 1]"


@dataclass(frozen=True)
class Interval:
    """A pair ``[low, high]`` with ``lower < low <= high <= upper`` (e.g. a crop scale range)."""

    lower: float
    upper: float

    def check(self, value: Any) -> str | None:
        if (isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_number(v) for v in value)
                and self.lower < value[0] <= value[1] <= self.upper):
            return None
        return f"expected [low, high] with {self.lower:g} < low <= high <= {self.upper:g}"


@dataclass(frozen=True)
class Devices:
    """Lightning's ``devices``: ``auto``, a count >= 1 (or -1: all), or a list of device indices."""

    def check(self, value: Any) -> str | None:
        if value == "auto" or (_is_int(value) and (value >= 1 or value == -1)):
            return None
        if isinstance(value, (list, tuple)) and value and all(_is_int(v) and v >= 0 for v in value):
            return None
        return "expected auto, a device count >= 1 (-1: all) or a list of device indices"


Rule = Int | Real | CountOrFraction | Interval | Devices

RULES: dict[str, Rule] = {
    "seed": Int(0),
    "calibration_samples": Int(1),
    # model/
    "model.base_width": Int(1),
    "model.width_mult": Real(0.0, open_low=True),
    "model.dropout": Real(0.0, 1.0, open_high=True),
    "model.hidden": Int(1),
    # data/
    "data.batch_size": Int(1),
    "data.num_workers": Int(0),
    "data.crop_scale": Interval(0.0, 1.0),
    "data.val_crop_ratio": Real(0.0, 1.0, open_low=True),
    "data.train_samples": Int(1),
    "data.val_samples": Int(1),
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


def check_ranges(cfg: DictConfig, rules: Mapping[str, Rule] = RULES) -> None:
    """Raise :class:`ConfigError` for the first field of ``cfg`` that breaks its rule."""
    for field, rule in rules.items():
        value = _plain(OmegaConf.select(cfg, field))
        if value is None:
            continue
        problem = rule.check(value)
        if problem:
            raise ConfigError(f"{field}: {problem}, got {value!r}")
