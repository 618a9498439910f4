"""Reading ``<root>/<split>/<class>/<image>`` folders defensively.

- Classes are the train split's sub-folders (hidden ones, ``.name``, are ignored), sorted; label ``k``
  is the ``k``-th. Every split uses the train split's list, so a validation folder with fewer
  classes keeps the labels right; a validation class the train split does not have is rejected at
  setup (its label would be out of range), and so is a train class folder with no image files (the
  network would have an output nobody trains: remove the folder or add images).
- Any image mode becomes RGB (or L): grey, CMYK, palette (with transparency: via RGBA), RGBA/LA
  (alpha dropped, like torchvision's loader), 16-bit grey (scaled: round(v / 257), 65535 -> 255),
  32-bit int and float grey (clipped to 0..255).
- A file that cannot be decoded (truncated, corrupt, not an image) is, with ``on_bad_image``:
  ``fail``: an error naming the file; ``skip``: replaced by the next readable image of the split
  (index order, so batches keep their size and runs stay deterministic), with one warning per file
  and a count of distinct skipped files shared by all worker processes (logged as
  ``data/bad_images``).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset, Subset

from ..errors import ConfigError

BAD_IMAGE_POLICIES = ("skip", "fail")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# what PIL raises for files it cannot decode (UnidentifiedImageError and truncation are OSErrors)
DECODE_ERRORS = (OSError, SyntaxError, EOFError, ValueError, Image.DecompressionBombError)


class BadImageError(ConfigError):
    """An unreadable image with ``data.on_bad_image=fail`` (one line naming the file)."""


def class_folders(folder: Path) -> list[str]:
    """Sorted names of the non-hidden sub-folders of ``folder``."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def list_samples(folder: Path, classes: list[str], split: str) -> list[tuple[str, int]]:
    """``(path, label)`` of every image file under ``folder/<class>/`` (sorted, recursive), labels
    from ``classes`` (the train split's). One-line errors for unknown or empty class folders."""
    index = {name: k for k, name in enumerate(classes)}
    samples: list[tuple[str, int]] = []
    for name in class_folders(folder):
        if name not in index:
            raise ConfigError(
                f"data.root: {folder / name} is not a class of the train split ({len(classes)} classes); "
                "its label would be out of range: rename it to a train class or remove it"
            )
        files = sorted(
            str(Path(dirpath, f)) for dirpath, _, names in os.walk(folder / name, followlinks=True)
            for f in names if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")
        )
        if not files and split == "train":
            raise ConfigError(
                f"data.root: class folder {folder / name} holds no image files {IMAGE_EXTENSIONS}; "
                "add images or remove the folder"
            )
        samples += [(f, index[name]) for f in files]
    if not samples:
        raise ConfigError(f"data.root: no image files under {folder}/<class>/; expected e.g. {folder}/cat/1.jpg")
    return samples


class ImageFiles(Dataset):
    """``(image, label)`` items of an image folder; ``loader(path)`` reads or decodes a file (:mod:`.decode`).

    Attributes ``samples`` (``(path, label)``) and ``targets`` as torchvision's ``ImageFolder``.
    """

    def __init__(self, samples: list[tuple[str, int]], classes: list[str], loader):
        self.samples, self.classes, self.loader = samples, classes, loader
        self.targets = [label for _, label in samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        return self.loader(path), label


def convert_mode(image: Image.Image, mode: str) -> Image.Image:
    """``image`` in ``mode`` ("RGB" or "L"): palette transparency goes through RGBA, alpha is
    dropped, 16-bit grey is scaled by 1/257 and 32-bit int/float grey is clipped to 0..255."""
    if image.mode == mode:
        return image
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16"):
            values = values / 257.0
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))  # mode L
    elif image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image if image.mode == mode else image.convert(mode)


def sample_path(dataset: Dataset, index: int) -> str | None:
    """The file behind item ``index`` of ``dataset`` (through ``Subset``s), or None."""
    while isinstance(dataset, Subset):
        dataset, index = dataset.dataset, dataset.indices[index]
    samples = getattr(dataset, "samples", None)
    return str(samples[index][0]) if samples is not None else None


class BadImageLog:
    """Which items of a data set were unreadable: one shared byte per item, so every worker process
    sees (and counts once) what any of them found. Created before the workers start."""

    def __init__(self, size: int, policy: str = "skip"):
        if policy not in BAD_IMAGE_POLICIES:
            raise ConfigError(f"data.on_bad_image: unknown {policy!r}; choose one of {list(BAD_IMAGE_POLICIES)}")
        self.policy = policy
        self.flags = multiprocessing.RawArray(ctypes.c_ubyte, max(1, size))
        self.found_here: set[str] = set()  # files found bad in this process outside the workers (device decode)

    def count(self) -> int:
        return bytes(self.flags).count(1) + len(self.found_here)

    def is_bad(self, index: int) -> bool:
        return bool(self.flags[index])

    def report(self, index: int | None, path: str | None, err: BaseException) -> None:
        """Fail naming the file, or mark it bad and warn once. ``index`` None: a file the device
        decode found bad (in the main process: counted by path, the workers keep reading it)."""
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        if self.policy == "fail":
            raise BadImageError(
                f"data.on_bad_image=fail: cannot read {path or f'item {index}'} ({type(err).__name__}: {reason}); "
                "fix or remove the file, or set data.on_bad_image=skip"
            ) from None
        if index is None:
            new = path not in self.found_here
            self.found_here.add(str(path))
        else:
            new = not self.flags[index]
            self.flags[index] = 1
        if new:
            warnings.warn(f"data: skipping unreadable image {path or f'item {index}'} ({reason})", stacklevel=2)
