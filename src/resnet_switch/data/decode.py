"""Fast decode for training crops: a JPEG is decoded at reduced scale when the sampled crop allows it.

A random-resized crop keeps a box of ``w x h`` pixels of the full image and resizes it to ``R x R``.
libjpeg can decode at 1/2, 1/4 or 1/8 scale directly in the DCT domain (PIL ``Image.draft``), which
costs a fraction of a full decode. :class:`DecodeCropFlip` samples the box on the full-size
coordinates first, then decodes at the largest scale ``s`` in {1, 2, 4, 8} at which the box still
spans at least ``R`` pixels each way (``w / s >= R`` and ``h / s >= R``: the final resize only ever
downsamples, so no detail the output could hold is lost), maps the box to the decoded image and
crops + resizes in one PIL call (bilinear with antialias, sub-pixel box). A crop is thus never
decoded at fewer pixels than the output needs, and (up to the 1/8 limit) at fewer than twice them
along its shorter side.

Only lazily opened JPEGs (:func:`open_image_lazy`, what the ``imagefolder`` training split returns)
take this path; tensors and already decoded images (synthetic, CIFAR, ...) keep the torchvision path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image
from PIL.JpegImagePlugin import JpegImageFile
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .imagefolder import convert_mode

DRAFT_SCALES = (8, 4, 2, 1)  # libjpeg's DCT scalings that PIL's draft offers


def open_image_lazy(path: str) -> Image.Image:
    """Open an image file reading only its header; pixels are decoded when first used (an
    ``ImageFolder`` loader; the default one decodes and converts to RGB at once)."""
    return Image.open(path)


def draft_scale(box_width: int, box_height: int, target: int) -> int:
    """The largest ``s`` in {8, 4, 2, 1} with ``box_width / s >= target`` and ``box_height / s >= target``."""
    for s in DRAFT_SCALES:
        if box_width >= s * target and box_height >= s * target:
            return s
    return 1


def decode_for_box(image: JpegImageFile, box: tuple[int, int, int, int], target: int,
                   mode: str = "RGB") -> tuple[Image.Image, tuple[float, float, float, float]]:
    """Decode ``image`` (not yet loaded) at the largest scale that keeps ``box`` = ``(left, top,
    right, bottom)`` (full-size pixels) at least ``target`` pixels wide and high.

    Returns ``(decoded image in mode, box in the decoded image's coordinates)``."""
    left, top, right, bottom = box
    width, height = image.size
    s = draft_scale(right - left, bottom - top, target)
    scale = 1.0
    if s > 1:
        # PIL picks min(W // req_w, H // req_h) rounded down to a power of 2: exactly s here
        drafted = image.draft(mode, (width // s, height // s))
        if drafted is not None:
            scale = width / drafted[1][2]
    image.load()
    return convert_mode(image, mode), (left / scale, top / scale, right / scale, bottom / scale)


class DecodeCropFlip:
    """``image -> uint8 (C, R, R)``: one random-resized crop at ``size`` and one horizontal flip.

    Args:
        size: output resolution ``R``. scale, ratio: as ``RandomResizedCrop``.
        channels: 1 or 3. to_uint8: image -> uint8 ``(C, H, W)`` for the torchvision path.

    A lazily opened JPEG takes the fast path (module docstring); anything else runs
    ``to_uint8 -> v2.RandomResizedCrop(antialias) -> flip``. Both paths draw the box with
    ``v2.RandomResizedCrop.make_params`` and then the flip, so a seed gives the same box either way.
    """

    def __init__(self, size: int, scale: Sequence[float], channels: int,
                 to_uint8: Callable[[object], Tensor], ratio: Sequence[float] = (3 / 4, 4 / 3)):
        self.size = int(size)
        self.mode = "RGB" if channels == 3 else "L"
        self.crop = v2.RandomResizedCrop(self.size, scale=tuple(scale), ratio=tuple(ratio), antialias=True)
        self.flip = v2.RandomHorizontalFlip()
        self.fallback = v2.Compose([to_uint8, self.crop, self.flip])

    def __call__(self, image) -> Tensor:
        if not isinstance(image, JpegImageFile):
            return self.fallback(image)
        return self.flip(self.fast_crop(image))

    def fast_crop(self, image: JpegImageFile) -> Tensor:
        """The crop (no flip) through draft decoding: uint8 ``(C, R, R)``."""
        p = self.crop.make_params([image])  # reads image.size only: nothing decoded yet
        box = (p["left"], p["top"], p["left"] + p["width"], p["top"] + p["height"])
        decoded, scaled_box = decode_for_box(image, box, self.size, self.mode)
        out = decoded.resize((self.size, self.size), Image.Resampling.BILINEAR, box=scaled_box)
        return TF.pil_to_tensor(out)


def psnr(a: Tensor, b: Tensor, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio (dB) of two same-shape images (inf when equal)."""
    mse = float(torch.mean((a.double() - b.double()) ** 2))
    return float("inf") if mse == 0 else 10.0 * torch.log10(torch.tensor(peak * peak / mse)).item()
