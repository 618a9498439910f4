"""Detection data: the embedded synthetic set, COCO-format folders and their bad-record errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_switch.detection.coco import CocoInstances
from resnet_switch.detection.datamodule import DetectionDataModule, HorizontalFlip, collate_detection
from resnet_switch.detection.synthetic import SyntheticDetection


def test_synthetic_detection_is_deterministic_and_consistent():
    ds = SyntheticDetection(8, num_classes=5, max_objects=4, image_size=96)
    again = SyntheticDetection(8, num_classes=5, max_objects=4, image_size=96)
    for i in range(8):
        image, target = ds[i]
        image2, target2 = again[i]
        assert torch.equal(image, image2) and torch.equal(target["masks"], target2["masks"])
        assert image.shape == (3, 96, 96) and image.dtype == torch.uint8
        n = len(target["labels"])
        assert 1 <= n <= 4 and target["masks"].shape == (n, 96, 96) and target["boxes"].shape == (n, 4)
        assert ((target["labels"] >= 1) & (target["labels"] <= 5)).all()
        assert target["masks"].sum(0).max() <= 1  # instances never overlap
        for box, mask in zip(target["boxes"], target["masks"]):
            ys, xs = torch.nonzero(mask, as_tuple=True)  # the box is the mask's tight box
            assert box.tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
    assert not torch.equal(ds[0][0], ds[1][0])
    assert not torch.equal(ds[0][0], SyntheticDetection(8, split="val", image_size=96)[0][0])
    assert ds.num_classes == 6  # background + 5 shapes


def test_flip_moves_boxes_and_masks_with_the_image():
    ds = SyntheticDetection(4, image_size=64)
    image, target = ds[0]
    flipped, ftarget = HorizontalFlip(ds, p=1.0)[0]
    assert torch.equal(flipped, image.flip(-1)) and torch.equal(ftarget["masks"], target["masks"].flip(-1))
    expected = torch.stack([64 - target["boxes"][:, 2], target["boxes"][:, 1], 64 - target["boxes"][:, 0],
                            target["boxes"][:, 3]], 1)
    torch.testing.assert_close(ftarget["boxes"], expected)
    assert type(ftarget["boxes"]) is torch.Tensor


# ---------------------------------------------------------------- COCO folders
SQUARE = [10.0, 8.0, 30.0, 8.0, 30.0, 28.0, 10.0, 28.0]  # polygon of a 20x20 square at (10, 8)


def write_coco(root: Path, annotations: list[dict] | None = None, images: list[dict] | None = None) -> Path:
    """A two-image COCO folder (``root/images``, ``root/instances.json``)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    for name, size in (("a.png", (48, 40)), ("b.png", (32, 32))):
        Image.fromarray(np.full((size[1], size[0], 3), 100, np.uint8)).save(root / "images" / name)
    data = {
        "images": images or [{"id": 1, "file_name": "a.png", "width": 48, "height": 40},
                             {"id": 2, "file_name": "b.png", "width": 32, "height": 32}],
        "annotations": annotations if annotations is not None else [
            {"id": 11, "image_id": 1, "category_id": 3, "bbox": [10.0, 8.0, 20.0, 20.0], "area": 400.0,
             "iscrowd": 0, "segmentation": [SQUARE]},
            {"id": 12, "image_id": 1, "category_id": 7, "bbox": [0.0, 0.0, 5.0, 4.0], "area": 20.0, "iscrowd": 0,
             "segmentation": [[0.0, 0.0, 5.0, 0.0, 5.0, 4.0, 0.0, 4.0]]},
            {"id": 13, "image_id": 1, "category_id": 3, "bbox": [30.0, 20.0, 10.0, 10.0], "area": 100.0,
             "iscrowd": 1, "segmentation": {"size": [40, 48], "counts": [0, 1920]}},
        ],
        "categories": [{"id": 3, "name": "thing"}, {"id": 7, "name": "other"}],
    }
    path = root / "instances.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_folder_gives_torchvision_targets(tmp_path):
    COCO = pytest.importorskip("pycocotools.coco").COCO  # optional: not in the GPU machines' image

    ann = write_coco(tmp_path)
    ds = CocoInstances(str(tmp_path / "images"), str(ann))
    assert len(ds) == 2 and ds.num_classes == 8  # category ids are the labels; 0 is the background
    image, target = ds[0]
    assert image.shape == (3, 40, 48) and image.dtype == torch.uint8
    assert target["labels"].tolist() == [3, 7]  # the crowd annotation is dropped
    torch.testing.assert_close(target["boxes"], torch.tensor([[10.0, 8.0, 30.0, 28.0], [0.0, 0.0, 5.0, 4.0]]))
    reference = COCO(str(ann))
    expected = torch.from_numpy(reference.annToMask(reference.anns[11]))
    assert torch.equal(target["masks"][0], expected) and int(expected.sum()) > 300
    empty_image, empty = ds[1]  # an image without annotations
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, 32, 32)

    module = DetectionDataModule(ds, ds, batch_size=2, num_workers=0, hflip=0.0)
    images, targets = next(iter(module.train_dataloader()))
    assert sorted(tuple(im.shape[-2:]) for im in images) == [(32, 32), (40, 48)]
    images, targets = module.on_after_batch_transfer((images, targets), 0)
    assert all(im.dtype == torch.float32 and im.max() <= 1.0 for im in images)


