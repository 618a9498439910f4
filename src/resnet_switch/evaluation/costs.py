"""Cost of each configuration: multiply-adds and parameters of the materialised plain model.

``count_costs(net, config)`` counts ``MAdds = FLOPs / 2`` with ``torch.utils.flop_counter.FlopCounterMode``
(which counts conv and linear/matmul ops only, the papers' convention) on one
``(1, C, r, r)`` zero image, and the parameter count of ``net.materialize(config)``.

The command line over these is :mod:`resnet_switch.costs`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..models import build_switchable
from ..models.switchable import SwitchableNet
from ..switch import SubnetConfig, check_resolutions


@torch.no_grad()
def count_costs(net: SwitchableNet | nn.Module, config: SubnetConfig) -> tuple[int, int]:
    """``(madds, params)`` of ``net`` at ``config``.

    A :class:`SwitchableNet` is materialised at ``config`` first (widths sliced, generated kernels
    baked in); a plain ``nn.Module`` is counted as it is at ``config.resolution``. The input is
    ``torch.zeros(1, C, r, r)`` with ``C`` the first conv's input channels.
    """
    plain = net.materialize(config) if isinstance(net, SwitchableNet) else net
    was_training = plain.training
    plain.eval()
    first_conv = next((m for m in plain.modules() if isinstance(m, nn.Conv2d)), None)
    if first_conv is None:
        raise ValueError("model: count_costs needs a network with a Conv2d (its input gives the image channels)")
    weight = first_conv.weight
    r = config.resolution
    image = torch.zeros(1, first_conv.in_channels, r, r, device=weight.device, dtype=weight.dtype)
    with FlopCounterMode(display=False) as counter:
        plain(image)
    plain.train(was_training)
    return counter.get_total_flops() // 2, sum(p.numel() for p in plain.parameters())


def human(value: float) -> str:
    """Three significant digits with a unit: ``1.82G``, ``931M``, ``56.3M``, ``4.50k``."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3), ("", 1.0)):
        scaled = float(f"{value / scale:.3g}")  # round first: 999.7M prints as 1.00G
        if abs(scaled) >= 1 or not unit:
            digits = 2 if abs(scaled) < 10 else 1 if abs(scaled) < 100 else 0
            return f"{scaled:.{digits if unit else 0}f}{unit}"
    raise AssertionError("unreachable")


def check_widths(widths: Sequence) -> list[float]:
    if not widths:
        raise ValueError("widths: empty; give at least one width multiplier, e.g. widths=[1.0]")
    out = []
    for w in widths:
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.0 < float(w) <= 1.0:
            raise ValueError(f"widths: {w!r} is not in (0, 1]; use multipliers like [1.0,0.75,0.5]")
        out.append(float(w))
    if len(set(out)) != len(out):
        raise ValueError(f"widths: duplicate entries in {out}; list each width once")
    return out


def layers_for_widths(widths: Sequence[float]) -> str:
    """``plain`` when only width 1.0 is asked for, else ``slimmable`` (must be registered)."""
    if list(widths) == [1.0]:
        return "plain"
    from .. import layers  # noqa: F401  (importing the package registers its layer factories)
    from ..layers.factory import LAYER_FACTORIES

    if "slimmable" not in LAYER_FACTORIES:
        raise ValueError("widths: widths other than 1.0 need the 'slimmable' layer factory, which is "
                         "not registered in this version; use widths=[1.0]")
    return "slimmable"


def cost_table(model: str, resolutions: Sequence[int], widths: Sequence[float] = (1.0,),
               num_classes: int = 1000, in_channels: int = 3) -> list[dict]:
    """One row ``{resolution, width, madds, params}`` per (resolution, width), resolutions outer."""
    resolutions = check_resolutions(resolutions, "resolutions")
    widths = check_widths(widths)
    net = build_switchable(model, resolutions, layers=layers_for_widths(widths),
                           widths=sorted(widths, reverse=True), num_classes=num_classes,
                           in_channels=in_channels)
    rows = []
    for r in resolutions:
        for w in widths:
            madds, params = count_costs(net, SubnetConfig(r, w))
            rows.append({"resolution": r, "width": w, "madds": madds, "params": params})
    return rows
