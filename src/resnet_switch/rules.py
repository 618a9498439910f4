"""The type and range rule of one setting, stated where the setting is declared.

A rule's ``check(value)`` returns ``None`` when the value is allowed, else what it must be
(``"expected an integer >= 1"``); :func:`resnet_switch.cli.ranges.check_ranges` turns that into one
line naming the field before any work starts. The shared groups' rules are listed in
:mod:`resnet_switch.cli.ranges`; a backbone's or a method's own arguments carry theirs in its
registration (``register_backbone(..., settings={"width_mult": Real(0.0, open_low=True)})``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return (is_int(value) or isinstance(value, float)) and math.isfinite(value)


@dataclass(frozen=True)
class Int:
    """An integer in ``[low, high]`` (``high`` None: no upper bound)."""

    low: int
    high: int | None = None

    def check(self, value: Any) -> str | None:
        if is_int(value) and value >= self.low and (self.high is None or value <= self.high):
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
        ok = is_number(value)
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
class Choice:
    """One of ``choices``, compared with their types (``true`` is not ``1``)."""

    choices: tuple[Any, ...]

    def check(self, value: Any) -> str | None:
        if any(type(value) is type(c) and value == c for c in self.choices):
            return None
        spelled = ["true" if c is True else "false" if c is False else str(c) for c in self.choices]
        return f"expected one of {', '.join(spelled)}"


@dataclass(frozen=True)
class CountOrFraction:
    """Lightning's ``limit_*_batches``: a batch count >= 1 or a fraction in (0, 1]."""

    def check(self, value: Any) -> str | None:
        if (is_int(value) and value >= 1) or (isinstance(value, float) and 0.0 < value <= 1.0):
            return None
        return "expected a batch count >= 1 or a fraction in (0, 1]"


@dataclass(frozen=True)
class Interval:
    """A pair ``[low, high]`` with ``lower < low <= high <= upper`` (e.g. a crop scale range)."""

    lower: float
    upper: float

    def check(self, value: Any) -> str | None:
        if (isinstance(value, (list, tuple)) and len(value) == 2 and all(is_number(v) for v in value)
                and self.lower < value[0] <= value[1] <= self.upper):
            return None
        return f"expected [low, high] with {self.lower:g} < low <= high <= {self.upper:g}"


@dataclass(frozen=True)
class Devices:
    """Lightning's ``devices``: ``auto``, a count >= 1 (or -1: all), or a list of device indices."""

    def check(self, value: Any) -> str | None:
        if value == "auto" or (is_int(value) and (value >= 1 or value == -1)):
            return None
        if isinstance(value, (list, tuple)) and value and all(is_int(v) and v >= 0 for v in value):
            return None
        return "expected auto, a device count >= 1 (-1: all) or a list of device indices"


Rule = Int | Real | Choice | CountOrFraction | Interval | Devices
