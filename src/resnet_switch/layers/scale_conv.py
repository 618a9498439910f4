"""SAN's scale-conditioned convolution (Li et al., ECCV 2020, sec. 3.1) and its layer factories.

A :class:`ScaleConv2d` has no kernel of its own: a meta-learner maps the scale encoding
``eps = scale * S / 32`` (``scale=0.1``: 224 -> 0.7, 96 -> 0.3) of the resolution ``S`` to the kernel,

- ``linear`` (SAN eq. 2): ``kernel = eps * W + b`` with ``W``, ``b`` shaped like the kernel,
- ``mlpH`` (Table 5 ablation, ``mlp8``/``mlp16``): ``Linear(1 -> H), ReLU, Linear(H -> numel)``.

Which resolution's ``eps`` is used (SAN sec. 3.3) is read from the shared
:class:`~resnet_switch.switch.SwitchState`: a training resolution uses its own; an unseen resolution
uses the nearest training resolution's when ``state.scale_encoding == "nearest"`` (proxy inference,
eq. 6) and its own otherwise (``"exact"``, the default: ideal inference, eq. 5). Evaluation and the
runtime choose it with ``state.set_scale_encoding`` from the inference-mode table
(:data:`~resnet_switch.switch.INFERENCE_MODES`: ``proxy`` -> ``nearest`` with nearest BN, ``ideal`` ->
``exact`` with BN recalibrated by :func:`~.calibration.calibrate_bn`).

``encodings`` (optional, one number per training resolution) replaces the formula by a table: the
official SAN code encodes training resolution ``i`` of its list as ``0.7 - 0.1 i`` whatever the
resolution is, which equals ``0.1 S / 32`` only for the list ``[224, 192, 160, 128, 96]``; weights
converted from another list keep their encodings this way (:func:`tabulated_encoding`).

:class:`PrivateConv2d` is SAN's Table 4 ablation: one plain conv per training resolution.
"""

from __future__ import annotations

import copy
import math
import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from ..errors import ConfigError
from ..switch import SwitchState
from .contracts import SwitchableLeaf
from .factory import PlainLayers, base_role, register_layer_factory
from .generated_conv import linear_generated_conv2d, linear_kernel
from .private_bn import PrivateBatchNorm2d


def scale_encoding(resolution: int, scale: float = 0.1) -> float:
    """SAN's scale encoding ``eps = scale * S / 32`` of a resolution ``S`` (pixels)."""
    return scale * resolution / 32


def check_encodings(encodings, train_resolutions) -> tuple[float, ...] | None:
    """``encodings`` as a tuple of floats, one per training resolution, or ``None``."""
    if encodings is None:
        return None
    values = list(encodings) if isinstance(encodings, (list, tuple)) else None
    if values is None or len(values) != len(train_resolutions) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise ConfigError(f"method.encodings: need one number per training resolution {list(train_resolutions)}, "
                         f"got {encodings!r}; e.g. the official SAN encodings [0.7, 0.6, 0.5, 0.4, 0.3]")
    return tuple(float(v) for v in values)


def tabulated_encoding(train_resolutions, encodings, resolution: int) -> float:
    """``eps`` of ``resolution`` from a table: a training resolution's own entry; another resolution
    lies on the line through the two nearest training resolutions (interpolated between neighbours,
    extrapolated beyond the ends; with one training resolution, its entry)."""
    table = dict(zip(train_resolutions, encodings))
    if resolution in table or len(table) == 1:
        return table.get(resolution, encodings[0])
    ascending = sorted(table)
    lo, hi = ascending[0], ascending[1]
    for a, b in zip(ascending, ascending[1:]):
        lo, hi = a, b
        if resolution < b:
            break
    return table[lo] + (table[hi] - table[lo]) * (resolution - lo) / (hi - lo)


def kaiming_std(shape: tuple[int, ...]) -> float:
    """Std of ``kaiming_normal_(mode='fan_out', nonlinearity='relu')`` for a conv weight ``shape``."""
    fan_out = shape[0] * math.prod(shape[2:])
    return math.sqrt(2.0 / fan_out)


