"""Channel arithmetic shared by the backbones and the slimmable layers."""

from __future__ import annotations

import math

from ..errors import ConfigError


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` (at least ``min_value``, default
    ``divisor``), never going more than 10% below ``value``."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def check_width_mult(width_mult) -> float:
    """``model.width_mult`` as a float: a build-time channel multiplier, positive and finite."""
    if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) \
            or not math.isfinite(width_mult) or width_mult <= 0:
        raise ConfigError(f"model.width_mult: must be a positive number (1.0 = the paper's widths), got {width_mult!r}")
    return float(width_mult)
