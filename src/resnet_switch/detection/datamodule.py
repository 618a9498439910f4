"""The detection DataModule: images and torchvision targets, batched as lists.

Workers return uint8 images at their own size (the detector's transform resizes each one to the
active configuration's size on the device, so one batch serves every configuration); a training
image may be flipped horizontally with its boxes and masks (``torchvision.transforms.v2``).
``on_after_batch_transfer`` turns the images into floats in [0, 1], the detector's input.

Training order and flips are pure functions of ``(seed, epoch, index)`` and each process takes its
share of the epoch (:mod:`resnet_switch.data.sampling`), so a run killed mid-epoch resumes exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..data.sampling import EpochShuffleSampler, ResumableLoader, ShardSampler, sample_seed
from ..errors import ConfigError
from ..training.distributed import rank, world_size


def collate_detection(batch: list) -> tuple[list[Tensor], list[dict]]:
    """``[(image, target), ...] -> ([images], [targets])`` (images keep their own sizes)."""
    images, targets = zip(*batch)
    return list(images), list(targets)


class HorizontalFlip(Dataset):
    """``dataset`` with each sample flipped with probability ``p`` (boxes and masks too).

    Items are addressed by :class:`~resnet_switch.data.sampling.EpochShuffleSampler` keys
    ``epoch * n + index``; the flip of a key is drawn from ``(seed, epoch, index)`` alone."""

    def __init__(self, dataset: Dataset, p: float = 0.5, seed: int = 0):
        from torchvision.transforms import v2

        self.dataset, self.flip, self.seed = dataset, v2.RandomHorizontalFlip(p), int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int):
        epoch, index = divmod(int(key), len(self.dataset))
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(sample_seed(self.seed, epoch, index))
            return self._flipped(index)

    def _flipped(self, index: int):
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
        seed: seed of the epoch order and the flips.
        name: the data set's name (``data.name``, for titles). task: ``detection`` (the group's marker).
        resolutions: the input sizes of the configurations, highest first (the detector resizes).
        root: the folder of the image files (``null``: generated data).
        calibration_samples: training images for the exact BN statistics per configuration.

    BN post-statistics (:meth:`calibration_loader`) see the first training images, unflipped.
    """

    def __init__(self, train: Dataset, val: Dataset, batch_size: int = 8, num_workers: int = 2, hflip: float = 0.5,
                 seed: int = 0, name: str = "detection", task: str = "detection", resolutions: Sequence[int] = (),
                 root: str | None = None, calibration_samples: int = 256):
        super().__init__()
        if task != "detection":
            raise ConfigError(f"data.task: a detection data set, got task={task!r}")
        self.name, self.root, self.calibration_samples = name, root, int(calibration_samples)
        self.sizes = list(resolutions)
        if getattr(train, "num_classes", None) != getattr(val, "num_classes", None):
            raise ConfigError(f"data: train and val sets disagree on the classes ({getattr(train, 'num_classes', '?')} "
                             f"vs {getattr(val, 'num_classes', '?')}); use one category list")
        if not 0.0 <= float(hflip) <= 1.0:
            raise ConfigError(f"data.hflip: a probability in [0, 1], got {hflip!r}")
        self.train_set, self.val_set = train, val
        self.batch_size, self.num_workers, self.hflip = int(batch_size), int(num_workers), float(hflip)
        self.seed = int(seed)
        self._train_loader: ResumableLoader | None = None
        self._resume_state: dict | None = None

    @property
    def num_classes(self) -> int:
        return int(self.train_set.num_classes)

    def _loader(self, dataset: Dataset, sampler=None, cls=DataLoader, num_workers: int | None = None) -> DataLoader:
        """A loader with its own generator: making an iterator draws no number from the global RNG
        (the RPN and RoI samplers draw from it; a resumed run restores it)."""
        workers = self.num_workers if num_workers is None else num_workers
        return cls(dataset, self.batch_size, sampler=sampler, num_workers=workers,
                   collate_fn=collate_detection, persistent_workers=workers > 0,
                   pin_memory=torch.cuda.is_available(), generator=torch.Generator().manual_seed(self.seed))

    def train_dataloader(self) -> ResumableLoader:
        """This process's share of every epoch, resumable mid-epoch."""
        dataset = HorizontalFlip(self.train_set, self.hflip, self.seed)
        sampler = EpochShuffleSampler(len(dataset), self.seed, num_replicas=world_size(), rank=rank())
        loader = self._loader(dataset, sampler, cls=ResumableLoader)
        if self._resume_state is not None:
            loader.load_state_dict(self._resume_state)
        self._train_loader = loader
        return loader

    def val_dataloader(self) -> DataLoader:
        """Every validation image once over all processes (synchronised AP is then exact)."""
        world = world_size()
        return self._loader(self.val_set, ShardSampler(len(self.val_set), world, rank()) if world > 1 else None)

    def state_dict(self) -> dict:
        """The training loader's position in its epoch (saved in every checkpoint)."""
        return {"train_loader": self._train_loader.state_dict()} if self._train_loader is not None else {}

    def load_state_dict(self, state: dict) -> None:
        self._resume_state = state.get("train_loader")

    def calibration_loader(self) -> DataLoader:
        """Training images in order, unflipped, in the main process (BN post-statistics)."""
        return self._loader(self.train_set, num_workers=0)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, targets = batch
        return [to_float_image(im) for im in images], targets


def to_float_image(image: Tensor) -> Tensor:
    """uint8 ``(3, H, W)`` -> float in [0, 1] (float input passes unchanged)."""
    return image.float().div_(255.0) if image.dtype == torch.uint8 else image
