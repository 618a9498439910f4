"""Methods (registered in their modules, :mod:`.registry`): ``method.name`` -> class."""

from __future__ import annotations

from . import mutualnet, rsnet, san  # noqa: F401  (each registers its methods)
from .base import Method
from .registry import METHODS, build_method, list_methods, register_method

__all__ = ["METHODS", "Method", "build_method", "list_methods", "register_method"]
