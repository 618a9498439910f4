"""bench ``infer`` / ``data`` tasks and the fast JPEG decode of the imagefolder training path.

No timing assertions: speed figures go to the bench output only."""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

import resnet_switch
from resnet_switch import bench
from resnet_switch.bench import data as bench_data
from resnet_switch.bench import infer as bench_infer
from resnet_switch.bench.data import natural_image
from resnet_switch.cli.options import run_tool
from resnet_switch.data.datamodule import MultiResDataModule, ToUint8CHW
from resnet_switch.data.decode import (
    MIN_DRAFT_SCALE,
    DecodeCropFlip,
    EncodedJpeg,
    crop_jpeg,
    decode_for_box,
    decode_tensor,
    draft_scale,
    open_image_lazy,
    parse_jpeg_header,
    random_resized_box,
    resize_box_uint8,
)
from resnet_switch.evaluation.costs import cost_table

from .image_metrics import psnr

SRC = str(Path(resnet_switch.__file__).resolve().parents[1])


# ------------------------------------------------------------------------------------ fast decode
@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory):
    """A natural-looking 800x600 JPEG (gradients, shapes, light texture), quality 90."""
    path = tmp_path_factory.mktemp("jpeg") / "natural.jpg"
    natural_image(3, 800, 600, texture=10.0).save(path, quality=90)
    return path


def test_draft_scale_is_the_largest_that_keeps_enough_pixels():
    rng = random.Random(0)
    for _ in range(2000):
        w, h, r = rng.randint(1, 3000), rng.randint(1, 3000), rng.randint(8, 320)
        s = draft_scale(w, h, r)
        assert s in (1, 2, 4, 8)
        if s > 1:
            assert w / s >= r and h / s >= r  # never fewer pixels than the output needs
        if s < 8:
            assert w / (2 * s) < r or h / (2 * s) < r  # the next scale would lose some


