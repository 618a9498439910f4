"""Data pipeline: data set registry, the embedded synthetic set, multi-resolution batches, the data module."""

from .datamodule import MultiResDataModule
from .datasets import (
    DATASET_NAMES,
    DataNotFoundError,
    DatasetInfo,
    DatasetMeta,
    build_dataset,
    dataset_meta,
)
from .multires import MultiResBatch, resize_images, resize_uint8, uint8_resize_applies
from .synthetic import SyntheticScaleDataset

__all__ = [
    "DATASET_NAMES",
    "DataNotFoundError",
    "DatasetInfo",
    "DatasetMeta",
    "MultiResBatch",
    "MultiResDataModule",
    "SyntheticScaleDataset",
    "build_dataset",
    "dataset_meta",
    "resize_images",
    "resize_uint8",
    "uint8_resize_applies",
]
