"""US-Nets and S-Nets (github JiahuiYu/slimmable_networks) and MutualNet (github taoyang1122/MutualNet)
-> ``method=usnet``, ``snet``, ``mutualnet``.

The two repositories share one layout (MutualNet grew from slimmable_networks): a network at its
largest width whose layers slice the leading channels at run time.

- convs / linears: full-width ``weight`` (``bias`` for the classifier), same shapes as ours;
- paths: ``features.0`` stem (conv ``.0``, BN ``.1``); block ``k`` is ``features.k.body.<i>`` with
  its activations counted (MobileNetV1: dw conv/BN ``0, 1``, pw ``3, 4``; MobileNetV2: ``0, 1, 3, 4
  (, 6, 7)``; ResNet-50 bottleneck: ``0, 1, 3, 4, 6, 7`` and the projection ``shortcut.0/.1``);
  MobileNetV2's 1x1 to 1280 is ``features.18``; the classifier ``classifier.0``;
- US-Nets / MutualNet BN (``USBatchNorm2d``): shared affine ``weight``/``bias`` (full width) and the
  statistics of width ``width_mult_list[i]`` in ``bn.<i>.running_mean/var`` (their leading
  channels) -> our shared slimmable BN, the statistics stored as recalibrated statistics of
  ``(width, resolution)`` for every resolution converted (the official model uses them at any input
  size; MutualNet's own test recomputes them per (width, resolution): ``evaluate recalibrate=true``);
- S-Nets BN (``SwitchableBatchNorm2d``): ``bn.<i>`` is a whole BN (affine + statistics) of width
  ``width_mult_list[i]`` -> our private BN set of that width;
- MobileNetV2's last BN is a plain ``nn.BatchNorm2d`` used at every width (copied to each).

Architecture numbers of their code kept by options stored in the checkpoint: MobileNetV1 with
ReLU6 (``model.act=relu6``); channel rounding ``make_divisible(C * w, 8)`` with ``min_value=1``
(``method.min_channels=1``); MutualNet's ResNet-50 rounds its stem and bottleneck-inner channels as
a quarter of a 4x wider dimension (``method.role_ratios={stem: 0.25, mid: 0.25}``); MutualNet builds
every layer at ``width_mult_range[1]`` (its wide MobileNetV1 at 2.0: ``model.width_mult=2``, widths
then relative to it: their 1.6 is our 0.8).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..layers.slimmable import SlimmableBatchNorm2d, WidthPrivateBatchNorm2d
from ..switch import SubnetConfig
from .common import (
    SEQUENTIAL_INDICES,
    Converted,
    ConvertError,
    Entry,
    Target,
    bn_entries,
    build_target,
    copy_into,
    leaves,
    stats_writer,
)

MODELS = {"usnet": ("mobilenetv1", "mobilenetv2"), "snet": ("mobilenetv1", "mobilenetv2", "resnet50"),
          "mutualnet": ("mobilenetv1", "mobilenetv2", "resnet50")}


def _steps(lo: float, hi: float, step: float) -> list[float]:
    return [round(lo + k * step, 6) for k in range(round((hi - lo) / step) + 1)]


# width_mult_list of the released configurations (apps/*.yml), the order of their bn.<i>
DEFAULT_WIDTHS = {
    ("usnet", "mobilenetv1"): _steps(0.25, 1.0, 0.025),
    ("usnet", "mobilenetv2"): _steps(0.35, 1.0, 0.025),
    ("snet", "mobilenetv1"): [0.25, 0.5, 0.75, 1.0],
    ("snet", "mobilenetv2"): [0.35, 0.5, 0.75, 1.0],
    ("snet", "resnet50"): [0.25, 0.5, 0.75, 1.0],
    ("mutualnet", "mobilenetv1"): [0.25, 1.0],
    ("mutualnet", "mobilenetv2"): [0.7, 0.9, 1.0],
    ("mutualnet", "resnet50"): [0.9, 1.0],
}
DEFAULT_RESOLUTIONS = {"usnet": [224], "snet": [224], "mutualnet": [224, 192, 160, 128]}
PROTOCOLS = {"usnet": "slimmable", "snet": "slimmable", "mutualnet": "mutualnet"}


# ------------------------------------------------------------------------------------- paths
def layer_paths(net: nn.Module, model: str) -> list[tuple[str, nn.Module]]:
    """``(official module path, our layer)`` for every conv, BN and linear of ``net``."""
    if model == "resnet50":
        return resnet_paths(net)
    out = []
    last = len(net.features) - 1
    for k, block in enumerate(net.features):
        for j, (path, layer) in enumerate(leaves(block)):
            if k == 0 or (model == "mobilenetv2" and k == last):
                out.append((f"features.{k}.{path}", layer))
            else:
                out.append((f"features.{k}.body.{SEQUENTIAL_INDICES[j]}", layer))
    out.append(("classifier.0", net.classifier[-1]))
    return out


def resnet_paths(net: nn.Module) -> list[tuple[str, nn.Module]]:
    out = [("features.0.0", net.conv1), ("features.0.1", net.bn1)]
    k = 0
    for s in range(1, net.num_stages + 1):
        for block in getattr(net, f"layer{s}"):
            k += 1
            for j, (path, layer) in enumerate(leaves(block)):
                if path.startswith("downsample."):
                    out.append((f"features.{k}.shortcut.{path.split('.')[1]}", layer))
                else:
                    out.append((f"features.{k}.body.{SEQUENTIAL_INDICES[j]}", layer))
    out.append(("classifier.0", net.fc))
    return out


# ----------------------------------------------------------------------------------- entries
class Widths:
    """The file's width list (official values, its ``bn.<i>`` order) and our relative widths."""

    def __init__(self, official: Sequence[float], width_mult: float, resolutions: Sequence[int]):
        self.official = [float(w) for w in official]
        self.ours = [SubnetConfig(1, w / width_mult).width for w in self.official]
        self.resolutions = list(resolutions)

    def configs(self, i: int) -> list[SubnetConfig]:
        return [SubnetConfig(r, self.ours[i]) for r in self.resolutions]

    def all_configs(self) -> list[SubnetConfig]:
        return [c for i in range(len(self.ours)) for c in self.configs(i)]


