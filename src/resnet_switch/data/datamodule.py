"""``MultiResDataModule``: one crop per sample in the worker, every resolution made on the device.

Worker (train, ``crop="single"``): RandomResizedCrop(max train res) + one horizontal flip -> uint8 (C, R, R);
imagefolder JPEGs are decoded at the reduced scale the sampled crop allows (:mod:`.decode`).
Worker (val/test): Resize(round(R / val_crop_ratio)) + CenterCrop(R) -> uint8 (C, R, R), R = the reference
(``reference_resolution``: ``val_reference``, else the largest training or test resolution of the training
run, kept by its checkpoint); a test resolution above R gets its own such crop. So the images at a
resolution do not depend on the other resolutions an evaluation asks for.
Device (``on_after_batch_transfer``): float, /255, normalise -> ``MultiResBatch``; ``batch.at(r)`` resizes
that same crop (bilinear, antialias; on the CPU from the uint8 crop, the cheap kernel, see
``MultiResBatch``). For a smaller r this is the region Resize(r/ratio)+CenterCrop(r) keeps.
Options: ``crop="multi"`` (ablation: an independent crop+flip per train resolution, made in the worker);
``resize_on="worker"`` (fidelity: the worker resizes to every resolution, train and val);
``protocol``: the validation images of a source repository (:data:`PROTOCOLS`), to reproduce its
published numbers with its weights; ``mean``/``std``: a normalisation other than the data set's.
Worker items for those options are tuples of uint8 images, one per resolution, high to low.
Under DDP every process loads its own share of each epoch (:mod:`.sampling`); ``batch_size`` is per
process. ``imagefolder`` files that cannot be decoded are skipped or fail (``on_bad_image``).
``decode="device"`` (``imagefolder``, training): the workers read the JPEGs and draw their crops, the
GPU decodes them (:mod:`.device_decode`); without CUDA the workers decode (the same order and crops).
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ..errors import ConfigError
from ..training.distributed import rank as rank_of_process
from ..training.distributed import world_size
from .datasets import DatasetMeta, build_dataset, check_labels, dataset_entry, dataset_meta, list_datasets
from .decode import DecodeCropFlip, EncodedJpeg
from .device_decode import DeferredCollate, DeferredJpegBatch, decode_batch, device_decode_available
from .imagefolder import BAD_IMAGE_POLICIES, DECODE_ERRORS, BadImageError, BadImageLog, convert_mode, sample_path
from .multires import MultiResBatch, resize_align_corners
from .sampling import EpochShuffleSampler, ResumableLoader, ShardSampler, sample_seed

# validation images per protocol (the official loaders, read from their code):
#   ours: Resize(round(R / val_crop_ratio)) + CenterCrop(R) at the reference resolution R in the
#     worker, each smaller resolution resized from that crop on the device (bilinear, antialias);
#   rsnets, san, slimmable: EVERY resolution r from the original image in the worker, PIL
#     Resize(int(r / val_crop_ratio)) (shorter side, bilinear) + CenterCrop(r) (RS-Nets and SAN
#     utils/dataloaders.py; slimmable_networks' Resize(256) + CenterCrop(224) is the 224 case);
#   mutualnet: Resize(int(R / val_crop_ratio)) + CenterCrop(R) once (256/224), every resolution
#     F.interpolate(bilinear, align_corners=True) of the normalised crop -- the rule its train.py
#     uses for every batch, so here for training and calibration batches too.
PROTOCOLS = ("ours", "rsnets", "san", "slimmable", "mutualnet")
PER_RESOLUTION_PROTOCOLS = ("rsnets", "san", "slimmable")

SYNTHETIC_TRAIN_SAMPLES = 8_000
SYNTHETIC_VAL_SAMPLES = 2_000
HOLDOUT_DRAW_SEED = 20_200  # the draw of data.holdout's images: fixed, independent of `seed`


class ToUint8CHW:
    """PIL image, :class:`~.decode.EncodedJpeg` or uint8 ``(C, H, W)`` / ``(H, W)`` tensor -> uint8
    ``(channels, H, W)`` tensor.

    Grey -> RGB repeats the channel; RGB -> grey uses ITU-R 601 luma; alpha is dropped; PIL images
    of any mode go through :func:`~.imagefolder.convert_mode` (CMYK, palette, 16-bit grey, ...).
    """

    def __init__(self, channels: int) -> None:
        if channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {channels}")
        self.channels = channels
        self.mode = "RGB" if channels == 3 else "L"

    def __call__(self, image: Image.Image | Tensor | EncodedJpeg) -> Tensor:
        if isinstance(image, EncodedJpeg):
            image = image.decode(self.mode)
        elif isinstance(image, Image.Image):
            image = TF.pil_to_tensor(convert_mode(image, self.mode))
        image = torch.as_tensor(image)
        if image.dim() == 2:
            image = image.unsqueeze(0)
        if image.dtype != torch.uint8 or image.dim() != 3:
            raise TypeError(f"expected a uint8 (C, H, W) image, got {image.dtype} {tuple(image.shape)}")
        c = image.shape[0]
        if c in (2, 4):  # drop alpha
            image, c = image[: c - 1], c - 1
        if c == self.channels:
            return image
        if self.channels == 3:
            return image.expand(3, -1, -1).contiguous()
        return TF.rgb_to_grayscale(image, num_output_channels=1)


class PerResolution:
    """``image -> tuple(per[r](pre(image)) for r in resolutions)`` (uint8 images, high to low)."""

    def __init__(self, pre, per: dict[int, object]) -> None:
        self.pre, self.per = pre, per

    def __call__(self, image):
        image = self.pre(image)
        return tuple(t(image) for t in self.per.values())


class TransformedDataset(Dataset):
    """``(image, label) -> (transform(image), label)``.

    With ``seed`` set, items are addressed by :class:`EpochShuffleSampler` keys ``epoch * n + index``
    and the transform's random draws are seeded from ``(seed, epoch, index)`` (resumable runs).
    With ``bad_images`` (image files), an item whose file cannot be decoded (when read or when the
    transform decodes it) fails naming the file or is replaced by the next readable item, per the
    log's policy (:mod:`.imagefolder`); the replacement keeps the original item's random draws.
    """

    def __init__(self, dataset: Dataset, transform, seed: int | None = None,
                 bad_images: BadImageLog | None = None) -> None:
        self.dataset, self.transform, self.seed, self.bad_images = dataset, transform, seed, bad_images

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int):
        n = len(self.dataset)
        if self.seed is None and not 0 <= int(key) < n:
            raise IndexError(f"index {key} out of range for {n} items")
        epoch, index = divmod(int(key), n) if self.seed is not None else (0, int(key))
        if self.bad_images is None:
            return self._item(index, epoch, index)
        for i in (j % n for j in range(index, index + n)):
            if self.bad_images.is_bad(i):
                continue
            try:
                return self._item(i, epoch, index)
            except DECODE_ERRORS as err:
                self.bad_images.report(i, sample_path(self.dataset, i), err)
        raise BadImageError("data.root: none of the images of this split can be read; check the files")

    def _item(self, index: int, epoch: int, seed_index: int):
        image, label = self.dataset[index]
        if self.seed is None:
            return self.transform(image), label
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only: torch.manual_seed would also queue a (lazy) CUDA seeding per
            # item, which records a Python stack trace each time (~1 ms per item on a CUDA build)
            torch.default_generator.manual_seed(sample_seed(self.seed, epoch, seed_index))
            return self.transform(image), label


def unchanged(image):
    """The identity (a picklable worker transform)."""
    return image


def check_normalization(mean, std) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """``(mean, std)`` as tuples (both or neither given; std positive)."""
    if mean is None and std is None:
        return None, None
    if mean is None or std is None or len(mean) != len(std) or not len(mean):
        raise ConfigError(f"data.mean / data.std: give both, one number per channel, got mean={mean!r} std={std!r}")
    if any(not s > 0 for s in std):
        raise ConfigError(f"data.std: must be positive, got {std!r}")
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


DECODE_PLACES = ("worker", "device")


def check_decode(decode: str, name: str, crop: str, resize_on: str) -> bool:
    """Check ``data.decode``; True when the training JPEGs will be decoded on the GPU (``device``
    with CUDA and TorchCodec; otherwise ``device`` falls back to the workers, said once)."""
    if decode not in DECODE_PLACES:
        raise ConfigError(f"data.decode must be 'worker' or 'device', got {decode!r}")
    if decode == "worker":
        return False
    if not dataset_entry(name).image_files:
        files = "|".join(n for n in list_datasets() if dataset_entry(n).image_files)
        raise ConfigError(f"data.decode=device: only data={files} reads JPEG files (data={name}); "
                         "use data.decode=worker")
    if crop != "single" or resize_on != "device":
        raise ConfigError("data.decode=device needs data.crop=single and data.resize_on=device (one crop per "
                         "sample, resized on the device); use data.decode=worker")
    if not device_decode_available():
        rank_zero_info("data.decode=device: no CUDA device (or no TorchCodec), so the workers decode the JPEGs: "
                       "the same sample order and crops as data.decode=worker")
        return False
    return True


def validation_reference(run_data: dict, train_resolutions: Sequence[int]) -> int:
    """The validation reference of a training run (its ``data`` config and training resolutions): its
    ``val_reference``, else the largest of its training and test resolutions. Fixed by the run, so an
    evaluation of its checkpoint at any list of resolutions crops the same images at each one."""
    if run_data.get("val_reference") is not None:
        return int(run_data["val_reference"])
    return max([*train_resolutions, *(run_data.get("test_resolutions") or [])])


def _descending(resolutions: Sequence[int]) -> tuple[int, ...]:
    res = tuple(sorted({int(r) for r in resolutions}, reverse=True))
    if not res or res[-1] < 1:
        raise ConfigError(f"resolutions must be positive integers, got {list(resolutions)}")
    return res


class MultiResDataModule(L.LightningDataModule):
    """Data for multi-resolution training; metadata (``num_classes`` ...) is available right after init."""

    def __init__(
        self,
        name: str = "synthetic",
        root: str | None = None,
        download: bool = False,
        train_resolutions: Sequence[int] = (32, 28, 24, 20, 16),
        test_resolutions: Sequence[int] | None = None,
        batch_size: int = 128,
        num_workers: int = 2,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        crop: str = "single",
        resize_on: str = "device",
        val_crop_ratio: float = 0.875,
        train_samples: int | None = None,
        val_samples: int | None = None,
        synthetic: dict | None = None,
        pin_memory: bool | None = None,
        seed: int = 0,
        on_bad_image: str = "skip",
        protocol: str = "ours",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        decode: str = "worker",
        holdout: int = 0,
        val_reference: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        if protocol not in PROTOCOLS:
            raise ConfigError(f"data.protocol: unknown {protocol!r}; choose one of {list(PROTOCOLS)}")
        self.protocol = protocol
        self._mean, self._std = check_normalization(mean, std)
        if crop not in ("single", "multi"):
            raise ConfigError(f"data.crop must be 'single' or 'multi', got {crop!r}")
        if resize_on not in ("device", "worker"):
            raise ConfigError(f"data.resize_on must be 'device' or 'worker', got {resize_on!r}")
        if not 0 < val_crop_ratio <= 1:
            raise ConfigError(f"data.val_crop_ratio must be in (0, 1], got {val_crop_ratio}")
        if on_bad_image not in BAD_IMAGE_POLICIES:
            raise ConfigError(f"data.on_bad_image: unknown {on_bad_image!r}; choose one of {list(BAD_IMAGE_POLICIES)}")
        self.decode_on_device = check_decode(decode, name, crop, resize_on)
        self.on_bad_image = on_bad_image
        self.name, self.root, self.download = name, root, bool(download)
        self._train_res = _descending(train_resolutions)
        self._test_res = _descending(test_resolutions) if test_resolutions else self._train_res
        if val_reference is not None and int(val_reference) < 1:
            raise ConfigError(f"data.val_reference must be a positive resolution (px) or null, got {val_reference}")
        self._val_reference = None if val_reference is None else int(val_reference)
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        self.crop, self.resize_on, self.val_crop_ratio = crop, resize_on, float(val_crop_ratio)
        self.synthetic = dict(synthetic or {})
        self.entry = dataset_entry(name)  # what the data set is: generated in memory or image files on disk
        if self.entry.generated:
            train_samples = SYNTHETIC_TRAIN_SAMPLES if train_samples is None else train_samples
            val_samples = SYNTHETIC_VAL_SAMPLES if val_samples is None else val_samples
        self.train_samples, self.val_samples = train_samples, val_samples
        self.holdout = int(holdout or 0)
        if self.holdout < 0:
            raise ConfigError(f"data.holdout must be >= 0 (training images held out as the validation split), "
                              f"got {holdout}")
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.seed = int(seed)
        self._meta: DatasetMeta | None = None
        self._datasets: dict[str, Dataset] = {}
        self._train_loader: ResumableLoader | None = None
        self._resume_state: dict | None = None  # position to resume the training loader at
        self._affine: dict[torch.device, tuple[Tensor, Tensor]] = {}  # per device: (scale, shift)

    # ---- metadata -------------------------------------------------------------------------------
    @property
    def meta(self) -> DatasetMeta:
        """Registry metadata, computed without loading the data set (cached)."""
        if self._meta is None:
            self._meta = dataset_meta(self.name, self.root, **self.synthetic)
        return self._meta

    @property
    def num_classes(self) -> int:
        return self.meta.num_classes

    @property
    def in_channels(self) -> int:
        return self.meta.in_channels

    @property
    def mean(self) -> tuple[float, ...]:
        return self._mean if self._mean is not None else self.meta.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self._std if self._std is not None else self.meta.std

    @property
    def train_resolutions(self) -> tuple[int, ...]:
        """Training resolutions, high to low."""
        return self._train_res

    @property
    def test_resolutions(self) -> tuple[int, ...]:
        """Validation/test resolutions, high to low (defaults to the training ones)."""
        return self._test_res

    @property
    def max_train_resolution(self) -> int:
        return self._train_res[0]

    @property
    def max_test_resolution(self) -> int:
        return self._test_res[0]

    # ---- worker transforms ----------------------------------------------------------------------
    def train_transform(self):
        """PIL/uint8 image -> uint8 (C, R, R) at the max train res, or a tuple per resolution (see module doc)."""
        to_uint8 = ToUint8CHW(self.in_channels)
        flip = v2.RandomHorizontalFlip()

        def crop(r: int):
            return v2.RandomResizedCrop(r, scale=self.crop_scale, antialias=True)

        if self.crop == "multi":
            return PerResolution(to_uint8, {r: v2.Compose([crop(r), flip]) for r in self._train_res})
        # one crop + flip; a lazily opened JPEG (imagefolder) is decoded at the scale its crop needs,
        # or only read, its crop drawn and decoded on the GPU (decode=device)
        one_crop = DecodeCropFlip(self.max_train_resolution, self.crop_scale, self.in_channels, to_uint8,
                                  defer=self.decode_on_device)
        if self.resize_on == "worker":
            return PerResolution(one_crop, {r: v2.Resize([r, r], antialias=True) for r in self._train_res})
        return one_crop

    @property
    def reference_resolution(self) -> int:
        """The validation reference R (px): ``val_reference``, else the largest of the training and test
        resolutions this module was made with. Every test resolution r <= R is resized from the one
        centre crop at R; every r > R gets its own centre crop from the original image. ``evaluate``
        passes the training run's R (:func:`validation_reference`), so the images at r, and the
        accuracy there, do not depend on which other resolutions are evaluated."""
        if self._val_reference is not None:
            return self._val_reference
        return max(self._train_res[0], self._test_res[0])

    def val_transform(self):
        """PIL/uint8 image -> uint8 (C, R, R) centre crop at :attr:`reference_resolution` R, or a tuple
        of crops (high to low): one per test resolution above R, then R; or one per test resolution
        (``resize_on="worker"``, the per-resolution protocols)."""
        to_uint8 = ToUint8CHW(self.in_channels)

        def centre(r: int):
            return v2.Compose([to_uint8, v2.Resize(round(r / self.val_crop_ratio), antialias=True), v2.CenterCrop(r)])

        def official(r: int):  # the official loaders: int(r / ratio), resized as the image comes (PIL)
            return v2.Compose([v2.Resize(int(r / self.val_crop_ratio), antialias=True), v2.CenterCrop(r), to_uint8])

        crop = centre if self.protocol == "ours" else official
        if self.protocol in PER_RESOLUTION_PROTOCOLS or (self.protocol == "ours" and self.resize_on == "worker"):
            return PerResolution(unchanged, {r: crop(r) for r in self._test_res})
        reference = self.reference_resolution
        crops = [r for r in self._test_res if r > reference]
        if any(r <= reference for r in self._test_res):
            crops.append(reference)
        if len(crops) == 1:
            return crop(crops[0])
        return PerResolution(unchanged, {r: crop(r) for r in crops})

    # ---- data sets and loaders -------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Download / unpack on one process (no-op for generated data sets: synthetic)."""
        if not self.entry.generated:
            for split in ("train", "val"):
                build_dataset(self.name, split, self.root, self.download)

    def setup(self, stage: str | None = None) -> None:
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage, ("train", "val", "test"))
        for split in splits:
            if split not in self._datasets:
                self._datasets[split] = self._build(split)

    def _build(self, split: str) -> Dataset:
        held_out = self.holdout > 0 and split in ("train", "val")
        source = "train" if held_out else split  # with a holdout, validation scores held-out training images
        count = self.train_samples if split == "train" else self.val_samples
        kwargs = dict(self.synthetic)
        if self.entry.generated:
            kwargs["num_samples"] = self.train_samples if source == "train" else count
        if self.entry.image_files and split == "train":
            kwargs["lazy_decode"] = True  # the train transform decodes (fast draft path for JPEGs)
        dataset = build_dataset(self.name, source, self.root, self.download, **kwargs).dataset
        check_labels(dataset, self.num_classes, split)
        if held_out:
            dataset = self._holdout_part(dataset, split)
        if count is not None and count < len(dataset):  # a fixed random subset, independent of `seed`
            keep = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:count]
            dataset = Subset(dataset, keep.sort().values.tolist())
        bad = BadImageLog(len(dataset), self.on_bad_image) if self.entry.image_files else None
        if split == "train":
            return TransformedDataset(dataset, self.train_transform(), seed=self.seed, bad_images=bad)
        return TransformedDataset(dataset, self.val_transform(), bad_images=bad)

    def _holdout_part(self, dataset: Dataset, split: str) -> Dataset:
        """``split`` of the training set under ``holdout``: ``val`` is a fixed draw of ``holdout`` images
        (the same for every seed and run), ``train`` the rest, in their original order."""
        n = len(dataset)
        if self.holdout >= n:
            raise ConfigError(f"data.holdout: {self.holdout} held-out images leave none of the {n} training images "
                              f"to train on; hold out fewer (e.g. data.holdout={n // 12})")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(HOLDOUT_DRAW_SEED))
        part = order[: self.holdout] if split == "val" else order[self.holdout:]
        return Subset(dataset, part.sort().values.tolist())

    def _dataset(self, split: str) -> Dataset:
        if split not in self._datasets:
            self._datasets[split] = self._build(split)
        return self._datasets[split]

    def _loader(self, dataset: Dataset, sampler, train: bool, cls=DataLoader) -> DataLoader:
        deferred = train and self.decode_on_device  # training items may be DeferredCrops
        return cls(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=train,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed),
            collate_fn=DeferredCollate(self.in_channels, self.max_train_resolution) if deferred else None,
        )

    def train_dataloader(self) -> ResumableLoader:
        """This process's share of every epoch, resumable mid-epoch (:mod:`.sampling`)."""
        dataset = self._dataset("train")
        world, rank = world_size(), rank_of_process()
        sampler = EpochShuffleSampler(len(dataset), self.seed, num_replicas=world, rank=rank)
        if len(sampler) < self.batch_size:  # drop_last: not one full batch, the run would train nothing
            raise ConfigError(f"data.batch_size: {self.batch_size} is more than the {len(sampler)} training images "
                              f"this process gets per epoch ({len(dataset)} in all, {world} process(es)); "
                              f"lower data.batch_size to at most {len(sampler)} or give more training images")
        loader = self._loader(dataset, sampler, train=True, cls=ResumableLoader)
        if self._resume_state is not None:
            loader.load_state_dict(self._resume_state)
        self._train_loader = loader
        return loader

    def state_dict(self) -> dict:
        """The training loader's position in its epoch; Lightning stores it in every checkpoint and
        hands it back before any loader is made (its own loader-state restore comes too late when
        ``configure_optimizers`` has already made the loader to count the steps)."""
        return {"train_loader": self._train_loader.state_dict()} if self._train_loader is not None else {}

    def load_state_dict(self, state: dict) -> None:
        self._resume_state = state.get("train_loader")

    def calibration_dataloader(self) -> DataLoader:
        """Training images in epoch-0 order, the same in every process (BN recalibration must give
        every DDP rank identical statistics)."""
        dataset = self._dataset("train")
        return self._loader(dataset, EpochShuffleSampler(len(dataset), self.seed), train=True)

    def val_dataloader(self) -> DataLoader:
        """One loader serving every test resolution through ``MultiResBatch.at``; under DDP each
        process evaluates every ``world_size``-th image (synchronised metrics are then exact)."""
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def _eval_loader(self, split: str) -> DataLoader:
        dataset = self._dataset(split)
        world, rank = world_size(), rank_of_process()
        return self._loader(dataset, ShardSampler(len(dataset), world, rank) if world > 1 else None, train=False)

    def bad_image_count(self) -> int:
        """Distinct unreadable images skipped so far, all splits (``on_bad_image=skip``)."""
        logs = [getattr(d, "bad_images", None) for d in self._datasets.values()]
        return sum(log.count() for log in logs if log is not None)

    def _device_decode_error(self, path: str, err: BaseException) -> None:
        """A training JPEG the device could not decode (nor the CPU after it): the bad-image policy."""
        log = getattr(self._datasets.get("train"), "bad_images", None)
        (log or BadImageLog(1, self.on_bad_image)).report(None, path, err)

    # ---- device side ------------------------------------------------------------------------------
    def _scale_shift(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """(1, C, 1, 1) float tensors with x_uint8 * scale + shift = (x / 255 - mean) / std; one copy per device."""
        out = self._affine.get(device)
        if out is None:
            if len(self.mean) != self.in_channels:
                raise ConfigError(f"data.mean / data.std: {len(self.mean)} entries but the images have "
                                 f"{self.in_channels} channels")
            mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
            std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
            out = self._affine[device] = ((1.0 / (255.0 * std)).to(device), (-mean / std).to(device))
        return out

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 (B, C, H, W) (any memory layout) -> contiguous float (B, C, H, W), ``(x / 255 - mean) / std``,
        on the images' device (in place on the new float tensor: one pass each, no temporaries)."""
        scale, shift = self._scale_shift(images.device)
        return images.to(torch.float32, memory_format=torch.contiguous_format).mul_(scale).add_(shift)

    def on_after_batch_transfer(self, batch, dataloader_idx: int = 0):
        """``(uint8 images | tuple of them, targets)`` or a :class:`DeferredJpegBatch` (decoded here)
        on the device -> ``MultiResBatch``."""
        if isinstance(batch, MultiResBatch):
            return batch
        if isinstance(batch, DeferredJpegBatch):
            mode = "RGB" if self.in_channels == 3 else "L"
            batch = decode_batch(batch, mode, on_error=self._device_decode_error), batch.targets
        images, targets = batch
        if isinstance(images, Tensor):
            resize = resize_align_corners if self.protocol == "mutualnet" else None
            return MultiResBatch(self.normalize(images), targets, source=images, normalize=self.normalize,
                                 resize=resize)
        # a crop per resolution (crop=multi, resize_on=worker), or validation crops above the reference
        # resolution plus the reference crop, from which every other resolution is resized
        crops = {int(x.shape[-1]): x for x in images}
        base = self.reference_resolution if self.reference_resolution in crops else max(crops)
        per_resolution = {r: self.normalize(x) for r, x in crops.items()}
        resize = resize_align_corners if self.protocol == "mutualnet" else None
        return MultiResBatch(per_resolution[base], targets, per_resolution, source=crops[base],
                             normalize=self.normalize, resize=resize)
