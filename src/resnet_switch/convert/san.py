"""SAN (Li et al., ECCV 2020; github d-li14/SAN) -> ``method=san``, or ``method=individual``.

Official layout (``models/imagenet/meta_resnet.py``, ``meta_mobilenetv2.py``, ``parallel.py``):

- a meta conv is ``nn.Linear(1, N)`` (``N = Cout * Cin/groups * k * k``): ``weight (N, 1)``,
  ``bias (N,)``; its kernel at scale ``s`` is ``(s * weight + bias).resize(Cout, Cin/groups, k, k)``,
  i.e. our linear meta-learner (SAN eq. 2) with ``W = weight.view(kernel)``, ``b = bias.view(kernel)``;
- the scale of the i-th entry of ``--sizes`` is ``0.7 - 0.1 i`` whatever the resolution: equal to
  our ``0.1 * S / 32`` for the default ``[224, 192, 160, 128, 96]``; for another list the official
  encodings are stored in the checkpoint (``method.encodings``) so outputs still match;
- ResNets: plain stem ``conv1.module``, meta ``layerX.Y.fc1/fc2`` (+ ``fc3`` for the Bottleneck's
  third conv) and the projection shortcut ``fc3`` (BasicBlock) / ``fc4`` (Bottleneck) with its BN
  ``bn3`` / ``bn4``; ``_make_layer`` also builds a ``downsample`` conv + BN that ``forward`` never
  calls (accepted, dropped); classifier ``fc.module``;
- MobileNetV2: every conv is meta: stem ``features.0.fc``/``.bn``, blocks ``fc1, bn1, fc2, bn2
  (, fc3, bn3)``, last 1x1 ``conv.fc``/``conv.bn``; classifier ``classifier.module``;
- BN: ``bn_i`` -> our private set of ``sizes[i]``.

The individually trained per-resolution ResNets of the SAN README are plain torchvision files
(``conv1.weight``, ``layer1.0.conv1.weight``, ...): they become ``method=individual`` at the one
resolution given. SAN's loaders feed ``ToTensor()`` images without normalisation (mean 0, std 1
stored, ``san`` data protocol).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from ..layers.private_bn import PrivateBatchNorm2d
from ..layers.scale_conv import ScaleConv2d, scale_encoding
from .common import Converted, ConvertError, Entry, Target, bn_entries, build_target, copy_into, leaves
from .rsnets import official_order

MODELS = ("resnet18", "resnet50", "mobilenetv2")
DEFAULT_SIZES = (224, 192, 160, 128, 96)


def official_encodings(sizes: Sequence[int]) -> list[float]:
    """The official scale of ``sizes[i]``: ``0.7 - 0.1 i`` (as its code computes it)."""
    return [0.7 - 0.1 * i for i in range(len(sizes))]


def is_torchvision_layout(state: dict[str, Tensor]) -> bool:
    return "conv1.weight" in state and "layer1.0.conv1.weight" in state


def resnet_paths(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(official path, our layer)``: block convs become ``fcK``, the projection shortcut ``fc3``/``fc4``
    with BN ``bn3``/``bn4`` (BasicBlock / Bottleneck)."""
    out = []
    for path, layer in leaves(net):
        parts = path.split(".")
        if parts[0].startswith("layer") and len(parts) >= 3:
            block = net.get_submodule(".".join(parts[:2]))
            extra = 4 if hasattr(block, "conv3") else 3
            name = parts[2]
            if name == "downsample":
                name = f"fc{extra}" if parts[3] == "0" else f"bn{extra}"
            elif name.startswith("conv"):
                name = "fc" + name[len("conv"):]
            path = ".".join(parts[:2] + [name])
        out.append((path, layer))
    return out


def mobilenetv2_paths(net: nn.Module) -> list[tuple[str, nn.Module]]:
    out = []
    last = len(net.features) - 1
    for i, block in enumerate(net.features):
        for j, (_, layer) in enumerate(leaves(block)):
            if i in (0, last):
                prefix = "features.0" if i == 0 else "conv"
                out.append((f"{prefix}.{'fc' if j == 0 else 'bn'}", layer))
            else:
                out.append((f"features.{i}.{'fc' if j % 2 == 0 else 'bn'}{j // 2 + 1}", layer))
    out.append(("classifier", net.classifier[1]))
    return out


