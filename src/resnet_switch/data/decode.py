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

The draft path is taken from ``s = 4`` on (:data:`MIN_DRAFT_SCALE`). Below it (``s = 1``, e.g. a
224 crop of a 500x375 ImageNet photo, and ``s = 2``) the file is decoded by TorchCodec's
libjpeg-turbo decoder straight into a uint8 tensor and the box is resized with torch's uint8
antialiased bilinear kernel (the PIL filter; values within 1 of PIL's): entropy decoding costs the
same at every scale, and at ``s = 2`` PIL's draft path was no cheaper than this (CPU time per crop,
draft / full: 0.83-1.13 over 500x375 and 1000x750 JPEGs of 36-425 KB; at ``s = 4``: 0.72-1.1, at
``s = 8``: 0.61-0.79). Files TorchCodec rejects (truncated,
unusual JPEGs) take the PIL path, which decodes them or raises the error the bad-image policy
handles. TorchCodec's image decoders need no FFmpeg; without TorchCodec (not installed, or built
for another torch) PIL decodes every file.

Orientation: TorchCodec applies a file's EXIF orientation, PIL (and so torchvision's ``ImageFolder``
and the reference code) does not. Pixels here are always the stored ones: a JPEG whose EXIF
orientation is not 1, a PNG with an ``eXIf`` chunk and a WebP with EXIF (or animation) take the PIL
path; a decoded size that differs from the header's does too.

