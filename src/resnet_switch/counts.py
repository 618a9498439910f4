"""Counts with a unit (``150M`` MAdds, ``2e6``): one parser for the commands, the PyTorch runtime and the
torch-free ONNX runtime (:mod:`resnet_switch.deploy.onnx`), so it imports nothing but the standard library."""

from __future__ import annotations

import math
import numbers
import re
from typing import Any

from .errors import ConfigError

_UNITS = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_COUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmgt]?)\s*$", re.IGNORECASE)


def parse_count(value: Any, field: str = "budget.madds") -> float:
    """``150000000``, ``1.5e8``, ``'150M'``, ``'1.2G'``, ``'900k'`` -> a positive float."""
    if isinstance(value, bool):
        raise ConfigError(f"{field}: {value!r} is not a number; use e.g. 150M, 1.2G or 150000000")
    if isinstance(value, numbers.Real):  # int, float and numpy scalars
        number = float(value)
    else:
        match = _COUNT.match(str(value))
        if match is None:
            raise ConfigError(f"{field}: cannot read {value!r}; use a number with an optional unit k/M/G, e.g. 150M")
        number = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(f"{field}: must be positive, got {value!r}")
    return number
