"""Fast tests of the data pipeline (num_workers=0 throughout)."""

from __future__ import annotations

import gzip
import math
import struct

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from resnet_switch.data import (
    DataNotFoundError,
    MultiResBatch,
    MultiResDataModule,
    SyntheticScaleDataset,
    build_dataset,
    dataset_meta,
    resize_images,
    resize_uint8,
    uint8_resize_applies,
)
from resnet_switch.data import datasets as datasets_mod
from resnet_switch.data.datamodule import ToUint8CHW, validation_reference
from resnet_switch.errors import ConfigError


def _dm(**kw) -> MultiResDataModule:
    base = dict(num_workers=0, batch_size=8, train_samples=32, val_samples=16, crop_scale=(0.25, 1.0))
    return MultiResDataModule(**{**base, **kw})


def _smooth_image(h: int = 80, w: int = 96) -> torch.Tensor:
    """(3, h, w) float in [0.1, 0.9], a few low-frequency cosines."""
    y = torch.arange(h).float().view(-1, 1) / h
    x = torch.arange(w).float().view(1, -1) / w
    chans = [
        0.5 + 0.4 * torch.cos(2 * math.pi * (0.7 * x + 0.2 * c)) * torch.cos(2 * math.pi * (0.5 * y - 0.1 * c))
        for c in range(3)
    ]
    return torch.stack(chans)


# ---- MultiResBatch ------------------------------------------------------------------------------------
def test_resize_images_matches_interpolate_and_passes_through():
    x = torch.rand(2, 3, 32, 32)
    assert resize_images(x, 32) is x
    ref = F.interpolate(x, size=(20, 20), mode="bilinear", antialias=True, align_corners=False)
    assert torch.equal(resize_images(x, 20), ref)
    assert resize_images(x, 40).shape == (2, 3, 40, 40)  # upsampling allowed


def test_multires_batch_at_is_exact_and_cached():
    gen = torch.Generator().manual_seed(0)
    images, targets = torch.randn(4, 3, 32, 32, generator=gen), torch.arange(4)
    batch = MultiResBatch(images, targets)
    assert batch.base_resolution == 32 and len(batch) == 4 and batch.at(32) is images
    for r in (28, 16):
        out = batch.at(r)
        assert torch.equal(out, F.interpolate(images, size=r, mode="bilinear", antialias=True, align_corners=False))
        assert batch.at(r) is out  # cached, not recomputed


def test_multires_batch_prefers_given_per_resolution():
    images = torch.rand(2, 3, 32, 32)
    own16 = torch.rand(2, 3, 16, 16)
    batch = MultiResBatch(images, torch.zeros(2, dtype=torch.long), {32: images, 16: own16})
    assert batch.at(16) is own16
    assert not torch.equal(batch.at(24), own16[..., :1, :1])  # others still resized from the base
    assert batch.at(24).shape == (2, 3, 24, 24)


def test_training_batch_is_one_crop_at_every_resolution():
    dm = _dm()
    dm.setup("fit")
    raw_images, raw_targets = next(iter(dm.train_dataloader()))
    assert raw_images.dtype == torch.uint8 and raw_images.shape == (8, 3, 32, 32)
    batch = dm.on_after_batch_transfer((raw_images, raw_targets), 0)
    assert isinstance(batch, MultiResBatch) and batch.base_resolution == dm.max_train_resolution == 32
    # on the CPU every resolution comes from the uint8 crop (uint8 kernel), then is normalised
    assert torch.equal(batch.at(32), dm.normalize(raw_images))
    assert torch.equal(batch.at(16), dm.normalize(resize_uint8(raw_images, 16)))
    # the same image as resizing the normalised crop, up to uint8 rounding (1 grey level)
    one_level = 1.0 / (255 * min(dm.std))
    assert (resize_images(batch.at(32), 16) - batch.at(16)).abs().max() <= 1.01 * one_level
    assert [batch.at(r).shape[-1] for r in dm.train_resolutions] == [32, 28, 24, 20, 16]
    assert all(batch.at(r).is_contiguous() for r in dm.train_resolutions)


