"""``data.decode=device``: the training batch's JPEGs decoded on the GPU (nvJPEG, through TorchCodec).

At ImageNet speed the worker CPUs are the limit: a full JPEG decode costs ~2 ms of CPU per image.
With ``decode=device`` a worker reads the file and draws the crop box and the flip exactly as
``decode=worker`` does (:class:`~.decode.DecodeCropFlip` with ``defer=True``: the same draws from the
same seeded generator, so sample order and crops are identical) and returns a
:class:`~.decode.DeferredCrop`. :class:`DeferredCollate` packs a batch into a
:class:`DeferredJpegBatch`: the encoded bytes of its JPEGs in ONE flat uint8 tensor (one shared
memory block per batch from a worker), their boxes and flips, and the items a worker decoded
itself (non-JPEG files, CMYK or EXIF-rotated JPEGs, files cut short) as a uint8 batch. Lightning
copies it to the device (the bytes stay on the host: nvJPEG reads them there), and the data module's
``on_after_batch_transfer`` calls :func:`decode_batch`: one batched TorchCodec decode on the
device, then per image the box cropped and resized to ``R`` (bilinear, antialias: the float kernel
rounded to uint8, as :func:`~.multires.resize_uint8` does off the CPU) and the flips applied to the
batch; then the usual multi-resolution path.

An image the device cannot decode, or decodes to another size than its header's, is cropped on the
CPU by the worker path's code (:func:`~.decode.crop_jpeg`: TorchCodec, else PIL, which raises what
the bad-image policy handles). The same code runs on the CPU (``device`` = cpu), which is how it is
tested here; on a machine without CUDA ``decode=device`` falls back to ``decode=worker``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import default_collate

from .decode import CODEC_MODES, DeferredCrop, EncodedJpeg, codec_decode_jpeg, crop_jpeg, resize_box_uint8
from .imagefolder import DECODE_ERRORS, BadImageError


def device_decode_available() -> bool:
    """A CUDA device and TorchCodec's decoder: ``data.decode=device`` can decode on the GPU."""
    return codec_decode_jpeg is not None and torch.cuda.is_available()


