"""One registry style for every named, swappable part (timm's ``register_model`` / ``list_models``).

A :class:`Registry` maps a name to a constructor. Parts register themselves where they are defined::

    BACKBONES = Registry("backbone", field="model.name")

    @BACKBONES.register("resnet18")
    def resnet18(layers, **kwargs): ...

    BACKBONES.get("resnet18")          # the constructor
    BACKBONES.list()                   # sorted names, as timm's list_models()

An unknown name raises :class:`UnknownNameError` (a :class:`~resnet_switch.errors.ConfigError`) with
one line naming the config field, the close matches and every choice: ``model.name: unknown
'resnet19'; did you mean 'resnet18'? choose one of [...]``.

No hand-kept list of modules: a registry made with ``package="resnet_switch.models"`` imports every
module of that package (``pkgutil``) on its first lookup, so a part is registered by existing.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class UnknownNameError(ConfigError):
    """A name that is not in a registry (one line: field, close matches, choices)."""


class Registry(Generic[T]):
    """Names -> constructors (classes or functions) of one kind of part.

    Args:
        kind: what is registered, for messages (``"backbone"``, ``"method"``, ...).
        field: the config field that selects an entry (``"model.name"``), named in errors.
        package: the dotted package whose modules register the entries; every one of them is
            imported before the first lookup (``None``: entries are registered by whoever imports).
    """

    def __init__(self, kind: str, field: str, package: str | None = None):
        self.kind = kind
        self.field = field
        self.package = package
        self._loaded = package is None
        self._entries: dict[str, T] = {}
        self._info: dict[str, dict[str, Any]] = {}

    def _load(self) -> None:
        """Import every module of :attr:`package` once (each registers its parts as it is defined)."""
        if self._loaded:
            return
        self._loaded = True  # first: a module that looks an entry up while being imported sees the rest later
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__, f"{package.__name__}."):
            importlib.import_module(module.name)

    def register(self, name: str, **info: Any) -> Callable[[T], T]:
        """Decorator: register the decorated class/function under ``name``; ``info`` is free
        metadata read back with :meth:`info` (e.g. the torchvision name of a backbone)."""

        def deco(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            self._info[name] = dict(info)
            return obj

        return deco

    def add(self, name: str, obj: T, **info: Any) -> T:
        """Register ``obj`` under ``name`` (the non-decorator form)."""
        return self.register(name, **info)(obj)

    def get(self, name: str) -> T:
        """The entry called ``name``; :class:`UnknownNameError` with close matches otherwise."""
        self._load()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownNameError(self.unknown_message(name)) from None

    def info(self, name: str) -> dict[str, Any]:
        """The metadata given at registration."""
        self.get(name)
        return self._info[name]

    def unknown_message(self, name: Any) -> str:
        choices = self.list()
        close = difflib.get_close_matches(str(name), choices, n=3)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        return f"{self.field}: unknown {self.kind} {name!r}; {hint}choose one of {choices}"

    def list(self) -> list[str]:
        """Registered names, sorted."""
        self._load()
        return sorted(self._entries)

    def name_of(self, obj: Any) -> str | None:
        """The name ``obj`` (or its class) is registered under, or ``None``."""
        self._load()
        for name, entry in self._entries.items():
            if entry is obj or entry is type(obj):
                return name
        return None

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.list()})"