def test_uint8_resize_is_the_float_kernel_rounded():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8, generator=gen)
    assert resize_uint8(images, 40) is images
    for r in (33, 24, 9):
        ref = resize_images(images.float(), r)
        out = resize_uint8(images, r)
        assert out.dtype == torch.uint8 and out.shape == (3, 3, r, r)
        assert (out.float() - ref).abs().max() <= 1.0  # PIL-style fixed-point kernel: within one level
    # a float or single-channel source keeps the float path
    assert not uint8_resize_applies(images.float()) and not uint8_resize_applies(images[:, :1])
    assert uint8_resize_applies(images)


# ---- worker transforms --------------------------------------------------------------------------------
def _asymmetric_image() -> torch.Tensor:
    img = torch.zeros(3, 64, 64, dtype=torch.uint8)
    img[:, :, :16] = 255  # bright left band: a flip moves it to the right
    img[0, 40:, 20:30] = 128
    return img


def test_train_transform_one_crop_one_flip_uint8():
    dm = _dm(crop_scale=(1.0, 1.0))  # scale 1 -> the whole image, so only the flip varies
    transform = dm.train_transform()
    plain = TF.resize(_asymmetric_image(), [32, 32], antialias=True)
    seen = set()
    torch.manual_seed(0)
    for _ in range(20):
        out = transform(_asymmetric_image())
        assert out.dtype == torch.uint8 and out.shape == (3, 32, 32)
        if torch.equal(out, plain):
            seen.add("plain")
        elif torch.equal(out, plain.flip(-1)):
            seen.add("flipped")
        else:
            raise AssertionError("train transform is neither the crop nor its mirror")
    assert seen == {"plain", "flipped"}


def test_worker_resize_shares_the_crop_and_flip():
    dm = _dm(resize_on="worker", train_resolutions=(32, 16))
    torch.manual_seed(1)
    out32, out16 = dm.train_transform()(_asymmetric_image())
    assert out32.dtype == out16.dtype == torch.uint8 and out16.shape == (3, 16, 16)
    assert torch.equal(out16, TF.resize(out32, [16, 16], antialias=True))


def test_multi_crop_ablation_gives_independent_crops():
    dm = _dm(crop="multi", train_resolutions=(32, 16), crop_scale=(0.1, 0.3))
    torch.manual_seed(2)
    image = (torch.rand(3, 64, 64) * 255).to(torch.uint8)
    out32, out16 = dm.train_transform()(image)
    assert out32.shape == (3, 32, 32) and out16.shape == (3, 16, 16) and out16.dtype == torch.uint8
    assert not torch.equal(out16, TF.resize(out32, [16, 16], antialias=True))
    dm.setup("fit")
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert batch.base_resolution == 32 and batch.at(16) is batch.per_resolution[16]


def test_to_uint8_chw_converts_channels():
    rgb = ToUint8CHW(3)
    grey = Image.fromarray((torch.arange(64).view(8, 8) * 3).to(torch.uint8).numpy(), mode="L")
    assert rgb(grey).shape == (3, 8, 8) and torch.equal(rgb(grey)[0], rgb(grey)[2])
    rgba = torch.randint(0, 256, (4, 8, 8), dtype=torch.uint8)
    assert torch.equal(rgb(rgba), rgba[:3])
    assert ToUint8CHW(1)(grey).shape == (1, 8, 8)
    assert ToUint8CHW(1)(rgba).shape == (1, 8, 8)


