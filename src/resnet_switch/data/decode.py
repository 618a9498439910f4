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

The ``imagefolder`` training split reads each file with :func:`open_image_lazy`: a JPEG with 1 or 3
components becomes an :class:`EncodedJpeg` (its bytes and the size from its frame header, nothing
decoded, no PIL object), anything else a lazily opened PIL image (CMYK JPEGs take the PIL draft path
above; other formats the torchvision one). Tensors and decoded images (synthetic, CIFAR, ...) keep the
torchvision path.
"""

from __future__ import annotations

import functools
import io
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from PIL.JpegImagePlugin import JpegImageFile
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .imagefolder import convert_mode
from .multires import resize_uint8

try:  # deprecated in torchvision 0.29 in favour of TorchCodec; without it PIL decodes every file
    from torchvision.io import ImageReadMode, decode_jpeg
except ImportError:  # pragma: no cover - a future torchvision
    decode_jpeg = None
# torchvision warns on every decode call about that deprecation; the fallback above covers it
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)

DRAFT_SCALES = (8, 4, 2, 1)  # libjpeg's DCT scalings that PIL's draft offers


# frame header markers (SOF0-15 without DHT C4, JPG C8, DAC CC): they carry the image size
FRAME_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def jpeg_header(data: bytes | bytearray) -> tuple[int, int, int] | None:
    """``(width, height, components)`` from a JPEG's frame header, found by walking the marker
    segments after SOI; ``None`` when ``data`` is not a JPEG or ends before the frame header."""
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 9 < n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in FRAME_MARKERS:  # FF Cn, length(2), precision(1), height(2), width(2), components(1)
            height, width = (data[i + 5] << 8) | data[i + 6], (data[i + 7] << 8) | data[i + 8]
            return (width, height, data[i + 9]) if width and height else None
        i += 2 + ((data[i + 2] << 8) | data[i + 3])
    return None


@dataclass(frozen=True, slots=True)
class EncodedJpeg:
    """A JPEG file read but not decoded: ``data`` (its bytes), ``size`` ``(width, height)`` and
    ``components`` (1 grey, 3 colour) from its frame header."""

    path: str
    data: bytearray
    size: tuple[int, int]
    components: int

    def pil(self) -> JpegImageFile:
        """The file as a lazily opened PIL image (for draft decoding, and files torchvision rejects)."""
        return Image.open(io.BytesIO(self.data))

    def decode(self, mode: str = "RGB") -> Tensor:
        """The whole image as uint8 ``(C, H, W)`` in ``mode`` (``RGB`` or ``L``); PIL decodes what
        torchvision's decoder rejects, or raises the error the bad-image policy handles."""
        pixels = decode_tensor(self.data, mode)
        return pixels if pixels is not None else TF.pil_to_tensor(convert_mode(self.pil(), mode))


def open_image_lazy(path: str) -> EncodedJpeg | Image.Image:
    """Read an image file without decoding it (an ``ImageFolder`` loader; the default one decodes
    and converts to RGB at once): an :class:`EncodedJpeg` for a 1- or 3-component JPEG, else a
    lazily opened PIL image (pixels decoded when first used)."""
    with open(path, "rb", buffering=0) as f:
        data = bytearray(os.fstat(f.fileno()).st_size)  # read straight into a writable buffer (no copy)
        del data[f.readinto(data):]
    header = jpeg_header(data)
    if header is not None and header[2] in (1, 3):
        return EncodedJpeg(str(path), data, header[:2], header[2])
    return Image.open(io.BytesIO(data))


def draft_scale(box_width: int, box_height: int, target: int) -> int:
    """The largest ``s`` in {8, 4, 2, 1} with ``box_width / s >= target`` and ``box_height / s >= target``."""
    for s in DRAFT_SCALES:
        if box_width >= s * target and box_height >= s * target:
            return s
    return 1


def decode_tensor(data: bytearray, mode: str = "RGB") -> Tensor | None:
    """JPEG bytes as uint8 ``(C, H, W)`` (a view of HWC memory) via torchvision's decoder, in ``mode``
    (``RGB`` or ``L``); ``None`` when it cannot (no decoder, or a file it rejects: the caller then
    takes the PIL path)."""
    if decode_jpeg is None:
        return None
    try:
        return decode_jpeg(torch.frombuffer(data, dtype=torch.uint8),
                           mode=ImageReadMode.RGB if mode == "RGB" else ImageReadMode.GRAY)
    except RuntimeError:
        return None


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


@functools.lru_cache(maxsize=16)
def log_bounds(low: float, high: float) -> tuple[float, float]:
    """``log`` of an aspect-ratio range, in float32 as torchvision computes it."""
    return tuple(torch.log(torch.tensor([low, high])).tolist())


def random_resized_box(width: int, height: int, scale: Sequence[float], ratio: Sequence[float]) -> tuple[int, int, int, int]:
    """``(left, top, box_width, box_height)`` of an Inception-style random crop of a ``width x height``
    image: area share ~ U(scale), log aspect ratio ~ U(log ratio), up to 10 tries, else the central
    crop clamped to ``ratio``. Draws exactly what ``v2.RandomResizedCrop.make_params`` draws from
    torch's global generator (so a seed gives the same box on either path), without its per-call
    input inspection (a few hundred microseconds per sample)."""
    area = height * width
    lo, hi = log_bounds(float(ratio[0]), float(ratio[1]))
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

    An :class:`EncodedJpeg` or a lazily opened PIL JPEG takes the fast path (module docstring);
    anything else runs ``to_uint8 -> v2.RandomResizedCrop(antialias) -> flip``. Every path draws
    the box as ``v2.RandomResizedCrop.make_params`` does and then the flip, so a seed gives the same
    box either way.
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
        if isinstance(image, EncodedJpeg):
            out = self.crop_encoded(image)
        elif isinstance(image, JpegImageFile):
            out = self.crop_pil(image, self.sample_box(image.size))
        else:
            return self.fallback(image)
        return out.flip(-1) if torch.rand(1) < 0.5 else out  # v2.RandomHorizontalFlip's draw

    def sample_box(self, size: tuple[int, int]) -> tuple[int, int, int, int]:
        """A random-resized crop box ``(left, top, right, bottom)`` of a ``(width, height)`` image."""
        left, top, w, h = random_resized_box(*size, self.scale, self.ratio)
        return left, top, left + w, top + h

    def crop_encoded(self, jpeg: EncodedJpeg) -> Tensor:
        """The crop (no flip) of a JPEG read but not decoded: uint8 ``(C, R, R)``."""
        box = self.sample_box(jpeg.size)  # nothing decoded yet
        if draft_scale(box[2] - box[0], box[3] - box[1], self.size) == 1:
            pixels = decode_tensor(jpeg.data, self.mode)
            if pixels is not None:
                return resize_box_uint8(pixels, box, self.size)
        return self.crop_pil(jpeg.pil(), box)

    def crop_pil(self, image: JpegImageFile, box: tuple[int, int, int, int]) -> Tensor:
        """``box`` of a lazily opened JPEG, decoded at the draft scale the box allows: uint8 ``(C, R, R)``."""
        decoded, scaled_box = decode_for_box(image, box, self.size, self.mode)
        out = decoded.resize((self.size, self.size), Image.Resampling.BILINEAR, box=scaled_box)
        return TF.pil_to_tensor(out)


def psnr(a: Tensor, b: Tensor, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio (dB) of two same-shape images (inf when equal)."""
    mse = float(torch.mean((a.double() - b.double()) ** 2))
    return float("inf") if mse == 0 else 10.0 * torch.log10(torch.tensor(peak * peak / mse)).item()