@pytest.mark.parametrize("change,message", [
    ({"images": [{"id": 1, "file_name": "a.png", "width": 48, "height": 40},
                 {"id": 2, "file_name": "missing.png", "width": 32, "height": 32}]},
     r"^data: instances.json image id 2: file 'missing.png' does not exist in .*images$"),
    ({"annotations": [{"id": 5, "image_id": 1, "category_id": 3, "bbox": [40.0, 8.0, 20.0, 20.0], "iscrowd": 0,
                       "segmentation": [SQUARE]}]},
     r"^data: instances.json annotation id 5 \(image id 1\): bbox \[40.0, 8.0, 20.0, 20.0\] \(x, y, w, h\) is "
     r"outside the 48x40 image$"),
    ({"annotations": [{"id": 6, "image_id": 2, "category_id": 99, "bbox": [1.0, 1.0, 5.0, 5.0], "iscrowd": 0,
                       "segmentation": [SQUARE]}]},
     r"^data: instances.json annotation id 6 \(image id 2\): unknown category_id 99; the file defines \[3, 7\]$"),
    ({"annotations": [{"id": 8, "image_id": 4, "category_id": 3, "bbox": [1.0, 1.0, 5.0, 5.0], "iscrowd": 0,
                       "segmentation": [SQUARE]}]},
     r"^data: instances.json annotation id 8 \(image id 4\): unknown image id"),
    ({"annotations": [{"id": 9, "image_id": 1, "category_id": 3, "bbox": [1.0, 1.0, 0.0, 5.0], "iscrowd": 0,
                       "segmentation": [SQUARE]}]},
     r"^data: instances.json annotation id 9 \(image id 1\): bbox \[1.0, 1.0, 0.0, 5.0\] is empty"),
])
def test_bad_coco_records_fail_in_one_line_naming_the_file_and_record(tmp_path, change, message):
    ann = write_coco(tmp_path, **change)
    with pytest.raises(ValueError) as err:
        CocoInstances(str(tmp_path / "images"), str(ann))
    assert "\n" not in str(err.value)
    assert re.match(message, str(err.value)), str(err.value)


def test_missing_or_broken_annotation_file(tmp_path):
    write_coco(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"^data.ann_file: no file .*nope.json"):
        CocoInstances(str(tmp_path / "images"), str(tmp_path / "nope.json"))
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"^data.ann_file: broken.json is not valid JSON"):
        CocoInstances(str(tmp_path / "images"), str(tmp_path / "broken.json"))


def test_collate_keeps_each_image_size():
    images, targets = collate_detection([(torch.zeros(3, 4, 5), {"a": 1}), (torch.zeros(3, 6, 2), {"a": 2})])
    assert [im.shape for im in images] == [(3, 4, 5), (3, 6, 2)] and [t["a"] for t in targets] == [1, 2]


def test_train_command_stops_on_a_bad_record_with_one_line(tmp_path):
    """``python -m resnet_switch.train task=detection data=coco``: exit 2, one ``error:`` line."""
    from .helpers import run_cli

    bad = [{"id": 5, "image_id": 2, "category_id": 42, "bbox": [1.0, 1.0, 5.0, 5.0], "iscrowd": 0,
            "segmentation": [SQUARE]}]
    for split in ("train2017", "val2017"):
        write_coco(tmp_path / split, annotations=bad)
        (tmp_path / "annotations").mkdir(exist_ok=True)
        (tmp_path / split / "instances.json").rename(tmp_path / "annotations" / f"instances_{split}.json")
        (tmp_path / split / "images").rename(tmp_path / split / "files")
        for image in (tmp_path / split / "files").iterdir():
            image.rename(tmp_path / split / image.name)
    result = run_cli("resnet_switch.train", "task=detection", "data=coco", f"data.root={tmp_path}",
                     f"hydra.run.dir={tmp_path / 'run'}", timeout=600)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: data: instances_train2017.json annotation id 5 (image id 2): unknown category_id 42; "
        "the file defines [3, 7]")