# ---- device side --------------------------------------------------------------------------------------
def test_normalisation_matches_hand_computation():
    dm = _dm()
    images = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    batch = dm.on_after_batch_transfer((images, torch.tensor([1, 2])), 0)
    for c, (m, s) in enumerate(zip(dm.mean, dm.std)):
        expected = (images[:, c].double() / 255.0 - m) / s
        torch.testing.assert_close(batch.images[:, c].double(), expected, atol=1e-5, rtol=0)
    assert batch.images.dtype == torch.float32 and torch.equal(batch.targets, torch.tensor([1, 2]))
    scale, _ = dm._scale_shift(images.device)
    dm.on_after_batch_transfer((images, torch.tensor([1, 2])), 0)
    assert dm._scale_shift(images.device)[0] is scale  # constants made once per device


def test_val_small_resolution_approximates_standard_protocol():
    """Device path: Resize(37)+CenterCrop(32) then bilinear to r.  Standard: Resize(r/0.875)+CenterCrop(r).

    Both keep the central 0.875 of the shorter side, but the standard path rounds the resized size and the
    crop offset to whole pixels (region shifted by up to 1/2 output px and resized by up to 1 px), so on an
    image changing by at most g per output pixel the two differ by at most about 1 px * g (+2 uint8 steps),
    and on average by much less. Resizing the whole image without the crop misses this bound.
    """
    u8 = (_smooth_image() * 255).round().to(torch.uint8)
    dm = _dm(train_resolutions=(32, 24, 16))
    batch = dm.on_after_batch_transfer((dm.val_transform()(u8)[None], torch.zeros(1, dtype=torch.long)), 0)
    mean, std = torch.tensor(dm.mean).view(1, -1, 1, 1), torch.tensor(dm.std).view(1, -1, 1, 1)
    for r in (24, 16):
        ref = v2.Compose([v2.Resize(round(r / 0.875), antialias=True), v2.CenterCrop(r)])(u8)[None].float() / 255
        device_path = batch.at(r) * std + mean
        g = max(ref.diff(dim=-1).abs().max().item(), ref.diff(dim=-2).abs().max().item())
        err = (device_path - ref).abs()
        assert err.max().item() <= g + 2 / 255 and err.mean().item() <= 0.35 * g
        uncropped = resize_images(u8[None].float() / 255, r)
        assert (uncropped - ref).abs().max().item() > g + 2 / 255


def _val_batch(dm: MultiResDataModule):
    dm.setup("validate")
    return dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)


def test_val_crops_at_the_largest_training_resolution_and_above_it_and_worker_mode():
    """The reference crop (by default the largest training or test resolution; here 32, as evaluate
    passes a training run's): a test resolution above it (40) gets its own crop, one below it (16) is
    resized from the reference, not from the 40 crop."""
    assert _dm(train_resolutions=(32, 24), test_resolutions=(40, 16)).reference_resolution == 40
    assert _dm(train_resolutions=(32, 24), test_resolutions=(28, 16)).reference_resolution == 32
    assert validation_reference({"test_resolutions": [40, 16]}, [32, 24]) == 40
    assert validation_reference({"test_resolutions": None, "val_reference": 20}, [32, 24]) == 20
    dm = _dm(train_resolutions=(32, 24), test_resolutions=(40, 16), val_reference=32)
    batch = _val_batch(dm)
    assert batch.base_resolution == 32 and set(batch.per_resolution) == {40, 32}
    reference = dm.normalize(resize_uint8(dm.val_transform()(dm._datasets["val"].dataset[0][0])[1][None], 16))
    assert torch.equal(batch.at(16)[:1], reference)
    dm = _dm(resize_on="worker", test_resolutions=(32, 16))
    batch = _val_batch(dm)
    assert set(batch.per_resolution) == {32, 16} and batch.at(16) is batch.per_resolution[16]


