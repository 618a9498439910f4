"""Data set registry: ``build_dataset(name, split, root, download, **kwargs) -> DatasetInfo``.

Items are ``(image, label)`` with ``image`` a PIL image or a uint8 ``(C, H, W)`` tensor at the data
set's native size; the data module's worker transforms handle both. ``dataset_meta`` gives the
metadata alone (no data loaded), so a model can be built before the data are read.
"""

from __future__ import annotations

import gzip
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from .imagefolder import ImageFiles, class_folders, list_samples
from .synthetic import SyntheticScaleDataset, class_names

DEFAULT_ROOT = "~/.cache/resnet_switch/data"
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
_FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
SPLITS = ("train", "val", "test")


class DataNotFoundError(ValueError):
    """The requested data set is not on disk; the message (one line) says how to get it."""


@dataclass(frozen=True)
class DatasetMeta:
    """What a model and the transforms need to know. ``native_size`` is None for variable-size images."""

    num_classes: int
    in_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    native_size: int | None


@dataclass(frozen=True)
class DatasetInfo(DatasetMeta):
    """``DatasetMeta`` plus the data set of one split."""

    dataset: Dataset


_STATIC_META = {
    # synthetic: measured over 2000 renders (mean 0.499, std 0.31 per channel)
    "synthetic": DatasetMeta(10, 3, (0.5, 0.5, 0.5), (0.31, 0.31, 0.31), 64),
    "fashion_mnist": DatasetMeta(10, 1, (0.2860,), (0.3530,), 28),
    "cifar10": DatasetMeta(10, 3, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 32),
    "cifar100": DatasetMeta(100, 3, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 32),
    "imagefolder": DatasetMeta(0, 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), None),  # ImageNet stats
}
DATASET_NAMES = tuple(_STATIC_META)


def resolve_root(root: str | os.PathLike | None) -> Path:
    """``root`` expanded, or the default cache directory."""
    return Path(os.path.expanduser(str(root if root is not None else DEFAULT_ROOT)))


def dataset_meta(name: str, root: str | None = None, **kwargs) -> DatasetMeta:
    """Metadata without loading data (imagefolder lists its class folders; synthetic reads kwargs)."""
    _check_name(name)
    meta = _STATIC_META[name]
    if name == "synthetic":
        num_classes = kwargs.get("num_classes", 10)
        class_names(num_classes)  # validates
        return DatasetMeta(num_classes, 3, meta.mean, meta.std, kwargs.get("native_size", 64))
    if name == "imagefolder":
        classes = class_folders(_imagefolder_dir(root, "train"))
        return DatasetMeta(
            len(classes), 3, tuple(kwargs.get("mean", meta.mean)), tuple(kwargs.get("std", meta.std)), None
        )
    return meta


def build_dataset(name: str, split: str, root: str | None = None, download: bool = False, **kwargs) -> DatasetInfo:
    """The ``split`` ("train" | "val" | "test") of data set ``name`` with its metadata.

    kwargs: synthetic -> ``SyntheticScaleDataset`` args (num_samples, seed, native_size, num_classes);
    imagefolder -> optional ``mean``/``std`` and ``lazy_decode`` (items are files read, not decoded:
    the transform decodes them, :mod:`.decode`). Raises ``DataNotFoundError`` when the files are absent.
    """
    _check_name(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    meta = dataset_meta(name, root, **kwargs)
    if name == "synthetic":
        dataset = SyntheticScaleDataset(split=split, **kwargs)
    elif name == "fashion_mnist":
        dataset = _fashion_mnist(resolve_root(root), split == "train", download)
    elif name in ("cifar10", "cifar100"):
        dataset = _cifar(name, resolve_root(root), split == "train", download)
    else:
        dataset = _imagefolder(root, split, lazy_decode=bool(kwargs.get("lazy_decode", False)))
    return DatasetInfo(meta.num_classes, meta.in_channels, meta.mean, meta.std, meta.native_size, dataset)


def _check_name(name: str) -> None:
    if name not in _STATIC_META:
        raise ValueError(f"data.name: unknown data set {name!r}; choose one of {', '.join(DATASET_NAMES)}")


def _fashion_mnist(root: Path, train: bool, download: bool) -> Dataset:
    """torchvision FashionMNIST under ``root``; filled from Debian's gzip IDX files when needed."""
    from torchvision.datasets import FashionMNIST

    raw = root / "FashionMNIST" / "raw"
    if not all((raw / f).is_file() for f in _FASHION_MNIST_FILES):
        debian = Path(DEBIAN_FASHION_MNIST_DIR)
        if all((debian / f"{f}.gz").is_file() for f in _FASHION_MNIST_FILES):
            raw.mkdir(parents=True, exist_ok=True)
            for f in _FASHION_MNIST_FILES:
                if not (raw / f).is_file():
                    tmp = raw / f"{f}.tmp{os.getpid()}"
                    with gzip.open(debian / f"{f}.gz", "rb") as src, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    os.replace(tmp, raw / f)  # atomic: concurrent runs never see half a file
        elif not download:
            raise DataNotFoundError(
                f"data.root: no FashionMNIST under {root}; install Debian's dataset-fashion-mnist "
                f"(apt-get install dataset-fashion-mnist) or put torchvision's FashionMNIST files under {raw}"
            )
    return FashionMNIST(str(root), train=train, download=download)


def _cifar(name: str, root: Path, train: bool, download: bool) -> Dataset:
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    folder = root / cls.base_folder
    if not download and not folder.is_dir():
        raise DataNotFoundError(
            f"data.root: no {name} under {root} (expected {folder}); set data.download=true to fetch it, "
            f"or point data.root at a directory holding {cls.base_folder}"
        )
    return cls(str(root), train=train, download=download)


def _imagefolder_dir(root: str | None, split: str) -> Path:
    if root is None:
        raise DataNotFoundError(
            "data.root: imagefolder needs data.root=<dir> holding train/<class>/* and val/<class>/*"
        )
    base = resolve_root(root)
    folder = base / split
    if split == "test" and not folder.is_dir():
        folder = base / "val"
    if not folder.is_dir():
        raise DataNotFoundError(
            f"data.root: no imagefolder split '{split}' at {folder}; expected {base}/train/<class>/* and {base}/val/<class>/*"
        )
    return folder


def _imagefolder(root: str | None, split: str, lazy_decode: bool = False) -> Dataset:
    """The split's image files, labelled with the train split's classes (:mod:`.imagefolder`: unknown
    or empty class folders fail at setup); items are decoded RGB uint8 ``(3, H, W)`` images
    (:func:`.decode.decode_file`: TorchCodec, PIL where it cannot), or with ``lazy_decode`` read but
    not decoded (:func:`.decode.open_image_lazy`: JPEGs then decode at the scale their crop needs)."""
    from .decode import decode_file, open_image_lazy

    classes = class_folders(_imagefolder_dir(root, "train"))
    samples = list_samples(_imagefolder_dir(root, split), classes, split)
    return ImageFiles(samples, classes, open_image_lazy if lazy_decode else decode_file)


def check_labels(dataset: Dataset, num_classes: int, split: str) -> None:
    """Reject a data set whose ``targets`` (when it has them) fall outside ``[0, num_classes)``."""
    targets = getattr(dataset, "targets", None)
    if targets is None or len(targets) == 0:
        return
    values = targets.tolist() if hasattr(targets, "tolist") else list(targets)
    low, high = min(values), max(values)
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise ValueError(
            f"data: the {split} split has label {bad} outside [0, {num_classes}) (the network has "
            f"{num_classes} outputs); fix the labels or the class count of the data set"
        )
