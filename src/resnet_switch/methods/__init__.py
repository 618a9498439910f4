"""Methods (each registers itself in its module, :mod:`.registry`; the registry imports every module
of this package on its first lookup): ``method.name`` -> class."""

from __future__ import annotations

from .base import Method
from .registry import METHODS, build_method, list_methods, register_method

__all__ = ["METHODS", "Method", "build_method", "list_methods", "register_method"]