@pytest.mark.parametrize("extra", [(36, 32, 28, 14), (24,), (40, 24, 8)])
def test_images_at_a_resolution_do_not_depend_on_the_other_test_resolutions(extra):
    """Issue 37: at 24 px the validation images are the same bits whatever else is evaluated, and they
    are the hand-made pipeline: Resize(round(32 / 0.875)) + CenterCrop(32) of the original (the
    reference at the largest training resolution), then the bilinear antialiased resize to 24."""
    train = dict(train_resolutions=(32, 28, 24, 20, 16), val_reference=32)  # a run's reference (evaluate)
    alone = _val_batch(_dm(**train, test_resolutions=(32, 24)))
    listed = _val_batch(_dm(**train, test_resolutions=(*extra, 24)))
    assert torch.equal(alone.at(24), listed.at(24))
    dm = _dm(**train, test_resolutions=(24,))
    dm.setup("validate")
    originals = [dm._datasets["val"].dataset[i][0] for i in range(len(alone))]
    crop32 = v2.Compose([ToUint8CHW(3), v2.Resize(round(32 / 0.875), antialias=True), v2.CenterCrop(32)])
    by_hand = dm.normalize(F.interpolate(torch.stack([crop32(o) for o in originals]), size=(24, 24), mode="bilinear",
                                         antialias=True, align_corners=False))
    assert torch.equal(listed.at(24), by_hand)
    for r in (x for x in extra if x > 32):  # above the reference: a crop of its own, as if evaluated alone
        own = _val_batch(_dm(**train, test_resolutions=(r,)))
        assert torch.equal(listed.at(r), own.at(r))


def test_dataloader_settings_and_seeded_order():
    dm = _dm(num_workers=2, pin_memory=False)
    train, val = dm.train_dataloader(), dm.val_dataloader()
    assert train.drop_last and not val.drop_last and train.persistent_workers
    order = list(iter(train.sampler))  # epoch 0: a permutation of the indices, not the identity
    assert sorted(order) == list(range(32)) and order != list(range(32))
    assert _dm().pin_memory == torch.cuda.is_available()

    def first_targets(seed):
        torch.manual_seed(0)
        return next(iter(_dm(seed=seed, train_samples=64).train_dataloader()))[1]

    assert torch.equal(first_targets(3), first_targets(3))
    assert not torch.equal(first_targets(3), first_targets(4))