class DeferredJpegBatch:
    """A collated training batch of ``data.decode=device``.

    Attributes:
        images: uint8 ``(B, C, R, R)``: the items decoded in the workers; zeros at ``index``.
        targets: ``(B,)`` class indices.
        encoded: uint8 ``(N,)``: the deferred JPEGs' bytes one after another (stays on the host).
        offsets: ``(K + 1,)`` int64: JPEG ``k`` is ``encoded[offsets[k]:offsets[k + 1]]``.
        index: ``(K,)`` int64 positions in the batch of the deferred JPEGs.
        boxes: ``(K, 4)`` int64 ``(left, top, right, bottom)`` in full-size pixels.
        sizes: ``(K, 2)`` int64 ``(width, height)`` from the frame headers.
        flips: ``(K,)`` bool (on the device after ``to``).
        paths: the deferred files (error messages, the bad-image policy).
    """

    def __init__(self, images: Tensor, targets: Tensor, encoded: Tensor, offsets: Tensor, index: Tensor,
                 boxes: Tensor, sizes: Tensor, flips: Tensor, paths: Sequence[str]) -> None:
        self.images, self.targets = images, targets
        self.encoded, self.offsets, self.index = encoded, offsets, index
        self.boxes, self.sizes, self.flips, self.paths = boxes, sizes, flips, list(paths)

    def __len__(self) -> int:
        return self.images.shape[0]

    def jpegs(self) -> list[Tensor]:
        """The deferred JPEGs' bytes: contiguous 1-D uint8 views of ``encoded`` (host memory)."""
        bounds = self.offsets.tolist()
        return [self.encoded[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def pin_memory(self) -> DeferredJpegBatch:
        """The DataLoader's ``pin_memory=True``: page-locked images and targets (fast, asynchronous copy)."""
        self.images, self.targets = self.images.pin_memory(), self.targets.pin_memory()
        return self

    def to(self, device, non_blocking: bool = False) -> DeferredJpegBatch:
        """Images, targets and flips to ``device`` (Lightning's batch transfer); the encoded bytes,
        boxes and sizes stay on the host, where the decoder and the crop loop read them."""
        device = torch.device(device)
        copy = {"non_blocking": non_blocking or self.images.is_pinned()}
        return DeferredJpegBatch(self.images.to(device, **copy), self.targets.to(device, **copy), self.encoded,
                                 self.offsets, self.index, self.boxes, self.sizes, self.flips.to(device, **copy),
                                 self.paths)

    def __repr__(self) -> str:
        return f"DeferredJpegBatch(size={len(self)}, deferred={len(self.paths)}, device={self.images.device})"


class DeferredCollate:
    """``collate_fn`` of ``data.decode=device``: worker items (uint8 ``(C, R, R)`` tensors or
    :class:`~.decode.DeferredCrop`, with labels) -> :class:`DeferredJpegBatch`; a batch without
    deferred items collates as ``decode=worker`` does (``(images, targets)``)."""

    def __init__(self, channels: int, size: int) -> None:
        self.channels, self.size = int(channels), int(size)

    def __call__(self, items: Sequence[tuple[object, object]]):
        deferred = [k for k, (x, _) in enumerate(items) if isinstance(x, DeferredCrop)]
        if not deferred:
            return default_collate(items)
        targets = default_collate([y for _, y in items])
        images = torch.zeros(len(items), self.channels, self.size, self.size, dtype=torch.uint8)
        for k, (x, _) in enumerate(items):
            if not isinstance(x, DeferredCrop):
                images[k] = x
        crops: list[DeferredCrop] = [items[k][0] for k in deferred]
        lengths = torch.tensor([0] + [len(c.jpeg.data) for c in crops], dtype=torch.int64)
        offsets = lengths.cumsum(0)
        encoded = torch.empty(int(offsets[-1]), dtype=torch.uint8)
        for c, a, b in zip(crops, offsets[:-1].tolist(), offsets[1:].tolist()):
            encoded[a:b] = torch.frombuffer(c.jpeg.data, dtype=torch.uint8)
        return DeferredJpegBatch(
            images, targets, encoded, offsets, torch.tensor(deferred, dtype=torch.int64),
            torch.tensor([c.box for c in crops], dtype=torch.int64).view(-1, 4),
            torch.tensor([c.jpeg.size for c in crops], dtype=torch.int64).view(-1, 2),
            torch.tensor([c.flip for c in crops], dtype=torch.bool), [c.jpeg.path for c in crops])


def decode_jpegs(jpegs: list[Tensor], mode: str, device: torch.device) -> list[Tensor | None]:
    """TorchCodec's decode of every JPEG on ``device`` in one batched call (nvJPEG on CUDA); when
    the batch call fails, each image alone (``None`` for those that fail again)."""
    codec_mode = CODEC_MODES[mode]
    try:
        return list(codec_decode_jpeg(jpegs, mode=codec_mode, device=device))
    except RuntimeError:
        out: list[Tensor | None] = []
        for data in jpegs:
            try:
                out.append(codec_decode_jpeg(data, mode=codec_mode, device=device))
            except RuntimeError:
                out.append(None)
        return out


def resize_box(pixels: Tensor, box: Sequence[int], size: int) -> Tensor:
    """``pixels[:, top:bottom, left:right]`` (uint8 ``(C, H, W)``, any device) as float ``(C, size,
    size)``: bilinear with antialias, unrounded (the CPU's uint8 kernel, rounded alike, is used by
    :func:`decode_batch` there)."""
    left, top, right, bottom = box
    crop = pixels[None, :, top:bottom, left:right].float()
    return F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def decode_batch(batch: DeferredJpegBatch, mode: str = "RGB",
                 on_error: Callable[[str, BaseException], None] | None = None) -> Tensor:
    """The batch's images as uint8 ``(B, C, R, R)`` on ``batch.images.device`` (in place of the
    zeros there): the deferred JPEGs decoded on that device, cropped, resized and flipped; the
    worker-decoded items as they came.

    ``on_error(path, err)``: called for a deferred image that neither the device nor the CPU path
    can decode; it raises (``on_bad_image=fail``) or returns, and the image is then replaced by the
    first image of the batch that decoded (its target too). Without it the error propagates."""
    images, device = batch.images, batch.images.device
    channels, size = images.shape[1], images.shape[-1]
    jpegs = batch.jpegs()
    boxes, sizes = batch.boxes.tolist(), batch.sizes.tolist()
    decoded = decode_jpegs(jpegs, mode, device)
    on_cpu = device.type == "cpu"
    crops = torch.zeros(len(jpegs), channels, size, size, device=device,
                        dtype=torch.uint8 if on_cpu else torch.float32)
    bad: list[int] = []
    for k, pixels in enumerate(decoded):
        (width, height), box = sizes[k], boxes[k]
        if pixels is not None and tuple(pixels.shape[-2:]) == (height, width):
            # on the CPU torch's uint8 kernel: exactly what the worker path computes
            crops[k] = resize_box_uint8(pixels, box, size) if on_cpu else resize_box(pixels, box, size)
            continue
        jpeg = EncodedJpeg(batch.paths[k], bytearray(jpegs[k].numpy().tobytes()), (width, height), channels)
        try:  # the worker path's crop on the CPU: TorchCodec, else PIL (which raises for a bad file)
            crops[k] = crop_jpeg(jpeg, tuple(box), size, mode).to(device)
        except DECODE_ERRORS as err:
            if on_error is None:
                raise
            on_error(batch.paths[k], err)
            bad.append(k)
    if not on_cpu:
        crops = crops.round_().clamp_(0, 255).to(torch.uint8)
    crops = torch.where(batch.flips.view(-1, 1, 1, 1), crops.flip(-1), crops)
    images[batch.index.to(device)] = crops
    if bad:
        replace_bad(images, batch.targets, batch.index[bad].tolist())
    return images


def replace_bad(images: Tensor, targets: Tensor, bad: Sequence[int]) -> None:
    """Images and targets at batch positions ``bad`` replaced, in place, by the first other one."""
    good = next((k for k in range(images.shape[0]) if k not in set(bad)), None)
    if good is None:
        raise BadImageError("data.root: none of the images of this batch can be decoded; check the files")
    for k in bad:
        images[k] = images[good]
        targets[k] = targets[good]
