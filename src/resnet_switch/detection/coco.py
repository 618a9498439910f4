"""COCO-format instance folders: ``root/`` with the images and an ``instances`` JSON file.

Read through ``torchvision.datasets.CocoDetection`` wrapped for transforms v2 (pycocotools decodes
polygons and RLE into masks). The annotation file is checked once when the set is built; a bad
record stops with one line naming the file and the record:

- an image whose ``file_name`` is not under ``root``,
- an annotation whose box leaves its image (by more than ``BOX_TOLERANCE`` px) or is empty,
- an annotation of an image or category the file does not define.

Labels are COCO's ``category_id`` (torchvision's convention: 0 is the background, so
``num_classes = max id + 1``). Crowd annotations (``iscrowd=1``) are dropped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import ConfigError, MissingFileError

BOX_TOLERANCE = 1.0  # px a box may pass the image border (COCO's own files round to ~0.5 px)


def _load_json(path: Path, field: str) -> dict[str, Any]:
    if not path.is_file():
        raise MissingFileError(f"{field}: no file {path}; give the path of a COCO instances JSON")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{field}: {path.name} is not valid JSON ({str(err).splitlines()[0]})") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ConfigError(f"{field}: {path.name} has no '{key}' list; is it a COCO instances file?")
    return data


def check_coco(root: Path, ann_file: Path, masks: bool = True, field: str = "data") -> dict[str, Any]:
    """Validate a COCO instances file against its image folder; returns the parsed JSON."""
    data = _load_json(ann_file, f"{field}.ann_file")
    name = ann_file.name
    categories = {c.get("id") for c in data["categories"]}
    images: dict[Any, tuple[float, float]] = {}
    for img in data["images"]:
        image_id = img.get("id")
        file_name = img.get("file_name")
        if file_name is None or "width" not in img or "height" not in img:
            raise ConfigError(f"{field}: {name} image id {image_id}: needs file_name, width and height")
        if not (root / file_name).is_file():
            raise ConfigError(f"{field}: {name} image id {image_id}: file {file_name!r} does not exist in {root}")
        images[image_id] = (float(img["width"]), float(img["height"]))
    for ann in data["annotations"]:
        record = f"{field}: {name} annotation id {ann.get('id')} (image id {ann.get('image_id')})"
        if ann.get("image_id") not in images:
            raise ConfigError(f"{record}: unknown image id; it is not in the file's images")
        if ann.get("category_id") not in categories:
            raise ConfigError(f"{record}: unknown category_id {ann.get('category_id')!r}; "
                             f"the file defines {sorted(categories)}")
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise ConfigError(f"{record}: bbox must be [x, y, width, height], got {bbox!r}")
        x, y, w, h = (float(v) for v in bbox)
        width, height = images[ann["image_id"]]
        if w <= 0 or h <= 0:
            raise ConfigError(f"{record}: bbox {bbox} is empty (width and height must be > 0)")
        if x < -BOX_TOLERANCE or y < -BOX_TOLERANCE or x + w > width + BOX_TOLERANCE or y + h > height + BOX_TOLERANCE:
            raise ConfigError(f"{record}: bbox {bbox} (x, y, w, h) is outside the {width:g}x{height:g} image")
        if masks and not ann.get("iscrowd") and not ann.get("segmentation"):
            raise ConfigError(f"{record}: no segmentation; masks need one (or use detector=faster_rcnn)")
    return data


class CocoInstances(Dataset):
    """``ds[i] -> (uint8 image (3, H, W), target)`` with ``boxes`` (N, 4) float xyxy px clipped to
    the image, ``labels`` (N,) int64 = category ids, ``masks`` (N, H, W) uint8 (when ``masks``),
    ``image_id`` int.

    Args:
        root: the image folder. ann_file: the instances JSON (relative paths: to the working dir).
        masks: decode instance masks (Mask R-CNN); ``False`` for Faster R-CNN.
    """

    def __init__(self, root: str, ann_file: str, masks: bool = True):
        from torchvision.datasets import CocoDetection, wrap_dataset_for_transforms_v2
        from torchvision.transforms import v2

        self.root, self.ann_file, self.masks = Path(root), Path(ann_file), bool(masks)
        if not self.root.is_dir():
            raise MissingFileError(f"data.root: no folder {self.root}; give the COCO image folder")
        data = check_coco(self.root, self.ann_file, self.masks)
        self.categories = sorted(c["id"] for c in data["categories"])
        keys = {"image_id", "boxes", "labels", "iscrowd"} | ({"masks"} if self.masks else set())
        base = CocoDetection(str(self.root), str(self.ann_file), transforms=v2.ToImage())
        self._items = wrap_dataset_for_transforms_v2(base, target_keys=keys)
        self.ids = list(base.ids)

    @property
    def num_classes(self) -> int:
        return max(self.categories) + 1

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        image, target = self._items[index]
        image = image.as_subclass(Tensor)
        h, w = image.shape[-2:]
        if "boxes" not in target:  # an image without annotations
            target = {"image_id": target["image_id"], "boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
                      "iscrowd": [], "masks": torch.zeros(0, h, w, dtype=torch.uint8)}
        keep = torch.tensor([not c for c in target["iscrowd"]], dtype=torch.bool)
        boxes = target["boxes"].as_subclass(Tensor).float()[keep]
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        out = {"boxes": boxes, "labels": target["labels"].as_subclass(Tensor).long()[keep],
               "image_id": int(target["image_id"])}
        if self.masks:
            out["masks"] = target["masks"].as_subclass(Tensor).to(torch.uint8)[keep]
        return image, out
