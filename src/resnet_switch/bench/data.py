"""``python -m resnet_switch.bench data [key=value ...]``: CPU cost of one multi-resolution training sample.

``images`` natural-looking JPEGs (smooth gradients, shapes, band-limited texture; ``image_size``
500x375 and ~100 KB like ImageNet's by default) are written to a temporary ``imagefolder`` tree.
Three contenders turn one file into training input at every resolution of ``resolutions``:

- ``ours``: the real data path. Worker: ``MultiResDataModule(name="imagefolder")``'s training item
  (file read, size from the JPEG header, ONE random-resized crop at the largest resolution with
  draft (PIL) or TorchCodec decoding, one flip, uint8). The other resolutions are made on the device (``on_after_batch_transfer`` and
  ``batch.at(r)``): on a GPU that is GPU time, so ``ours_ms`` is the worker's CPU alone, as for the
  other contenders. When the device is the CPU itself, that device-side work costs CPU too: it is
  timed here on batches of ``batch_size`` samples (cost per sample) and reported as
  ``ours_device_cpu_ms``, and ``ours_cpu_training_ms = ours_ms + ours_device_cpu_ms``.
- ``official``: the RS-Net reference protocol: full decode to RGB, one random crop (PIL), then per
  resolution PIL resize + flip + ``ToTensor``.
- ``single``: the usual single-resolution pipeline: full decode, ``RandomResizedCrop(max)`` +
  flip + ``ToTensor`` + ``Normalize`` (torchvision transforms on PIL).

Clock: CPU time of this thread (``time.thread_time``; run with threads=1), so other processes on the
machine do not inflate the figures. Each contender runs as a worker does, item after item: per round,
one block per contender over all ``images`` (a new crop each round), after ``warmup`` untimed items;
the block order rotates every round so slow drift of the machine is shared. (Alternating contenders
per image would make each pay the cache pollution of the others, which no worker sees: it slowed
every contender by 10-40 % here.) Keys: ``ours_ms``, ``ours_device_cpu_ms``, ``ours_cpu_training_ms``,
``official_ms``, ``single_ms`` (mean ms per sample), ``decode_ms`` (a full PIL decode alone),
``ours_vs_single``, ``ours_vs_official`` (worker CPU), ``cpu_training_vs_single``,
``cpu_training_vs_official`` (with the device side on the CPU), ``draft_share`` (share of sampled crops that decode at
reduced scale for this image size and resolution), ``jpeg_kb`` (mean file size), ``samples``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from torch.utils.data import default_collate
from torchvision import transforms as T
from torchvision.transforms import functional as F1

from ..data.datamodule import MultiResDataModule
from ..data.decode import MIN_DRAFT_SCALE, draft_scale
from ..errors import ConfigError
from ..switch import check_resolutions

DEFAULTS: dict[str, Any] = {
    "resolutions": [224, 192, 160, 128, 96],
    "images": 24,  # generated JPEGs
    "image_size": [500, 375],  # width, height
    "quality": 90,  # JPEG quality
    "texture": 30.0,  # strength of the fine texture (30: ~110 KB per 500x375 file, like ImageNet)
    "rounds": 3,  # timed passes over the images
    "warmup": 4,  # untimed items before each contender's block
    "batch_size": 8,  # samples per device-side batch (ours)
    "threads": 1,
}


def check_options(opts: dict[str, Any]) -> None:
    opts["resolutions"] = list(check_resolutions(opts["resolutions"], "resolutions"))
    size = opts["image_size"]
    if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 16 for v in size):
        raise ConfigError(f"image_size: need [width, height] in pixels (each >= 16), got {size!r}")
    if not 1 <= opts["quality"] <= 100:
        raise ConfigError(f"quality: must be in [1, 100], got {opts['quality']}")
    if opts["texture"] < 0:
        raise ConfigError(f"texture: must be >= 0, got {opts['texture']}")
    for key, low in (("images", 1), ("rounds", 1), ("warmup", 0), ("batch_size", 1), ("threads", 1)):
        if opts[key] < low:
            raise ConfigError(f"{key}: must be >= {low}, got {opts[key]}")


# ------------------------------------------------------------------------------------ test images
def natural_image(seed: int, width: int = 500, height: int = 375, texture: float = 30.0) -> Image.Image:
    """A deterministic natural-looking RGB image: smooth colour gradients, a dozen filled shapes
    (soft edges) and band-limited texture of strength ``texture`` (0: none)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    planes = []
    for _ in range(3):
        a, b, phase = rng.uniform(-1, 1, 3)
        planes.append(128 + 60 * np.sin(a * x / 60 + b * y / 45 + phase * 6) + 30 * np.cos((x * b - y * a) / 90))
    image = Image.fromarray(np.clip(np.stack(planes, -1), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        s = int(rng.integers(max(4, min(width, height) // 20), max(8, min(width, height) // 2)))
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        if rng.random() < 0.5:
            draw.ellipse([x0, y0, x0 + s, y0 + int(s * 0.7)], fill=colour)
        else:
            draw.polygon([(x0, y0), (x0 + s, y0 + s // 3), (x0 + s // 2, y0 + s)], fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(1.0))
    if texture <= 0:
        return image
    noise = np.clip(rng.normal(0, 1, (height, width, 3)) * 40 + 128, 0, 255).astype(np.uint8)
    grain = np.asarray(Image.fromarray(noise).filter(ImageFilter.GaussianBlur(0.7)), dtype=np.float32) - 128
    out = np.asarray(image, dtype=np.float32) + grain * (texture / 20)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def write_jpeg_tree(root: Path, opts: dict[str, Any]) -> list[Path]:
    """``root/train/c0/*.jpg`` (``images`` files) and one ``root/val/c0`` file; returns the train paths."""
    width, height = opts["image_size"]
    paths = []
    for split, count in (("train", opts["images"]), ("val", 1)):
        folder = root / split / "c0"
        folder.mkdir(parents=True)
        for k in range(count):
            path = folder / f"img{k:04d}.jpg"
            natural_image(k, width, height, opts["texture"]).save(path, quality=opts["quality"])
            paths.append(path)
    return paths[: opts["images"]]


# ------------------------------------------------------------------------------------ contenders
def official_sample(path: Path, resolutions: list[int]) -> list[torch.Tensor]:
    """RS-Net reference: decode, one random crop (PIL), per resolution PIL resize + flip + ToTensor."""
    image = Image.open(path).convert("RGB")
    top, left, h, w = T.RandomResizedCrop.get_params(image, (0.08, 1.0), (3 / 4, 4 / 3))
    crop = image.crop((left, top, left + w, top + h))
    out = []
    for r in resolutions:
        x = crop.resize((r, r), Image.Resampling.BILINEAR)
        if torch.rand(1) < 0.5:
            x = x.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out.append(F1.to_tensor(x))
    return out


def single_transform(resolution: int, mean, std):
    return T.Compose([T.RandomResizedCrop(resolution), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])


def cpu_ms(fn, *args) -> tuple[float, Any]:
    t0 = time.thread_time()
    out = fn(*args)
    return (time.thread_time() - t0) * 1e3, out


def draft_share(opts: dict[str, Any], draws: int = 2000) -> float:
    """Share of random-resized crops of an ``image_size`` image that decode at reduced scale (the
    PIL draft path: a scale of ``MIN_DRAFT_SCALE`` or more)."""
    width, height = opts["image_size"]
    r = opts["resolutions"][0]
    image = Image.new("L", (width, height))
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(1)
    count = 0
    for _ in range(draws):
        _, _, h, w = T.RandomResizedCrop.get_params(image, (0.08, 1.0), (3 / 4, 4 / 3))
        count += draft_scale(w, h, r) >= MIN_DRAFT_SCALE
    torch.random.set_rng_state(gen_state)
    return count / draws


def data_task(opts: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    resolutions = opts["resolutions"]
    times: dict[str, list[float]] = {k: [] for k in ("worker", "device", "official", "single", "decode")}
    with tempfile.TemporaryDirectory(prefix="bench_data_") as folder:
        root = Path(folder)
        paths = write_jpeg_tree(root, opts)
        jpeg_kb = statistics.mean(p.stat().st_size for p in paths) / 1024
        # the loader only hands over its dataset here (its batch never exceeds the images it has)
        dm = MultiResDataModule(name="imagefolder", root=str(root), train_resolutions=resolutions,
                                batch_size=min(opts["batch_size"], len(paths)), num_workers=0, pin_memory=False,
                                seed=0)
        dm.setup("fit")
        dataset = dm.train_dataloader().dataset  # TransformedDataset: what a worker runs per item
        single = single_transform(resolutions[0], dm.mean, dm.std)
        n = len(paths)
        contenders = {
            "worker": lambda key: dataset[key],
            "official": lambda key: official_sample(paths[key % n], resolutions),
            "single": lambda key: single(Image.open(paths[key % n]).convert("RGB")),
            "decode": lambda key: Image.open(paths[key % n]).convert("RGB"),
        }
        names = list(contenders)
        torch.manual_seed(0)
        for round_ in range(opts["rounds"]):
            k = round_ % len(names)
            for name in names[k:] + names[:k]:  # rotate the block order so load drift is shared
                for key in range(opts["warmup"]):  # untimed: the block's first items warm the caches
                    contenders[name](opts["rounds"] * n + key)
                outputs = []
                for key in range(round_ * n, (round_ + 1) * n):  # dataset keys epoch * n + index
                    ms, out = cpu_ms(contenders[name], key)
                    times[name].append(ms)
                    outputs.append(out)
                if name == "worker":
                    times["device"] += device_side_ms(dm, outputs, resolutions, opts["batch_size"])
    mean = {name: statistics.mean(ms) for name, ms in times.items()}
    worker, cpu_training = mean["worker"], mean["worker"] + mean["device"]
    out = {"ours_ms": round(worker, 3), "ours_device_cpu_ms": round(mean["device"], 3),
           "ours_cpu_training_ms": round(cpu_training, 3), "official_ms": round(mean["official"], 3),
           "single_ms": round(mean["single"], 3), "decode_ms": round(mean["decode"], 3),
           "ours_vs_single": round(worker / mean["single"], 4), "ours_vs_official": round(worker / mean["official"], 4),
           "cpu_training_vs_single": round(cpu_training / mean["single"], 4),
           "cpu_training_vs_official": round(cpu_training / mean["official"], 4),
           "draft_share": round(draft_share(opts), 4), "jpeg_kb": round(jpeg_kb, 1),
           "image_size": list(opts["image_size"]), "samples": len(times["worker"])}
    print(f"worker CPU ms per sample ({out['samples']} samples, {opts['image_size'][0]}x{opts['image_size'][1]} "
          f"JPEG ~{out['jpeg_kb']:.0f} KB, resolutions {resolutions}):\n"
          f"  ours     {worker:7.3f}  (one crop; the other resolutions on the device)\n"
          f"  official {mean['official']:7.3f}\n  single   {mean['single']:7.3f}\n"
          f"  (full PIL decode alone {mean['decode']:.3f}; crops decoded at reduced scale: {out['draft_share']:.1%})\n"
          f"  ours / single = {out['ours_vs_single']:.3f} (target <= 1.3), "
          f"ours / official = {out['ours_vs_official']:.3f} (target <= 0.35)\n"
          f"device = CPU: + {mean['device']:.3f} ms for every resolution from the crop -> {cpu_training:.3f} ms, "
          f"{out['cpu_training_vs_single']:.3f} x single, {out['cpu_training_vs_official']:.3f} x official", flush=True)
    return out


def device_side_ms(dm: MultiResDataModule, items: list, resolutions, batch_size: int) -> list[float]:
    """CPU ms per sample of :func:`device_side` on the worker ``items``, in batches of ``batch_size``."""
    out = []
    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        images, targets = default_collate(chunk)
        ms, _ = cpu_ms(device_side, dm, images, targets, resolutions)
        out += [ms / len(chunk)] * len(chunk)
    return out


def device_side(dm: MultiResDataModule, images: torch.Tensor, targets: torch.Tensor, resolutions) -> list:
    """What ``on_after_batch_transfer`` and the training step do to a uint8 batch: float,
    normalise, every resolution from the one crop (bilinear, antialias)."""
    batch = dm.on_after_batch_transfer((images, targets), 0)
    return [batch.at(r) for r in resolutions]

