"""Multi-resolution batches: one crop per sample, every resolution made from it on the device."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError


def resize_images(images: Tensor, resolution: int) -> Tensor:
    """Resize ``(B, C, H, W)`` float images to ``(B, C, r, r)``: bilinear, antialias, align_corners=False.

    Returns ``images`` itself when it already is ``r x r``. Upsampling (r > H) is allowed.
    """
    if images.shape[-2:] == (resolution, resolution):
        return images
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)


def resize_align_corners(images: Tensor, resolution: int) -> Tensor:
    """Resize float ``(B, C, H, W)`` to ``(B, C, r, r)``: bilinear, ``align_corners=True``, no antialias
    (MutualNet's train and test code, ``F.interpolate`` of the normalised 224 crop)."""
    if images.shape[-2:] == (resolution, resolution):
        return images
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=True)


def resize_uint8(images: Tensor, resolution: int) -> Tensor:
    """Resize uint8 ``(B, C, H, W)`` images to uint8 ``(B, C, r, r)``, bilinear with antialias. 3 or 4
    channels on the CPU run torch's uint8 kernel (channels-last; ~8x cheaper than the float kernel);
    other channel counts and devices (CUDA has no uint8 kernel) go through the float kernel, rounded.
    Returns ``images`` when already r x r."""
    if images.shape[-2:] == (resolution, resolution):
        return images
    x = images.contiguous(memory_format=torch.channels_last)
    if not uint8_resize_applies(x):
        out = F.interpolate(x.float(), size=(resolution, resolution), mode="bilinear", antialias=True,
                            align_corners=False)
        return out.round_().clamp_(0, 255).to(torch.uint8)
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)


def uint8_resize_applies(images: Tensor) -> bool:
    """The uint8 kernel runs on the CPU for 3 or 4 channels (elsewhere: resize the float images)."""
    return images.dtype == torch.uint8 and images.device.type == "cpu" and images.shape[1] in (3, 4)


class MultiResBatch:
    """A batch of ONE crop per sample at ``base_resolution``, on its device, float and normalised.

    ``at(r)`` gives ``(B, C, r, r)``: ``per_resolution[r]`` when given (independent crops per resolution,
    or worker-side resizing), else ``resize_images(images, r)``, computed on first request and cached.
    With ``source`` (the uint8 crop ``images`` was normalised from) and ``normalize`` (uint8 -> float)
    on the CPU, ``at(r)`` is ``normalize(resize_uint8(source, r))`` instead: the same bilinear
    antialiased resize before rather than after the (affine) normalisation, rounded to uint8 like
    any worker-side pipeline, at a fraction of the CPU cost. ``resize``: another rule ``(images, r) ->
    images`` applied to the float images (e.g. :func:`resize_align_corners`; no uint8 path then).
    ``targets``: ``(B,)`` int64 class indices.
    """

    def __init__(self, images: Tensor, targets: Tensor, per_resolution: dict[int, Tensor] | None = None,
                 source: Tensor | None = None, normalize: Callable[[Tensor], Tensor] | None = None,
                 resize: Callable[[Tensor, int], Tensor] | None = None) -> None:
        if images.dim() != 4 or images.shape[-1] != images.shape[-2]:
            raise ConfigError(f"MultiResBatch: images must be (B, C, r, r), got {tuple(images.shape)}")
        self._resize = resize or resize_images
        use_source = (resize is None and source is not None and normalize is not None
                      and uint8_resize_applies(source))
        self._source, self._normalize = (source, normalize) if use_source else (None, None)
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
            if self._source is not None:
                # one channels-last copy of the uint8 crop serves every resolution
                self._source = self._source.contiguous(memory_format=torch.channels_last)
                out = self._normalize(resize_uint8(self._source, resolution))
            else:
                out = self._resize(self.images, resolution)
            self._cache[resolution] = out
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
