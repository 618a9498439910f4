"""The detection DataModule: images and torchvision targets, batched as lists.

Workers return uint8 images at their own size (the detector's transform resizes each one to the
active configuration's size on the device, so one batch serves every configuration); a training
image may be flipped horizontally with its boxes and masks (``torchvision.transforms.v2``).
``on_after_batch_transfer`` turns the images into floats in [0, 1], the detector's input.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset


def collate_detection(batch: list) -> tuple[list[Tensor], list[dict]]:
    """``[(image, target), ...] -> ([images], [targets])`` (images keep their own sizes)."""
    images, targets = zip(*batch)
    return list(images), list(targets)


class HorizontalFlip(Dataset):
    """``dataset`` with each sample flipped with probability ``p`` (boxes and masks too)."""

    def __init__(self, dataset: Dataset, p: float = 0.5):
        from torchvision.transforms import v2

        self.dataset, self.flip = dataset, v2.RandomHorizontalFlip(p)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        from torchvision import tv_tensors

        image, target = self.dataset[index]
        h, w = image.shape[-2:]
        wrapped = dict(target, boxes=tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(h, w)))
        if "masks" in target:
            wrapped["masks"] = tv_tensors.Mask(target["masks"])
        image, wrapped = self.flip(tv_tensors.Image(image), wrapped)
        out = {k: v.as_subclass(Tensor) if isinstance(v, Tensor) else v for k, v in wrapped.items()}
        return image.as_subclass(Tensor), out


class DetectionDataModule(L.LightningDataModule):
    """Args:
        train, val: the data sets (``SyntheticDetection``, ``CocoInstances`` or any set giving
            ``(uint8 image, target)``); their ``num_classes`` (background included) must agree.
        batch_size: images per step (per process). num_workers: loader workers.
        hflip: flip probability of a training image.

    BN post-statistics (:meth:`calibration_loader`) see the first training images, unflipped.
    """

    def __init__(self, train: Dataset, val: Dataset, batch_size: int = 8, num_workers: int = 2, hflip: float = 0.5):
        super().__init__()
        if getattr(train, "num_classes", None) != getattr(val, "num_classes", None):
            raise ValueError(f"data: train and val sets disagree on the classes ({getattr(train, 'num_classes', '?')} "
                             f"vs {getattr(val, 'num_classes', '?')}); use one category list")
        if not 0.0 <= float(hflip) <= 1.0:
            raise ValueError(f"data.hflip: a probability in [0, 1], got {hflip!r}")
        self.train_set, self.val_set = train, val
        self.batch_size, self.num_workers, self.hflip = int(batch_size), int(num_workers), float(hflip)

    @property
    def num_classes(self) -> int:
        return int(self.train_set.num_classes)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          collate_fn=collate_detection, persistent_workers=self.num_workers > 0,
                          pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        dataset = HorizontalFlip(self.train_set, self.hflip) if self.hflip > 0 else self.train_set
        return self._loader(dataset, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def calibration_loader(self) -> DataLoader:
        """Training images in order, unflipped, in the main process (BN post-statistics)."""
        return DataLoader(self.train_set, self.batch_size, shuffle=False, num_workers=0, collate_fn=collate_detection)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, targets = batch
        return [to_float_image(im) for im in images], targets


def to_float_image(image: Tensor) -> Tensor:
    """uint8 ``(3, H, W)`` -> float in [0, 1] (float input passes unchanged)."""
    return image.float().div_(255.0) if image.dtype == torch.uint8 else image