The ``imagefolder`` training split reads each file with :func:`open_image_lazy`: a JPEG with 1 or 3
components and no EXIF rotation becomes an :class:`EncodedJpeg` (its bytes and the size from its
frame header, nothing decoded, no PIL object), anything else a lazily opened PIL image (CMYK and
EXIF-rotated JPEGs take the PIL draft path above; other formats the tensor one). Validation images
are decoded whole by :func:`decode_file` (TorchCodec for JPEG, PNG and WebP, PIL for the rest).
Tensors and decoded images (synthetic, CIFAR, ...) keep the torchvision path. With
``data.decode=device`` a JPEG's crop is only drawn here (:class:`DeferredCrop`) and decoded on the
GPU (:mod:`.device_decode`).
"""

from __future__ import annotations

import functools
import io
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from PIL import Image
from PIL.JpegImagePlugin import JpegImageFile
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .imagefolder import convert_mode
from .multires import resize_uint8

try:  # TorchCodec's image decoders (no FFmpeg needed); without them PIL decodes every file
    from torchcodec.decoders import decode_jpeg as codec_decode_jpeg
    from torchcodec.decoders import decode_png as codec_decode_png
    from torchcodec.decoders import decode_webp as codec_decode_webp
except ImportError:  # not installed
    codec_decode_jpeg = codec_decode_png = codec_decode_webp = None
except (OSError, RuntimeError) as _err:  # installed but not loadable (built for another torch)
    codec_decode_jpeg = codec_decode_png = codec_decode_webp = None
    warnings.warn(f"TorchCodec cannot be loaded ({str(_err).strip().splitlines()[0][:200]}); PIL decodes every "
                  "image (slower) and data.decode=device decodes in the workers; install the torchcodec build "
                  "that matches your torch", stacklevel=1)

DRAFT_SCALES = (8, 4, 2, 1)  # libjpeg's DCT scalings that PIL's draft offers
MIN_DRAFT_SCALE = 4  # crops of encoded JPEGs decode at reduced scale (PIL draft) from this scale on
CODEC_MODES = {"RGB": "RGB", "L": "GRAY"}  # our image modes -> TorchCodec's
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# frame header markers (SOF0-15 without DHT C4, JPG C8, DAC CC): they carry the image size
FRAME_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
APP1 = 0xE1  # EXIF lives here
ORIENTATION_TAG = 0x0112


class JpegHeader(NamedTuple):
    """What a JPEG's header says: size, colour components (1 grey, 3 colour, 4 CMYK) and the EXIF
    orientation (1, "as stored", when there is none)."""

    width: int
    height: int
    components: int
    orientation: int = 1


def parse_jpeg_header(data: bytes | bytearray) -> JpegHeader | None:
    """:class:`JpegHeader` from the marker segments after SOI up to the frame header; ``None``
    when ``data`` is not a JPEG or ends before the frame header."""
    if data[:2] != b"\xff\xd8":
        return None
    i, n, orientation = 2, len(data), 1
    while i + 9 < n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = (data[i + 2] << 8) | data[i + 3]
        if marker in FRAME_MARKERS:  # FF Cn, length(2), precision(1), height(2), width(2), components(1)
            height, width = (data[i + 5] << 8) | data[i + 6], (data[i + 7] << 8) | data[i + 8]
            return JpegHeader(width, height, data[i + 9], orientation) if width and height else None
        if marker == APP1:
            orientation = exif_orientation(data, i + 4, min(n, i + 2 + length)) or orientation
        i += 2 + length
    return None


def exif_orientation(data: bytes | bytearray, start: int, end: int) -> int | None:
    """The orientation tag (1-8) of the EXIF block ``data[start:end]`` (``Exif\\0\\0`` + a TIFF
    header + IFD0), or ``None`` when it is not EXIF or has no (valid) orientation."""
    if data[start:start + 6] != b"Exif\x00\x00":
        return None
    tiff = start + 6
    order = {b"II": "little", b"MM": "big"}.get(bytes(data[tiff:tiff + 2]))
    if order is None or tiff + 8 > end:
        return None

    def number(at: int, size: int) -> int:
        return int.from_bytes(data[at:at + size], order)

    ifd = tiff + number(tiff + 4, 4)
    if ifd + 2 > end:
        return None
    for k in range(number(ifd, 2)):
        entry = ifd + 2 + 12 * k
        if entry + 12 > end:
            return None
        if number(entry, 2) == ORIENTATION_TAG:  # tag(2), type(2) SHORT, count(4), value(2) + pad
            value = number(entry + 8, 2)
            return value if 1 <= value <= 8 else None
    return None


def png_without_exif(data: bytes | bytearray) -> bool:
    """A PNG with no ``eXIf`` chunk before its image data (TorchCodec would apply its orientation)."""
    if data[:8] != PNG_SIGNATURE:
        return False
    i, n = 8, len(data)
    while i + 8 <= n:
        kind = bytes(data[i + 4:i + 8])
        if kind == b"eXIf":
            return False
        if kind == b"IDAT":
            return True
        i += 12 + int.from_bytes(data[i:i + 4], "big")  # length(4), type(4), data, crc(4)
    return True  # cut short: the decoder says what is wrong


def still_webp_without_exif(data: bytes | bytearray) -> bool:
    """A WebP that is neither animated nor carries EXIF (flags of the extended ``VP8X`` header)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return False
    return data[12:16] != b"VP8X" or (len(data) > 20 and not data[20] & 0x0A)  # 0x08 EXIF, 0x02 animation


def read_file(path: str) -> bytearray:
    """A file's bytes, read straight into a writable buffer (no copy; ``torch.frombuffer`` wants it writable)."""
    with open(path, "rb", buffering=0) as f:
        data = bytearray(os.fstat(f.fileno()).st_size)
        del data[f.readinto(data):]
    return data


@dataclass(frozen=True, slots=True)
class EncodedJpeg:
    """A JPEG file read but not decoded: ``data`` (its bytes), ``size`` ``(width, height)`` and
    ``components`` (1 grey, 3 colour) from its frame header."""

    path: str
    data: bytearray
    size: tuple[int, int]
    components: int

    def pil(self) -> JpegImageFile:
        """The file as a lazily opened PIL image (for draft decoding, and files TorchCodec rejects)."""
        return Image.open(io.BytesIO(self.data))

    def decode(self, mode: str = "RGB") -> Tensor:
        """The whole image as uint8 ``(C, H, W)`` in ``mode`` (``RGB`` or ``L``); PIL decodes what
        TorchCodec rejects, or raises the error the bad-image policy handles."""
        pixels = decode_tensor(self.data, mode, self.size)
        return pixels if pixels is not None else TF.pil_to_tensor(convert_mode(self.pil(), mode))

    def complete(self) -> bool:
        """The data ends with the EOI marker (within a few trailing bytes): not cut short."""
        return self.data.rfind(b"\xff\xd9", max(0, len(self.data) - 64)) >= 0


