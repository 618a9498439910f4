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

When no reduced scale fits (``s = 1``, e.g. a 224 crop of a 500x375 ImageNet photo), the file is
decoded by torchvision's libjpeg-turbo decoder straight into a uint8 tensor (about a third cheaper
than PIL's decode plus ``Image`` conversion) and the box is resized with torch's uint8 antialiased
bilinear kernel (the PIL filter; values within 1 of PIL's). Files that decoder rejects (truncated,
unusual JPEGs) take the PIL path, which decodes them or raises the error the bad-image policy
handles.

Only lazily opened JPEGs (:func:`open_image_lazy`, what the ``imagefolder`` training split returns)
take this path; tensors and already decoded images (synthetic, CIFAR, ...) keep the torchvision path.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import torch
from PIL import Image
from PIL.JpegImagePlugin import JpegImageFile
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .imagefolder import convert_mode
from .multires import resize_uint8

try:  # deprecated in torchvision 0.29 in favour of TorchCodec; without it PIL decodes every file
    from torchvision.io import ImageReadMode, decode_jpeg, read_file
except ImportError:  # pragma: no cover - a future torchvision
    decode_jpeg = None
# torchvision warns on every decode call about that deprecation; the fallback above covers it
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)

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


def decode_full(image: JpegImageFile, mode: str = "RGB") -> Tensor | None:
    """The whole JPEG behind ``image`` (opened from a path, not yet loaded) as uint8 ``(C, H, W)``
    (a view of HWC memory) via torchvision's decoder; ``None`` when it cannot (no file name, or a
    file the decoder rejects: the caller then takes the PIL path)."""
    if decode_jpeg is None or not getattr(image, "filename", None):
        return None
    try:
        pixels = decode_jpeg(read_file(image.filename), mode=ImageReadMode.RGB if mode == "RGB" else ImageReadMode.GRAY)
    except RuntimeError:
        return None
    image.close()
    return pixels


def resize_box_uint8(pixels: Tensor, box: tuple[int, int, int, int], size: int) -> Tensor:
    """``pixels[:, top:bottom, left:right]`` resized to uint8 ``(C, size, size)`` (:func:`.multires.resize_uint8`)."""
    left, top, right, bottom = box
    return resize_uint8(pixels[None, :, top:bottom, left:right], size)[0]


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


def random_resized_box(width: int, height: int, scale: Sequence[float], ratio: Sequence[float]) -> tuple[int, int, int, int]:
    """``(left, top, box_width, box_height)`` of an Inception-style random crop of a ``width x height``
    image: area share ~ U(scale), log aspect ratio ~ U(log ratio), up to 10 tries, else the central
    crop clamped to ``ratio``. Draws exactly what ``v2.RandomResizedCrop.make_params`` draws from
    torch's global generator (so a seed gives the same box on either path), without its per-call
    input inspection (a few hundred microseconds per sample)."""
    area = height * width
    lo, hi = torch.log(torch.tensor([float(ratio[0]), float(ratio[1])])).tolist()  # float32, as torchvision
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect = torch.exp(torch.empty(1).uniform_(lo, hi)).item()
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,)).item())
            left = int(torch.randint(0, width - w + 1, size=(1,)).item())
            return left, top, w, h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


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
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        self.crop = v2.RandomResizedCrop(self.size, scale=tuple(scale), ratio=tuple(ratio), antialias=True)
        self.flip = v2.RandomHorizontalFlip()
        self.fallback = v2.Compose([to_uint8, self.crop, self.flip])

    def __call__(self, image) -> Tensor:
        if not isinstance(image, JpegImageFile):
            return self.fallback(image)
        out = self.fast_crop(image)
        return out.flip(-1) if torch.rand(1) < 0.5 else out  # v2.RandomHorizontalFlip's draw

    def fast_crop(self, image: JpegImageFile) -> Tensor:
        """The crop (no flip) through draft decoding: uint8 ``(C, R, R)``."""
        left, top, w, h = random_resized_box(*image.size, self.scale, self.ratio)  # nothing decoded yet
        box = (left, top, left + w, top + h)
        if draft_scale(w, h, self.size) == 1:
            pixels = decode_full(image, self.mode)
            if pixels is not None:
                return resize_box_uint8(pixels, box, self.size)
        decoded, scaled_box = decode_for_box(image, box, self.size, self.mode)
        out = decoded.resize((self.size, self.size), Image.Resampling.BILINEAR, box=scaled_box)
        return TF.pil_to_tensor(out)


def psnr(a: Tensor, b: Tensor, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio (dB) of two same-shape images (inf when equal)."""
    mse = float(torch.mean((a.double() - b.double()) ** 2))
    return float("inf") if mse == 0 else 10.0 * torch.log10(torch.tensor(peak * peak / mse)).item()
