"""``data.decode=device``, its CPU side: the workers draw the same boxes and flips as ``decode=worker``,
the batch decode (run here on the CPU, where TorchCodec decodes instead of nvJPEG) rebuilds the
same crops, non-JPEG files and failures take the worker path, and without CUDA ``decode=device``
is ``decode=worker``."""

import json
import logging

import pytest
import torch

import resnet_switch.data.datamodule as datamodule_module
from resnet_switch.bench import loader as bench_loader
from resnet_switch.bench.data import natural_image
from resnet_switch.data import MultiResDataModule
from resnet_switch.data import device_decode as dd
from resnet_switch.data.datamodule import ToUint8CHW
from resnet_switch.data.decode import (
    MIN_DRAFT_SCALE,
    DecodeCropFlip,
    DeferredCrop,
    draft_scale,
    open_image_lazy,
)
from resnet_switch.data.imagefolder import BadImageError
from resnet_switch.evaluation.accuracy import device_batches
from resnet_switch.train import train

from .helpers import tiny_cfg
from .image_metrics import psnr


def make_folder(root, extra: bool = True):
    """train/{a,b}: 5 JPEGs each (sizes vary), and with ``extra`` a PNG, a CMYK JPEG and a JPEG cut short."""
    for split in ("train", "val"):
        for c, cls in enumerate(("a", "b")):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(5 if split == "train" else 1):
                natural_image(10 * c + i, 96 + 8 * i, 72 + 4 * i, texture=5.0).save(folder / f"{i}.jpg", quality=90)
    if extra:
        folder = root / "train" / "a"
        natural_image(50, 80, 64, texture=5.0).save(folder / "x.png")
        natural_image(51, 90, 70, texture=5.0).convert("CMYK").save(folder / "cmyk.jpg")
        data = (folder / "0.jpg").read_bytes()
        (folder / "cut.jpg").write_bytes(data[: len(data) * 2 // 3])  # decoded in the worker: PIL fails


def frame_end(data: bytes) -> int:
    """Where a JPEG's frame header (SOF) segment ends."""
    i = 2
    while not 0xC0 <= data[i + 1] <= 0xC2:
        i += 2 + ((data[i + 2] << 8) | data[i + 3])
    return i + 2 + ((data[i + 2] << 8) | data[i + 3])


def datamodule(root, decode, **kwargs):
    args = dict(name="imagefolder", root=str(root), train_resolutions=(64, 32), batch_size=4, num_workers=0,
                pin_memory=False, decode=decode)
    args.update(kwargs)
    dm = MultiResDataModule(**args)
    dm.setup("fit")
    return dm


def epoch_batches(dm, epoch=0):
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    return [(type(b).__name__, dm.on_after_batch_transfer(b, 0)) for b in loader]


@pytest.fixture
def gpu_decode_on_cpu(monkeypatch):
    """Pretend nvJPEG is there: the deferred path runs, its batch decode on the CPU."""
    monkeypatch.setattr(datamodule_module, "device_decode_available", lambda: True)


def test_deferred_items_draw_the_worker_path_s_boxes_and_flips(tmp_path):
    make_folder(tmp_path, extra=False)
    path = str(tmp_path / "train" / "a" / "3.jpg")  # 120 x 84
    size = 20  # boxes of >= 80 px decode at quarter scale (PIL draft) in the worker: both paths occur
    worker = DecodeCropFlip(size, (0.08, 1.0), 3, ToUint8CHW(3))
    deferred = DecodeCropFlip(size, (0.08, 1.0), 3, ToUint8CHW(3), defer=True)
    boxes, scales = [], set()
    original = DecodeCropFlip.sample_box
    worker.sample_box = lambda s: boxes.append(original(worker, s)) or boxes[-1]
    for seed in range(40):
        torch.manual_seed(seed)
        crop = worker(open_image_lazy(path))
        after_worker = torch.rand(1)  # the generator's state after the item: same draws consumed
        torch.manual_seed(seed)
        item = deferred(open_image_lazy(path))
        assert isinstance(item, DeferredCrop) and item.box == boxes[-1], seed
        assert torch.equal(torch.rand(1), after_worker), seed
        # the deferred crop made from the drawn box and flip: the worker's crop
        batch = dd.DeferredCollate(3, size)([(item, 0)])
        remade = dd.decode_batch(batch)[0]
        scale = draft_scale(item.box[2] - item.box[0], item.box[3] - item.box[1], size)
        scales.add(scale)
        if scale < MIN_DRAFT_SCALE:  # both: TorchCodec's full decode + torch's uint8 kernel
            assert torch.equal(remade, crop), seed
        else:  # the worker decoded at reduced scale (PIL draft): the same region, other resampling
            assert psnr(remade, crop) >= 30.0 and psnr(remade, crop) > psnr(remade, crop.flip(-1)), seed
    assert scales == {1, 2, 4}


def test_deferred_batches_equal_worker_batches_in_order_and_pixels(tmp_path, gpu_decode_on_cpu):
    make_folder(tmp_path)
    worker = datamodule(tmp_path, "worker")
    device = datamodule(tmp_path, "device")
    assert device.decode_on_device and not worker.decode_on_device
    for epoch in (0, 1):
        ours, theirs = epoch_batches(device, epoch), epoch_batches(worker, epoch)
        assert {kind for kind, _ in ours} == {"DeferredJpegBatch"} and {kind for kind, _ in theirs} == {"list"}
        assert len(ours) == len(theirs) == 3
        for (_, a), (_, b) in zip(ours, theirs):
            assert torch.equal(a.targets, b.targets)  # the same samples in the same order
            # a box of >= 256 px would decode at reduced scale in the worker: none here (<= 128 x 88)
            assert torch.equal(a._source, b._source)  # the same crops, pixel for pixel (PNG, CMYK: worker-made)
            assert torch.equal(a.at(32), b.at(32))
    assert device.bad_image_count() == worker.bad_image_count() == 1  # the cut JPEG, found by the workers


def test_deferred_batches_cross_worker_processes(tmp_path, gpu_decode_on_cpu):
    make_folder(tmp_path, extra=False)
    ours = epoch_batches(datamodule(tmp_path, "device", num_workers=1, batch_size=5))
    theirs = epoch_batches(datamodule(tmp_path, "worker", batch_size=5))
    assert [kind for kind, _ in ours] == ["DeferredJpegBatch"] * 2
    for (_, a), (_, b) in zip(ours, theirs):
        assert torch.equal(a.targets, b.targets) and torch.equal(a._source, b._source)


def test_without_cuda_device_decode_is_the_worker_path(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(datamodule_module, "device_decode_available", lambda: False)  # no GPU, also on a GPU machine
    make_folder(tmp_path)
    with caplog.at_level(logging.INFO):
        device = datamodule(tmp_path, "device")
    assert not device.decode_on_device
    assert sum("data.decode=device: no CUDA device" in r.getMessage() for r in caplog.records) == 1
    worker = datamodule(tmp_path, "worker")
    for (kind_a, a), (kind_b, b) in zip(epoch_batches(device), epoch_batches(worker)):
        assert kind_a == kind_b == "list"
        assert torch.equal(a.targets, b.targets) and torch.equal(a.images, b.images)


def test_a_failed_device_decode_takes_the_cpu_path_then_the_bad_image_policy(tmp_path, monkeypatch):
    make_folder(tmp_path, extra=False)
    files = [tmp_path / "train" / "a" / f"{i}.jpg" for i in range(3)]
    garbage = tmp_path / "garbage.jpg"  # the header up to the frame (size), then EOI: only decoding finds out
    data = files[0].read_bytes()
    garbage.write_bytes(data[:frame_end(data)] + b"\xff\xd9")
    transform = DecodeCropFlip(32, (0.08, 1.0), 3, ToUint8CHW(3), defer=True)
    worker = DecodeCropFlip(32, (0.08, 1.0), 3, ToUint8CHW(3))
    items, worker_crops = [], []
    for k, path in enumerate([*files, garbage]):
        torch.manual_seed(k)
        items.append((transform(open_image_lazy(str(path))), k))
        if k < 3:
            torch.manual_seed(k)
            worker_crops.append(worker(open_image_lazy(str(path))))
    reference = dd.decode_batch(dd.DeferredCollate(3, 32)(items[:3]))
    # the device returns nothing for item 0 and a wrong size for item 1: both made on the CPU instead
    real = dd.decode_jpegs
    monkeypatch.setattr(dd, "decode_jpegs", lambda jpegs, mode, device: [None, torch.zeros(3, 5, 5, dtype=torch.uint8),
                                                                         *real(jpegs[2:], mode, device)])
    batch = dd.DeferredCollate(3, 32)(items)
    with pytest.raises(OSError):  # no policy given: the PIL error of the garbage file
        dd.decode_batch(dd.DeferredCollate(3, 32)(items))
    seen = []
    images = dd.decode_batch(batch, on_error=lambda path, err: seen.append(path))
    assert torch.equal(images[0], worker_crops[0]) and torch.equal(images[1], worker_crops[1])  # the worker path
    assert torch.equal(images[2], reference[2])
    assert seen == [str(garbage)]
    assert torch.equal(images[3], images[0]) and batch.targets.tolist() == [0, 1, 2, 0]  # replaced by item 0
    # the data module applies its on_bad_image policy
    dm = datamodule(tmp_path, "worker", on_bad_image="fail")
    with pytest.raises(BadImageError, match=r"^data.on_bad_image=fail: cannot read .*garbage.jpg"):
        dm._device_decode_error(str(garbage), OSError("broken data"))
    dm = datamodule(tmp_path, "worker")
    with pytest.warns(UserWarning, match="skipping unreadable image .*garbage.jpg"):
        dm._device_decode_error(str(garbage), OSError("broken data"))
    dm._device_decode_error(str(garbage), OSError("broken data"))  # counted and warned once per file
    assert dm.bad_image_count() == 1


def test_collate_keeps_the_bytes_on_the_host_and_a_plain_batch_plain(tmp_path):
    make_folder(tmp_path, extra=False)
    transform = DecodeCropFlip(32, (0.08, 1.0), 3, ToUint8CHW(3), defer=True)
    paths = sorted((tmp_path / "train" / "a").glob("*.jpg"))[:3]
    items = [(transform(open_image_lazy(str(p))), k) for k, p in enumerate(paths)]
    batch = dd.DeferredCollate(3, 32)([items[0], (torch.full((3, 32, 32), 7, dtype=torch.uint8), 9), *items[1:]])
    assert batch.index.tolist() == [0, 2, 3] and batch.targets.tolist() == [0, 9, 1, 2]
    assert [bytes(j.numpy()) for j in batch.jpegs()] == [p.read_bytes() for p in paths]
    assert all(j.is_contiguous() and j.dim() == 1 for j in batch.jpegs())
    assert torch.equal(batch.images[1], torch.full((3, 32, 32), 7, dtype=torch.uint8))
    moved = batch.to("cpu")
    assert moved.encoded is batch.encoded and moved.boxes is batch.boxes  # stay on the host
    plain = dd.DeferredCollate(3, 32)([(torch.zeros(3, 32, 32, dtype=torch.uint8), 1)] * 2)
    assert isinstance(plain, list) and plain[0].shape == (2, 3, 32, 32)  # default_collate's (images, targets)


@pytest.mark.parametrize("kwargs, field", [
    (dict(decode="gpu"), "data.decode must be"),
    (dict(decode="device", name="synthetic"), "data.decode=device: only data=imagefolder"),
    (dict(decode="device", crop="multi"), "data.decode=device needs data.crop=single"),
])
def test_decode_option_errors_name_the_field(kwargs, field, tmp_path):
    args = dict(name="imagefolder", root=str(tmp_path), train_resolutions=(32,))
    args.update(kwargs)
    with pytest.raises(ValueError, match=f"^{field}"):
        MultiResDataModule(**args)


def test_training_with_device_decode_runs_through_lightning(tmp_path, gpu_decode_on_cpu, monkeypatch):
    make_folder(tmp_path / "data", extra=False)
    calls = []
    real = datamodule_module.decode_batch
    monkeypatch.setattr(datamodule_module, "decode_batch", lambda batch, *a, **k: calls.append(len(batch)) or real(
        batch, *a, **k))
    metrics = train(tiny_cfg(tmp_path / "run", "data=imagefolder", f"data.root={tmp_path / 'data'}",
                             "data.decode=device", "data.batch_size=4", "data.train_samples=null",
                             "data.val_samples=null"))
    assert set(metrics) == {"acc1@16", "acc1@12"}
    assert calls == [4, 4]  # both training batches (Lightning's transfer, then the hook); validation: workers
    # BN recalibration (slimmable methods) reads training batches through evaluation.accuracy
    dm = datamodule(tmp_path / "data", "device", train_resolutions=(16,))
    batches = list(device_batches(dm, dm.calibration_dataloader(), torch.device("cpu")))
    assert len(calls) == 4 and [b.images.shape for b in batches] == [(4, 3, 16, 16)] * 2


def test_bench_loader_reports_images_per_second(capsys):
    from resnet_switch import bench

    bench.main(["loader", "images=8", "distinct=2", "image_size=[64,48]", "batch_size=4", "workers=0", "epochs=2",
                "warmup=1", "resolutions=[32,16]", "device=cpu"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["worker_batches"] == result["device_batches"] == 3  # 2 epochs x 2 batches, 1 untimed
    assert result["worker_img_s"] > 0 and result["device_img_s"] > 0
    assert result["device_fallback"] is True and "device_vs_worker" not in result  # device=cpu: the worker path
    with pytest.raises(ValueError, match="^images: 8 images make 2 batches"):
        bench_loader.check_options(dict(bench_loader.DEFAULTS, images=8, batch_size=4, epochs=1, warmup=2))


def test_grey_images_decode_grey_on_either_path(tmp_path):
    path = tmp_path / "grey.jpg"
    natural_image(7, 90, 70, texture=5.0).convert("L").save(path, quality=90)
    worker = DecodeCropFlip(40, (0.08, 1.0), 1, ToUint8CHW(1))
    deferred = DecodeCropFlip(40, (0.08, 1.0), 1, ToUint8CHW(1), defer=True)
    for seed in range(5):
        torch.manual_seed(seed)
        crop = worker(open_image_lazy(str(path)))
        torch.manual_seed(seed)
        batch = dd.DeferredCollate(1, 40)([(deferred(open_image_lazy(str(path))), 0)])
        assert crop.shape == (1, 40, 40) and torch.equal(dd.decode_batch(batch, "L")[0], crop), seed
