"""Private BatchNorm made from another library's BN layer (model surgery, :mod:`resnet_switch.models.surgery`).

:class:`SourcePrivateBatchNorm2d` is a :class:`~.private_bn.PrivateBatchNorm2d` (one set per training
resolution, interpolation, exact recalibration) that remembers the BN module it replaced:

- forward: the switched BN, then the source's ``drop`` and ``act`` when it has them (timm's
  ``BatchNormAct2d``: ``act(drop(bn(x)))``), otherwise the BN alone;
- :meth:`to_plain`: a copy of the source module (same class, ``eps``, ``momentum``, ``act``, ``drop``)
  holding the active configuration's blended tensors, so a materialised network has the source's
  modules and state-dict keys and loads strictly into the source architecture.

Input/output ``(B, C, H, W)``. State-dict keys: ``sets.{k}.*`` plus ``act.*``/``drop.*`` when those
hold tensors (e.g. a PReLU).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from ..switch import SwitchState
from .private_bn import PrivateBatchNorm2d

BN_TENSORS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def is_norm_act(bn: nn.Module) -> bool:
    """Whether ``bn`` is a BN + drop + activation module (timm's ``BatchNormAct2d`` layout)."""
    return isinstance(getattr(bn, "act", None), nn.Module) and isinstance(getattr(bn, "drop", None), nn.Module)


class SourcePrivateBatchNorm2d(PrivateBatchNorm2d):
    """One BN set per training resolution, each initialised from ``source`` (its statistics and affine
    parameters); materialises as ``source``'s own class (see the module docstring).

    ``source``: an affine ``nn.BatchNorm2d`` (or subclass) with running statistics."""

    def __init__(self, source: nn.BatchNorm2d, state: SwitchState):
        super().__init__(source.num_features, state, eps=source.eps, momentum=source.momentum)
        self.norm_act = is_norm_act(source)
        if self.norm_act:
            self.drop, self.act = source.drop, source.act
        template = copy.deepcopy(source)
        object.__setattr__(self, "_template", template)  # not a submodule: no extra keys, no parameters
        self.load_plain(source)

    def forward(self, x: Tensor) -> Tensor:
        x = super().forward(x)
        return self.act(self.drop(x)) if self.norm_act else x

    @torch.no_grad()
    def to_plain(self) -> nn.BatchNorm2d:
        """A copy of the source module with the active configuration's BN tensors (and the current
        ``act``/``drop``)."""
        bn = super().to_plain()
        plain = copy.deepcopy(self._template)
        if self.norm_act:
            plain.drop, plain.act = copy.deepcopy(self.drop), copy.deepcopy(self.act)
        for name in BN_TENSORS:  # assignment, not copy: the template may sit on another device
            value = getattr(bn, name).detach().clone()
            setattr(plain, name, nn.Parameter(value) if name in ("weight", "bias") else value)
        return plain.train(self.training)

    @torch.no_grad()
    def load_plain(self, plain: nn.BatchNorm2d) -> None:
        """Warm start: every private set gets ``plain``'s BN tensors (and ``act``/``drop`` its tensors)."""
        for s in self.sets:
            s.load_state_dict({name: getattr(plain, name) for name in BN_TENSORS})
        if self.norm_act:
            self.drop.load_state_dict(plain.drop.state_dict())
            self.act.load_state_dict(plain.act.state_dict())
