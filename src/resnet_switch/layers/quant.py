"""Quantized convolutions behind the layer factory: ``quant=lq`` wraps a method's own factory.

:class:`QuantLayers` takes the method's factory (plain or private BN) and swaps every conv except
the stem for an :class:`LQConv2d` (LQ weight quantizer, and an LQ activation quantizer on the conv's
input); BN and the classifier come from the wrapped factory unchanged, so private BN per resolution
keeps working and the first conv and the last FC stay full precision. 32 bits on both sides gives
exactly the wrapped factory's float conv.

The settings live in the network's spec as ``quant={"weight_bits", "act_bits", "act_basis_update"}``
(:func:`check_quant_spec`), the bases as buffers (state dicts, checkpoints, resume).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import Registry
from ..switch import SwitchState
from .contracts import SwitchableLeaf
from .factory import PlainLayers, PrivateBNLayers
from .lq import ACT_BASIS_UPDATES, FLOAT_BITS, LQActQuantizer, LQWeightQuantizer, check_bits

QUANTIZABLE_FACTORIES = (PlainLayers, PrivateBNLayers)  # factories whose convs are nn.Conv2d
QUANTIZABLE_LAYERS = ("plain", "private_bn")  # their registry names (``Method.layers``)


class LQConv2d(SwitchableLeaf, nn.Conv2d):
    """``nn.Conv2d`` whose weight (and input) are LQ-quantized in the forward pass.

    Same parameters and state-dict keys as ``nn.Conv2d`` (``weight``, ``bias``) plus the buffers
    ``weight_quant.basis`` ``(C_out, K_w)`` and ``act_quant.basis`` ``(K_a,)``. ``weight_bits`` or
    ``act_bits`` = 32: that side stays float (no quantizer module).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, groups: int = 1, bias: bool = False, *, weight_bits: int = 2,
                 act_bits: int = FLOAT_BITS, state: SwitchState | None = None, act_basis_update: str = "all"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=bias)
        self.weight_bits = check_bits(weight_bits, "quant.weight_bits")
        self.act_bits = check_bits(act_bits, "quant.act_bits")
        kernel_numel = self.kernel_size[0] * self.kernel_size[1]
        self.weight_quant = (None if weight_bits == FLOAT_BITS
                             else LQWeightQuantizer(out_channels, weight_bits, kernel_numel))
        self.act_quant = None if act_bits == FLOAT_BITS else LQActQuantizer(act_bits, state, act_basis_update)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weight_bits={self.weight_bits}, act_bits={self.act_bits}"

    def quantized_weight(self) -> Tensor:
        """The weight as the forward pass uses it in eval mode (no basis update)."""
        if self.weight_quant is None:
            return self.weight.detach()
        return self.weight_quant.quantized(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        if self.act_quant is not None:
            x = self.act_quant(x)
        weight = self.weight if self.weight_quant is None else self.weight_quant(self.weight)
        return self._conv_forward(x, weight, self.bias)

    @torch.no_grad()
    def to_plain(self) -> nn.Module:
        """The fake-quantized float equivalent: an ``nn.Conv2d`` holding the quantized weights,
        preceded (``act_bits < 32``) by the fixed activation quantizer, as
        ``nn.Sequential(quant=LQActivation, conv=nn.Conv2d)``."""
        # made on the parameters' device (no CPU init + copy; a fake-CUDA trace cannot move a new module)
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                         self.dilation, self.groups, self.bias is not None, device=self.weight.device,
                         dtype=self.weight.dtype)
        conv.weight.copy_(self.quantized_weight())
        if self.bias is not None:
            conv.bias.copy_(self.bias)
        if self.act_quant is None:
            return conv
        return nn.Sequential(OrderedDict(quant=self.act_quant.to_plain(), conv=conv))

    @torch.no_grad()
    def load_plain(self, plain: nn.Module) -> None:
        """Warm start from a plain ``nn.Conv2d`` (float weights; the bases keep their initial values)."""
        conv = plain.conv if isinstance(plain, nn.Sequential) else plain
        self.weight.copy_(conv.weight)
        if self.bias is not None:
            self.bias.copy_(conv.bias)


def plain_weight_key(name: str, module: LQConv2d) -> str:
    """State-dict key of ``module``'s weight in the materialised plain model (``name`` its path)."""
    return f"{name}.conv.weight" if module.act_quant is not None else f"{name}.weight"


