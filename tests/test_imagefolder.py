"""``imagefolder`` with bad data: odd image modes, unreadable files (skip | fail), empty and unknown
class folders, labels out of range; generated tiny folders in tmp_path."""

import csv
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_switch.data import MultiResDataModule
from resnet_switch.data.datasets import check_labels
from resnet_switch.data.decode import decode_file
from resnet_switch.data.imagefolder import BadImageError, convert_mode
from resnet_switch.errors import first_line
from resnet_switch.train import train

from .helpers import tiny_cfg

MODES = ["RGB", "L", "CMYK", "RGBA", "P", "I;16", "LA"]


def _image(mode: str, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65535, (40, 48), dtype=np.uint16))
    if mode == "P":
        image = rgb.convert("P")
        image.info["transparency"] = 0
        return image
    return rgb.convert(mode)


def make_folder(root, bad: bool = True, classes=("cat", "dog"), val_classes=None):
    """train/<class>/ with every mode (JPEG where it exists, else PNG), plus, with ``bad``, a
    truncated JPEG and a text file named .jpg in the first class; val/<class>/ two RGB images each."""
    for k, name in enumerate(classes):
        folder = root / "train" / name
        folder.mkdir(parents=True)
        for i, mode in enumerate(MODES):
            ext = "jpg" if mode in ("RGB", "L", "CMYK") else "png"
            image = _image(mode, 10 * k + i)
            image.save(folder / f"{i}.{ext}", **({"transparency": 0} if mode == "P" else {}))
    for name in val_classes if val_classes is not None else classes:
        folder = root / "val" / name
        folder.mkdir(parents=True)
        for i in range(2):
            _image("RGB", 100 + i).save(folder / f"{i}.jpg")
    paths = []
    if bad:
        data = (root / "train" / classes[0] / "0.jpg").read_bytes()
        truncated = root / "train" / classes[0] / "truncated.jpg"
        truncated.write_bytes(data[: len(data) // 3])
        garbage = root / "train" / classes[0] / "garbage.jpg"
        garbage.write_text("not an image")
        paths = [truncated, garbage]
    return paths


def _dm(root, **kwargs):
    args = dict(name="imagefolder", root=str(root), train_resolutions=(16,), batch_size=4, num_workers=0)
    args.update(kwargs)
    dm = MultiResDataModule(**args)
    dm.setup("fit")
    return dm


def test_every_mode_becomes_rgb_and_bad_files_are_skipped_and_counted(tmp_path):
    bad = make_folder(tmp_path)
    dm = _dm(tmp_path, on_bad_image="skip")
    train_set = dm._datasets["train"]
    assert len(train_set) == 2 * len(MODES) + 2 and dm.num_classes == 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = [train_set[i] for i in range(len(train_set))]
    assert all(x.dtype == torch.uint8 and x.shape == (3, 16, 16) for x, _ in items)
    assert sorted({y for _, y in items}) == [0, 1]
    assert dm.bad_image_count() == 2
    messages = " ".join(str(w.message) for w in caught)
    assert all(str(p) in messages for p in bad), messages
    # the whole epoch still yields full batches
    batches = list(dm.train_dataloader())
    assert [len(b[1]) for b in batches] == [4] * (len(train_set) // 4)


def test_bad_files_are_counted_across_worker_processes(tmp_path):
    make_folder(tmp_path)
    dm = _dm(tmp_path, num_workers=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert sum(len(b[1]) for b in dm.train_dataloader()) == 16
    assert dm.bad_image_count() == 2


def test_fail_names_the_file_also_from_a_worker(tmp_path):
    bad = make_folder(tmp_path)
    dm = _dm(tmp_path, on_bad_image="fail")
    train_set = dm._datasets["train"]
    with pytest.raises(BadImageError, match="data.on_bad_image=fail: cannot read"):
        for i in range(len(train_set)):
            train_set[i]
    dm = _dm(tmp_path, on_bad_image="fail", num_workers=1)
    with pytest.raises(BadImageError) as err:
        list(dm.train_dataloader())
    line = first_line(str(err.value))
    assert line.startswith("data.on_bad_image=fail: cannot read") and any(str(p) in line for p in bad), line


def test_val_uses_the_train_classes_and_unknown_or_empty_class_folders_fail(tmp_path):
    make_folder(tmp_path / "a", bad=False, classes=("cat", "dog"), val_classes=("dog",))
    dm = _dm(tmp_path / "a")
    assert {y for _, y in dm._datasets["val"]} == {1}  # 'dog' keeps its train label
    make_folder(tmp_path / "b", bad=False, classes=("cat", "dog"), val_classes=("cat", "emu"))
    with pytest.raises(ValueError, match=r"val/emu is not a class of the train split"):
        _dm(tmp_path / "b")
    make_folder(tmp_path / "c", bad=False)
    (tmp_path / "c" / "train" / "empty").mkdir()
    (tmp_path / "c" / "train" / ".hidden").mkdir()  # hidden folders are not classes
    with pytest.raises(ValueError, match=r"class folder .*train/empty holds no image files"):
        _dm(tmp_path / "c")


def test_labels_out_of_range_are_rejected():
    class Labelled(torch.utils.data.Dataset):
        targets = [0, 3, 10]

    with pytest.raises(ValueError, match=r"the train split has label 10 outside \[0, 10\)"):
        check_labels(Labelled(), 10, "train")
    Labelled.targets = torch.tensor([-1, 2])
    with pytest.raises(ValueError, match="label -1"):
        check_labels(Labelled(), 10, "val")
    Labelled.targets = [0, 9]
    check_labels(Labelled(), 10, "val")


# 16-bit grey -> 8 bits is v / 257 rounded (65535 -> 255); clipping to 0..255 would keep 128 and
# turn 300 and 32768 into 255
GREY16 = [65535, 32768, 65400, 300, 257, 128, 0]
GREY16_AS_8_BIT = [255, 128, 254, 1, 1, 0, 0]


def test_convert_mode_scales_16_bit_and_keeps_palette_colours(tmp_path):
    little = Image.fromarray(np.array([GREY16], dtype=np.uint16))
    big = Image.frombytes("I;16B", (len(GREY16), 1), np.array(GREY16, dtype=">u2").tobytes())
    for image in (little, big):
        assert image.mode in ("I;16", "I;16B") and list(image.getdata()) == GREY16
        rgb = np.asarray(convert_mode(image, "RGB"))
        assert rgb.dtype == np.uint8 and rgb.shape == (1, len(GREY16), 3)
        assert all(rgb[0, :, c].tolist() == GREY16_AS_8_BIT for c in range(3)), (image.mode, rgb[0].tolist())
        assert np.asarray(convert_mode(image, "L"))[0].tolist() == GREY16_AS_8_BIT
    # a 16-bit PNG file, decoded the way the image folders decode it (TorchCodec for RGB, PIL for L)
    path = tmp_path / "grey16.png"
    little.save(path)
    assert decode_file(str(path), "RGB").tolist() == [[GREY16_AS_8_BIT]] * 3
    assert decode_file(str(path), "L").tolist() == [[GREY16_AS_8_BIT]]
    # palette with transparency: every pixel is its palette entry (looked up by hand), alpha dropped
    palette = _image("P", 1)
    lookup = np.array(palette.getpalette(), dtype=np.uint8).reshape(-1, 3)[np.asarray(palette)]
    assert np.array_equal(np.asarray(convert_mode(palette, "RGB")), lookup)
    assert convert_mode(_image("CMYK", 1), "L").mode == "L"


def test_training_on_a_folder_with_bad_files_logs_their_count(tmp_path):
    make_folder(tmp_path / "data")
    run = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics = train(tiny_cfg(run, "data=imagefolder", f"data.root={tmp_path / 'data'}", "data.batch_size=4",
                                 "data.num_workers=0", "data.train_samples=null", "data.val_samples=null"))
    assert set(metrics) == {"acc1@16", "acc1@12"}
    rows = list(csv.DictReader((run / "csv" / "version_0" / "metrics.csv").open()))
    assert [float(r["data/bad_images"]) for r in rows if r.get("data/bad_images")] == [2.0]