@pytest.mark.parametrize("box, target, scale", [
    ((100, 50, 700, 590), 128, 4),  # 600x540 box for 128 px: decoded at 1/4
    ((0, 0, 800, 600), 224, 2),
    ((300, 100, 560, 380), 64, 4),
    ((10, 10, 300, 250), 96, 2),
])
def test_draft_decode_matches_full_decode_psnr_35db(big_jpeg, box, target, scale):
    decoded, scaled_box = decode_for_box(open_image_lazy(big_jpeg).pil(), box, target)
    assert decoded.size == (800 // scale, 600 // scale)  # really decoded at reduced scale
    assert scaled_box[2] - scaled_box[0] >= target and scaled_box[3] - scaled_box[1] >= target
    fast = TF.pil_to_tensor(decoded.resize((target, target), Image.Resampling.BILINEAR, box=scaled_box))
    full_image = Image.open(big_jpeg).convert("RGB")
    full = TF.pil_to_tensor(full_image.resize((target, target), Image.Resampling.BILINEAR, box=box))
    assert fast.shape == full.shape == (3, target, target)
    assert psnr(fast, full) >= 35.0


@pytest.mark.parametrize("box, target", [((0, 0, 440, 440), 224), ((123, 45, 400, 300), 224), ((7, 9, 60, 80), 96),
                                         ((100, 50, 700, 590), 224)])  # the last one fits half scale
def test_full_decode_path_equals_pil_decode_and_resize(big_jpeg, box, target):
    # below MIN_DRAFT_SCALE: TorchCodec's decoder + torch's uint8 kernel instead of PIL
    assert draft_scale(box[2] - box[0], box[3] - box[1], target) < MIN_DRAFT_SCALE
    jpeg = open_image_lazy(big_jpeg)
    pixels = decode_tensor(jpeg.data)
    pil = Image.open(big_jpeg).convert("RGB")
    assert torch.equal(pixels, TF.pil_to_tensor(pil))  # the same libjpeg decode, pixel for pixel
    fast = resize_box_uint8(pixels, box, target)
    assert torch.equal(crop_jpeg(jpeg, box, target), fast)  # the path the training crop takes
    full = TF.pil_to_tensor(pil.resize((target, target), Image.Resampling.BILINEAR, box=box))
    assert fast.shape == full.shape == (3, target, target) and fast.dtype == torch.uint8
    # PIL's filter in torch's kernel: within a grey level inside; on the edge row/column PIL's
    # filter also reads the pixels just outside the box, torch's stops at the crop
    assert (fast.int() - full.int())[:, 1:-1, 1:-1].abs().max() <= 1
    assert psnr(fast, full) >= 40.0
    grey = decode_tensor(jpeg.data, mode="L")
    assert grey.shape == (1, 600, 800)
    assert resize_box_uint8(grey, box, target).shape == (1, target, target)


def test_full_decode_leaves_files_it_cannot_read_to_pil(tmp_path, big_jpeg):
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(big_jpeg.read_bytes()[:5000])
    jpeg = open_image_lazy(truncated)
    assert isinstance(jpeg, EncodedJpeg) and jpeg.size == (800, 600)  # the header is intact
    assert decode_tensor(jpeg.data) is None  # TorchCodec rejects it ...
    with pytest.raises(OSError):  # ... and the PIL path raises what the bad-image policy handles
        DecodeCropFlip(96, (0.08, 1.0), 3, ToUint8CHW(3))(jpeg)
    with pytest.raises(OSError):
        ToUint8CHW(3)(jpeg)


def test_jpeg_header_reads_the_size_pil_reads(tmp_path):
    image = natural_image(1, 123, 77, texture=5.0)
    cases = {
        "baseline": dict(quality=90),
        "progressive": dict(quality=80, progressive=True),
        "with_exif_and_icc": dict(quality=90, exif=b"Exif\x00\x00" + bytes(300), icc_profile=bytes(3000)),
        "subsampling_444": dict(quality=95, subsampling=0),
    }
    for name, kwargs in cases.items():
        path = tmp_path / f"{name}.jpg"
        image.save(path, **kwargs)
        assert parse_jpeg_header(path.read_bytes())[:3] == (123, 77, 3), name
    image.convert("L").save(tmp_path / "grey.jpg")
    assert parse_jpeg_header((tmp_path / "grey.jpg").read_bytes())[:3] == (123, 77, 1)
    image.convert("CMYK").save(tmp_path / "cmyk.jpg")
    assert parse_jpeg_header((tmp_path / "cmyk.jpg").read_bytes())[:3] == (123, 77, 4)
    image.save(tmp_path / "x.png")
    assert parse_jpeg_header((tmp_path / "x.png").read_bytes()) is None
    data = (tmp_path / "baseline.jpg").read_bytes()
    assert parse_jpeg_header(data[:20]) is None  # cut before the frame header
    assert parse_jpeg_header(b"") is None and parse_jpeg_header(b"\xff\xd8\x00\x00") is None


def test_lazy_open_reads_jpegs_and_leaves_other_files_to_pil(tmp_path):
    image = natural_image(2, 90, 70, texture=5.0)
    transform = DecodeCropFlip(32, (0.08, 1.0), 3, ToUint8CHW(3))
    for name, mode in (("rgb.jpg", "RGB"), ("grey.jpg", "L"), ("cmyk.jpg", "CMYK"), ("x.png", "RGB")):
        path = tmp_path / name
        image.convert(mode).save(path)
        opened = open_image_lazy(path)
        assert isinstance(opened, EncodedJpeg) == (mode in ("RGB", "L") and name.endswith(".jpg")), name
        reference = TF.pil_to_tensor(Image.open(path).convert("RGB"))
        assert torch.equal(ToUint8CHW(3)(opened), reference), name  # the same decode, pixel for pixel
        torch.manual_seed(0)
        crop = transform(opened)
        torch.manual_seed(0)
        slow = transform(reference)  # the tensor path: torchvision RandomResizedCrop + flip
        assert crop.shape == (3, 32, 32) and psnr(crop, slow) >= 30.0, name


@pytest.mark.parametrize("size, scale, ratio", [((500, 375), (0.08, 1.0), (3 / 4, 4 / 3)),
                                                ((40, 900), (0.9, 1.0), (3 / 4, 4 / 3)),  # falls back to the centre
                                                ((300, 200), (0.25, 0.5), (0.5, 2.0))])
def test_random_resized_box_draws_what_torchvision_draws(size, scale, ratio):
    crop = v2.RandomResizedCrop(32, scale=scale, ratio=ratio)
    image = Image.new("RGB", size)
    for seed in range(200):
        torch.manual_seed(seed)
        p = crop.make_params([image])
        torch.manual_seed(seed)
        assert random_resized_box(*size, scale, ratio) == (p["left"], p["top"], p["width"], p["height"]), seed


def test_fast_path_draws_the_same_crop_and_flip_as_the_tensor_path(big_jpeg):
    transform = DecodeCropFlip(96, (0.08, 1.0), 3, ToUint8CHW(3))
    decoded = TF.pil_to_tensor(Image.open(big_jpeg).convert("RGB"))
    for seed in range(6):
        torch.manual_seed(seed)
        fast = transform(open_image_lazy(big_jpeg))
        torch.manual_seed(seed)
        slow = transform(decoded)  # a tensor: torchvision RandomResizedCrop + flip
        assert fast.dtype == torch.uint8 and fast.shape == (3, 96, 96)
        assert psnr(fast, slow) >= 30.0  # same box and flip; only the resize implementations differ
        assert psnr(fast, slow.flip(-1)) < psnr(fast, slow)


def test_imagefolder_training_items_take_the_fast_path(tmp_path, monkeypatch):
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            natural_image(len(cls), 120, 90, texture=5.0).save(tmp_path / split / cls / "0.jpg", quality=90)
    calls = []
    original = DecodeCropFlip.crop_encoded
    monkeypatch.setattr(DecodeCropFlip, "crop_encoded", lambda self, im: calls.append(im.size) or original(self, im))
    dm = MultiResDataModule(name="imagefolder", root=str(tmp_path), train_resolutions=(32, 16), batch_size=2,
                            num_workers=0, pin_memory=False)
    dm.setup("fit")
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert batch.images.shape == (2, 3, 32, 32) and batch.at(16).shape == (2, 3, 16, 16)
    assert calls == [(120, 90), (120, 90)]
    val = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    assert val.images.shape == (2, 3, 32, 32) and len(calls) == 2  # validation decodes as before


# ------------------------------------------------------------------------------------ bench tasks
def test_data_task_reports_every_contender(capsys):
    opts = dict(bench_data.DEFAULTS, images=3, image_size=[64, 48], resolutions=[32, 16], rounds=1, warmup=1,
                batch_size=2, texture=5.0)
    bench_data.check_options(opts)
    out = bench_data.data_task(opts, {})
    for key in ("ours_ms", "ours_device_cpu_ms", "official_ms", "single_ms", "decode_ms"):
        assert out[key] > 0, key
    assert out["ours_cpu_training_ms"] == pytest.approx(out["ours_ms"] + out["ours_device_cpu_ms"], abs=2e-3)
    assert out["ours_vs_single"] == pytest.approx(out["ours_ms"] / out["single_ms"], rel=1e-2)
    assert out["cpu_training_vs_official"] == pytest.approx(out["ours_cpu_training_ms"] / out["official_ms"], rel=1e-2)
    assert out["samples"] == 3 and 0.0 <= out["draft_share"] <= 1.0


def test_official_protocol_gives_every_resolution(tmp_path):
    path = tmp_path / "x.jpg"
    natural_image(0, 64, 48).save(path)
    outs = bench_data.official_sample(path, [32, 24, 16])
    assert [tuple(o.shape) for o in outs] == [(3, 32, 32), (3, 24, 24), (3, 16, 16)]


def test_infer_task_materialised_equals_torchvision_and_switches():
    opts = dict(bench_infer.DEFAULTS, models=["resnet18"], resolutions=[32, 16], steps=1, warmup=0,
                switch_model="resnet20", num_classes=10, switches=5)
    bench_infer.check_options(opts)
    out = bench_infer.infer_task(opts, {})
    rows = out["latency"]["resnet18"]
    assert [r["resolution"] for r in rows] == [32, 16]
    assert all(r["max_abs_diff"] == 0.0 for r in rows)  # the same network as torchvision, same weights
    costs = {row["resolution"]: row["madds"] for row in cost_table("resnet18", [32, 16], num_classes=10)}
    assert [r["madds"] for r in rows] == [costs[32], costs[16]]
    assert rows[1]["madds_ratio"] == round(costs[16] / costs[32], 4) and rows[0]["latency_ratio"] == 1.0
    assert set(out["switch"]) == {"rsnet", "mutualnet", "san"}
    for figures in out["switch"].values():
        assert figures["switch_ms"] > 0 and figures["configs"] >= 2


def test_time_pair_reports_medians_and_the_median_paired_ratio(monkeypatch):
    # a fake clock the two "models" advance: b's cost drifts 1, 4, 1, 4, ... while a costs twice b
    now = [0.0]
    costs_b = iter([1.0, 1.0, 4.0, 4.0, 1.0, 1.0, 4.0, 4.0, 1.0, 1.0])  # per call, in call order
    last_b = [0.0]

    def b(x):
        last_b[0] = next(costs_b)
        now[0] += last_b[0]

    def a(x):
        now[0] += 2.0 * last_b[0]  # a runs next to b and pays the same drift

    monkeypatch.setattr(bench_infer, "latency_clock", lambda device: lambda: now[0] / 1e3)
    order = []
    ours, theirs, ratio = bench_infer.time_pair(lambda x: order.append("a") or a(x),
                                                lambda x: order.append("b") or b(x),
                                                torch.zeros(1), steps=4, warmup=1)
    assert order[:2] == ["a", "b"]  # warmup
    assert order[2:] == ["a", "b", "b", "a", "a", "b", "b", "a"]  # order alternates per step
    assert ratio == pytest.approx(2.0)  # paired per step, so the drift cancels exactly
    assert ours == pytest.approx(statistics.median([2.0, 8.0, 8.0, 2.0]))
    assert theirs == pytest.approx(statistics.median([1.0, 4.0, 4.0, 1.0]))


def test_data_cli_prints_json_last(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p),
               OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "resnet_switch.bench", "data", "images=2", "image_size=[64,48]",
                           "resolutions=[32,16]", "rounds=1", "warmup=0"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["task"] == "data" and result["official_ms"] > 0 and result["resolutions"] == [32, 16]


@pytest.mark.parametrize("argv, field", [
    (["data", "image_size=[64]"], "image_size"),
    (["data", "resolutions=[16,32]"], "resolutions"),
    (["data", "method=rsnet"], "method"),  # a train_step option, not a data one
    (["infer", "models=[vgg]"], "models"),
    (["infer", "switch_methods=[nonet]"], "switch_methods"),
    (["infer", "steps=0"], "steps"),
])
def test_bench_task_bad_options_exit_2(argv, field, capsys):
    with pytest.raises(SystemExit) as info:
        run_tool(bench.main, argv)
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}:"), lines
