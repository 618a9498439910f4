"""RS-Nets (Wang et al., ECCV 2020; github yikaiw/RS-Nets, ``non-quantization/``) -> ``method=rsnet``.

Official layout (``models/imagenet/parallel.py``, ``parallel_resnet.py``, ``parallel_mobilenetv2.py``,
``imagenet.py``), one network run on a list of S inputs:

- every conv / linear is wrapped once: ``<path>.module.weight`` (``.bias`` for the classifier);
- every BN is ``BatchNorm2dParallel``: ``<path>.bn_0 .. bn_{S-1}``, set ``i`` normalising the input
  of resolution ``sizes[i]`` (``--sizes``, default ``[224, 192, 160, 128, 96]``) -> our private BN
  set of that resolution (ours are ordered highest first; any official order is mapped);
- ``alpha`` ``(S,)``, registered on the model by ``imagenet.py``: ensemble weights
  ``softmax(alpha)`` -> our ``method.alpha`` (same order mapping);
- paths: ResNets as ours (torchvision's); MobileNetV2 ``features.0`` (stem), ``features.1..17``
  (``conv.<i>`` Sequential, activations counted), ``conv`` (the 1x1 to 1280) -> our ``features.18``,
  ``classifier`` -> our ``classifier.1``.

Their data loaders feed ``ToTensor()`` images without mean/std normalisation, so the checkpoint
stores mean 0 / std 1 and the ``rsnets`` data protocol.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..layers.private_bn import PrivateBatchNorm2d
from .common import SEQUENTIAL_INDICES, Converted, Entry, Target, bn_entries, build_target, copy_into, leaves

MODELS = ("resnet18", "resnet50", "mobilenetv2")


def official_order(sizes: Sequence[int], resolutions: Sequence[int]) -> list[int]:
    """``order[i]``: our index (highest first) of the official set ``i`` (resolution ``sizes[i]``)."""
    return [list(resolutions).index(s) for s in sizes]


def layer_paths(net: nn.Module, model: str) -> list[tuple[str, nn.Module]]:
    """``(official module path, our layer)`` for every conv, BN and linear of ``net``."""
    if model != "mobilenetv2":
        return list(leaves(net))
    out = []
    last = len(net.features) - 1
    for i, block in enumerate(net.features):
        for j, (path, layer) in enumerate(leaves(block)):
            if i == 0:
                out.append((f"features.0.{path}", layer))
            elif i == last:
                out.append((f"conv.{path}", layer))
            else:
                out.append((f"features.{i}.conv.{SEQUENTIAL_INDICES[j]}", layer))
    out.append(("classifier", net.classifier[1]))
    return out


def layer_entries(path: str, layer: nn.Module, order: list[int]) -> list[Entry]:
    """The official tensors of one wrapped layer (plain conv/linear or a parallel BN)."""
    if isinstance(layer, PrivateBatchNorm2d):
        return [e for i, k in enumerate(order) for e in bn_entries(f"{path}.bn_{i}", layer.sets[k])]
    if isinstance(layer, (nn.Conv2d, nn.Linear)):
        linear = isinstance(layer, nn.Linear)
        out = [Entry(f"{path}.module.weight", tuple(layer.weight.shape), copy_into(layer.weight), classifier=linear)]
        if layer.bias is not None:
            out.append(Entry(f"{path}.module.bias", tuple(layer.bias.shape), copy_into(layer.bias), classifier=linear))
        return out
    raise TypeError(f"rsnets: no official layout for {path} ({type(layer).__name__})")


def alpha_entry(alpha: nn.Parameter, order: list[int]) -> Entry:
    @torch.no_grad()
    def write(value: Tensor) -> None:
        for i, k in enumerate(order):
            alpha[k] = value[i]

    return Entry("alpha", (len(order),), write)


def target(model: str, sizes: Sequence[int], num_classes: int, normalize: str | None) -> Target:
    return Target("rsnet", model, sorted(sizes, reverse=True), num_classes, {}, {}, protocol="rsnets",
                  normalize=normalize or "none")


def convert(state: dict[str, Tensor], model: str, sizes: Sequence[int], num_classes: int,
            normalize: str | None = None):
    """Build our RS-Net for ``sizes`` (the official ``--sizes`` in their order) and the entries that
    fill it from ``state``."""
    tgt = target(model, sizes, num_classes, normalize)
    method, net, method_kwargs, model_cfg = build_target(tgt)
    order = official_order(sizes, tgt.resolutions)
    entries = [e for path, layer in layer_paths(net.net, model) for e in layer_entries(path, layer, order)]
    entries.append(alpha_entry(method.alpha, order))
    return Converted(tgt, method, net, method_kwargs, model_cfg, entries, {})
