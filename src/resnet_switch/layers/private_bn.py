"""Private BatchNorm: one set of affine parameters and running statistics per training resolution.

RS-Net sec. 3.1 (and SAN's private BN): convolutions are shared, each training resolution keeps its
own BN set. For an unseen resolution the :class:`~resnet_switch.switch.SwitchState` blend says which
sets to use: the nearest one, a linear interpolation of the two neighbours (RS-Net sec. 4.3, all four
tensors), or statistics recalibrated exactly for that configuration (:mod:`.calibration`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..switch import BNBlend, SwitchState
from .calibration import CalibratedStatsMixin
from .contracts import SwitchableLeaf


class PrivateBatchNorm2d(CalibratedStatsMixin, SwitchableLeaf):
    """``len(state.train_resolutions)`` BatchNorm2d sets behind one switch.

    Input/output: ``(B, C, H, W)``. State-dict keys: ``sets.{k}.weight`` etc. for set ``k``.
    In training mode the active configuration must be a training resolution (its own set is used
    and its running statistics updated); in eval mode any resolution works.
    """

    def __init__(self, num_features: int, state: SwitchState, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.state = state
        self.num_features = num_features
        self.eps = eps
        self.sets = nn.ModuleList(
            nn.BatchNorm2d(num_features, eps=eps, momentum=momentum)
            for _ in state.train_resolutions
        )
        self._init_calibration()

    def extra_repr(self) -> str:
        return f"{self.num_features}, sets={len(self.sets)}"

    def blended(self, blend: BNBlend) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(weight, bias, running_mean, running_var)`` of the blend: ``sum_k w_k * set_k``."""
        tensors = []
        for name in ("weight", "bias", "running_mean", "running_var"):
            parts = [getattr(self.sets[i], name) * w for i, w in zip(blend.indices, blend.weights)]
            tensors.append(parts[0] if len(parts) == 1 else torch.stack(parts).sum(0))
        return tensors[0], tensors[1], tensors[2], tensors[3]

    def forward(self, x: Tensor) -> Tensor:
        blend = self.state.blend
        if self.state.calibrating:
            weight, bias, _, _ = self.blended(blend)
            return self._calibration_forward(x, weight, bias)
        if blend.calibrated:
            weight, bias, _, _ = self.blended(blend)
            mean, var = self.calibrated_stats(self.state.config)
            return F.batch_norm(x, mean, var, weight, bias, False, 0.0, self.eps)
        if blend.single is not None:
            return self.sets[blend.single](x)
        if self.training:
            raise RuntimeError(
                f"resolution {self.state.config.resolution} is not a training resolution "
                f"{list(self.state.train_resolutions)}; switch to eval() to use interpolated BN"
            )
        weight, bias, mean, var = self.blended(blend)
        return F.batch_norm(x, mean, var, weight, bias, False, 0.0, self.eps)

    @torch.no_grad()
    def to_plain(self) -> nn.BatchNorm2d:
        """A plain ``nn.BatchNorm2d`` equal to this layer in eval mode at the active configuration."""
        blend = self.state.blend
        weight, bias, mean, var = self.blended(blend)
        if blend.calibrated:
            mean, var = self.calibrated_stats(self.state.config)
        # made on the parameters' device (no CPU init + copy; a fake-CUDA trace cannot move a new module)
        plain = nn.BatchNorm2d(self.num_features, eps=self.eps, device=weight.device, dtype=weight.dtype)
        plain.weight.copy_(weight)
        plain.bias.copy_(bias)
        plain.running_mean.copy_(mean)
        plain.running_var.copy_(var)
        plain.num_batches_tracked.copy_(self.sets[blend.indices[0]].num_batches_tracked)
        return plain

    @torch.no_grad()
    def load_plain(self, bn: nn.BatchNorm2d) -> None:
        """Warm start: copy one plain BN into every private set."""
        for s in self.sets:
            s.load_state_dict(bn.state_dict())
