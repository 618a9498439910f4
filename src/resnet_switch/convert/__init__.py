"""Published checkpoints -> our checkpoints: ``python -m resnet_switch.convert src=FILE format=... model=...``.

::

    python -m resnet_switch.convert src=FILE format=rsnets|san|mutualnet|usnet|snet model=NAME \\
        [resolutions=[...]] [widths=[...]] [num_classes=1000] [model.width_mult=...] [normalize=none|imagenet] \\
        [out=FILE.ckpt]

One module per source repository maps its state-dict layout to ours (:mod:`.rsnets`, :mod:`.san`,
:mod:`.slimmable` for slimmable_networks and MutualNet); :mod:`.common` reads the file (a bare state
dict or a training checkpoint, ``module.`` prefix or not, ``torch.load(weights_only=True)``), checks
every key and shape, and the result is written as a checkpoint like ``resnet_switch.train``'s: the
method, backbone, resolutions and widths in its metadata, the BN statistics of slimmable networks
stored per (width, resolution), the normalisation and validation protocol of the source repository
in its data settings. ``evaluate``, ``export``, :class:`~resnet_switch.deploy.SwitchableClassifier`
and ``train ckpt_path=`` (fine-tuning: it resumes at step 0 with a fresh optimiser) take it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import lightning
import torch

from ..cli.config_defaults import config_defaults
from ..cli.options import check_choice
from ..training.checkpointing import atomic_path, make_checkpoint
from . import rsnets, san, slimmable
from .common import ConvertError, apply_entries, commit_stats, describe, read_state_dict

FORMATS = ("rsnets", "san", "mutualnet", "usnet", "snet")
MODELS = {"rsnets": rsnets.MODELS, "san": san.MODELS, **slimmable.MODELS}
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
# the repositories' RandomResizedCrop scale (calibration images): "mobile" recipes start at 0.25
CROP_SCALE = {("mutualnet", "mobilenetv1"): [0.25, 1.0], ("mutualnet", "mobilenetv2"): [0.25, 1.0],
              ("usnet", "mobilenetv1"): [0.25, 1.0], ("usnet", "mobilenetv2"): [0.25, 1.0],
              ("snet", "mobilenetv1"): [0.25, 1.0], ("snet", "mobilenetv2"): [0.25, 1.0]}

DEFAULTS: dict[str, Any] = {
    "src": None,  # required: the published file (.pth / .pt / .pth.tar)
    "format": None,  # required: rsnets | san | mutualnet | usnet | snet
    "model": None,  # required: resnet18 | resnet50 | mobilenetv2 | mobilenetv1 (per format)
    "resolutions": None,  # rsnets/san: the --sizes trained with, in their order (default [224,192,160,128,96]);
    #                       mutualnet: default [224,192,160,128]; usnet/snet: default [224]
    "widths": None,  # mutualnet/usnet/snet: the file's width_mult_list in its order (default: the released config's)
    "num_classes": 1000,  # classes of the file's classifier
    "model.width_mult": None,  # mutualnet: the width its layers were built for, as train's model.width_mult
    #                            (default max(1, max(widths)))
    "normalize": None,  # none | imagenet (default: what the repository's loaders do)
    "out": None,  # default: beside src, <src name>.ckpt
}


def check_options(opts: dict[str, Any]) -> None:
    """One-line errors for bad options, before the file is read."""
    if opts["src"] is None:
        raise ConvertError("src: required; give the published weight file, e.g. src=rsnet_resnet18.pth.tar")
    if opts["format"] is None:
        raise ConvertError(f"format: required; choose one of {list(FORMATS)}")
    check_choice("format", opts["format"], FORMATS)
    if opts["model"] is None:
        raise ConvertError(f"model: required; format={opts['format']} has {list(MODELS[opts['format']])}")
    if opts["model"] not in MODELS[opts["format"]]:
        raise ConvertError(f"model: format={opts['format']} publishes {list(MODELS[opts['format']])}, "
                           f"not {opts['model']!r}")
    res = opts["resolutions"]
    if res is not None:
        if not isinstance(res, list) or not res or any(isinstance(r, bool) or not isinstance(r, int) or r <= 0
                                                       for r in res):
            raise ConvertError(f"resolutions: need a list of positive pixel sizes (the ones trained with, in "
                               f"their order), got {res!r}")
        if len(set(res)) != len(res):
            raise ConvertError(f"resolutions: duplicate entries in {res}; list each resolution once")
    widths = opts["widths"]
    if widths is not None:
        if opts["format"] in ("rsnets", "san") and widths != [1.0]:
            raise ConvertError(f"widths: format={opts['format']} is not slimmable; drop widths=")
        if not isinstance(widths, list) or not widths or any(
                isinstance(w, bool) or not isinstance(w, (int, float)) or w <= 0 for w in widths):
            raise ConvertError(f"widths: need a list of positive widths (the file's width_mult_list), got {widths!r}")
    if isinstance(opts["num_classes"], bool) or not isinstance(opts["num_classes"], int) or opts["num_classes"] < 1:
        raise ConvertError(f"num_classes: must be a positive integer, got {opts['num_classes']!r}")
    wm = opts["model.width_mult"]
    if wm is not None and (isinstance(wm, bool) or not isinstance(wm, (int, float)) or wm <= 0):
        raise ConvertError(f"model.width_mult: must be a positive number, got {wm!r}")
    if wm is not None and opts["format"] not in ("mutualnet", "usnet", "snet"):
        raise ConvertError(f"model.width_mult: only for slimmable formats (mutualnet, usnet, snet), not {opts['format']}")
    if opts["normalize"] is not None:
        check_choice("normalize", opts["normalize"], ("none", "imagenet"))
    if opts["out"] is not None and Path(str(opts["out"])).is_dir():
        raise ConvertError(f"out: {opts['out']} is a directory; give a file path, e.g. out=converted.ckpt")


def default_out(src: Path) -> Path:
    return src.with_name(f"{src.name.split('.')[0]}.ckpt")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build(state: dict, opts: dict[str, Any]):
    """The :class:`~.common.Converted` network for ``opts`` (not yet filled)."""
    fmt, model, num_classes = opts["format"], opts["model"], opts["num_classes"]
    if fmt in ("rsnets", "san"):
        sizes = opts["resolutions"] or list(san.DEFAULT_SIZES)
        return (rsnets if fmt == "rsnets" else san).convert(state, model, sizes, num_classes, opts["normalize"])
    return slimmable.convert(state, fmt, model, opts["widths"], opts["resolutions"], num_classes,
                             opts["model.width_mult"], opts["normalize"])


def run_meta(conv, opts: dict[str, Any], src: Path) -> dict[str, Any]:
    """The data settings ``evaluate`` rebuilds (an image folder: give ``+data.root=``), the
    normalisation the runtime applies, the model config and where the weights came from."""
    tgt = conv.target
    mean, std = ([0.0, 0.0, 0.0], [1.0, 1.0, 1.0]) if tgt.normalize == "none" else (IMAGENET_MEAN, IMAGENET_STD)
    data = {k: v for k, v in config_defaults("data", "imagefolder").items()}
    data.update({"root": None, "resolutions": list(tgt.resolutions), "seed": 0, "crop": "single",
                 "crop_scale": CROP_SCALE.get((opts["format"], opts["model"]), [0.08, 1.0]),
                 "protocol": tgt.protocol, "mean": mean, "std": std})
    return {"data": data, "mean": mean, "std": std, "model": conv.model_cfg,
            "converted_from": {"format": opts["format"], "file": src.name, "sha256": sha256(src)}}


def checkpoint(conv, opts: dict[str, Any], src: Path) -> dict[str, Any]:
    """Our checkpoint, also a Lightning one at step 0 with no optimiser state (``train
    ckpt_path=`` starts a fine-tuning run from it)."""
    ckpt = make_checkpoint(conv.method, conv.net, {"name": conv.target.method, "kwargs": conv.method_kwargs},
                           run_meta(conv, opts, src))
    ckpt.update({"epoch": 0, "global_step": 0, "pytorch-lightning_version": lightning.__version__,
                 "optimizer_states": [], "lr_schedulers": []})
    return ckpt


def convert(opts: dict[str, Any]) -> dict[str, Any]:
    """Convert ``opts["src"]``; returns a summary (``out``, ``method``, counts, ...)."""
    check_options(opts)
    src = Path(str(opts["src"]))
    state = read_state_dict(src)
    conv = build(state, opts)
    widths = None if opts["format"] in ("rsnets", "san") else opts["widths"] or None
    label = describe(opts["format"], opts["model"], opts["resolutions"] or conv.target.resolutions, widths)
    apply_entries(state, conv.entries, label)
    commit_stats(conv.pending)
    out = Path(str(opts["out"])) if opts["out"] else default_out(src)
    with atomic_path(out) as tmp:
        torch.save(checkpoint(conv, opts, src), tmp)
    used = sum(1 for e in conv.entries if e.write is not None and e.key in state)
    return {"out": str(out), "src": str(src), "format": opts["format"], "method": conv.target.method,
            "model": opts["model"], "resolutions": conv.target.resolutions,
            "widths": list(conv.net.state.widths), "num_classes": opts["num_classes"], "tensors": len(state),
            "copied": used, "dropped": len(state) - used, "protocol": conv.target.protocol,
            "normalize": conv.target.normalize, "method_kwargs": conv.method_kwargs, "model_cfg": conv.model_cfg}