def open_image_lazy(path: str) -> EncodedJpeg | Image.Image:
    """Read an image file without decoding it (an ``ImageFolder`` loader; the default one decodes
    and converts to RGB at once): an :class:`EncodedJpeg` for a 1- or 3-component JPEG without EXIF
    rotation, else a lazily opened PIL image (pixels decoded when first used)."""
    data = read_file(path)
    header = parse_jpeg_header(data)
    if header is not None and header.components in (1, 3) and header.orientation == 1:
        return EncodedJpeg(str(path), data, (header.width, header.height), header.components)
    return Image.open(io.BytesIO(data))


def decode_tensor(data: bytearray, mode: str = "RGB", size: tuple[int, int] | None = None) -> Tensor | None:
    """JPEG bytes as uint8 ``(C, H, W)`` via TorchCodec's decoder, in ``mode`` (``RGB`` or ``L``);
    ``None`` when it cannot (no TorchCodec, a file it rejects, or a decoded size other than
    ``size`` = ``(width, height)``: the caller then takes the PIL path)."""
    if codec_decode_jpeg is None:
        return None
    try:
        pixels = codec_decode_jpeg(torch.frombuffer(data, dtype=torch.uint8), mode=CODEC_MODES[mode])
    except RuntimeError:
        return None
    return pixels if size is None or tuple(pixels.shape[-2:]) == (size[1], size[0]) else None


def decode_codec(data: bytearray, mode: str = "RGB") -> Tensor | None:
    """Any image file's bytes as uint8 ``(C, H, W)`` where TorchCodec decodes exactly what PIL +
    :func:`~.imagefolder.convert_mode` give (JPEG without EXIF rotation; in ``RGB``: PNG without
    ``eXIf``, still WebP without EXIF); ``None`` otherwise, or when TorchCodec rejects the file."""
    if codec_decode_jpeg is None:
        return None
    header = parse_jpeg_header(data)
    if header is not None:
        ok = header.components in (1, 3) and header.orientation == 1
        return decode_tensor(data, mode, (header.width, header.height)) if ok else None
    if mode != "RGB":  # TorchCodec's RGB -> grey rounds differently from PIL's
        return None
    decode = codec_decode_png if png_without_exif(data) else codec_decode_webp if still_webp_without_exif(data) else None
    if decode is None:
        return None
    try:
        return decode(torch.frombuffer(data, dtype=torch.uint8), mode="RGB")
    except RuntimeError:
        return None


def decode_file(path: str, mode: str = "RGB") -> Tensor:
    """Read and decode a whole image file now: uint8 ``(C, H, W)`` in ``mode`` (TorchCodec where it
    decodes as PIL does, :func:`decode_codec`; else PIL, which raises what the bad-image policy handles)."""
    data = read_file(path)
    pixels = decode_codec(data, mode)
    if pixels is not None:
        return pixels
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return TF.pil_to_tensor(convert_mode(image, mode))


def draft_scale(box_width: int, box_height: int, target: int) -> int:
    """The largest ``s`` in {8, 4, 2, 1} with ``box_width / s >= target`` and ``box_height / s >= target``."""
    for s in DRAFT_SCALES:
        if box_width >= s * target and box_height >= s * target:
            return s
    return 1


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


def crop_pil(image: JpegImageFile, box: tuple[int, int, int, int], size: int, mode: str = "RGB") -> Tensor:
    """``box`` of a lazily opened JPEG, decoded at the draft scale the box allows: uint8 ``(C, size, size)``."""
    decoded, scaled_box = decode_for_box(image, box, size, mode)
    return TF.pil_to_tensor(decoded.resize((size, size), Image.Resampling.BILINEAR, box=scaled_box))


