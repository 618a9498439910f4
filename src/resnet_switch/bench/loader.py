"""``python -m resnet_switch.bench loader [key=value ...]``: training-loader throughput, images per second.

``images`` ImageNet-like JPEGs (:func:`.data.natural_image`: 500x375, ~110 KB; ``distinct`` of them
generated, the others copies, which cost the same to decode) are written to a temporary
``imagefolder`` tree; for each ``data.decode`` in ``decodes`` a ``MultiResDataModule``
with ``workers`` worker processes and ``batch_size`` serves ``epochs`` passes over them, and each
batch is taken as far as training takes it before the network: copied to the device
(pinned memory, non-blocking) and through ``on_after_batch_transfer`` (``decode=device``: the JPEG
decode, crop, flip and resize on the GPU; both: normalisation). Clock: wall time from the end of
the first ``warmup`` batches (worker start-up) to the last batch ready on the device (CUDA
synchronised). ``decode=device`` without CUDA runs the worker path (``device_fallback`` says so).

Keys per decode: ``<decode>_img_s``, ``<decode>_ms_per_batch``, ``<decode>_batches``; ``device_vs_worker``
(ratio of images per second) when both ran on a GPU; ``device``, ``device_fallback``.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ..cli.options import check_choice
from ..data.datamodule import DECODE_PLACES, MultiResDataModule
from ..data.device_decode import device_decode_available
from ..errors import ConfigError
from ..evaluation.accuracy import to_device
from ..switch import check_resolutions
from .data import natural_image

DEFAULTS: dict[str, Any] = {
    "resolutions": [224, 192, 160, 128, 96],
    "images": 512,  # JPEG files (one epoch)
    "distinct": 32,  # of them generated (~0.1 s each); the rest are copies
    "image_size": [500, 375],  # width, height
    "quality": 90,
    "texture": 30.0,  # fine texture strength (30: ~110 KB per 500x375 file, like ImageNet)
    "batch_size": 64,
    "workers": 4,  # DataLoader worker processes
    "epochs": 2,  # passes over the images per decode
    "warmup": 2,  # untimed batches at the start (worker start-up)
    "decodes": ["worker", "device"],  # data.decode values to run, in this order
    "device": "auto",  # auto = cuda when available, else cpu
    "threads": 1,  # torch threads of the main process
}


def check_options(opts: dict[str, Any]) -> None:
    opts["resolutions"] = list(check_resolutions(opts["resolutions"], "resolutions"))
    size = opts["image_size"]
    if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 16 for v in size):
        raise ConfigError(f"image_size: need [width, height] in pixels (each >= 16), got {size!r}")
    for key, low in (("images", 1), ("distinct", 1), ("batch_size", 1), ("workers", 0), ("epochs", 1), ("warmup", 0),
                     ("threads", 1), ("quality", 1)):
        if opts[key] < low:
            raise ConfigError(f"{key}: must be >= {low}, got {opts[key]}")
    if not opts["decodes"]:
        raise ConfigError("decodes: give at least one of ['device', 'worker']")
    for decode in opts["decodes"]:
        check_choice("decodes", decode, DECODE_PLACES)
    if opts["images"] // opts["batch_size"] * opts["epochs"] <= opts["warmup"]:
        raise ConfigError(f"images: {opts['images']} images make {opts['images'] // opts['batch_size']} batches of "
                         f"{opts['batch_size']} per epoch, not more than warmup={opts['warmup']} over "
                         f"{opts['epochs']} epochs; raise images or epochs")
    if opts["device"] == "auto":
        opts["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    check_choice("device", opts["device"], ["cpu", "cuda"])
    if opts["device"] == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda is not available on this machine; use device=cpu")


def write_image_tree(root: Path, opts: dict[str, Any]) -> None:
    """``root/train/c0/img*.jpg`` (``images`` files, ``distinct`` of them generated) and ``root/val/c0/img0.jpg``."""
    width, height = opts["image_size"]
    train, val = root / "train" / "c0", root / "val" / "c0"
    train.mkdir(parents=True)
    val.mkdir(parents=True)
    distinct = min(opts["distinct"], opts["images"])
    for k in range(opts["images"]):
        path = train / f"img{k:05d}.jpg"
        if k < distinct:
            natural_image(k, width, height, opts["texture"]).save(path, quality=opts["quality"])
        else:
            shutil.copyfile(train / f"img{k % distinct:05d}.jpg", path)
    shutil.copyfile(train / "img00000.jpg", val / "img0.jpg")


def run_loader(dm: MultiResDataModule, device: torch.device, epochs: int, warmup: int) -> tuple[float, int, int]:
    """``(seconds, images, batches)`` after the first ``warmup`` batches, every batch on ``device``
    through ``on_after_batch_transfer``."""
    dm.setup("fit")
    loader = dm.train_dataloader()
    seen = images = 0
    start = time.perf_counter()
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            out = dm.on_after_batch_transfer(to_device(batch, device), 0)
            seen += 1
            if seen == warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
            elif seen > warmup:
                images += len(out)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, images, seen - warmup


def loader_task(opts: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    device = torch.device(opts["device"])
    on_gpu = device.type == "cuda" and device_decode_available()
    out: dict[str, Any] = {"device_fallback": "device" in opts["decodes"] and not on_gpu}
    with tempfile.TemporaryDirectory(prefix="bench_loader_") as folder:
        root = Path(folder)
        write_image_tree(root, opts)
        for decode in opts["decodes"]:
            dm = MultiResDataModule(name="imagefolder", root=str(root), train_resolutions=opts["resolutions"],
                                    batch_size=opts["batch_size"], num_workers=opts["workers"],
                                    pin_memory=device.type == "cuda", seed=0,
                                    decode=decode if on_gpu or decode == "worker" else "worker")
            seconds, images, batches = run_loader(dm, device, opts["epochs"], opts["warmup"])
            out[f"{decode}_img_s"] = round(images / seconds, 1)
            out[f"{decode}_ms_per_batch"] = round(1000.0 * seconds / batches, 2)
            out[f"{decode}_batches"] = batches
            print(f"decode={decode:<6} {out[f'{decode}_img_s']:8.1f} img/s ({batches} batches of "
                  f"{opts['batch_size']}, {opts['workers']} workers, {out[f'{decode}_ms_per_batch']:.1f} ms/batch)"
                  + (" [no CUDA: the worker path]" if decode == "device" and not on_gpu else ""), flush=True)
    if {"worker", "device"} <= set(opts["decodes"]) and on_gpu:
        out["device_vs_worker"] = round(out["device_img_s"] / out["worker_img_s"], 3)
    return out
