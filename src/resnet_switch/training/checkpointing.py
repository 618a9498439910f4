"""Checkpoints that carry everything needed to rebuild the network, written atomically.

A Lightning checkpoint of ours holds, under ``"resnet_switch"``, the network spec (backbone,
resolutions, widths, layer factory and its numbers such as the rounding divisor, classes,
channels), the method's name and arguments, and the data facts (normalisation). Everything is plain
Python/tensors so ``torch.load(weights_only=True)`` reads it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ..errors import ConfigError
from ..models import create_model
from ..models.switchable import SwitchableNet
from ..user_files import read_torch_file

CHECKPOINT_KEY = "resnet_switch"
FORMAT_VERSION = 1


class CheckpointError(ConfigError):
    """A checkpoint that is missing, unreadable or does not fit what was asked."""


def checkpoint_meta(net: SwitchableNet, method_meta: dict[str, Any], run_meta: dict[str, Any]) -> dict[str, Any]:
    return {"format_version": FORMAT_VERSION, "net": dict(net.spec), "method": dict(method_meta),
            "run": dict(run_meta)}


def make_checkpoint(method, net: SwitchableNet, method_meta: dict[str, Any],
                    run_meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """A checkpoint dict with the layout ``resnet_switch.train`` writes (``state_dict`` keys
    ``net.*`` / ``method.*`` and the ``resnet_switch`` meta), without Lightning: for wrapping a net
    built or trained elsewhere (benchmarks, tests). Save it with ``torch.save``."""
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    state.update({f"method.{k}": v for k, v in method.state_dict().items()})
    return {"state_dict": state, CHECKPOINT_KEY: checkpoint_meta(net, method_meta, dict(run_meta or {}))}


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``) with one-line errors for bad files."""
    if not Path(path).is_file():
        raise CheckpointError(f"ckpt: no file at {path}; pass the path of a .ckpt written by resnet_switch.train")
    p = Path(path)
    ckpt = read_torch_file(p, "ckpt", "pass the path of a .ckpt written by resnet_switch.train", what="a checkpoint",
                           error=CheckpointError)
    if not isinstance(ckpt, dict) or CHECKPOINT_KEY not in ckpt:
        raise CheckpointError(f"ckpt: {p} was not written by resnet_switch.train (no '{CHECKPOINT_KEY}' entry)")
    return ckpt


def check_task(meta: dict[str, Any], task: str, field: str = "ckpt") -> None:
    """One line when a checkpoint of the other task (``run.task``; classification when absent) is given."""
    got = meta.get("run", {}).get("task", "classification")
    if got != task:
        how = "resnet_switch.detection.model.load_detector" if got == "detection" else "rebuild_from_checkpoint"
        raise CheckpointError(f"{field}: this is a task={got} checkpoint, not task={task}; load it with {how}")


def rebuild_from_checkpoint(ckpt: dict[str, Any]):
    """``(method, net, meta)`` rebuilt from a loaded checkpoint, weights loaded, in eval mode."""
    from ..methods import build_method  # local: methods import this module's users

    meta = ckpt[CHECKPOINT_KEY]
    check_task(meta, "classification")
    method_meta = dict(meta["method"])
    method = build_method(method_meta["name"], meta["net"]["resolutions"], **method_meta.get("kwargs", {}))
    net = rebuild_net(ckpt)
    state = ckpt["state_dict"]
    method.load_state_dict({k[len("method."):]: v for k, v in state.items() if k.startswith("method.")})
    return method.eval(), net, meta


def rebuild_net(ckpt: dict[str, Any]) -> SwitchableNet:
    """The checkpoint's switchable network alone, weights loaded, in eval mode."""
    net = create_model(**dict(ckpt[CHECKPOINT_KEY]["net"]))
    net.load_state_dict({k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")})
    return net.eval()


SPEC_FIELDS = {"widths": "method widths (method.width_range / method.widths)", "num_classes": "the data set's classes",
               "in_channels": "the data set's channels", "layers": "the method's layers"}


def check_compatible(meta: dict[str, Any], method: str, model: str, resolutions,
                     spec: dict[str, Any] | None = None, quant: dict | None = None) -> None:
    """Raise a one-line error when a checkpoint is resumed into a different run. With ``spec`` (the
    network this run builds), every architecture number both specs hold must agree too (e.g. a
    converted checkpoint needs the options it was converted with: ``model.act=relu6``)."""
    check_task(meta, "classification", "ckpt_path")
    got = (meta["method"]["name"], meta["net"]["name"], list(meta["net"]["resolutions"]), meta["net"].get("quant"))
    want = (method, model, list(resolutions), quant)
    for field, g, w in zip(("method", "model", "data.resolutions", "quant"), got, want):
        if g != w:
            raise CheckpointError(
                f"ckpt_path: checkpoint was trained with {field}={g} but this run has {field}={w}; "
                f"use {field}={g} or start a new run"
            )
    if spec is None:
        return
    theirs, ours = _plain(meta["net"]), _plain(spec)
    mine_layers, their_layers = ours.get("layer_kwargs") or {}, theirs.get("layer_kwargs") or {}
    pairs = [(f"method.{k}", their_layers[k], mine_layers.get(k)) for k in their_layers]
    pairs += [(SPEC_FIELDS.get(k, f"model.{k}"), theirs[k], ours[k]) for k in theirs
              if k in ours and k not in ("name", "resolutions", "layer_kwargs", "quant")]
    for field, g, w in pairs:
        if g != w:
            raise CheckpointError(f"ckpt_path: checkpoint's network has {field}={g} but this run builds "
                                  f"{field}={w}; set {field} to the checkpoint's value or start a new run")


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively (specs read from files and built in memory compare equal)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in ``target``'s folder to write; on success it is fsynced and renamed
    to ``target`` (``os.replace``), on failure removed: a killed writer never leaves a truncated file."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written through :func:`atomic_path` (temporary file, fsync, rename)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)