def crop_jpeg(jpeg: EncodedJpeg, box: tuple[int, int, int, int], size: int, mode: str = "RGB") -> Tensor:
    """``box`` = ``(left, top, right, bottom)`` of a JPEG read but not decoded, as uint8 ``(C, size,
    size)``: the PIL draft path when a scale of :data:`MIN_DRAFT_SCALE` or more fits, else
    TorchCodec's full decode + torch's uint8 resize (PIL when TorchCodec rejects the file)."""
    if draft_scale(box[2] - box[0], box[3] - box[1], size) < MIN_DRAFT_SCALE:
        pixels = decode_tensor(jpeg.data, mode, jpeg.size)
        if pixels is not None:
            return resize_box_uint8(pixels, box, size)
    return crop_pil(jpeg.pil(), box, size, mode)


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


@dataclass(frozen=True, slots=True)
class DeferredCrop:
    """A training item of ``data.decode=device``: a JPEG's bytes with its crop drawn but not made.

    ``box`` = ``(left, top, right, bottom)`` in full-size pixels and ``flip`` are exactly the draws
    :class:`DecodeCropFlip` makes for the same seed; the batch is decoded, cropped, flipped and
    resized on the device (:mod:`.device_decode`)."""

    jpeg: EncodedJpeg
    box: tuple[int, int, int, int]
    flip: bool


class DecodeCropFlip:
    """``image -> uint8 (C, R, R)``: one random-resized crop at ``size`` and one horizontal flip.

    Args:
        size: output resolution ``R``. scale, ratio: as ``RandomResizedCrop``.
        channels: 1 or 3. to_uint8: image -> uint8 ``(C, H, W)`` for the torchvision path.
        defer: return a :class:`DeferredCrop` for a complete :class:`EncodedJpeg` (decoded later,
            on the device) instead of decoding it here.

    An :class:`EncodedJpeg` or a lazily opened PIL JPEG takes the fast path (module docstring);
    anything else runs ``to_uint8 -> v2.RandomResizedCrop(antialias) -> flip``. Every path draws
    the box as ``v2.RandomResizedCrop.make_params`` does and then the flip, so a seed gives the same
    box either way (deferred or not).
    """

    def __init__(self, size: int, scale: Sequence[float], channels: int,
                 to_uint8: Callable[[object], Tensor], ratio: Sequence[float] = (3 / 4, 4 / 3), defer: bool = False):
        self.size = int(size)
        self.mode = "RGB" if channels == 3 else "L"
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        self.defer = bool(defer)
        self.crop = v2.RandomResizedCrop(self.size, scale=tuple(scale), ratio=tuple(ratio), antialias=True)
        self.flip = v2.RandomHorizontalFlip()
        self.fallback = v2.Compose([to_uint8, self.crop, self.flip])

    def __call__(self, image) -> Tensor | DeferredCrop:
        if isinstance(image, EncodedJpeg):
            if self.defer and image.complete():  # a cut file is decoded here (the bad-image policy)
                box = self.sample_box(image.size)  # the same draws as crop_encoded, then the flip's
                return DeferredCrop(image, box, bool(torch.rand(1) < 0.5))
            out = self.crop_encoded(image)
        elif isinstance(image, JpegImageFile):
            out = crop_pil(image, self.sample_box(image.size), self.size, self.mode)
        else:
            return self.fallback(image)
        return out.flip(-1) if torch.rand(1) < 0.5 else out  # v2.RandomHorizontalFlip's draw

    def sample_box(self, size: tuple[int, int]) -> tuple[int, int, int, int]:
        """A random-resized crop box ``(left, top, right, bottom)`` of a ``(width, height)`` image."""
        left, top, w, h = random_resized_box(*size, self.scale, self.ratio)
        return left, top, left + w, top + h

    def crop_encoded(self, jpeg: EncodedJpeg) -> Tensor:
        """The crop (no flip) of a JPEG read but not decoded: uint8 ``(C, R, R)``."""
        return crop_jpeg(jpeg, self.sample_box(jpeg.size), self.size, self.mode)
