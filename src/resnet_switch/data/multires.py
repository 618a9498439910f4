"""Multi-resolution batches: one crop per sample, every resolution made from it on the device."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def resize_images(images: Tensor, resolution: int) -> Tensor:
    """Resize ``(B, C, H, W)`` float images to ``(B, C, r, r)``: bilinear, antialias, align_corners=False.

    Returns ``images`` itself when it already is ``r x r``. Upsampling (r > H) is allowed.
    """
    if images.shape[-2:] == (resolution, resolution):
        return images
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)


class MultiResBatch:
    """A batch of ONE crop per sample at ``base_resolution``, on its device, float and normalised.

    ``at(r)`` gives ``(B, C, r, r)``: ``per_resolution[r]`` when given (independent crops per resolution,
    or worker-side resizing), else ``resize_images(images, r)``, computed on first request and cached.
    ``targets``: ``(B,)`` int64 class indices.
    """

    def __init__(self, images: Tensor, targets: Tensor, per_resolution: dict[int, Tensor] | None = None) -> None:
        if images.dim() != 4 or images.shape[-1] != images.shape[-2]:
            raise ValueError(f"MultiResBatch: images must be (B, C, r, r), got {tuple(images.shape)}")
        self.images = images
        self.targets = targets
        self.base_resolution = int(images.shape[-1])
        self.per_resolution = dict(per_resolution or {})
        self._cache: dict[int, Tensor] = {self.base_resolution: images, **self.per_resolution}

    def at(self, resolution: int) -> Tensor:
        """Images at ``resolution`` (cached: the same tensor object on every call)."""
        resolution = int(resolution)
        out = self._cache.get(resolution)
        if out is None:
            out = self._cache[resolution] = resize_images(self.images, resolution)
        return out

    @property
    def device(self):
        return self.images.device

    def __len__(self) -> int:
        return self.images.shape[0]

    def __repr__(self) -> str:
        return (
            f"MultiResBatch(size={len(self)}, base_resolution={self.base_resolution}, "
            f"cached={sorted(self._cache)}, device={self.device})"
        )
