"""RS-Net (Wang et al., ECCV 2020) and its parallel-training special cases.

``individual``: one resolution, CE. ``parallel`` (sec. 3.1): shared convs/FC, private BN per
resolution (``private_bn=false``: shared BN ablation), sum of CE. ``rsnet``: parallel + MRED
(sec. 3.2): a learned ensemble ``z0 = sum softmax(alpha)_s z_s`` distils into every resolution.
One backward per step: MRED needs every resolution's logits before the teacher exists.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.multires import MultiResBatch
from ..errors import ConfigError
from ..losses import ensemble_logits, mred_loss
from ..models.switchable import SwitchableNet
from ..switch import SubnetConfig
from .base import Backward, Method
from .registry import register_method


@register_method("parallel")
class Parallel(Method):
    """Sum of per-resolution cross-entropies, one backward (RS-Net eq. 2)."""

    default_bn_mode = "interpolate"

    def __init__(self, resolutions: Sequence[int], private_bn: bool = True, crop: str = "single"):
        super().__init__(resolutions)
        self.private_bn = private_bn
        self.crop = crop  # the training crop the data module makes (data.crop reads method.crop)
        self.layers = "private_bn" if private_bn else "plain"

    def forward_all(self, net: SwitchableNet, batch: MultiResBatch) -> list[Tensor]:
        logits = []
        for r in self.resolutions:
            net.set_active(SubnetConfig(r))
            logits.append(net(batch.at(r)))
        return logits

    def training_step(self, net: SwitchableNet, batch: MultiResBatch, backward: Backward) -> dict[str, Tensor]:
        logits = self.forward_all(net, batch)
        losses = [F.cross_entropy(z, batch.targets) for z in logits]
        loss = sum(losses)
        backward(loss)
        out = {"loss": loss.detach()}
        out.update({f"ce@{r}": part.detach() for r, part in zip(self.resolutions, losses)})
        return out


@register_method("individual")
class Individual(Parallel):
    """One network trained at one resolution (the I-Net baseline)."""

    def __init__(self, resolutions: Sequence[int]):
        if len(resolutions) != 1:
            raise ConfigError(
                f"data.resolutions: method=individual trains one resolution, got {list(resolutions)}; "
                "pass e.g. data.resolutions=[224] (use a multirun to train several)"
            )
        super().__init__(resolutions, private_bn=False)


@register_method("rsnet")
class RSNet(Parallel):
    """Parallel training + multi-resolution ensemble distillation.

    Args:
        distill: ``full`` (default), ``vanilla`` or ``none`` (see :func:`~resnet_switch.losses.mred_loss`).
        alpha starts at zeros (uniform softmax) and gets no weight decay.
    """

    def __init__(self, resolutions: Sequence[int], distill: str = "full", private_bn: bool = True,
                 crop: str = "single"):
        super().__init__(resolutions, private_bn=private_bn, crop=crop)
        if distill not in ("full", "vanilla", "none"):
            raise ConfigError(f"method.distill: unknown {distill!r}; choose full, vanilla or none")
        self.distill = distill
        self.alpha = nn.Parameter(torch.zeros(len(self.resolutions)))

    def training_step(self, net: SwitchableNet, batch: MultiResBatch, backward: Backward) -> dict[str, Tensor]:
        logits = self.forward_all(net, batch)
        parts = mred_loss(logits, batch.targets, self.alpha, self.distill)
        backward(parts["loss"])
        return {k: v.detach() for k, v in parts.items()}

    def ensemble(self, logits_by_resolution: dict[int, Tensor]) -> Tensor | None:
        """RS-Net eq. (4) at test time: ``sum_s softmax(alpha)_s z_s`` over every training resolution
        (the ensemble accuracy the official validation reports); ``None`` unless all are given."""
        if not all(r in logits_by_resolution for r in self.resolutions):
            return None
        return ensemble_logits([logits_by_resolution[r] for r in self.resolutions], self.alpha.detach())

    def logged_values(self) -> dict[str, Tensor]:
        weights = torch.softmax(self.alpha.detach(), 0)
        return {f"alpha@{r}": w for r, w in zip(self.resolutions, weights)}
