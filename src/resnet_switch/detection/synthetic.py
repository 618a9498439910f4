"""The embedded ``synthetic_detection`` set: shapes with boxes and instance masks, no files.

Each image (``image_size`` px square, noisy background with a gentle gradient) holds 1 to
``max_objects`` shapes (disc, square, triangle, ring, cross: the class is the shape), each in its
own cell of a 2x2 grid so instances never overlap, at a random size (radius 6-16 % of the image),
position inside its cell, rotation and colour. The box is the tight box of the instance mask. Small
shapes shrink to a few pixels at small input sizes, so AP falls with the size. Every sample is a
pure function of ``(seed, split, index)`` (a ``torch.Generator`` seeded from a stable hash).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..data.synthetic import SHAPES, sample_seed, signed_distance
from ..errors import ConfigError

_GRID = 2  # cells per side; one object per cell at most
_NOISE_STD = 0.05


class SyntheticDetection(Dataset):
    """``ds[i] -> (uint8 image (3, S, S), target)`` with torchvision's target keys: ``boxes``
    (N, 4) float xyxy px, ``labels`` (N,) int64 in 1..num_classes (0 is the background),
    ``masks`` (N, S, S) uint8, ``image_id`` int.

    Args:
        num_samples: images in the split. split, seed: select the deterministic sample stream.
        image_size: S, pixels. num_classes: object classes (the first ``num_classes`` shapes).
        max_objects: at most this many shapes per image (1..4).
    """

    def __init__(self, num_samples: int, split: str = "train", seed: int = 0, image_size: int = 128,
                 num_classes: int = 3, max_objects: int = 3):
        if num_samples < 1 or image_size < 32:
            raise ConfigError(f"synthetic_detection: need num_samples >= 1 and image_size >= 32, got "
                             f"{num_samples}, {image_size}")
        if not 1 <= num_classes <= len(SHAPES):
            raise ConfigError(f"synthetic_detection.num_classes: must be in [1, {len(SHAPES)}], got {num_classes}")
        if not 1 <= max_objects <= _GRID * _GRID:
            raise ConfigError(f"synthetic_detection.max_objects: must be in [1, {_GRID * _GRID}], got {max_objects}")
        self.num_samples, self.split, self.seed = int(num_samples), split, int(seed)
        self.image_size, self.max_objects = int(image_size), int(max_objects)
        self.classes = list(SHAPES[:num_classes])
        centres = torch.arange(self.image_size, dtype=torch.float32) + 0.5
        self._ys, self._xs = torch.meshgrid(centres, centres, indexing="ij")

    @property
    def num_classes(self) -> int:
        """Object classes + 1 (torchvision's detectors count the background)."""
        return len(self.classes) + 1

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        gen = torch.Generator().manual_seed(sample_seed(self.seed, self.split, index))
        n, cell = self.image_size, self.image_size / _GRID

        def uniform(lo: float = 0.0, hi: float = 1.0) -> float:
            return lo + (hi - lo) * float(torch.rand((), generator=gen))

        count = 1 + int(torch.randint(self.max_objects, (), generator=gen))
        cells = torch.randperm(_GRID * _GRID, generator=gen)[:count].tolist()
        background = torch.rand(3, generator=gen) * 0.6 + 0.2
        ramp = (uniform() - 0.5) * 0.2 * (self._xs + self._ys - n) / n
        image = background.view(3, 1, 1) + ramp
        masks, boxes, labels = [], [], []
        for c in cells:
            label = int(torch.randint(len(self.classes), (), generator=gen))
            radius = uniform(0.06, 0.16) * n
            margin = 1.4 * radius  # the farthest point of any shape (a triangle's vertex): inside the cell
            cx = (c % _GRID) * cell + uniform(margin, cell - margin)
            cy = (c // _GRID) * cell + uniform(margin, cell - margin)
            rot = uniform(0.0, 2 * math.pi)
            dx, dy = self._xs - cx, self._ys - cy
            pu, pv = dx * math.cos(rot) + dy * math.sin(rot), dy * math.cos(rot) - dx * math.sin(rot)
            inside = signed_distance(self.classes[label], pu, pv, dx, dy, radius)
            soft = (inside + 0.5).clamp_(0.0, 1.0)  # 1-px anti-aliased edge
            mask = inside > 0
            if not mask.any():
                continue
            # colour on the other side of the background in brightness: always visible
            sign = 1.0 if float(background.mean()) < 0.5 else -1.0
            colour = (background + sign * (0.25 + 0.25 * torch.rand(3, generator=gen))).clamp_(0.0, 1.0)
            image = torch.lerp(image, colour.view(3, 1, 1).expand_as(image), soft)
            ys, xs = torch.nonzero(mask, as_tuple=True)
            boxes.append([float(xs.min()), float(ys.min()), float(xs.max()) + 1.0, float(ys.max()) + 1.0])
            masks.append(mask.to(torch.uint8))
            labels.append(label + 1)
        image = image + _NOISE_STD * torch.randn(image.shape, generator=gen)
        image = image.mul_(255.0).add_(0.5).clamp_(0.0, 255.0).to(torch.uint8)
        target = {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "masks": torch.stack(masks) if masks else torch.zeros(0, n, n, dtype=torch.uint8),
            "image_id": index,
        }
        return image, target
