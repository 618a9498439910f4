"""What every converter shares: reading a published file, building our network, matching its keys.

A format module (:mod:`.rsnets`, :mod:`.san`, :mod:`.slimmable`) builds OUR network for the file
and lists, for every tensor the official state dict holds, an :class:`Entry`: the official key, the
shape the official model class gives it for this architecture, and where its values go in our
network. :func:`apply_entries` checks the file against that list (the first missing key, shape
mismatch or unexpected key is one line naming it and what was expected) before anything is copied.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..cli.config_defaults import config_defaults
from ..errors import ConfigError
from ..layers.calibration import CalibratedStatsMixin
from ..layers.contracts import SwitchableLeaf
from ..methods import build_method
from ..models import ModelConfig, create_model
from ..models.registry import has_small_input_stem
from ..switch import SubnetConfig
from ..user_files import read_torch_file

WRAPPER_KEYS = ("state_dict", "model", "net", "model_state_dict")  # training checkpoints of the repositories
PREFIXES = ("module.",)  # DataParallel / DistributedDataParallel


class ConvertError(ConfigError):
    """A file that does not fit the requested format and architecture (one line)."""


# ------------------------------------------------------------------------------------ reading
def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """The tensors of a published file: a bare state dict or a training checkpoint holding one under
    ``state_dict``/``model`` (DataParallel's ``module.`` prefix removed). Read with
    ``torch.load(weights_only=True)``; a file that needs arbitrary unpickling is refused."""
    p = Path(path)
    if not p.is_file():
        raise ConvertError(f"src: no file at {p}; give the path of the published .pth/.pt/.tar file")
    obj = read_torch_file(p, "src", "re-save its state dict with torch.save(model.state_dict(), ...)",
                          error=ConvertError)
    state = unwrap(obj, p)
    return strip_prefix(state)


def unwrap(obj: Any, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, Tensor) for v in inner.values()):
                return dict(inner)
        tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
        if tensors and len(tensors) == len(obj):
            return dict(obj)
    raise ConvertError(f"src: {path} holds no state dict (neither a dict of tensors nor one under "
                       f"{', '.join(repr(k) for k in WRAPPER_KEYS)})")


def strip_prefix(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Remove a ``module.`` prefix carried by every key (DataParallel / DDP, possibly nested)."""
    for prefix in PREFIXES:
        while state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


# ------------------------------------------------------------------------------------ entries
@dataclass
class Entry:
    """One tensor of the official state dict.

    ``write``: copies the (checked) tensor into our network; ``None`` for tensors the official model
    holds but never uses (accepted and dropped). ``required=False``: may be absent (BN counters).
    ``classifier``: its first dimension is the class count (a mismatch suggests ``num_classes=``).
    """

    key: str
    shape: tuple[int, ...]
    write: Callable[[Tensor], None] | None
    required: bool = True
    classifier: bool = False


def copy_into(target: Tensor) -> Callable[[Tensor], None]:
    """A writer copying a tensor of ``target.numel()`` values into ``target`` (reshaped, cast)."""

    @torch.no_grad()
    def write(value: Tensor) -> None:
        target.copy_(value.reshape(target.shape).to(target.dtype))

    return write


def bn_entries(prefix: str, bn: nn.BatchNorm2d) -> list[Entry]:
    """The five tensors of an official ``nn.BatchNorm2d`` copied into ``bn`` (same shapes)."""
    n = (bn.num_features,)
    return [Entry(f"{prefix}.{name}", n, copy_into(getattr(bn, name)))
            for name in ("weight", "bias", "running_mean", "running_var")] + [
        Entry(f"{prefix}.num_batches_tracked", (), copy_into(bn.num_batches_tracked), required=False)]


def stats_writer(layer: CalibratedStatsMixin, configs: Sequence[SubnetConfig], which: str,
                 pending: dict) -> Callable[[Tensor], None]:
    """A writer storing a running mean (``which="mean"``) or variance as ``layer``'s recalibrated
    statistics for every configuration of ``configs`` (committed by :func:`commit_stats`)."""

    def write(value: Tensor) -> None:
        slot = pending.setdefault((id(layer), tuple(c.key() for c in configs)), (layer, configs, {}))
        slot[2][which] = value.detach().float().clone()

    return write


def commit_stats(pending: dict) -> None:
    """Store the collected ``(mean, var)`` pairs as recalibrated statistics."""
    for layer, configs, stats in pending.values():
        for config in configs:
            layer.calibrated[config.key()] = (stats["mean"], stats["var"])


def apply_entries(state: Mapping[str, Tensor], entries: Sequence[Entry], label: str) -> None:
    """Check ``state`` against ``entries`` (missing key, wrong shape, unexpected key: the first one
    is a one-line :class:`ConvertError`), then write every tensor into the network."""
    expected = {e.key: e for e in entries}
    unexpected = [k for k in state if k not in expected]
    for e in entries:
        if e.key not in state:
            if not e.required:
                continue
            hint = f"; the file has {len(unexpected)} unexpected key(s), first {unexpected[0]!r}" if unexpected else ""
            raise ConvertError(f"src: missing key {e.key!r} (shape {shape_text(e.shape)}) that {label} expects{hint}")
        got = tuple(state[e.key].shape)
        if got != e.shape:
            hint = f" (a classifier with {got[0]} classes: pass num_classes={got[0]})" \
                if e.classifier and got[1:] == e.shape[1:] else ""
            raise ConvertError(f"src: key {e.key!r} has shape {shape_text(got)} but {label} expects "
                               f"{shape_text(e.shape)}{hint}")
    if unexpected:
        k = unexpected[0]
        raise ConvertError(f"src: unexpected key {k!r} (shape {shape_text(tuple(state[k].shape))}) for {label}; "
                           "check format=, model= and resolutions= / widths=")
    for e in entries:
        if e.write is not None and e.key in state:
            value = state[e.key]
            e.write(value.float() if value.is_floating_point() else value)


def shape_text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


# ------------------------------------------------------------------------------ our layers
def leaves(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """``(path, layer)`` of the convs, BNs and linears under ``module`` in definition order (a
    switchable layer counts as one leaf; activations, pooling and dropout are skipped)."""
    for name, child in module.named_children():
        path = f"{prefix}.{name}" if prefix else name
        if is_leaf_layer(child):
            yield path, child
        else:
            yield from leaves(child, path)


def is_leaf_layer(module: nn.Module) -> bool:
    if isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
        return True
    return isinstance(module, SwitchableLeaf)  # private BN, scale-conditioned conv, per-width BN


SEQUENTIAL_INDICES = (0, 1, 3, 4, 6, 7)  # conv, BN, (act), conv, BN, (act), conv, BN in nn.Sequential


def describe(fmt: str, model: str, resolutions: Sequence[int], widths: Sequence[float] | None = None) -> str:
    text = f"format={fmt} model={model} resolutions={list(resolutions)}"
    return text + (f" widths={[float(w) for w in widths]}" if widths is not None else "")


# ------------------------------------------------------------------------------- our network
@dataclass
class Target:
    """Our side of a conversion: the method and backbone (with the arguments that differ from
    their config files), the resolutions, and how images must be fed (data protocol, normalisation)."""

    method: str
    model: str
    resolutions: list[int]
    num_classes: int
    method_kwargs: dict[str, Any]
    model_kwargs: dict[str, Any]
    protocol: str
    normalize: str  # none | imagenet


@dataclass
class Converted:
    """A network built for a file, and the entries that fill it (see :func:`apply_entries`);
    ``pending``: statistics collected for :func:`commit_stats`."""

    target: Target
    method: nn.Module
    net: nn.Module
    method_kwargs: dict[str, Any]
    model_cfg: dict[str, Any]
    entries: list[Entry]
    pending: dict


def build_target(target: Target):
    """``(method, net, method_kwargs, model_cfg)``: built exactly as ``resnet_switch.train`` would
    with ``method=... model=...`` and the target's overrides, so the checkpoint resumes there.

    The published networks were trained with the ImageNet stem, so a backbone with a small-input
    stem gets ``small_input: false`` (a fact of the file, whatever the resolutions; the fine-tuning
    command line the converter prints carries it)."""
    model_cfg = {k: v for k, v in config_defaults("model", target.model).items() if k != "pretrained"}
    if has_small_input_stem(target.model):
        model_cfg["small_input"] = False
    model_cfg.update(target.model_kwargs)
    backbone = ModelConfig.from_config(model_cfg).backbone
    method_kwargs = {k: v for k, v in config_defaults("method", target.method).items() if k != "name"}
    method_kwargs.update(target.method_kwargs)
    method = build_method(target.method, target.resolutions, **method_kwargs)
    net = create_model(target.model, method=method, num_classes=target.num_classes, **backbone)
    return method.eval(), net.eval(), method_kwargs, {"name": target.model, **model_cfg}
