"""Slimmable conv / linear / BatchNorm (US-Net, S-Net, MutualNet): built at full width, sliced at run time.

Every layer keeps the full-width tensors (torchvision keys ``weight``, ``bias``, ``running_*``) and
reads the active width ``w`` from the shared :class:`~resnet_switch.switch.SwitchState`. A dimension
of ``C`` channels (at width 1.0) runs with its first ``slim_channels(C, w)`` channels -- ONE rule for
every layer, so both inputs of a residual sum always agree. Sub-network ``W_{0:w}`` of MutualNet
sec. 3.2 is exactly this leading slice.

Never slimmed: the stem conv's input (image channels), ``head`` outputs (the classes; MobileNetV2's
1280-channel feature conv) and the classifier's input when the last conv's output is not slimmed.
MobileNetV2's expanded hidden width follows the slimmed block input: ``t * slim_channels(in, w)``.
BN: shared affine parameters and one running-statistics set, sliced (training); exact statistics
recalibrated per (width, resolution) with :func:`~resnet_switch.layers.calibration.calibrate_bn`
("post-statistics", US-Net). S-Net instead keeps a private BN set per width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..models.channels import make_divisible
from ..switch import SwitchState
from .calibration import CalibratedStatsMixin
from .contracts import SwitchableLeaf
from .factory import ROLES, PlainLayers, register_layer_factory
from .sync_bn import batch_norm_train


def slim_channels(full: int, width: float, divisor: int = 8, ratio: float = 1, min_value: int | None = None) -> int:
    """Active channels of a ``full``-channel dimension at ``width``: ``make_divisible(full * width,
    divisor)`` with at least ``min_value`` (default ``divisor``) channels, never more than ``full``
    (``full`` at width 1).

    ``ratio``: the dimension is rounded as ``ratio`` x a slimmed one, ``int(make_divisible(full *
    width / ratio) * ratio)`` (the US-Net / MutualNet rule): MobileNetV2's expanded hidden width
    ``t * in`` has ratio ``t`` so it tracks the block's input; MutualNet's ResNet-50 rounds its stem
    and bottleneck-inner channels with ratio 1/4 (a quarter of a rounded 4x wider dimension).
    """
    if width >= 1.0:
        return full
    rounded = make_divisible(full * width / ratio, divisor, min_value=divisor if min_value is None else min_value)
    return min(full, int(rounded * ratio))


@dataclass(frozen=True)
class ChannelDim:
    """One channel dimension of a slimmable layer: ``full`` channels at width 1.0; ``slim=False``
    keeps all of them at every width; ``ratio``, ``divisor``, ``min_value`` as in :func:`slim_channels`."""

    full: int
    slim: bool = True
    ratio: float = 1
    divisor: int = 8
    min_value: int | None = None

    def active(self, width: float) -> int:
        if not self.slim:
            return self.full
        return slim_channels(self.full, width, self.divisor, self.ratio, self.min_value)


class SlimmableConv2d(SwitchableLeaf, nn.Conv2d):
    """``nn.Conv2d`` at full size whose leading ``(out, in)`` slice runs at the active width.

    Input ``(B, in_active, H, W)`` -> ``(B, out_active, H', W')``. Depthwise convs (groups == in ==
    out) run with ``groups = active channels``; other grouped convs are not supported.
    """

    def __init__(self, in_dim: ChannelDim, out_dim: ChannelDim, kernel_size: int, stride: int = 1,
                 padding: int = 0, groups: int = 1, bias: bool = False, *, state: SwitchState):
        super().__init__(in_dim.full, out_dim.full, kernel_size, stride, padding, groups=groups, bias=bias)
        self.depthwise = groups > 1 and groups == in_dim.full == out_dim.full
        if groups > 1 and not (self.depthwise and in_dim == out_dim):
            raise ConfigError(f"SlimmableConv2d: groups={groups} must be 1 or depthwise with equal dims")
        self.state, self.in_dim, self.out_dim = state, in_dim, out_dim

    def active_params(self) -> tuple[Tensor, Tensor | None, int]:
        """``(weight, bias, groups)`` at the active width (views of the full tensors)."""
        w = self.state.config.width
        cout = self.out_dim.active(w)
        bias = None if self.bias is None else self.bias[:cout]
        if self.depthwise:
            return self.weight[:cout], bias, cout
        return self.weight[:cout, : self.in_dim.active(w)], bias, 1

    def forward(self, x: Tensor) -> Tensor:
        weight, bias, groups = self.active_params()
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, groups)

    @torch.no_grad()
    def to_plain(self) -> nn.Conv2d:
        weight, bias, groups = self.active_params()
        # made on the parameters' device (no CPU init + copy; a fake-CUDA trace cannot move a new module)
        plain = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], self.kernel_size, self.stride,
                          self.padding, self.dilation, groups, bias is not None, device=weight.device,
                          dtype=weight.dtype)
        plain.weight.copy_(weight)
        if bias is not None:
            plain.bias.copy_(bias)
        return plain

    @torch.no_grad()
    def load_plain(self, conv: nn.Conv2d) -> None:
        """Warm start: copy a plain conv into the leading slice of its shape."""
        o, i = conv.weight.shape[:2]
        self.weight[:o, :i].copy_(conv.weight)
        if conv.bias is not None and self.bias is not None:
            self.bias[:o].copy_(conv.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, in={self.in_dim}, out={self.out_dim}"


class SlimmableLinear(SwitchableLeaf, nn.Linear):
    """``nn.Linear`` at full size; ``(B, in_active) -> (B, out_active)``."""

    def __init__(self, in_dim: ChannelDim, out_dim: ChannelDim, *, state: SwitchState):
        super().__init__(in_dim.full, out_dim.full)
        self.state, self.in_dim, self.out_dim = state, in_dim, out_dim

    def active_params(self) -> tuple[Tensor, Tensor]:
        w = self.state.config.width
        cout = self.out_dim.active(w)
        return self.weight[:cout, : self.in_dim.active(w)], self.bias[:cout]

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, *self.active_params())

    @torch.no_grad()
    def to_plain(self) -> nn.Linear:
        weight, bias = self.active_params()
        # made on the parameters' device (no CPU init + copy; a fake-CUDA trace cannot move a new module)
        plain = nn.Linear(weight.shape[1], weight.shape[0], device=weight.device, dtype=weight.dtype)
        plain.weight.copy_(weight)
        plain.bias.copy_(bias)
        return plain

    @torch.no_grad()
    def load_plain(self, linear: nn.Linear) -> None:
        o, i = linear.weight.shape
        self.weight[:o, :i].copy_(linear.weight)
        self.bias[:o].copy_(linear.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, in={self.in_dim}, out={self.out_dim}"


def _plain_bn(weight: Tensor, bias: Tensor, mean: Tensor, var: Tensor, eps: float,
              tracked: Tensor) -> nn.BatchNorm2d:
    # made on the parameters' device (no CPU init + copy; a fake-CUDA trace cannot move a new module)
    plain = nn.BatchNorm2d(weight.shape[0], eps=eps, device=weight.device, dtype=weight.dtype)
    for name, value in (("weight", weight), ("bias", bias), ("running_mean", mean),
                        ("running_var", var), ("num_batches_tracked", tracked)):
        getattr(plain, name).copy_(value)
    return plain


class SlimmableBatchNorm2d(CalibratedStatsMixin, SwitchableLeaf, nn.BatchNorm2d):
    """Shared BN sliced to the active width: ``(B, c_active, H, W)`` -> same shape.

    Training updates the leading slice of the one running-statistics set (momentum as
    ``nn.BatchNorm2d``). ``bn_mode="calibrated"`` uses the exact statistics recalibrated for the
    active (width, resolution); ``state.calibrating`` accumulates them.
    """

    sync_stats = False  # DDP: training statistics over every process (layers.sync_bn.convert_sync_bn)

    def __init__(self, dim: ChannelDim, *, state: SwitchState, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__(dim.full, eps=eps, momentum=momentum)
        self.state, self.dim = state, dim
        self._init_calibration()

    def _stats(self, c: int) -> tuple[Tensor, Tensor]:
        if self.state.blend.calibrated:
            return self.calibrated_stats(self.state.config)
        return self.running_mean[:c], self.running_var[:c]

    def forward(self, x: Tensor) -> Tensor:
        c = self.dim.active(self.state.config.width)
        weight, bias = self.weight[:c], self.bias[:c]
        if self.state.calibrating:
            return self._calibration_forward(x, weight, bias)
        if self.training and not self.state.blend.calibrated:
            self.num_batches_tracked.add_(1)
            momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            # leading slices of 1-D buffers are contiguous views: the running update writes through
            return batch_norm_train(x, self.running_mean[:c], self.running_var[:c], weight, bias,
                                    momentum, self.eps, self.sync_stats)
        mean, var = self._stats(c)
        return F.batch_norm(x, mean, var, weight, bias, False, 0.0, self.eps)

    @torch.no_grad()
    def to_plain(self) -> nn.BatchNorm2d:
        c = self.dim.active(self.state.config.width)
        mean, var = self._stats(c)
        return _plain_bn(self.weight[:c], self.bias[:c], mean, var, self.eps, self.num_batches_tracked)

    @torch.no_grad()
    def load_plain(self, bn: nn.BatchNorm2d) -> None:
        c = bn.num_features
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(self, name)[:c].copy_(getattr(bn, name))
        self.num_batches_tracked.copy_(bn.num_batches_tracked)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dim={self.dim}"


class WidthPrivateBatchNorm2d(CalibratedStatsMixin, SwitchableLeaf):
    """S-Net's switchable BN: one ``nn.BatchNorm2d`` per width of ``state.widths`` (``sets.{k}``),
    set ``k`` holding ``dim.active(widths[k])`` channels (affine parameters and statistics private).

    Only the widths of ``state.widths`` run; the width -> set index map is built once from that
    tuple (widths are rounded the same way by ``SubnetConfig`` and ``SwitchState``).
    """

    def __init__(self, dim: ChannelDim, *, state: SwitchState, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.state, self.dim, self.eps = state, dim, eps
        self.index_of_width = {w: k for k, w in enumerate(state.widths)}
        self.sets = nn.ModuleList(
            nn.BatchNorm2d(dim.active(w), eps=eps, momentum=momentum) for w in state.widths
        )
        self._init_calibration()

    def active_set(self) -> nn.BatchNorm2d:
        width = self.state.config.width
        k = self.index_of_width.get(width)
        if k is None:
            raise ConfigError(f"width {width} has no private BN; S-Net runs only widths {list(self.state.widths)}")
        return self.sets[k]

    def forward(self, x: Tensor) -> Tensor:
        bn = self.active_set()
        if self.state.calibrating:
            return self._calibration_forward(x, bn.weight, bn.bias)
        if self.state.blend.calibrated:
            mean, var = self.calibrated_stats(self.state.config)
            return F.batch_norm(x, mean, var, bn.weight, bn.bias, False, 0.0, self.eps)
        return bn(x)

    @torch.no_grad()
    def to_plain(self) -> nn.BatchNorm2d:
        bn = self.active_set()
        mean, var = (self.calibrated_stats(self.state.config) if self.state.blend.calibrated
                     else (bn.running_mean, bn.running_var))
        return _plain_bn(bn.weight, bn.bias, mean, var, self.eps, bn.num_batches_tracked)

    @torch.no_grad()
    def load_plain(self, bn: nn.BatchNorm2d) -> None:
        """Warm start: copy the leading slice of one plain (full-width) BN into every set."""
        for s in self.sets:
            c = min(s.num_features, bn.num_features)
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(s, name)[:c].copy_(getattr(bn, name)[:c])
            s.num_batches_tracked.copy_(bn.num_batches_tracked)

    def extra_repr(self) -> str:
        return f"{self.dim}, widths={list(self.state.widths)}"


@register_layer_factory("slimmable")
class SlimmableLayers(PlainLayers):
    """Slimmable layers at full width (US-Net / MutualNet; S-Net with ``private_bn_per_width``).

    Args (architecture numbers: they reach the net's spec through ``layer_kwargs``):
        divisor: channel rounding of :func:`slim_channels`.
        private_bn_per_width: one BN set per width of ``state.widths`` (S-Net) instead of one
            shared, recalibrated BN.
        min_channels: the fewest channels a slimmed dimension keeps (``make_divisible``'s
            ``min_value``); default ``divisor``. The official US-Net / MutualNet code uses 1, which
            gives e.g. 9 channels where ``C * width`` is just above 1: give 1 to run its weights.
        role_ratios: ``{role: ratio}``: output dimensions of convs with that role round with this
            ``ratio`` (:func:`slim_channels`); MutualNet's ResNet-50 is ``{stem: 0.25, mid: 0.25}``.

    Roles: ``stem`` convs keep their input (image channels); ``head`` layers keep their outputs
    (classes, MobileNetV2's 1280-channel feature conv); the classifier's input is slimmed exactly
    when the last conv built before it slims its output (they are the same tensor). An ``expand``
    conv (``in -> t*in``, 1x1) makes a hidden dimension of ratio ``t``. A layer's input dimension
    is the one the latest conv with that many output channels produced (the layers of a backbone are
    built in data-flow order), so the BN and depthwise conv on a hidden dimension, the projection
    that consumes it and a bottleneck's inner convs all keep their producer's rounding.
    A ``body`` linear (VGG's hidden FCs) slims both sides; ``in_positions=P`` slims a flattened map by
    whole channels (``P`` features each).
    """

    def __init__(self, state: SwitchState, divisor: int = 8, private_bn_per_width: bool = False,
                 min_channels: int | None = None, role_ratios: dict | None = None):
        super().__init__(state)
        if isinstance(divisor, bool) or int(divisor) != divisor or divisor < 1:
            raise ConfigError(f"layer_kwargs.divisor: must be a positive integer, got {divisor!r}")
        if min_channels is not None and (isinstance(min_channels, bool) or int(min_channels) != min_channels
                                         or min_channels < 1):
            raise ConfigError(f"method.min_channels: must be a positive integer or null, got {min_channels!r}")
        self.role_ratios = check_role_ratios(role_ratios)
        self.divisor = int(divisor)
        self.min_channels = None if min_channels is None else int(min_channels)
        self.private_bn_per_width = private_bn_per_width
        self._last_conv_slims_out = True
        self._produced: dict[int, ChannelDim] = {}  # channels -> the latest conv output dimension

    def _new_dim(self, channels: int, slim: bool = True, ratio: float = 1) -> ChannelDim:
        return ChannelDim(channels, slim=slim, ratio=ratio, divisor=self.divisor, min_value=self.min_channels)

    def _dim(self, channels: int, slim: bool = True) -> ChannelDim:
        if not slim:
            return self._new_dim(channels, slim=False)
        produced = self._produced.get(channels)
        return produced if produced is not None and produced.slim else self._new_dim(channels)

    def conv(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
             padding: int = 0, groups: int = 1, bias: bool = False, *, role: str = "body") -> nn.Module:
        if groups > 1 and groups == in_channels == out_channels:  # depthwise: one dim on both sides
            in_dim = out_dim = self._dim(in_channels, slim=role != "head")
        elif role == "expand":
            ratio, rest = divmod(out_channels, in_channels)
            if rest or kernel_size != 1:
                raise ValueError(f"expand conv must be 1x1 with out = t * in, got {in_channels}->{out_channels}")
            in_dim = self._dim(in_channels)
            out_dim = self._new_dim(out_channels, ratio=ratio * in_dim.ratio)
        else:
            in_dim = self._dim(in_channels, slim=role != "stem")
            out_dim = self._new_dim(out_channels, slim=role != "head", ratio=self.role_ratios.get(role, 1))
        self._produced[out_channels] = out_dim
        self._last_conv_slims_out = out_dim.slim
        return SlimmableConv2d(in_dim, out_dim, kernel_size, stride, padding, groups, bias, state=self.state)

    def bn(self, num_features: int, *, role: str = "body") -> nn.Module:
        cls = WidthPrivateBatchNorm2d if self.private_bn_per_width else SlimmableBatchNorm2d
        return cls(self._dim(num_features, slim=role != "head"), state=self.state)

    def linear(self, in_features: int, out_features: int, *, role: str = "head", in_positions: int = 1) -> nn.Module:
        slim_in = self._last_conv_slims_out if role == "head" else True
        if in_positions > 1:  # a flattened (C, H, W) map: C channels slim, P = H*W features each
            in_dim = ChannelDim(in_features, slim=slim_in, ratio=in_positions, divisor=self.divisor)
        else:
            in_dim = self._dim(in_features, slim=slim_in)
        out_dim = self._dim(out_features, slim=role != "head")
        self._last_conv_slims_out = out_dim.slim  # a hidden FC feeds the next linear like a conv
        return SlimmableLinear(in_dim, out_dim, state=self.state)


def check_role_ratios(role_ratios) -> dict[str, float]:
    """``{role: ratio}`` with known roles and positive ratios (``None`` -> ``{}``)."""
    if role_ratios is None:
        return {}
    if not isinstance(role_ratios, dict):
        raise ConfigError(f"method.role_ratios: expected a mapping like {{stem: 0.25, mid: 0.25}}, got {role_ratios!r}")
    out = {}
    for role, ratio in role_ratios.items():
        if role not in ROLES:
            raise ConfigError(f"method.role_ratios: unknown role {role!r}; choose from {list(ROLES)}")
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 0:
            raise ConfigError(f"method.role_ratios.{role}: must be a positive number, got {ratio!r}")
        out[str(role)] = float(ratio)
    return out
