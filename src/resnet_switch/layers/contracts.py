"""The two contracts between backbones, the switch and the layers.

- :class:`LayerFactory` (a ``typing.Protocol``): what a backbone may ask for. Every factory
  (plain, private BN, SAN, private conv, slimmable, the LQ wrapper) implements it with exactly
  these signatures, so every backbone can be built with every factory.
- :class:`SwitchableLeaf` (a nominal base every switchable layer inherits): what
  ``SwitchableNet.switch``/``materialize``, warm starts, ``init_from``, checkpoint conversion and
  the runtime may call on a layer whose computation depends on the active configuration. Code
  finds such layers with ``isinstance(m, SwitchableLeaf)`` (:func:`switchable_leaves`), never by
  probing for attributes. BN leaves whose statistics can be recalibrated per configuration also
  inherit :class:`~.calibration.CalibratedStatsMixin` (what BN recalibration calls).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol, runtime_checkable

from torch import nn

from ..switch import SwitchState


@runtime_checkable
class LayerFactory(Protocol):
    """Makes every conv, BN and linear layer of a backbone (see :mod:`.factory` for the roles).

    ``state``: the network's switch state (``None`` only for a plain factory built on its own).
    ``conv``: input ``(B, in_channels, H, W)`` -> ``(B, out_channels, H', W')`` as ``nn.Conv2d``.
    ``bn``: ``(B, num_features, H, W)`` -> same shape. ``linear``: ``(B, in_features)`` ->
    ``(B, out_features)``; ``in_positions=P``: the input is a flattened ``(C, H, W)`` map with
    ``P = H*W`` features per channel.
    """

    state: SwitchState | None

    def conv(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
             padding: int = 0, groups: int = 1, bias: bool = False, *, role: str = "body") -> nn.Module: ...

    def bn(self, num_features: int, *, role: str = "body") -> nn.Module: ...

    def linear(self, in_features: int, out_features: int, *, role: str = "head",
               in_positions: int = 1) -> nn.Module: ...


class SwitchableLeaf(nn.Module, ABC):
    """A layer whose computation depends on the active configuration of its ``state``.

    Subclasses implement :meth:`to_plain` and :meth:`load_plain`; layers that generate tensors
    per configuration (SAN's kernels) override :meth:`reset_cache` and :meth:`warm_cache`.
    A leaf is one unit: code that walks a network does not look inside it.
    """

    @abstractmethod
    def to_plain(self) -> nn.Module:
        """A plain module (no switch) equal to this layer in eval mode at the active configuration."""

    @abstractmethod
    def load_plain(self, plain: nn.Module) -> None:
        """Warm start from the plain module :meth:`to_plain` would return (e.g. a torchvision layer's)."""

    def reset_cache(self) -> None:
        """Drop tensors generated for earlier configurations or weights (none by default)."""

    def warm_cache(self) -> None:
        """Generate what the active configuration needs ahead of the next eval-mode forward, so that
        forward is a cache hit (nothing by default)."""


def switchable_leaves(module: nn.Module) -> list[tuple[str, SwitchableLeaf]]:
    """``(name, leaf)`` of every :class:`SwitchableLeaf` in ``module`` (leaves inside a leaf excluded)."""
    found: list[tuple[str, SwitchableLeaf]] = []

    def walk(m: nn.Module, prefix: str) -> None:
        for name, child in m.named_children():
            full = f"{prefix}{name}"
            if isinstance(child, SwitchableLeaf):
                found.append((full, child))
            else:
                walk(child, f"{full}.")

    if isinstance(module, SwitchableLeaf):
        return [("", module)]
    walk(module, "")
    return found


def replace_leaves_by_plain(module: nn.Module) -> None:
    """Replace, in place, every :class:`SwitchableLeaf` under ``module`` by its :meth:`~SwitchableLeaf.to_plain`."""
    for name, child in list(module.named_children()):
        if isinstance(child, SwitchableLeaf):
            setattr(module, name, child.to_plain())
        else:
            replace_leaves_by_plain(child)
