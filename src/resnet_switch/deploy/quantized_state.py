"""The ``state_dict`` export of an LQ-quantized configuration: integer codes and bases, not floats.

File layout (``torch.save`` of a dict; ``torch.load(weights_only=True)`` reads it)::

    {"format": "resnet_switch.lq_state_dict.v1",
     "spec": net spec (create_model(**spec) rebuilds the architecture),
     "config": {"resolution": R, "width": W},
     "float": {plain key: tensor}        # everything that stays float (stem, FC, BN, biases)
     "weights": {plain key: {"codes": uint8 (C_out, C_in/g, k, k), "basis": (C_out, K)}},
     "activations": {plain prefix: {"basis": (K,)}}}

A weight's code is its LQ code index: bit ``j`` set means ``+v_j``, clear ``-v_j``, so the weight is
``sum_j (2 bit_j - 1) v_cj`` (:func:`~resnet_switch.layers.lq.dequantize_codes`). The plain keys are
those of the materialised fake-quantized model (``net.materialize(config)``), which
:func:`load_quantized_state` rebuilds from ``spec`` and ``config`` and fills.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..layers.lq import act_levels, dequantize_codes
from ..layers.quant import plain_weight_key, quantized_convs
from ..models import create_model
from ..models.switchable import SwitchableNet
from ..switch import SubnetConfig

PACKED_FORMAT = "resnet_switch.lq_state_dict.v1"


def is_quantized(net: SwitchableNet) -> bool:
    return bool(net.spec.get("quant"))


@torch.no_grad()
def pack_quantized_state(net: SwitchableNet, plain: nn.Module, config: SubnetConfig) -> dict[str, Any]:
    """The packed file content for ``plain = net.materialize(config)`` (not BN-folded)."""
    float_state = {k: v.detach().cpu().clone() for k, v in plain.state_dict().items()}
    weights, activations = {}, {}
    for name, module in quantized_convs(net.net):
        if module.weight_quant is not None:
            key = plain_weight_key(name, module)
            float_state.pop(key)
            weights[key] = {"codes": module.weight_quant.codes(module.weight).cpu(),
                            "basis": module.weight_quant.basis.detach().cpu().clone()}
        if module.act_quant is not None:
            prefix = f"{name}.quant"
            float_state.pop(f"{prefix}.levels")
            float_state.pop(f"{prefix}.thresholds")
            activations[prefix] = {"basis": module.act_quant.basis.detach().cpu().clone()}
    return {"format": PACKED_FORMAT, "spec": dict(net.spec),
            "config": {"resolution": config.resolution, "width": config.width},
            "float": float_state, "weights": weights, "activations": activations}


def unpack_quantized_state(packed: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The plain model's float state dict: weights dequantized from codes, activation levels and
    thresholds recomputed from their bases."""
    if packed.get("format") != PACKED_FORMAT:
        raise ConfigError(f"state_dict: not a {PACKED_FORMAT} file (format {packed.get('format')!r})")
    state = dict(packed["float"])
    for key, entry in packed["weights"].items():
        state[key] = dequantize_codes(entry["codes"], entry["basis"])
    for prefix, entry in packed["activations"].items():
        levels, thresholds, _ = act_levels(entry["basis"])
        state[f"{prefix}.levels"], state[f"{prefix}.thresholds"] = levels, thresholds
    return state


def load_quantized_state(packed: dict[str, Any]) -> nn.Module:
    """The fake-quantized plain model rebuilt from a packed file alone (eval mode, strict load)."""
    config = SubnetConfig(packed["config"]["resolution"], packed["config"]["width"])
    plain = create_model(**packed["spec"]).materialize(config)
    plain.load_state_dict(unpack_quantized_state(packed), strict=True)
    return plain.eval()
