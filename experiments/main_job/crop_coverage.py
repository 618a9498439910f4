"""How much of the shape (the class's coarse half) a training crop keeps, per crop-scale range.

For N synthetic training images: the shape's mask (rendered alone, no texture), RandomResizedCrop
parameters drawn as the data module draws them (scale range, ratio 3/4..4/3), and the share of the
mask's area inside the crop. Prints, per scale range, the share of crops that keep < 50 % / < 75 %
of the shape (a cut shape: disc, square and triangle look alike). Usage:
    python experiments/main_job/crop_coverage.py [N]
"""
from __future__ import annotations

import sys

import torch
from torchvision.transforms import RandomResizedCrop

from resnet_switch.data.synthetic import SyntheticScaleDataset, sample_seed


def shape_mask(ds: SyntheticScaleDataset, index: int) -> torch.Tensor:
    """The (N, N) anti-aliased shape mask of training image ``index`` (the renderer's own geometry)."""
    gen = torch.Generator().manual_seed(sample_seed(ds.image_seed, ds.split, index))
    return ds.shape_mask(ds._cues[index % ds.num_classes][0], ds.draw_parameters(gen))[0]


def main(count: int = 2000) -> None:
    ds = SyntheticScaleDataset(count, cache_mb=0)
    masks = [shape_mask(ds, i) for i in range(count)]
    torch.manual_seed(0)
    print("| crop scale | crops keeping < 50 % of the shape | < 75 % | mean kept |")
    print("|---|---|---|---|")
    for scale in [(0.25, 1.0), (0.5, 1.0), (0.8, 1.0)]:
        kept = []
        for mask in masks:
            top, left, h, w = RandomResizedCrop.get_params(mask[None], scale=scale, ratio=(3 / 4, 4 / 3))
            kept.append(float(mask[top:top + h, left:left + w].sum() / mask.sum()))
        kept_t = torch.tensor(kept)
        print(f"| [{scale[0]}, {scale[1]}] | {100 * (kept_t < 0.5).float().mean():.1f} % | "
              f"{100 * (kept_t < 0.75).float().mean():.1f} % | {100 * kept_t.mean():.1f} % |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