def test_lightning_calls_the_hook_and_training_sees_multires_batches():
    seen = []

    class Probe(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(10))

        def training_step(self, batch, _):
            seen.append((type(batch), batch.at(16).shape))
            return F.cross_entropy(self.net(batch.at(16)), batch.targets)

        def validation_step(self, batch, _):
            seen.append((type(batch), batch.at(20).shape))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = L.Trainer(
        accelerator="cpu", fast_dev_run=1, logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(Probe(), datamodule=_dm())
    assert seen == [(MultiResBatch, (8, 3, 16, 16)), (MultiResBatch, (8, 3, 20, 20))]


# ---- metadata and the synthetic set -------------------------------------------------------------------
def test_metadata_available_before_setup():
    dm = MultiResDataModule(synthetic={"num_classes": 6, "native_size": 48})
    assert (dm.num_classes, dm.in_channels, dm.max_train_resolution) == (6, 3, 32)
    assert dm.test_resolutions == dm.train_resolutions == (32, 28, 24, 20, 16)
    assert not dm._datasets  # nothing built yet
    meta = dataset_meta("fashion_mnist")
    assert (meta.num_classes, meta.in_channels, meta.native_size, len(meta.mean)) == (10, 1, 28, 1)


def test_synthetic_is_deterministic_per_seed_split_index():
    a, b = SyntheticScaleDataset(20, "train", image_seed=0), SyntheticScaleDataset(20, "train", image_seed=0)
    x, y = a[7]
    assert x.dtype == torch.uint8 and x.shape == (3, 64, 64) and y == 7
    assert torch.equal(a[7][0], b[7][0]) and torch.equal(a[7][0], a[7][0])
    assert not torch.equal(a[7][0], SyntheticScaleDataset(20, "val", image_seed=0)[7][0])
    assert not torch.equal(a[7][0], SyntheticScaleDataset(20, "train", image_seed=1)[7][0])
    assert not torch.equal(a[7][0], a[17][0])  # same class, different sample
    assert len(a.classes) == 10 and a.classes[0] == "disc/v-stripes" and a.classes[1] == "disc/h-stripes"
    assert SyntheticScaleDataset(4, native_size=96)[0][0].shape == (3, 96, 96)


def test_synthetic_images_follow_image_seed_not_the_run_seed():
    """``seed=`` draws crops and order over the same images; ``data.synthetic.image_seed`` draws a
    disjoint set (the transfer experiment's target: other class count, other image seed)."""
    def base_images(**kwargs):
        dm = MultiResDataModule("synthetic", train_resolutions=[16], train_samples=150, **kwargs)
        return dm._dataset("train").dataset

    run0, run1 = base_images(seed=0), base_images(seed=1)
    assert all(torch.equal(run0[i][0], run1[i][0]) for i in (0, 7, 149))
    source = torch.stack([run0[i][0] for i in range(150)]).flatten(1)
    target_set = base_images(synthetic={"num_classes": 15, "image_seed": 1})
    target = torch.stack([target_set[i][0] for i in range(150)]).flatten(1)
    identical = (source[:, None, :] == target[None, :, :]).all(-1)
    assert not identical.any()
    same_seed = base_images(synthetic={"num_classes": 15})  # the old transfer target: shared renders
    shared = torch.stack([same_seed[i][0] for i in range(150)]).flatten(1)
    assert (source[:, None, :] == shared[None, :, :]).all(-1).any()


def test_synthetic_cache_returns_the_same_images():
    cached, fresh = SyntheticScaleDataset(6, cache_mb=1), SyntheticScaleDataset(6, cache_mb=0)
    first = [cached[i][0] for i in range(6)]
    first[0].zero_()  # a caller writing into what it got must not change the cache
    assert all(torch.equal(cached[i][0], fresh[i][0]) for i in range(6))
    assert len(cached._cache) == 6 and not fresh._cache
    assert SyntheticScaleDataset(6, cache_mb=2 * 3 * 64 * 64 / 2**20)._cache_capacity == 2  # two 3x64x64 images
    with pytest.raises(ValueError, match="cache_mb"):
        SyntheticScaleDataset(6, cache_mb=-1)


def test_synthetic_fine_cue_fades_with_resolution():
    """Vertical- vs horizontal-stripe classes differ in gradient orientation at 64 px, hardly at 16 px."""
    ds = SyntheticScaleDataset(400, "val")
    imgs = torch.stack([ds[i][0] for i in range(400)]).float() / 255
    labels = torch.arange(400) % 10
    v, h = imgs[labels % 2 == 0], imgs[labels % 2 == 1]  # v-stripes vs h-stripes classes

    def orientation_energy(x, r):
        x = resize_images(x, r).mean(1)
        return (x.diff(dim=-1).abs().mean() - x.diff(dim=-2).abs().mean()).item()

    # horizontal differences dominate for vertical stripes; at 16 px less than a third of the gap is left
    gap = {r: orientation_energy(v, r) - orientation_energy(h, r) for r in (64, 32, 16)}
    assert gap[64] > 0.005 and gap[32] > 0.3 * gap[64] and abs(gap[16]) < 0.3 * gap[64]


# ---- registry errors and real-file data sets ----------------------------------------------------------
def test_fashion_mnist_missing_gives_one_line_naming_both_ways(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets_mod, "DEBIAN_FASHION_MNIST_DIR", str(tmp_path / "no-debian"))
    root = tmp_path / "empty"
    root.mkdir()
    with pytest.raises(DataNotFoundError) as info:
        build_dataset("fashion_mnist", "train", str(root), download=False)
    msg = str(info.value)
    assert isinstance(info.value, ValueError) and "\n" not in msg
    assert "apt-get install dataset-fashion-mnist" in msg and f"{root}/FashionMNIST/raw" in msg and "data.root" in msg


def _write_idx(path, magic: int, array: torch.Tensor) -> None:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.numpy().tobytes())


