"""Method registry: ``method.name`` -> class. Each method module registers itself here."""

from __future__ import annotations

from .base import Method
from .mutualnet import MutualNet, SNet, USNet
from .rsnet import Individual, Parallel, RSNet
from .san import SAN

METHODS: dict[str, type[Method]] = {
    "individual": Individual,
    "parallel": Parallel,
    "rsnet": RSNet,
    "mutualnet": MutualNet, "usnet": USNet, "snet": SNet,
    "san": SAN,
}


def build_method(name: str, resolutions, **kwargs) -> Method:
    if name not in METHODS:
        raise ValueError(f"method.name: unknown {name!r}; choose one of {sorted(METHODS)}")
    return METHODS[name](resolutions, **kwargs)


__all__ = ["METHODS", "Method", "build_method"]
