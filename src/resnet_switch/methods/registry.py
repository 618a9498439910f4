"""Method registry: ``method.name`` -> :class:`~resnet_switch.methods.base.Method` subclass.

A method registers itself where it is defined (timm's ``register_model``)::

    @register_method("rsnet")
    class RSNet(Parallel): ...
"""

from __future__ import annotations

from collections.abc import Callable

from ..registry import Registry
from .base import Method

METHODS: Registry[type[Method]] = Registry("method", field="method.name")


def register_method(name: str, **info) -> Callable[[type[Method]], type[Method]]:
    """Class decorator registering a :class:`Method` subclass under ``name``."""
    return METHODS.register(name, **info)


def list_methods() -> list[str]:
    """Registered method names, sorted."""
    return METHODS.list()


def build_method(name: str, resolutions, **kwargs) -> Method:
    """Method ``name`` for ``resolutions`` with its settings ``kwargs``; one-line error for unknown names."""
    return METHODS.get(name)(resolutions, **kwargs)