def test_fashion_mnist_from_debian_gzip_files(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    debian.mkdir()
    for prefix, n in (("train", 12), ("t10k", 6)):
        _write_idx(
            debian / f"{prefix}-images-idx3-ubyte.gz", 0x803, torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8)
        )
        _write_idx(debian / f"{prefix}-labels-idx1-ubyte.gz", 0x801, torch.arange(n, dtype=torch.uint8) % 10)
    monkeypatch.setattr(datasets_mod, "DEBIAN_FASHION_MNIST_DIR", str(debian))
    info = build_dataset("fashion_mnist", "val", str(tmp_path / "root"), download=False)
    assert len(info.dataset) == 6 and info.in_channels == 1 and info.num_classes == 10
    assert (tmp_path / "root" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file()
    dm = _dm(name="fashion_mnist", root=str(tmp_path / "root"), batch_size=4, train_samples=None, val_samples=None)
    dm.setup("fit")
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert batch.images.shape == (4, 1, 32, 32) and len(dm._datasets["train"]) == 12


def test_cifar_without_download_names_the_switch(tmp_path):
    with pytest.raises(DataNotFoundError) as info:
        build_dataset("cifar10", "train", str(tmp_path), download=False)
    msg = str(info.value)
    assert "\n" not in msg and "data.download=true" in msg and "data.root" in msg


def test_imagefolder_missing_root(tmp_path):
    for root in (None, str(tmp_path / "nowhere")):
        with pytest.raises(DataNotFoundError) as info:
            build_dataset("imagefolder", "train", root, download=False)
        assert "\n" not in str(info.value) and "data.root" in str(info.value)


def test_imagefolder_tiny_tree_grey_and_rgba_become_rgb(tmp_path):
    modes = {"cat": ("L", "RGBA"), "dog": ("RGB", "P")}
    for split in ("train", "val"):
        for cls, cls_modes in modes.items():
            (tmp_path / split / cls).mkdir(parents=True)
            for i, mode in enumerate(cls_modes):
                Image.new(mode, (20 + 7 * i, 24), color=40 * i + 10).save(tmp_path / split / cls / f"{i}.png")
    dm = _dm(
        name="imagefolder",
        root=str(tmp_path),
        train_resolutions=(16, 8),
        batch_size=2,
        train_samples=None,
        val_samples=None,
    )
    assert (dm.num_classes, dm.in_channels) == (2, 3)
    info = build_dataset("imagefolder", "train", str(tmp_path), download=False)
    images = [info.dataset[i][0] for i in range(4)]  # decoded now: uint8 RGB tensors (TorchCodec or PIL)
    assert all(x.dtype == torch.uint8 and x.shape[0] == 3 for x in images)
    dm.setup("fit")
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert batch.images.shape == (2, 3, 16, 16) and batch.at(8).shape == (2, 3, 8, 8)
    val = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    assert val.images.shape == (2, 3, 16, 16)


def _pixels(image) -> torch.Tensor:
    return TF.pil_to_tensor(image) if isinstance(image, Image.Image) else image


def test_holdout_validates_on_a_fixed_draw_of_training_images():
    """data.holdout=N: validation scores N training images (the same draw for every seed), training
    uses the other ones, the test split stays the data set's own; too large a holdout is one line."""
    splits = {}
    for seed in (0, 1):
        dm = _dm(train_samples=32, holdout=8, seed=seed)
        dm.setup()
        train, val = dm._datasets["train"].dataset, dm._datasets["val"].dataset
        splits[seed] = (train.indices, val.indices)
        assert len(train) == 24 and len(val) == 8 and not set(train.indices) & set(val.indices)
        full = build_dataset("synthetic", "train", None, False, num_samples=32).dataset
        assert torch.equal(_pixels(val[0][0]), _pixels(full[val.indices[0]][0]))
        assert len(dm._datasets["test"]) == 16  # val_samples of the generated test split
    assert splits[0] == splits[1]
    with pytest.raises(ConfigError, match="data.holdout"):
        dm = _dm(train_samples=32, holdout=32)
        dm.setup("fit")