class LinearMeta(nn.Module):
    """SAN eq. 2: ``kernel = eps * weight + bias``; ``weight``, ``bias``: the kernel's shape."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = tuple(shape)
        self.weight = nn.Parameter(torch.empty(self.shape))
        self.bias = nn.Parameter(torch.empty(self.shape))

    def forward(self, eps: float) -> Tensor:
        return linear_kernel(self.weight, self.bias, eps)

    @torch.no_grad()
    def reset_parameters(self, std: float, mean_sq_eps: float) -> None:
        """``weight, bias ~ N(0, std^2 / (1 + mean_sq_eps))``: kernels have variance ``std^2`` on
        average over the encodings whose mean square is ``mean_sq_eps``."""
        s = std / math.sqrt(1.0 + mean_sq_eps)
        self.weight.normal_(0.0, s)
        self.bias.normal_(0.0, s)

    @torch.no_grad()
    def load_kernel(self, kernel: Tensor) -> None:
        """Every encoding generates ``kernel``: ``weight = 0``, ``bias = kernel``."""
        self.weight.zero_()
        self.bias.copy_(kernel.reshape(self.shape))


class MLPMeta(nn.Module):
    """SAN Table 5 ablation: ``kernel = W2 relu(W1 eps + b1) + b2`` reshaped to the kernel's shape.

    Raw parameters rather than ``nn.Linear`` children so backbone inits that touch every
    ``nn.Linear`` (MobileNet's N(0, 0.01)) leave the meta-learner alone.
    """

    def __init__(self, shape: tuple[int, ...], hidden: int):
        super().__init__()
        self.shape = tuple(shape)
        numel = math.prod(self.shape)
        self.hidden_weight = nn.Parameter(torch.empty(hidden, 1))
        self.hidden_bias = nn.Parameter(torch.empty(hidden))
        self.out_weight = nn.Parameter(torch.empty(numel, hidden))
        self.out_bias = nn.Parameter(torch.empty(numel))

    def hidden(self, eps: float) -> Tensor:
        """Hidden activations ``(1, H)``."""
        e = self.hidden_weight.new_full((1, 1), eps)
        return F.relu(F.linear(e, self.hidden_weight, self.hidden_bias))

    def forward(self, eps: float) -> Tensor:
        return F.linear(self.hidden(eps), self.out_weight, self.out_bias).view(self.shape)

    @torch.no_grad()
    def reset_parameters(self, std: float, encodings: list[float]) -> None:
        """``W1 ~ N(0, 1)``, ``b1 = 1`` (every hidden unit active for |eps W1| < 1),
        ``b2 ~ N(0, std^2/2)``, ``W2 ~ N(0, std^2 / (2 mean_eps ||h(eps)||^2))``: kernels have
        variance ``std^2`` on average over ``encodings``."""
        self.hidden_weight.normal_(0.0, 1.0)
        self.hidden_bias.fill_(1.0)
        sq_norm = sum(float(self.hidden(e).square().sum()) for e in encodings) / len(encodings)
        self.out_weight.normal_(0.0, std / math.sqrt(2.0 * max(sq_norm, 1e-12)))
        self.out_bias.normal_(0.0, std / math.sqrt(2.0))

    @torch.no_grad()
    def load_kernel(self, kernel: Tensor) -> None:
        """Every encoding generates ``kernel``: ``W2 = 0``, ``b2 = kernel``."""
        self.out_weight.zero_()
        self.out_bias.copy_(kernel.reshape(-1))


def build_meta(meta: str, shape: tuple[int, ...]) -> LinearMeta | MLPMeta:
    """``linear`` -> :class:`LinearMeta`; ``mlpH`` (e.g. ``mlp8``, ``mlp16``) -> :class:`MLPMeta`."""
    if meta == "linear":
        return LinearMeta(shape)
    match = re.fullmatch(r"mlp(\d+)", meta)
    if match and int(match.group(1)) > 0:
        return MLPMeta(shape, int(match.group(1)))
    raise ConfigError(f"method.meta: unknown meta-learner {meta!r}; choose linear, mlp8 or mlp16")


def encoding_resolution(state: SwitchState) -> int:
    """The resolution whose ``eps`` the active configuration uses (see the module docstring)."""
    r = state.config.resolution
    if state.train_index(r) is not None:
        return r
    return state.train_resolutions[state.nearest_index(r)] if state.scale_encoding == "nearest" else r


class ScaleConv2d(SwitchableLeaf):
    """Conv whose kernel ``(Cout, Cin/groups, k, k)`` is generated from the active scale encoding.

    Input ``(B, Cin, H, W)`` -> ``(B, Cout, H', W')`` as ``nn.Conv2d``; grouped/depthwise convs work;
    ``kernel_size``, ``stride``, ``padding``, ``dilation``: an int or an ``(h, w)`` pair (numbers, not ``'same'``).
    Init: generated kernels start at Kaiming scale (fan_out, ReLU gain): for ``linear``,
    ``W, b ~ N(0, s^2)`` with ``s = std_kaiming / sqrt(1 + mean eps^2)`` over the training
    resolutions, so ``eps*W + b`` has Kaiming variance on average over the training encodings
    (0.93-1.09x std for {224..96}); ``mlpH`` see :meth:`MLPMeta.reset_parameters`. Conv bias
    (optional, plain parameter) starts at zero.

    Generation: in training mode, or whenever grad is enabled, the kernel is generated in every
    forward (one per configuration per step). ``linear`` runs as one autograd node that does not
    keep the kernel for backward but regenerates it there
    (:func:`~.generated_conv.linear_generated_conv2d`); ``mlpH`` uses plain autograd. In eval
    mode under no-grad it is cached per encoding resolution, keyed on the ``_version`` (in-place
    updates such as ``optimizer.step`` or ``load_state_dict``) and storage of the meta
    parameters, so changed weights regenerate it without any host sync. Under ``torch.compile``
    (``compile=true``) both eager-mode measures (that node, the cache) are skipped: the kernel is
    generated inside the graph with plain autograd and the compiler plans its memory.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, state: SwitchState,
                 stride: int = 1, padding: int = 0, groups: int = 1, bias: bool = False,
                 meta: str = "linear", scale: float = 0.1, dilation: int = 1, encodings=None):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ConfigError(f"ScaleConv2d: channels {in_channels}->{out_channels} not divisible by groups={groups}")
        self.state = state
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.groups, self.scale = dilation, groups, scale
        self.encodings = check_encodings(encodings, state.train_resolutions)
        self.kernel_shape = (out_channels, in_channels // groups, *_pair(kernel_size))
        self.meta = build_meta(meta, self.kernel_shape)
        self.meta_kind = meta
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self._kernel_cache: dict[int, tuple[tuple, Tensor]] = {}
        self.reset_parameters()

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups}, bias={self.bias is not None}, "
                f"meta={self.meta_kind}, scale={self.scale}"
                + ("" if self.encodings is None else f", encodings={list(self.encodings)}"))

    def eps_of(self, resolution: int) -> float:
        """The scale encoding of ``resolution``: the formula, or the ``encodings`` table."""
        if self.encodings is None:
            return scale_encoding(resolution, self.scale)
        return tabulated_encoding(self.state.train_resolutions, self.encodings, resolution)

    def reset_parameters(self) -> None:
        encodings = [self.eps_of(r) for r in self.state.train_resolutions]
        std = kaiming_std(self.kernel_shape)
        if isinstance(self.meta, LinearMeta):
            self.meta.reset_parameters(std, sum(e * e for e in encodings) / len(encodings))
        else:
            self.meta.reset_parameters(std, encodings)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        self.reset_cache()

    def reset_cache(self) -> None:
        """Drop the cached eval-mode kernels (they are regenerated on the next use)."""
        self._kernel_cache.clear()

    @torch.no_grad()
    def warm_cache(self) -> None:
        """Eval mode: generate and cache the active configuration's kernel (the next no-grad
        forward is a cache hit). Training mode: nothing (kernels are generated in every forward)."""
        if not self.training:
            self.kernel()

    def encoding(self) -> float:
        """``eps`` used at the active configuration."""
        return self.eps_of(encoding_resolution(self.state))

    def _meta_key(self) -> tuple:
        return tuple((p._version, p.data_ptr()) for p in self.meta.parameters())

    def kernel(self) -> Tensor:
        """The kernel ``(Cout, Cin/groups, k, k)`` of the active configuration."""
        r = encoding_resolution(self.state)
        if self.training or torch.is_grad_enabled() or torch.compiler.is_compiling():
            return self.meta(self.eps_of(r))
        key = self._meta_key()
        hit = self._kernel_cache.get(r)
        if hit is not None and hit[0] == key:
            return hit[1]
        kernel = self.meta(self.eps_of(r))
        self._kernel_cache[r] = (key, kernel)
        return kernel

    def forward(self, x: Tensor) -> Tensor:
        if (isinstance(self.meta, LinearMeta) and (self.training or torch.is_grad_enabled())
                and not torch.compiler.is_compiling()):
            return linear_generated_conv2d(x, self.meta.weight, self.meta.bias, self.encoding(), self.bias,
                                           self.stride, self.padding, self.dilation, self.groups)
        return F.conv2d(x, self.kernel(), self.bias, self.stride, self.padding, self.dilation, self.groups)

    def train(self, mode: bool = True) -> ScaleConv2d:
        if mode:
            self.reset_cache()
        return super().train(mode)

    @torch.no_grad()
    def to_plain(self) -> nn.Conv2d:
        """An ``nn.Conv2d`` with the active configuration's kernel baked in."""
        kernel = self.meta(self.encoding())
        # made on the parameters' device (no CPU init + copy; a fake-CUDA trace cannot move a new module)
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                         self.dilation, self.groups, bias=self.bias is not None, device=kernel.device,
                         dtype=kernel.dtype)
        conv.weight.copy_(kernel)
        if self.bias is not None:
            conv.bias.copy_(self.bias)
        return conv

    @torch.no_grad()
    def load_plain(self, conv: nn.Conv2d) -> None:
        """Warm start: every scale generates ``conv.weight`` (``W = 0``, ``b = weight``)."""
        self.meta.load_kernel(conv.weight)
        if self.bias is not None:
            if conv.bias is None:
                self.bias.zero_()
            else:
                self.bias.copy_(conv.bias)
        self.reset_cache()


