"""Data set registry: ``data.name`` -> :class:`DatasetEntry` (builder + metadata), filled by
:func:`register_dataset` where each builder is defined below.

``build_dataset(name, split, root, download, **kwargs) -> DatasetInfo``: items are ``(image, label)``
with ``image`` a PIL image or a uint8 ``(C, H, W)`` tensor at the data set's native size; the data
module's worker transforms handle both. ``dataset_meta`` gives the metadata alone (no data loaded),
so a model can be built before the data are read.
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from ..errors import ConfigError
from ..registry import Registry
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


class DataNotFoundError(ConfigError):
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


@dataclass(frozen=True)
class DatasetEntry:
    """One registered data set.

    ``build(split, root, download, **kwargs) -> Dataset``; ``meta``: the fixed :class:`DatasetMeta`, or
    ``(root, **kwargs) -> DatasetMeta`` (no data loaded), read through :meth:`metadata`. ``generated``: made in memory (nothing on disk to download; ``num_samples``
    per split is a builder argument). ``image_files``: items are image files on disk (decoded in the
    workers or, ``data.decode=device``, on the GPU; undecodable files follow ``data.on_bad_image``).
    """

    build: Callable[..., Dataset]
    meta: DatasetMeta | Callable[..., DatasetMeta]
    generated: bool = False
    image_files: bool = False

    def metadata(self, root: str | None = None, **kwargs) -> DatasetMeta:
        return self.meta if isinstance(self.meta, DatasetMeta) else self.meta(root, **kwargs)


DATASETS: Registry[DatasetEntry] = Registry("data set", field="data.name")


def register_dataset(name: str, *, meta: DatasetMeta | Callable[..., DatasetMeta], generated: bool = False,
                     image_files: bool = False) -> Callable:
    """Decorator registering a builder ``(split, root, download, **kwargs) -> Dataset`` as data set
    ``name``; ``meta``: its fixed :class:`DatasetMeta` or ``(root, **kwargs) -> DatasetMeta``."""

    def deco(build: Callable[..., Dataset]) -> Callable[..., Dataset]:
        DATASETS.add(name, DatasetEntry(build, meta, generated=generated, image_files=image_files))
        return build

    return deco


def list_datasets() -> list[str]:
    """Registered data set names, sorted."""
    return DATASETS.list()


def dataset_entry(name: str) -> DatasetEntry:
    """The registry entry of data set ``name``; one-line error for unknown names."""
    return DATASETS.get(name)


def resolve_root(root: str | os.PathLike | None) -> Path:
    """``root`` expanded, or the default cache directory."""
    return Path(os.path.expanduser(str(root if root is not None else DEFAULT_ROOT)))


def dataset_meta(name: str, root: str | None = None, **kwargs) -> DatasetMeta:
    """Metadata without loading data (imagefolder lists its class folders; synthetic reads kwargs)."""
    return dataset_entry(name).metadata(root, **kwargs)


def build_dataset(name: str, split: str, root: str | None = None, download: bool = False, **kwargs) -> DatasetInfo:
    """The ``split`` ("train" | "val" | "test") of data set ``name`` with its metadata.

    kwargs: synthetic -> ``SyntheticScaleDataset`` args (num_samples, seed, native_size, num_classes);
    imagefolder -> optional ``mean``/``std`` and ``lazy_decode`` (items are files read, not decoded:
    the transform decodes them, :mod:`.decode`). Raises ``DataNotFoundError`` when the files are absent.
    """
    entry = dataset_entry(name)
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    meta = entry.metadata(root, **kwargs)
    dataset = entry.build(split, root, download, **kwargs)
    return DatasetInfo(meta.num_classes, meta.in_channels, meta.mean, meta.std, meta.native_size, dataset)


# ---------------------------------------------------------------------------------- the data sets
# synthetic: measured over 2000 renders (mean 0.499, std 0.31 per channel)
_SYNTHETIC_MEAN, _SYNTHETIC_STD = (0.5, 0.5, 0.5), (0.31, 0.31, 0.31)
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _synthetic_meta(root: str | None = None, **kwargs) -> DatasetMeta:
    num_classes = kwargs.get("num_classes", 10)
    class_names(num_classes)  # validates
    return DatasetMeta(num_classes, 3, _SYNTHETIC_MEAN, _SYNTHETIC_STD, kwargs.get("native_size", 64))


@register_dataset("synthetic", meta=_synthetic_meta, generated=True)
def synthetic(split: str, root: str | None, download: bool, **kwargs) -> Dataset:
    """The embedded scale-varying shapes (:class:`~.synthetic.SyntheticScaleDataset`)."""
    return SyntheticScaleDataset(split=split, **kwargs)


@register_dataset("fashion_mnist", meta=DatasetMeta(10, 1, (0.2860,), (0.3530,), 28))
def fashion_mnist(split: str, root: str | None, download: bool, **kwargs) -> Dataset:
    return _fashion_mnist(resolve_root(root), split == "train", download)


@register_dataset("cifar10", meta=DatasetMeta(10, 3, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 32))
def cifar10(split: str, root: str | None, download: bool, **kwargs) -> Dataset:
    return _cifar("cifar10", resolve_root(root), split == "train", download)


@register_dataset("cifar100", meta=DatasetMeta(100, 3, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 32))
def cifar100(split: str, root: str | None, download: bool, **kwargs) -> Dataset:
    return _cifar("cifar100", resolve_root(root), split == "train", download)


def _imagefolder_meta(root: str | None = None, **kwargs) -> DatasetMeta:
    classes = class_folders(_imagefolder_dir(root, "train"))
    mean, std = tuple(kwargs.get("mean", _IMAGENET_MEAN)), tuple(kwargs.get("std", _IMAGENET_STD))
    return DatasetMeta(len(classes), 3, mean, std, None)  # ImageNet statistics unless given


@register_dataset("imagefolder", meta=_imagefolder_meta, image_files=True)
def imagefolder(split: str, root: str | None, download: bool, **kwargs) -> Dataset:
    return _imagefolder(root, split, lazy_decode=bool(kwargs.get("lazy_decode", False)))


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
        raise ConfigError(
            f"data: the {split} split has label {bad} outside [0, {num_classes}) (the network has "
            f"{num_classes} outputs); fix the labels or the class count of the data set"
        )