def layer_entries(path: str, layer: nn.Module, widths: Widths, pending: dict) -> list[Entry]:
    if isinstance(layer, WidthPrivateBatchNorm2d):
        return private_bn_entries(path, layer, widths, pending)
    if isinstance(layer, SlimmableBatchNorm2d):
        return shared_bn_entries(path, layer, widths, pending)
    if isinstance(layer, (nn.Conv2d, nn.Linear)):
        linear = isinstance(layer, nn.Linear)
        out = [Entry(f"{path}.weight", tuple(layer.weight.shape), copy_into(layer.weight), classifier=linear)]
        if layer.bias is not None:
            out.append(Entry(f"{path}.bias", tuple(layer.bias.shape), copy_into(layer.bias), classifier=linear))
        return out
    raise TypeError(f"slimmable: no official layout for {path} ({type(layer).__name__})")


def both(*writers):
    def write(value: Tensor) -> None:
        for w in writers:
            w(value)

    return write


def plain_bn_entries(path: str, targets: Sequence[nn.BatchNorm2d], layer, configs, pending) -> list[Entry]:
    """An official plain ``nn.BatchNorm2d`` (used at every width): into each of ``targets``, its
    statistics stored for every configuration."""
    entries = []
    for e in bn_entries(path, targets[0]):
        name = e.key.rpartition(".")[2]
        writers = [copy_into(getattr(t, name)) for t in targets]
        if name in ("running_mean", "running_var"):
            writers.append(stats_writer(layer, configs, "mean" if name == "running_mean" else "var", pending))
        entries.append(Entry(e.key, e.shape, both(*writers), e.required))
    return entries