class PrivateConv2d(SwitchableLeaf):
    """SAN Table 4 ablation: ``convs[k]`` is a plain conv private to ``train_resolutions[k]``.

    An unseen resolution uses the nearest training resolution's conv. Keys: ``convs.{k}.weight``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, state: SwitchState,
                 stride: int = 1, padding: int = 0, groups: int = 1, bias: bool = False):
        super().__init__()
        self.state = state
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=bias)
            for _ in state.train_resolutions
        )

    def active_index(self) -> int:
        r = self.state.config.resolution
        own = self.state.train_index(r)
        return own if own is not None else self.state.nearest_index(r)

    def forward(self, x: Tensor) -> Tensor:
        return self.convs[self.active_index()](x)

    @torch.no_grad()
    def to_plain(self) -> nn.Conv2d:
        """A copy of the active configuration's conv."""
        return copy.deepcopy(self.convs[self.active_index()])

    @torch.no_grad()
    def load_plain(self, conv: nn.Conv2d) -> None:
        """Warm start: copy one plain conv into every private conv."""
        for c in self.convs:
            c.load_state_dict(conv.state_dict())


RESNET_META_ROLES = ("body", "shortcut")  # SAN's ResNets: stem conv and FC stay plain
ALL_CONVS = "all"  # SAN's MobileNetV2: every conv is meta, whatever its role


