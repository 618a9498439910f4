"""Loss functions of the three methods: pure functions of logits and targets.

Conventions: logits ``(B, K)``, targets ``(B,)`` int64. KL terms are ``KL(teacher || student)`` with
``reduction='batchmean'`` and temperature 1; every teacher distribution is detached here, so callers
cannot forget it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import ConfigError


def kl_to_teacher(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """``KL(p_teacher.detach() || p_student)`` averaged over the batch."""
    return F.kl_div(
        F.log_softmax(student_logits, dim=1),
        F.log_softmax(teacher_logits.detach(), dim=1),
        reduction="batchmean",
        log_target=True,
    )


def kl_to_teacher_probs(student_logits: Tensor, teacher_log_probs: Tensor) -> Tensor:
    """As :func:`kl_to_teacher` with the teacher given as (detached) log-probabilities."""
    return F.kl_div(F.log_softmax(student_logits, dim=1), teacher_log_probs.detach(),
                    reduction="batchmean", log_target=True)


def ensemble_logits(logits: Sequence[Tensor], alpha: Tensor) -> Tensor:
    """RS-Net eq. (4): ``z0 = sum_s softmax(alpha)_s * z_s.detach()`` -- only ``alpha`` learns."""
    weights = torch.softmax(alpha, dim=0)
    return torch.einsum("s,sbk->bk", weights, torch.stack([z.detach() for z in logits]))


def mred_loss(logits: Sequence[Tensor], targets: Tensor, alpha: Tensor,
              distill: str = "full") -> dict[str, Tensor]:
    """Multi-resolution ensemble distillation (RS-Net sec. 3.2), logits ordered high -> low res.

    Returns ``cls = sum_s CE(z_s, y)``, ``ens = CE(z0, y)`` (trains alpha only) and
    ``dis``: ``vanilla`` = ``sum_s KL(p0 || p_s)``; ``full`` =
    ``2/(S+1) * sum_{t=0}^{S-1} sum_{s>t} KL(p_t || p_s)`` over the chain ``(z0, z_1, ..., z_S)``
    with every teacher detached; ``none`` = 0. ``loss`` is their sum.
    """
    if distill not in ("full", "vanilla", "none"):
        raise ConfigError(f"method.distill: unknown {distill!r}; choose full, vanilla or none")
    cls = sum(F.cross_entropy(z, targets) for z in logits)
    z0 = ensemble_logits(logits, alpha)
    ens = F.cross_entropy(z0, targets)
    if distill == "none":
        dis = torch.zeros((), device=z0.device)
    elif distill == "vanilla":
        dis = sum(kl_to_teacher(z, z0) for z in logits)
    else:
        chain = [z0, *logits]
        n = len(logits)
        dis = 2.0 / (n + 1) * sum(
            kl_to_teacher(chain[s], chain[t]) for t in range(n) for s in range(t + 1, n + 1)
        )
    return {"loss": cls + ens + dis, "cls": cls, "ens": ens, "dis": dis}
