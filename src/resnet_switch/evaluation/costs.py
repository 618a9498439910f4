"""Cost of each configuration: multiply-adds and parameters of the materialised plain model, and
for (LQ-)quantized networks the model size in bits and the bit-operations.

``count_costs(net, config)`` counts ``MAdds = FLOPs / 2`` with ``torch.utils.flop_counter.FlopCounterMode``
(which counts conv and linear/matmul ops only, the papers' convention) on one
``(1, C, r, r)`` zero image, and the parameter count of ``net.materialize(config)``.

``count_bit_costs(net, config)`` (counting rule):

- size in bits = 32 x every float parameter of the configuration's plain model (the stem conv, the
  classifier, biases, the BN affine parameters of that configuration; running statistics are not
  counted, as for ``params``) + for each quantized conv ``weight_bits`` x its weights + 32 x its
  weight basis entries (``C_out x K_w``) + 32 x its activation basis entries (``K_a``);
- BOPs (bit-operations) = sum over conv and linear layers of ``MAdds x b_w x b_a``: a quantized conv
  uses its weight and activation bits (32 for a side left float), float layers ``32 x 32``.
  A float network therefore has ``BOPs = 1024 x MAdds``.

The command line over these is :mod:`resnet_switch.costs`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..errors import ConfigError
from ..models import create_model
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
        raise ConfigError("model: count_costs needs a network with a Conv2d (its input gives the image channels)")
    weight = first_conv.weight
    r = config.resolution
    image = torch.zeros(1, first_conv.in_channels, r, r, device=weight.device, dtype=weight.dtype)
    with FlopCounterMode(display=False) as counter:
        plain(image)
    plain.train(was_training)
    return counter.get_total_flops() // 2, sum(p.numel() for p in plain.parameters())


@torch.no_grad()
def count_bit_costs(net: SwitchableNet | nn.Module, config: SubnetConfig) -> dict[str, int]:
    """``{"size_bits", "bops", "madds"}`` of ``net`` at ``config`` (rule in the module docstring).

    A network without quantized convs is counted from :func:`count_costs` (32 bits everywhere). A
    quantized :class:`SwitchableNet` runs once at ``config`` with hooks on its conv/linear layers;
    ``madds`` is then the sum of the per-layer MAdds behind the BOPs."""
    from ..layers.quant import LQConv2d  # local: layers.quant imports models' neighbours

    madds, params = count_costs(net, config)
    if not any(isinstance(m, LQConv2d) for m in net.modules()):  # float: every layer at 32 x 32 bits
        return {"size_bits": 32 * params, "bops": 32 * 32 * madds, "madds": madds}
    per_layer: list[tuple[int, int, int]] = []  # (madds, weight bits, activation bits)

    def hook(module: nn.Module, inputs, output) -> None:
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        else:
            per_output = module.in_features
        bits = (module.weight_bits, module.act_bits) if isinstance(module, LQConv2d) else (32, 32)
        per_layer.append((output.numel() // output.shape[0] * per_output, *bits))

    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    handles = [m.register_forward_hook(hook) for m in layers]
    was_training = net.training
    first_conv = next(m for m in layers if isinstance(m, nn.Conv2d))
    try:
        net.eval()
        r = config.resolution
        image = torch.zeros(1, first_conv.in_channels, r, r, device=first_conv.weight.device,
                            dtype=first_conv.weight.dtype)
        with net.switch(config):
            net(image)
    finally:
        for handle in handles:
            handle.remove()
        net.train(was_training)
    size_bits = 32 * params
    for module in net.modules():
        if isinstance(module, LQConv2d):
            size_bits += (module.weight_bits - 32) * module.weight.numel()
            for quantizer in (module.weight_quant, module.act_quant):
                if quantizer is not None:
                    size_bits += 32 * quantizer.basis.numel()
    return {"size_bits": size_bits, "bops": sum(m * bw * ba for m, bw, ba in per_layer),
            "madds": sum(m for m, _, _ in per_layer)}


def human(value: float) -> str:
    """Three significant digits with a unit: ``1.82G``, ``931M``, ``56.3M``, ``4.50k``."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3), ("", 1.0)):
        scaled = float(f"{value / scale:.3g}")  # round first: 999.7M prints as 1.00G
        if abs(scaled) >= 1 or not unit:
            digits = 2 if abs(scaled) < 10 else 1 if abs(scaled) < 100 else 0
            return f"{scaled:.{digits if unit else 0}f}{unit}"
    raise AssertionError("unreachable")


def check_widths(widths: Sequence) -> list[float]:
    if not widths:
        raise ConfigError("widths: empty; give at least one width multiplier, e.g. widths=[1.0]")
    out = []
    for w in widths:
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.0 < float(w) <= 1.0:
            raise ConfigError(f"widths: {w!r} is not in (0, 1]; use multipliers like [1.0,0.75,0.5]")
        out.append(float(w))
    if len(set(out)) != len(out):
        raise ConfigError(f"widths: duplicate entries in {out}; list each width once")
    return out


def layers_for_widths(widths: Sequence[float]) -> str:
    """The layer factory that costs ``widths``: ``plain`` for width 1.0 alone, else ``slimmable``."""
    return "plain" if list(widths) == [1.0] else "slimmable"


def cost_table(model: str, resolutions: Sequence[int], widths: Sequence[float] = (1.0,),
               num_classes: int = 1000, in_channels: int = 3, quant: dict | None = None,
               **backbone_kwargs) -> list[dict]:
    """One row ``{resolution, width, madds, params, size_bits, bops}`` per (resolution, width),
    resolutions outer. ``quant``: LQ settings (``None``: float; size and BOPs at 32 bits).
    ``backbone_kwargs``: the backbone's constructor arguments (``arch=`` for ``torchvision``/``timm``)."""
    resolutions = check_resolutions(resolutions, "resolutions")
    widths = check_widths(widths)
    layers = layers_for_widths(widths)
    if quant is not None and layers != "plain":
        raise ConfigError("widths: quantized networks are not slimmable; use widths=[1.0] with quant=lq")
    net = create_model(model, resolutions, layers=layers, widths=sorted(widths, reverse=True),
                       num_classes=num_classes, in_channels=in_channels, quant=quant, **backbone_kwargs)
    rows = []
    for r in resolutions:
        for w in widths:
            config = SubnetConfig(r, w)
            madds, params = count_costs(net, config)
            row = {"resolution": r, "width": w, "madds": madds, "params": params}
            bits = count_bit_costs(net, config)
            row.update(size_bits=bits["size_bits"], bops=bits["bops"])
            rows.append(row)
    return rows