def layer_entries(path: str, layer: nn.Module, order: list[int]) -> list[Entry]:
    if isinstance(layer, ScaleConv2d):
        n = math.prod(layer.kernel_shape)
        return [Entry(f"{path}.weight", (n, 1), copy_into(layer.meta.weight)),
                Entry(f"{path}.bias", (n,), copy_into(layer.meta.bias))]
    if isinstance(layer, PrivateBatchNorm2d):
        return [e for i, k in enumerate(order) for e in bn_entries(f"{path}.bn_{i}", layer.sets[k])]
    if isinstance(layer, (nn.Conv2d, nn.Linear)):
        linear = isinstance(layer, nn.Linear)
        out = [Entry(f"{path}.module.weight", tuple(layer.weight.shape), copy_into(layer.weight), classifier=linear)]
        if layer.bias is not None:
            out.append(Entry(f"{path}.module.bias", tuple(layer.bias.shape), copy_into(layer.bias), classifier=linear))
        return out
    raise TypeError(f"san: no official layout for {path} ({type(layer).__name__})")


def unused_downsample_entries(net: nn.Module, num_sets: int) -> list[Entry]:
    """The ``downsample`` conv + parallel BN that the official blocks build but never run."""
    out = []
    for name, module in net.named_modules():
        shortcut = getattr(module, "downsample", None)
        if isinstance(shortcut, nn.Sequential):
            conv = shortcut[0]
            shape = (conv.out_channels, conv.in_channels, 1, 1)
            out.append(Entry(f"{name}.downsample.0.module.weight", shape, None, required=False))
            for i in range(num_sets):
                for t in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                    out.append(Entry(f"{name}.downsample.1.bn_{i}.{t}", () if t == "num_batches_tracked"
                                     else (conv.out_channels,), None, required=False))
    return out


def target(model: str, sizes: Sequence[int], num_classes: int, normalize: str | None) -> Target:
    resolutions = sorted(sizes, reverse=True)
    method_kwargs = {}
    encodings = official_encodings(sizes)
    if any(abs(e - scale_encoding(s)) > 1e-9 for e, s in zip(encodings, sizes)):
        by_resolution = dict(zip(sizes, encodings))
        method_kwargs["encodings"] = [by_resolution[r] for r in resolutions]
    return Target("san", model, resolutions, num_classes, method_kwargs, {}, protocol="san",
                  normalize=normalize or "none")


def convert(state: dict[str, Tensor], model: str, sizes: Sequence[int], num_classes: int,
            normalize: str | None = None):
    """Our SAN (or I-Net for a torchvision-layout file) and the entries that fill it from ``state``."""
    if is_torchvision_layout(state):
        return convert_individual(state, model, sizes, num_classes, normalize)
    tgt = target(model, sizes, num_classes, normalize)
    method, net, method_kwargs, model_cfg = build_target(tgt)
    order = official_order(sizes, tgt.resolutions)
    paths = mobilenetv2_paths(net.net) if model == "mobilenetv2" else resnet_paths(net.net)
    entries = [e for path, layer in paths for e in layer_entries(path, layer, order)]
    if model != "mobilenetv2":
        entries += unused_downsample_entries(net.net, len(order))
    return Converted(tgt, method, net, method_kwargs, model_cfg, entries, {})


def convert_individual(state: dict[str, Tensor], model: str, sizes: Sequence[int], num_classes: int,
                       normalize: str | None):
    """A plain torchvision-layout network (SAN's per-resolution baselines) -> ``method=individual``."""
    if model not in ("resnet18", "resnet50"):
        raise ConvertError(f"model: {model} is not a torchvision layout SAN published; this file is a plain "
                           "torchvision ResNet, use model=resnet18 or model=resnet50")
    if len(sizes) != 1:
        raise ConvertError(f"resolutions: a plain (individually trained) network has one resolution, got "
                           f"{list(sizes)}; give the one it was trained at, e.g. resolutions=[160]")
    tgt = Target("individual", model, list(sizes), num_classes, {}, {}, protocol="san", normalize=normalize or "none")
    method, net, method_kwargs, model_cfg = build_target(tgt)
    entries = [Entry(key, tuple(tensor.shape), copy_into(tensor), required=not key.endswith("num_batches_tracked"),
                     classifier=key.startswith("fc."))
               for key, tensor in net.net.state_dict().items()]  # tensors share the parameters' storage
    return Converted(tgt, method, net, method_kwargs, model_cfg, entries, {})
