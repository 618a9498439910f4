"""Data pipeline: data set registry, the embedded synthetic set, multi-resolution batches, the data module."""

from .datamodule import MultiResDataModule
from .datasets import (
    DATASETS,
    DataNotFoundError,
    DatasetEntry,
    DatasetInfo,
    DatasetMeta,
    build_dataset,
    dataset_meta,
    list_datasets,
    register_dataset,
)
from .multires import MultiResBatch, resize_images, resize_uint8, uint8_resize_applies
from .synthetic import SyntheticScaleDataset

__all__ = [
    "DATASETS",
    "DataNotFoundError",
    "DatasetEntry",
    "DatasetInfo",
    "DatasetMeta",
    "MultiResBatch",
    "MultiResDataModule",
    "SyntheticScaleDataset",
    "build_dataset",
    "dataset_meta",
    "list_datasets",
    "register_dataset",
    "resize_images",
    "resize_uint8",
    "uint8_resize_applies",
]
