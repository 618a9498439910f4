"""Speed options of training: ``memory_format=auto|contiguous|channels_last`` and ``compile=true``.

``auto`` (the default) picks ``channels_last`` on the CPU, where oneDNN's NHWC convolutions make a
training step cheaper, and
``contiguous`` on CUDA (ask for ``channels_last`` there with AMP). It also picks ``contiguous`` for a
network with a 1x1 stride-2 conv of fewer than 8 input channels: PyTorch 2.14.1's oneDNN corrupts
the heap in that conv's NHWC weight gradient (e.g. ``model.base_width=4``).

``channels_last``: every 4-D parameter of the network (conv kernels, SAN's meta-learner tensors) is
stored NHWC and a forward pre-hook on the switchable network hands it its images NHWC, so training,
validation and BN recalibration all run NHWC (faster convolutions with AMP on tensor-core GPUs). The
hook sits on the network rather than on the batch: ``MultiResBatch.at(r)`` makes each resolution
lazily, and the data module's ``on_after_batch_transfer`` is the one Lightning calls.

``compile``: the switchable network is compiled in place (``nn.Module.compile``: state-dict keys and
checkpoints unchanged) with ``dynamic=False``. A configuration is a Python attribute of the shared
switch state (resolution, width, BN blend) plus the input's static shape, so Dynamo's guards give one
graph per configuration and mode (training, validation, last partial batch, BN recalibration). The
recompile limit is raised to cover them all; past it Dynamo would silently run that frame eagerly.
Methods that draw a random width every step (MutualNet, US-Net) would compile a new graph per draw
and are refused.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..cli.options import check_choice
from ..switch import SubnetConfig

MEMORY_FORMATS = ("auto", "contiguous", "channels_last")
# graphs of one configuration: training, validation (full and last partial batch), BN
# recalibration (full and truncated last batch), one spare
GRAPHS_PER_CONFIG = 6
GRAPH_MARGIN = 8


def check_memory_format(value: object) -> str:
    return check_choice("memory_format", value, MEMORY_FORMATS)


def onednn_nhwc_hazard(net: nn.Module) -> bool:
    """True when ``net`` has a 1x1 stride-2 conv with fewer than 8 input channels (see the module
    docstring); any layer with ``kernel_size``/``stride``/``in_channels`` counts (SAN, slimmable)."""
    for m in net.modules():
        kernel, stride, channels = (getattr(m, a, None) for a in ("kernel_size", "stride", "in_channels"))
        if channels is None or kernel is None or stride is None:
            continue
        kernel = tuple(kernel) if isinstance(kernel, (tuple, list)) else (kernel, kernel)
        stride = tuple(stride) if isinstance(stride, (tuple, list)) else (stride, stride)
        if kernel == (1, 1) and stride != (1, 1) and channels < 8:
            return True
    return False


def resolve_memory_format(value: str, net: nn.Module, on_cuda: bool) -> str:
    """``auto`` -> ``channels_last`` on the CPU unless :func:`onednn_nhwc_hazard`, else ``contiguous``;
    explicit choices are returned as they are."""
    value = check_memory_format(value)
    if value != "auto":
        return value
    return "contiguous" if on_cuda or onednn_nhwc_hazard(net) else "channels_last"


def _channels_last_input(module: nn.Module, args: tuple) -> tuple | None:
    """Forward pre-hook: a 4-D image tensor argument becomes channels_last (a no-op when it is)."""
    if args and isinstance(args[0], Tensor) and args[0].dim() == 4:
        return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])
    return None


def use_channels_last(net: nn.Module) -> nn.Module:
    """Store ``net``'s 4-D parameters and buffers channels_last and feed it channels_last images
    (in place, idempotent; returns ``net``). Outputs equal the contiguous network's up to rounding."""
    net.to(memory_format=torch.channels_last)
    if getattr(net, "_channels_last_hook", None) is None:
        net._channels_last_hook = net.register_forward_pre_hook(_channels_last_input)
    return net


def graphs_needed(configs: int) -> int:
    """Dynamo cache entries per compiled frame for ``configs`` configurations."""
    return GRAPHS_PER_CONFIG * max(1, configs) + GRAPH_MARGIN


def raise_recompile_limits(configs: int) -> int:
    """Raise Dynamo's per-frame (and accumulated) cache limits to cover ``configs`` configurations;
    never lowers them. Returns the per-frame limit now in force."""
    dynamo = torch._dynamo.config
    needed = graphs_needed(configs)
    dynamo.cache_size_limit = max(dynamo.cache_size_limit, needed)
    if hasattr(dynamo, "accumulated_cache_size_limit"):  # every frame together (net, hooks)
        dynamo.accumulated_cache_size_limit = max(dynamo.accumulated_cache_size_limit, 4 * needed)
    return dynamo.cache_size_limit


def compile_switchable(net: nn.Module, configs: Sequence[SubnetConfig], **kwargs) -> nn.Module:
    """Compile ``net`` in place with one static graph per configuration (``configs``: every
    configuration it will run; ``kwargs`` go to ``torch.compile``). Returns ``net``."""
    raise_recompile_limits(len(set(configs)))
    net.compile(dynamic=False, **kwargs)
    return net
