"""A backbone plus its switch: run, switch and materialise configurations.

``SwitchableNet`` owns the :class:`~resnet_switch.switch.SwitchState` its layers share. Switching is
explicit::

    net.set_active(SubnetConfig(160))          # or, restoring the previous one afterwards:
    with net.switch(SubnetConfig(160, 0.75)):
        logits = net(images_160)
    plain = net.materialize(SubnetConfig(176), bn_mode="interpolate")   # an ordinary nn.Module
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn

from ..errors import ConfigError
from ..layers.contracts import replace_leaves_by_plain
from ..switch import SubnetConfig, SwitchState


class SwitchableNet(nn.Module):
    """``net(x)`` with ``x`` of shape ``(B, C, R, R)`` where ``R`` is the active resolution.

    Attributes:
        net: the backbone (its state-dict keys are torchvision's when built with plain layers).
        state: the shared switch state.
        spec: the architecture numbers needed to rebuild this network (saved in checkpoints).
    """

    def __init__(self, net: nn.Module, state: SwitchState, spec: dict[str, Any]):
        super().__init__()
        self.net = net
        self.state = state
        self.spec = spec

    @property
    def config(self) -> SubnetConfig:
        return self.state.config

    def set_active(self, config: SubnetConfig, bn_mode: str | None = None) -> None:
        self.state.activate(config, bn_mode)

    @contextmanager
    def switch(self, config: SubnetConfig, bn_mode: str | None = None) -> Iterator[SwitchableNet]:
        """Run a block in ``config``; the previous configuration and BN mode are restored after."""
        previous, previous_mode = self.state.config, self.state.bn_mode
        self.state.activate(config, bn_mode)
        try:
            yield self
        finally:
            self.state.activate(previous, previous_mode)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.state.config.resolution or x.shape[-2] != self.state.config.resolution:
            raise ConfigError(
                f"input is {tuple(x.shape[-2:])} but the active configuration is {self.state.config}; "
                "switch the network (net.set_active / net.switch) to the input's resolution"
            )
        return self.net(x)

    def materialize(self, config: SubnetConfig | None = None, bn_mode: str | None = None) -> nn.Module:
        """A plain ``nn.Module`` (no switch) equal to this network in eval mode at ``config``.

        Every :class:`~resnet_switch.layers.contracts.SwitchableLeaf` is replaced by its
        ``to_plain()`` result (BN chosen, interpolated or calibrated; generated kernels baked in;
        widths sliced).
        """
        config = self.state.config if config is None else config
        with self.switch(config, bn_mode):
            plain = copy.deepcopy(self.net)
            replace_leaves_by_plain(plain)
        return plain.eval()
