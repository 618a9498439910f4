"""Fine-tuning from a switchable checkpoint: ``model.init.ckpt=CKPT``.

The target network (built for this run's method, backbone and data) takes every tensor of the
checkpoint's network, layer by layer, so every switchable part is kept: private BN sets, SAN's
kernel generators, slimmable full-width weights and the stored (recalibrated) BN statistics. The
classifier is replaced by a fresh one when the class count differs (or ``model.init.classifier=replace``).
Training then starts fresh (new optimizer, schedule, epoch 0): this is not a resume (``ckpt_path``),
and unlike ``model.pretrained`` (a plain torchvision state dict copied into every set) it reads a
``resnet_switch.train`` checkpoint with its switchable structure.

What fits (anything else is refused with one line naming the field to change):

- the same backbone and architecture numbers (``model.name``, ``base_width``, ``small_input``,
  ``width_mult``, ``hidden``...; dropout may differ) and the same image channels;
- layers of the same family, whose parameters map one to one:
  ``plain``/``private_bn`` (individual, parallel, rsnet), ``san``, ``private_conv``, ``slimmable``
  (mutualnet, usnet; snet's per-width BN only from snet with the same ``method.widths``), with the
  same layer settings (``divisor``, SAN's ``meta``, ``meta_roles``, ``scale``);
- resolutions: a per-resolution BN set of the target takes the checkpoint's set of the same
  resolution, so every target resolution must be one of the checkpoint's, unless
  ``model.init.bn_mode=nearest|interpolate`` builds the missing sets from the checkpoint's (nearest set,
  or RS-Net sec. 4.3 linear interpolation of the two neighbours). A plain source BN fills every set;
  a shared target BN (``private_bn=false``) takes the set of the target's highest resolution.
  SAN's generators and slimmable layers hold no per-resolution tensors: any resolutions fit.
  ``private_conv`` needs the same resolutions;
- widths: slimmable weights are stored at full width, so any width range fits (widths below the
  checkpoint's smallest start from untrained slices, said in the log).

Method state (RS-Net's ensemble weights, MutualNet's width sampler) is not copied: the new task
learns its own. Stored BN statistics are kept for the configurations the run recalibrates at every
validation (slimmable methods' evaluation configurations) and dropped for the others, which would go
stale once the weights move.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..layers.calibration import calibratable_layers
from ..layers.contracts import SwitchableLeaf
from ..layers.private_bn import PrivateBatchNorm2d
from ..models.inference_policy import WidthRule
from ..models.switchable import SwitchableNet
from ..switch import BNBlend, SubnetConfig, SwitchState, interpolation_blend
from .checkpointing import CHECKPOINT_KEY, CheckpointError, load_checkpoint, rebuild_net

log = logging.getLogger(__name__)

INIT_BN_MODES = (None, "nearest", "interpolate")
CLASSIFIER_POLICIES = ("auto", "replace")
LAYER_FAMILIES = {"plain": "bn", "private_bn": "bn", "san": "san", "private_conv": "private_conv",
                  "slimmable": "slimmable"}
SPEC_NOT_ARCHITECTURE = ("name", "resolutions", "layers", "widths", "num_classes", "in_channels", "layer_kwargs",
                         "dropout")


def init_from_checkpoint(net: SwitchableNet, path: str | os.PathLike, method_name: str,
                         bn_mode: str | None = None, classifier: str = "auto",
                         keep_statistics: Sequence[SubnetConfig] | None = None) -> dict[str, Any]:
    """Copy the checkpoint at ``path`` into ``net`` (built for this run); returns a summary
    ``{tensors, classifier, replaced, remapped_bn, dropped_statistics}``. Raises a one-line
    ``ConfigError`` when it does not fit (see the module docstring).

    ``keep_statistics``: configurations whose stored (recalibrated) BN statistics are kept; the
    others are dropped. Training passes the configurations it recalibrates at every validation:
    statistics of any other configuration would go stale as soon as the weights move. ``None``
    keeps them all (the copied network then equals the checkpoint's everywhere)."""
    if bn_mode not in INIT_BN_MODES:
        raise ConfigError(f"model.init.bn_mode: unknown {bn_mode!r}; choose null, nearest or interpolate")
    if classifier not in CLASSIFIER_POLICIES:
        raise ConfigError(f"model.init.classifier: unknown {classifier!r}; choose auto or replace")
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as err:
        raise CheckpointError(str(err).replace("ckpt:", "model.init.ckpt:", 1)) from None
    meta = ckpt[CHECKPOINT_KEY]
    src_spec, src_method = dict(meta["net"]), meta["method"]["name"]
    check_fits(src_spec, net.spec, src_method, method_name, bn_mode)
    source = rebuild_net(ckpt)
    head = classifier_name(net)
    old_classes, new_classes = src_spec["num_classes"], net.spec["num_classes"]
    replace = classifier == "replace" or old_classes != new_classes
    copied, remapped = transfer_layers(source, net, skip={head} if replace else set(), bn_mode=bn_mode)
    dropped = 0 if keep_statistics is None else drop_statistics(net, keep_statistics)
    verb = "replaced" if replace else "kept"
    log.info("init_from: %s tensors copied from %s (method=%s, model=%s, resolutions %s, widths %s)", copied,
             path, src_method, src_spec["name"], src_spec["resolutions"], src_spec["widths"])
    log.info("init_from: classifier %s %s (%s -> %s classes)", head, verb, old_classes, new_classes)
    if remapped:
        log.info("init_from: %s BN layers re-indexed to resolutions %s from the checkpoint's %s (%s)",
                 remapped, list(net.spec["resolutions"]), src_spec["resolutions"], bn_mode or "same resolutions")
    if dropped:
        log.info("init_from: stored BN statistics of %s configurations dropped (this run does not recalibrate "
                 "them: they would go stale)", dropped)
    src_widths = WidthRule.of_spec(src_spec)
    if src_widths.slimmable and min(net.spec["widths"]) < src_widths.lowest:
        log.info("init_from: widths below %s were not trained in the checkpoint; they start from its slices",
                 src_widths.lowest)
    return {"tensors": copied, "classifier": head, "replaced": replace, "remapped_bn": remapped,
            "dropped_statistics": dropped}


# ------------------------------------------------------------------------------ what fits
def check_fits(src: dict[str, Any], tgt: dict[str, Any], src_method: str, tgt_method: str,
               bn_mode: str | None) -> None:
    """One-line ``ConfigError`` when a checkpoint's network spec ``src`` cannot initialise ``tgt``."""
    where = "model.init.ckpt: the checkpoint's"
    if src["name"] != tgt["name"]:
        raise ConfigError(f"{where} backbone is {src['name']}, this run's model.name={tgt['name']}; "
                          f"use model={src['name']}")
    # only the settings both specs hold: a file written before a setting existed used its default
    for key in sorted((set(src) & set(tgt)) - set(SPEC_NOT_ARCHITECTURE)):
        if src.get(key) != tgt.get(key):
            raise ConfigError(f"{where} {src['name']} has {key}={src.get(key)!r}, this run has "
                              f"{tgt.get(key)!r}; use model.{key}={src.get(key)!r}")
    if src["in_channels"] != tgt["in_channels"]:
        raise ConfigError(f"{where} network takes {src['in_channels']}-channel images, this data set has "
                          f"{tgt['in_channels']}; fine-tune on data with {src['in_channels']} channel(s)")
    src_layers, tgt_layers = src["layers"], tgt["layers"]
    if LAYER_FAMILIES.get(src_layers) != LAYER_FAMILIES.get(tgt_layers):
        raise ConfigError(f"{where} method={src_method} has {src_layers} layers, method={tgt_method} needs "
                          f"{tgt_layers}: their parameters do not map; fine-tune with method={src_method} "
                          "or a method with the same layers")
    src_widths, tgt_widths = WidthRule.of_spec(src), WidthRule.of_spec(tgt)
    if src_widths.per_width_bn != tgt_widths.per_width_bn:
        kinds = ("one BN shared by all widths", "one BN set per width (snet)")
        raise ConfigError(f"{where} layers have {kinds[src_widths.per_width_bn]}, this run's have "
                          f"{kinds[tgt_widths.per_width_bn]}; fine-tune with method={src_method} or a method "
                          "with the same BN")
    src_kw, tgt_kw = dict(src.get("layer_kwargs") or {}), dict(tgt.get("layer_kwargs") or {})
    for key in sorted((set(src_kw) | set(tgt_kw)) - {"private_bn"}):
        if src_kw.get(key) != tgt_kw.get(key):
            raise ConfigError(f"{where} layers have {key}={src_kw.get(key)!r}, this run's "
                              f"{tgt_kw.get(key)!r}; set method.{key} as in method={src_method}")
    if src_widths.per_width_bn and src_widths.trained != tgt_widths.trained:
        raise ConfigError(f"{where} S-Net has BN sets for widths {src['widths']}, this run {tgt['widths']}; "
                          f"use method.widths={src['widths']}")
    missing = [r for r in tgt["resolutions"] if r not in src["resolutions"]]
    if not missing or not has_private_bn(src):
        return
    if src_layers == "private_conv":
        raise ConfigError(f"{where} private convs are per resolution {src['resolutions']}, this run trains "
                          f"{tgt['resolutions']}; use data.resolutions={src['resolutions']}")
    if bn_mode is None:
        raise ConfigError(f"{where} private BN sets are for resolutions {src['resolutions']}, this run trains "
                          f"{missing} too; use data.resolutions within them, or model.init.bn_mode=interpolate "
                          "(or nearest) to build the missing sets from the checkpoint's")


def has_private_bn(spec: dict[str, Any]) -> bool:
    """Whether the network keeps one BN set per training resolution."""
    if spec["layers"] in ("private_bn", "private_conv", "san"):
        return bool((spec.get("layer_kwargs") or {}).get("private_bn", True))
    return False


def classifier_name(net: SwitchableNet) -> str:
    """Name (inside ``net.net``) of the classifier: the last linear layer giving the classes."""
    names = [name for name, m in net.net.named_modules()
             if isinstance(m, nn.Linear) and m.out_features == net.spec["num_classes"]]
    if not names:
        raise ConfigError(f"model: {net.spec['name']} has no linear layer with {net.spec['num_classes']} outputs")
    return names[-1]


# --------------------------------------------------------------------------- the copying
def layer_units(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """``(name, layer)`` for every layer holding state: switchable layers (:class:`SwitchableLeaf`) as
    one unit, other modules with their own parameters or buffers; containers are walked."""
    for name, child in module.named_children():
        full = f"{prefix}{name}"
        own = any(True for _ in child.parameters(recurse=False)) or any(True for _ in child.buffers(recurse=False))
        if isinstance(child, SwitchableLeaf) or own:
            yield full, child
        else:
            yield from layer_units(child, f"{full}.")


def is_bn(layer: nn.Module) -> bool:
    return type(layer) is nn.BatchNorm2d or isinstance(layer, PrivateBatchNorm2d)


@torch.no_grad()
def transfer_layers(source: SwitchableNet, target: SwitchableNet, skip: set[str] = frozenset(),
                    bn_mode: str | None = None) -> tuple[int, int]:
    """Copy every layer of ``source`` into the same-named layer of ``target`` (except ``skip``);
    BN layers whose sets differ (resolutions, plain <-> private) are re-indexed by resolution.
    Returns ``(tensors copied, BN layers re-indexed)``."""
    src_layers = dict(layer_units(source.net))
    src_res, tgt_res = source.state.train_resolutions, target.state.train_resolutions
    copied = remapped = 0
    for name, tgt in layer_units(target.net):
        if name in skip:
            continue
        src = src_layers.get(name)
        if src is None:
            raise ConfigError(f"model.init.ckpt: the checkpoint has no layer {name}; it was built differently")
        if is_bn(src) and is_bn(tgt) and (type(src) is not type(tgt) or src_res != tgt_res):
            copied += copy_bn_by_resolution(src, source.state, tgt, tgt_res, bn_mode)
            remapped += 1
            continue
        src_state, tgt_state = src.state_dict(), tgt.state_dict()
        if type(src) is not type(tgt) or any(
                k not in src_state or not _same_shape(src_state[k], v) for k, v in tgt_state.items()):
            raise ConfigError(f"model.init.ckpt: layer {name} is {_describe(src)} in the checkpoint and "
                              f"{_describe(tgt)} here; their parameters do not map")
        tgt.load_state_dict(src_state)
        copied += sum(isinstance(v, torch.Tensor) for v in tgt_state.values())
    return copied, remapped


def copy_bn_by_resolution(src: nn.Module, src_state: SwitchState, tgt: nn.Module, tgt_res, bn_mode) -> int:
    """Each target set (one per resolution of ``tgt_res``; one shared set: the highest) takes the
    source's BN at its resolution: its own set, the nearest or the interpolation of two."""
    sets = list(tgt.sets) if isinstance(tgt, PrivateBatchNorm2d) else [tgt]
    for bn, r in zip(sets, tgt_res):
        if type(src) is nn.BatchNorm2d:
            bn.load_state_dict(src.state_dict())
            continue
        blend = source_blend(src_state, r, bn_mode)
        weight, bias, mean, var = src.blended(blend)
        for key, value in (("weight", weight), ("bias", bias), ("running_mean", mean), ("running_var", var)):
            getattr(bn, key).copy_(value)
        bn.num_batches_tracked.copy_(src.sets[blend.indices[0]].num_batches_tracked)
    return 5 * len(sets)


def drop_statistics(net: SwitchableNet, keep: Sequence[SubnetConfig]) -> int:
    """Remove stored BN statistics of configurations not in ``keep``; returns how many were removed."""
    keys = {c.key() for c in keep}
    dropped: set[str] = set()
    for layer in calibratable_layers(net):
        for key in [k for k in layer.calibrated if k not in keys]:
            del layer.calibrated[key]
            dropped.add(key)
    return len(dropped)


def source_blend(state: SwitchState, resolution: int, bn_mode: str | None) -> BNBlend:
    own = state.train_index(resolution)
    if own is not None:
        return BNBlend((own,), (1.0,))
    if bn_mode == "interpolate":
        return interpolation_blend(state.train_resolutions, resolution)
    return BNBlend((state.nearest_index(resolution),), (1.0,))


def _same_shape(a: Any, b: Any) -> bool:
    return not isinstance(b, torch.Tensor) or (isinstance(a, torch.Tensor) and a.shape == b.shape)


def _describe(layer: nn.Module) -> str:
    shapes = {k: tuple(v.shape) for k, v in list(layer.state_dict().items())[:1] if isinstance(v, torch.Tensor)}
    return f"a {type(layer).__name__}{' ' + str(shapes) if shapes else ''}"