class QuantLayers:
    """A layer factory (:class:`~.contracts.LayerFactory`) wrapping ``inner`` (plain or private BN):
    non-stem convs become :class:`LQConv2d`; BN and linear layers are ``inner``'s (the classifier
    stays float)."""

    def __init__(self, inner: PlainLayers, weight_bits: int = 2, act_bits: int = FLOAT_BITS,
                 act_basis_update: str = "all"):
        if type(inner) not in QUANTIZABLE_FACTORIES:
            raise ConfigError(f"quant: layers of type {type(inner).__name__} cannot be quantized; "
                             "use method=individual|parallel|rsnet")
        self.inner = inner
        self.state = inner.state
        self.weight_bits, self.act_bits, self.act_basis_update = weight_bits, act_bits, act_basis_update

    def conv(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
             padding: int = 0, groups: int = 1, bias: bool = False, *, role: str = "body") -> nn.Module:
        if role == "stem" or (self.weight_bits == FLOAT_BITS and self.act_bits == FLOAT_BITS):
            return self.inner.conv(in_channels, out_channels, kernel_size, stride, padding, groups, bias, role=role)
        return LQConv2d(in_channels, out_channels, kernel_size, stride, padding, groups, bias,
                        weight_bits=self.weight_bits, act_bits=self.act_bits, state=self.state,
                        act_basis_update=self.act_basis_update)

    def bn(self, num_features: int, *, role: str = "body") -> nn.Module:
        return self.inner.bn(num_features, role=role)

    def linear(self, in_features: int, out_features: int, *, role: str = "head", in_positions: int = 1) -> nn.Module:
        return self.inner.linear(in_features, out_features, role=role, in_positions=in_positions)


def check_quant_spec(quant: dict[str, Any] | None) -> dict[str, Any] | None:
    """The ``quant`` entry of a net spec, validated: ``None`` (float) or
    ``{"weight_bits", "act_bits", "act_basis_update"}``."""
    if quant is None:
        return None
    unknown = set(quant) - {"weight_bits", "act_bits", "act_basis_update"}
    if unknown:
        raise ConfigError(f"quant.{sorted(unknown)[0]}: unknown setting; use weight_bits, act_bits, act_basis_update")
    weight_bits = check_bits(quant.get("weight_bits", 2), "quant.weight_bits")
    act_bits = check_bits(quant.get("act_bits", FLOAT_BITS), "quant.act_bits")
    update = quant.get("act_basis_update", "all")
    if update not in ACT_BASIS_UPDATES:
        raise ConfigError(f"quant.act_basis_update: unknown {update!r}; choose one of {list(ACT_BASIS_UPDATES)}")
    return {"weight_bits": weight_bits, "act_bits": act_bits, "act_basis_update": update}


# ``quant`` config group name -> its settings (the group minus ``name``) -> the net spec's ``quant``
QUANTIZERS: Registry[Callable[[dict[str, Any]], dict[str, Any] | None]] = Registry("quantizer", field="quant")


def register_quantizer(name: str) -> Callable:
    """Decorator registering ``settings -> net spec quant`` (``None``: float) under ``name``."""
    return QUANTIZERS.register(name)


def list_quantizers() -> list[str]:
    """Registered quantizer names (the ``quant`` config group), sorted."""
    return QUANTIZERS.list()


@register_quantizer("none")
def full_precision(settings: dict[str, Any]) -> None:
    """Full precision: no quantizer (settings are ignored)."""
    return None


@register_quantizer("lq")
def lq_nets(settings: dict[str, Any]) -> dict[str, Any]:
    """LQ-Nets weights and activations (:class:`QuantLayers`), settings checked by :func:`check_quant_spec`."""
    return check_quant_spec(settings)


def quant_spec_from_config(cfg: dict[str, Any] | None) -> dict[str, Any] | None:
    """The net spec's ``quant`` from the ``quant`` config group (``name`` of a registered quantizer
    + its settings)."""
    cfg = dict(cfg or {"name": "none"})
    return QUANTIZERS.get(cfg.pop("name", "none"))(cfg)


def quantized_convs(module: nn.Module) -> list[tuple[str, LQConv2d]]:
    """``(name, module)`` of every :class:`LQConv2d` in ``module``."""
    return [(name, m) for name, m in module.named_modules() if isinstance(m, LQConv2d)]
