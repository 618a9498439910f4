"""Method registry: ``method.name`` -> :class:`~resnet_switch.methods.base.Method` subclass.

A method registers itself where it is defined (timm's ``register_model``); every module of this
package is imported on the registry's first lookup, so a new method is one module (and its
``conf/method/NAME.yaml``)::

    @register_method("rsnet")
    class RSNet(Parallel): ...
"""

from __future__ import annotations

from collections.abc import Callable

from ..registry import Registry
from ..rules import Rule
from .base import Method

METHODS: Registry[type[Method]] = Registry("method", field="method.name", package=__package__)


def register_method(name: str, *, settings: dict[str, Rule] | None = None,
                    **info) -> Callable[[type[Method]], type[Method]]:
    """Class decorator registering a :class:`Method` subclass under ``name``; ``settings``: rules of
    the constructor arguments a ``method`` config sets (checked as ``method.<argument>`` before any
    work, :mod:`resnet_switch.cli.ranges`)."""
    register = METHODS.register(name, settings=dict(settings or {}), **info)

    def deco(cls: type[Method]) -> type[Method]:
        cls.registered_name = name
        return register(cls)

    return deco


def list_methods() -> list[str]:
    """Registered method names, sorted."""
    return METHODS.list()


def build_method(name: str, resolutions, **kwargs) -> Method:
    """Method ``name`` for ``resolutions`` with its settings ``kwargs``; one-line error for unknown names."""
    return METHODS.get(name)(resolutions, **kwargs)


def method_settings(name: str) -> dict[str, Rule]:
    """The rules of method ``name``'s config arguments (``{}`` for an unknown name)."""
    return METHODS.info(name)["settings"] if name in METHODS else {}
