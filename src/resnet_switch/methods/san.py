"""SAN: Scale Adaptive Network (Li et al., ECCV 2020).

Conv kernels generated per scale by meta-learners (:mod:`~resnet_switch.layers.scale_conv`),
private BN per training resolution, shared FC, trained with top-down scale distillation
(eq. 3-4, ``alpha = beta = 1``)::

    L = sum_i CE(z_i, y) + sum_i sum_{j: S_j > S_i} KL(p_j.detach() || p_i)

Resolutions run from the highest down and each one is backpropagated at once; only detached
log-probabilities of the higher ones are kept, so peak activation memory is one resolution's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.multires import MultiResBatch
from ..errors import ConfigError
from ..layers.scale_conv import build_meta, check_encodings, meta_roles_arg
from ..losses import kl_to_teacher_probs
from ..models.switchable import SwitchableNet
from ..switch import SubnetConfig
from .base import Backward, Method
from .registry import register_method

CONV_KINDS = ("meta", "private")
AUTO_META_ROLES = "auto"
# the paper's meta convs per backbone; any other backbone: the factory default (body, shortcut), SAN's ResNets
PAPER_META_ROLES = {"mobilenetv2": "all"}


@register_method("san")
class SAN(Method):
    """Args:
        resolutions: training resolutions, highest first.
        distill: add scale distillation (``False``: sum of CE only, the "w/o SD" rows).
        meta: meta-learner, ``linear`` (eq. 2) or ``mlp8``/``mlp16`` (Table 5).
        private_bn: one BN set per training resolution (``False``: shared BN, Table 3).
        conv: ``meta`` (generated kernels) or ``private`` (one plain conv per resolution, Table 4;
            ``meta``/``meta_roles``/``scale`` are then unused).
        meta_roles: conv roles that are meta (e.g. ``[body, shortcut]``) or ``"all"``; ``"auto"``:
            the backbone's paper default (:data:`PAPER_META_ROLES`: MobileNetV2 ``all``, the ResNets
            block convs + shortcuts), resolved when the network is built for a backbone; ``None``: the
            factory default ``(body, shortcut)``.
        scale: scale encoding ``eps = scale * S / 32``.
        encodings: one encoding per training resolution instead of the formula (weights converted
            from the official code with a non-default resolution list keep its ``0.7 - 0.1 i``).
    """

    per_config_backward = True
    default_bn_mode = "proxy"

    def __init__(self, resolutions: Sequence[int], distill: bool = True, meta: str = "linear",
                 private_bn: bool = True, conv: str = "meta", meta_roles: str | Sequence[str] | None = AUTO_META_ROLES,
                 scale: float = 0.1, encodings: Sequence[float] | None = None):
        super().__init__(resolutions)
        if conv not in CONV_KINDS:
            raise ConfigError(f"method.conv: unknown {conv!r}; choose one of {list(CONV_KINDS)}")
        build_meta(meta, (1, 1, 1, 1))  # validates the name
        if scale <= 0:
            raise ConfigError(f"method.scale: must be positive, got {scale!r}")
        self.distill, self.meta, self.private_bn, self.conv = bool(distill), meta, private_bn, conv
        self.meta_roles = meta_roles if meta_roles in (None, AUTO_META_ROLES) else meta_roles_arg(meta_roles)
        self.scale = float(scale)
        self.encodings = check_encodings(encodings, self.resolutions)
        self.layers = "san" if conv == "meta" else "private_conv"

    def layer_kwargs(self, backbone: str | None = None) -> dict:
        if self.conv == "private":
            return {"private_bn": self.private_bn}
        kwargs = {"meta": self.meta, "scale": self.scale, "private_bn": self.private_bn}
        roles = PAPER_META_ROLES.get(backbone) if self.meta_roles == AUTO_META_ROLES else self.meta_roles
        if roles is not None:
            kwargs["meta_roles"] = roles if isinstance(roles, str) else list(roles)
        if self.encodings is not None:
            kwargs["encodings"] = list(self.encodings)
        return kwargs

    def training_step(self, net: SwitchableNet, batch: MultiResBatch, backward: Backward) -> dict[str, Tensor]:
        targets = batch.targets
        teachers: list[Tensor] = []  # detached log-probabilities of the higher resolutions
        total = torch.zeros((), device=targets.device)
        logs: dict[str, Tensor] = {}
        for r in self.resolutions:
            net.set_active(SubnetConfig(r))
            logits = net(batch.at(r))
            ce = F.cross_entropy(logits, targets)
            loss = ce
            if self.distill and teachers:
                kd = sum(kl_to_teacher_probs(logits, t) for t in teachers)
                loss = ce + kd
                logs[f"kd@{r}"] = kd.detach()
            backward(loss)
            logs[f"ce@{r}"] = ce.detach()
            total = total + loss.detach()
            if self.distill:
                teachers.append(F.log_softmax(logits.detach(), dim=1))
        return {"loss": total, **logs}
