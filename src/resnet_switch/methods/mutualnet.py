"""MutualNet (Yang et al., ICLR 2020) and its baselines US-Net (Yu & Huang 2019) and S-Net (Yu et al. 2019).

Sandwich rule per step (MutualNet sec. 3.2, Fig. 2): the full width at the highest resolution learns
from the labels, ``L_full = CE(N(W_{0:1}, I_max), y)``; the smallest width and ``n_random`` widths drawn
uniformly in the range, each at a resolution drawn uniformly from the list, learn from the full
network, ``L_w = KL(p_full.detach() || p(N(W_{0:w}, I_r)))`` (CE with ``inplace_distill=False``, and
during the first ``distill_warmup_epochs``: a teacher that has not learned yet gives near-uniform
targets, and at short budgets the sub-networks pull the shared weights to them).
Each sub-network is backpropagated at once (only the detached teacher log-probabilities are kept);
the caller takes ONE optimizer step. US-Net: the same with every sub-network at the highest
resolution. S-Net: fixed widths with a private BN each, sum of CE at the highest resolution.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.multires import MultiResBatch
from ..errors import ConfigError
from ..losses import kl_to_teacher_probs
from ..models.switchable import SwitchableNet
from ..switch import SubnetConfig
from .base import Backward, Method
from .registry import register_method


def check_width_range(width_range: Sequence[float]) -> tuple[float, float]:
    """``(lo, hi)`` with ``0 < lo < hi <= 1``."""
    values = tuple(float(w) for w in width_range)
    if len(values) != 2 or not 0.0 < values[0] < values[1] <= 1.0:
        raise ConfigError(f"method.width_range: need [lo, hi] with 0 < lo < hi <= 1, got {list(width_range)}")
    return values


def channel_rounding(divisor: int = 8, min_channels: int | None = None, role_ratios: dict | None = None) -> dict:
    """The slimmable layers' rounding arguments; the optional ones only when set (the spec of a net
    built without them stays as before)."""
    out: dict = {"divisor": int(divisor)}
    if min_channels is not None:
        out["min_channels"] = int(min_channels)
    if role_ratios:
        out["role_ratios"] = {str(k): float(v) for k, v in dict(role_ratios).items()}
    return out


@register_method("mutualnet")
class MutualNet(Method):
    """Mutual learning of widths and resolutions with the sandwich rule.

    Args:
        resolutions: training resolutions, highest first (sub-networks draw theirs from this list).
        width_range: ``[lo, hi]``; ``hi`` is the full network (teacher), ``lo`` always trained.
        n_random: random widths per step besides ``lo`` and ``hi``.
        inplace_distill: sub-networks learn ``KL(p_full || p_sub)`` (``False``: CE with the labels).
        distill_warmup_epochs: epochs at the start in which the sub-networks learn from the labels
            even with ``inplace_distill`` (0: the paper's, distillation from the first step).
        seed: seed of the width/resolution draws (a ``random.Random`` on the host: no device sync;
            its state is saved in the state dict, so a resumed run continues the same sequence).
        divisor, min_channels, role_ratios: channel rounding of the slimmable layers (stored in the
            net's spec; see :class:`~resnet_switch.layers.slimmable.SlimmableLayers`).
    """

    layers = "slimmable"
    per_config_backward = True
    needs_calibration = True

    def __init__(self, resolutions: Sequence[int], width_range: Sequence[float] = (0.25, 1.0),
                 n_random: int = 2, inplace_distill: bool = True, seed: int = 0, divisor: int = 8,
                 min_channels: int | None = None, role_ratios: dict | None = None,
                 distill_warmup_epochs: float = 0.0):
        lo, hi = check_width_range(width_range)
        super().__init__(resolutions, widths=(hi, lo))
        if isinstance(n_random, bool) or int(n_random) != n_random or n_random < 0:
            raise ConfigError(f"method.n_random: must be a non-negative integer, got {n_random!r}")
        self.width_range = (lo, hi)
        self.n_random, self.inplace_distill = int(n_random), bool(inplace_distill)
        if isinstance(distill_warmup_epochs, bool) or not float(distill_warmup_epochs) >= 0:
            raise ConfigError("method.distill_warmup_epochs: must be a number >= 0 (epochs of label-only "
                             f"sub-networks), got {distill_warmup_epochs!r}")
        self.distill_warmup_epochs = float(distill_warmup_epochs)
        self.epoch = 0.0  # training progress in epochs (set_epoch, before each step)
        self.rounding = channel_rounding(divisor, min_channels, role_ratios)
        self.rng = random.Random(seed)

    def layer_kwargs(self, backbone: str | None = None) -> dict:
        return dict(self.rounding)

    def configs_per_step(self) -> int:
        """The full network, the smallest width and ``n_random`` random ones."""
        return 2 + self.n_random

    def set_epoch(self, epoch: float) -> None:
        self.epoch = float(epoch)

    def distilling(self) -> bool:
        """Whether this step's sub-networks learn from the full network (else from the labels)."""
        return self.inplace_distill and self.epoch >= self.distill_warmup_epochs

    def student_resolutions(self) -> tuple[int, ...]:
        """Resolutions a sub-network draws from (MutualNet: all of them)."""
        return self.resolutions

    def step_configs(self) -> list[SubnetConfig]:
        """This step's configurations: ``[full@max, lo@r, random@r, ...]`` (teacher first)."""
        lo, hi = self.width_range
        choices = self.student_resolutions()
        widths = [lo] + [self.rng.uniform(lo, hi) for _ in range(self.n_random)]
        return [SubnetConfig(self.resolutions[0], hi)] + [
            SubnetConfig(self.rng.choice(choices), w) for w in widths
        ]

    def training_step(self, net: SwitchableNet, batch: MultiResBatch, backward: Backward) -> dict[str, Tensor]:
        targets = batch.targets
        teacher, *students = self.step_configs()
        net.set_active(teacher)
        logits = net(batch.at(teacher.resolution))
        ce_full = F.cross_entropy(logits, targets)
        backward(ce_full)
        teacher_log_probs = F.log_softmax(logits.detach(), dim=1)
        student_losses = []
        distill = self.distilling()
        for config in students:
            net.set_active(config)
            logits = net(batch.at(config.resolution))
            loss = kl_to_teacher_probs(logits, teacher_log_probs) if distill else F.cross_entropy(logits, targets)
            backward(loss)
            student_losses.append(loss.detach())
        out = {"loss": ce_full.detach() + sum(student_losses), "ce_full": ce_full.detach()}
        if student_losses:
            out["loss_min"] = student_losses[0]
        if len(student_losses) > 1:
            out["loss_random"] = torch.stack(student_losses[1:]).mean()
        return out

    def train_configs(self) -> None:
        """Random widths in ``width_range``: no finite set."""
        return None

    def eval_configs(self) -> list[SubnetConfig]:
        """Widths ``{lo, mid, hi}`` x every resolution (BN should be recalibrated for each)."""
        lo, hi = self.width_range
        widths = (hi, round((lo + hi) / 2, 6), lo)
        return [SubnetConfig(r, w) for w in widths for r in self.resolutions]

    def get_extra_state(self) -> dict:
        version, internal, gauss = self.rng.getstate()
        return {"rng_version": version, "rng_state": torch.tensor(internal, dtype=torch.int64),
                "rng_gauss": gauss}

    def set_extra_state(self, state: dict) -> None:
        internal = tuple(int(v) for v in state["rng_state"].tolist())
        self.rng.setstate((state["rng_version"], internal, state["rng_gauss"]))


@register_method("usnet")
class USNet(MutualNet):
    """US-Net: MutualNet's sandwich rule with every sub-network at the highest resolution."""

    def student_resolutions(self) -> tuple[int, ...]:
        return self.resolutions[:1]


@register_method("snet")
class SNet(Method):
    """S-Net: fixed widths, a private BN per width, ``sum_w CE(N(W_{0:w}, I_max), y)``.

    Args:
        resolutions: evaluated resolutions, highest first; training uses the highest.
        widths: the switchable widths (each in (0, 1]); one backward per width, widest first.
        divisor, min_channels, role_ratios: channel rounding of the slimmable layers.
    """

    layers = "slimmable"
    per_config_backward = True
    needs_calibration = True

    def __init__(self, resolutions: Sequence[int], widths: Sequence[float] = (1.0, 0.75, 0.5, 0.25),
                 divisor: int = 8, min_channels: int | None = None, role_ratios: dict | None = None):
        ws = [float(w) for w in widths]
        if not ws or any(not 0.0 < w <= 1.0 for w in ws) or len(set(ws)) != len(ws):
            raise ConfigError(f"method.widths: need distinct widths in (0, 1], got {list(widths)}")
        super().__init__(resolutions, widths=tuple(sorted(ws, reverse=True)))
        self.rounding = channel_rounding(divisor, min_channels, role_ratios)

    def layer_kwargs(self, backbone: str | None = None) -> dict:
        return {**self.rounding, "private_bn_per_width": True}

    def training_step(self, net: SwitchableNet, batch: MultiResBatch, backward: Backward) -> dict[str, Tensor]:
        r = self.resolutions[0]
        out: dict[str, Tensor] = {}
        for w in self.widths:
            net.set_active(SubnetConfig(r, w))
            ce = F.cross_entropy(net(batch.at(r)), batch.targets)
            backward(ce)
            out[f"ce@w{SubnetConfig(r, w).width:g}"] = ce.detach()
        out["loss"] = sum(out.values())
        return out

    def train_configs(self) -> list[SubnetConfig]:
        return [SubnetConfig(self.resolutions[0], w) for w in self.widths]

    def eval_configs(self) -> list[SubnetConfig]:
        return [SubnetConfig(r, w) for w in self.widths for r in self.resolutions]