def meta_roles_arg(meta_roles) -> str | tuple[str, ...]:
    """Normalise ``meta_roles``: ``None`` -> :data:`RESNET_META_ROLES`, ``"all"``, or a tuple of roles."""
    if meta_roles is None:
        return RESNET_META_ROLES
    if isinstance(meta_roles, str):
        if meta_roles != ALL_CONVS:
            raise ConfigError(f"method.meta_roles: {meta_roles!r}; give 'all' or a list such as [body, shortcut]")
        return ALL_CONVS
    return tuple(str(r) for r in meta_roles)


@register_layer_factory("san")
class SANLayers(PlainLayers):
    """Convs whose role is in ``meta_roles`` are :class:`ScaleConv2d`, other convs plain; BN private
    per training resolution (``private_bn=False``: shared plain BN); classifier plain and shared.

    Args:
        meta: ``linear`` (default) or ``mlp8``/``mlp16``. scale: encoding ``eps = scale * S / 32``.
        meta_roles: conv roles made meta; ``None`` -> :data:`RESNET_META_ROLES` (SAN's ResNets);
            ``"all"``: every conv (SAN's MobileNetV2).
        encodings: the scale encoding of each training resolution instead of the formula
            (:func:`tabulated_encoding`); ``None``: ``eps = scale * S / 32``.
    """

    def __init__(self, state: SwitchState, meta: str = "linear", meta_roles=RESNET_META_ROLES,
                 scale: float = 0.1, private_bn: bool = True, encodings=None):
        super().__init__(state)
        build_meta(meta, (1, 1, 1, 1))  # validate early
        self.meta, self.meta_roles, self.scale, self.private_bn = meta, meta_roles_arg(meta_roles), scale, private_bn
        self.encodings = check_encodings(encodings, state.train_resolutions)

    def is_meta(self, role: str) -> bool:
        return self.meta_roles == ALL_CONVS or role in self.meta_roles or base_role(role) in self.meta_roles

    def conv(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
             padding: int = 0, groups: int = 1, bias: bool = False, *, role: str = "body") -> nn.Module:
        if not self.is_meta(role):
            return super().conv(in_channels, out_channels, kernel_size, stride, padding, groups, bias, role=role)
        return ScaleConv2d(in_channels, out_channels, kernel_size, self.state, stride, padding, groups, bias,
                           meta=self.meta, scale=self.scale, encodings=self.encodings)

    def bn(self, num_features: int, *, role: str = "body") -> nn.Module:
        return PrivateBatchNorm2d(num_features, self.state) if self.private_bn else nn.BatchNorm2d(num_features)


@register_layer_factory("private_conv")
class PrivateConvLayers(PlainLayers):
    """SAN Table 4 ablation: every conv private per training resolution (:class:`PrivateConv2d`),
    private BN (``private_bn=False``: shared), shared classifier."""

    def __init__(self, state: SwitchState, private_bn: bool = True):
        super().__init__(state)
        self.private_bn = private_bn

    def conv(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
             padding: int = 0, groups: int = 1, bias: bool = False, *, role: str = "body") -> nn.Module:
        return PrivateConv2d(in_channels, out_channels, kernel_size, self.state, stride, padding, groups, bias)

    def bn(self, num_features: int, *, role: str = "body") -> nn.Module:
        return PrivateBatchNorm2d(num_features, self.state) if self.private_bn else nn.BatchNorm2d(num_features)