def shared_bn_entries(path: str, bn: SlimmableBatchNorm2d, widths: Widths, pending: dict) -> list[Entry]:
    if not bn.dim.slim:
        return plain_bn_entries(path, [bn], bn, widths.all_configs(), pending)
    full = (bn.num_features,)
    out = [Entry(f"{path}.weight", full, copy_into(bn.weight)), Entry(f"{path}.bias", full, copy_into(bn.bias))]
    for i, w in enumerate(widths.ours):
        c = (bn.dim.active(w),)
        out += [Entry(f"{path}.bn.{i}.running_mean", c, stats_writer(bn, widths.configs(i), "mean", pending)),
                Entry(f"{path}.bn.{i}.running_var", c, stats_writer(bn, widths.configs(i), "var", pending)),
                Entry(f"{path}.bn.{i}.num_batches_tracked", (), None, required=False)]
    return out


def private_bn_entries(path: str, bn: WidthPrivateBatchNorm2d, widths: Widths, pending: dict) -> list[Entry]:
    if not bn.dim.slim:
        return plain_bn_entries(path, list(bn.sets), bn, widths.all_configs(), pending)
    out = []
    for i, w in enumerate(widths.ours):
        target = bn.sets[bn.index_of_width[w]]
        for e in bn_entries(f"{path}.bn.{i}", target):
            name = e.key.rpartition(".")[2]
            if name in ("running_mean", "running_var"):
                e = Entry(e.key, e.shape, both(e.write, stats_writer(bn, widths.configs(i), name[8:], pending)),
                          e.required)
            out.append(e)
    return out


# ------------------------------------------------------------------------------------ target
def target(fmt: str, model: str, widths: Sequence[float], width_mult: float, resolutions: Sequence[int],
           num_classes: int, normalize: str | None) -> Target:
    ours = sorted({SubnetConfig(1, w / width_mult).width for w in widths}, reverse=True)
    if len(ours) != len(widths):
        raise ConvertError(f"widths: {list(widths)} has duplicates; give the file's width_mult_list")
    method_kwargs: dict = {"min_channels": 1}
    if fmt == "snet":
        method_kwargs["widths"] = ours
    else:
        if len(ours) < 2:
            raise ConvertError(f"widths: format={fmt} needs the file's width_mult_list (two or more widths), got "
                               f"{list(widths)}")
        method_kwargs["width_range"] = [ours[-1], ours[0]]
    if fmt == "mutualnet" and model == "resnet50":
        method_kwargs["role_ratios"] = {"stem": 0.25, "mid": 0.25}
    model_kwargs: dict = {}
    if model == "mobilenetv1":
        model_kwargs["act"] = "relu6"
    if width_mult != 1.0:
        model_kwargs["width_mult"] = width_mult
    return Target(fmt, model, sorted(resolutions, reverse=True), num_classes, method_kwargs, model_kwargs,
                  protocol=PROTOCOLS[fmt], normalize=normalize or "imagenet")


def convert(state: dict[str, Tensor], fmt: str, model: str, widths: Sequence[float] | None,
            resolutions: Sequence[int] | None, num_classes: int, width_mult: float | None = None,
            normalize: str | None = None):
    """Our slimmable network and the entries that fill it from ``state``; ``widths``: the file's
    ``width_mult_list`` in its order (official values); ``width_mult``: their largest width when above
    1 (default ``max(1, max(widths))``)."""
    widths = list(widths) if widths is not None else DEFAULT_WIDTHS[(fmt, model)]
    resolutions = list(resolutions) if resolutions is not None else DEFAULT_RESOLUTIONS[fmt]
    if not widths or any(isinstance(w, bool) or not isinstance(w, (int, float)) or w <= 0 for w in widths):
        raise ConvertError(f"widths: need positive widths (the file's width_mult_list), got {widths}")
    width_mult = float(width_mult) if width_mult is not None else max(1.0, float(max(widths)))
    if max(widths) > width_mult + 1e-9:
        raise ConvertError(f"model.width_mult: {width_mult:g} is below the largest width {max(widths):g}; "
                           "give the largest width the network was built for")
    tgt = target(fmt, model, widths, width_mult, resolutions, num_classes, normalize)
    method, net, method_kwargs, model_cfg = build_target(tgt)
    table = Widths(widths, width_mult, tgt.resolutions)
    pending: dict = {}
    entries = [e for path, layer in layer_paths(net.net, model) for e in layer_entries(path, layer, table, pending)]
    return Converted(tgt, method, net, method_kwargs, model_cfg, entries, pending)
