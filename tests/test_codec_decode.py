"""Image decoding through TorchCodec: the same pixels as PIL (+ ``convert_mode``) for every file it
takes, EXIF orientation left as stored (as PIL and torchvision's ImageFolder do), PIL for the rest,
and no deprecation warning from our decode paths."""

import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from resnet_switch.bench.data import natural_image
from resnet_switch.data import MultiResDataModule
from resnet_switch.data.decode import (
    EncodedJpeg,
    codec_decode_jpeg,
    decode_codec,
    decode_file,
    exif_orientation,
    open_image_lazy,
    parse_jpeg_header,
    png_without_exif,
    still_webp_without_exif,
)
from resnet_switch.data.imagefolder import convert_mode


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _pil_rgb(path) -> torch.Tensor:
    with Image.open(path) as image:
        return TF.pil_to_tensor(convert_mode(image, "RGB"))


def test_torchcodec_is_the_decoder_here():
    assert codec_decode_jpeg is not None  # installed with the package (pyproject); no FFmpeg needed for images


def test_every_format_torchcodec_takes_decodes_as_pil_does(tmp_path):
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
    rgba = np.asarray(rgb.convert("RGBA")).copy()
    rgba[..., 3] = rng.integers(0, 255, (40, 48))
    palette = rgb.convert("P")
    files = {
        "rgb.jpg": (rgb, {"quality": 90}), "grey.jpg": (rgb.convert("L"), {}),
        "progressive.jpg": (rgb, {"progressive": True}), "rgb.png": (rgb, {}), "grey.png": (rgb.convert("L"), {}),
        "rgba.png": (Image.fromarray(rgba), {}), "la.png": (rgb.convert("LA"), {}),
        "palette_transparent.png": (palette, {"transparency": 0}),
        "grey16.png": (Image.fromarray(rng.integers(0, 65535, (40, 48), dtype=np.uint16)), {}),
        "rgb.webp": (rgb, {"lossless": True}), "rgba.webp": (Image.fromarray(rgba), {"lossless": True}),
    }
    for name, (image, kwargs) in files.items():
        path = tmp_path / name
        image.save(path, **kwargs)
        assert decode_codec(bytearray(path.read_bytes())) is not None, name  # TorchCodec takes it ...
        assert torch.equal(decode_file(str(path)), _pil_rgb(path)), name  # ... and gives PIL's pixels
    rgb.convert("CMYK").save(tmp_path / "cmyk.jpg")
    rgb.save(tmp_path / "x.bmp")
    for name in ("cmyk.jpg", "x.bmp"):  # PIL decodes these
        assert decode_codec(bytearray((tmp_path / name).read_bytes())) is None, name
        assert torch.equal(decode_file(str(tmp_path / name)), _pil_rgb(tmp_path / name)), name


def test_exif_orientation_is_read_in_either_byte_order():
    for orientation in (1, 3, 6, 8):
        data = io.BytesIO()
        natural_image(1, 50, 30, texture=0).save(data, "JPEG", exif=_exif(orientation))
        header = parse_jpeg_header(data.getvalue())
        assert (header.width, header.height, header.orientation) == (50, 30, orientation)
    # a hand-made big-endian (MM) block: TIFF header, IFD0 with two entries, orientation 5 second
    ifd = (b"\x00\x02" + b"\x01\x0f\x00\x02\x00\x00\x00\x04\x00\x00\x00\x00"
           + b"\x01\x12\x00\x03\x00\x00\x00\x01\x00\x05\x00\x00")
    block = b"Exif\x00\x00" + b"MM\x00\x2a\x00\x00\x00\x08" + ifd
    assert exif_orientation(block, 0, len(block)) == 5
    assert exif_orientation(block, 0, len(block) - 12) is None  # cut inside the IFD
    assert exif_orientation(b"XMP\x00" + block, 0, len(block)) is None  # not EXIF
    data = io.BytesIO()
    natural_image(1, 50, 30, texture=0).save(data, "JPEG")
    assert parse_jpeg_header(data.getvalue()).orientation == 1  # no EXIF at all


def test_exif_rotated_images_keep_their_stored_pixels(tmp_path):
    image = natural_image(4, 64, 40, texture=5.0)
    jpeg, png, webp = tmp_path / "r.jpg", tmp_path / "r.png", tmp_path / "r.webp"
    image.save(jpeg, quality=95, exif=_exif(6))
    image.save(png, exif=_exif(6))
    image.save(webp, lossless=True, exif=_exif(6))
    # TorchCodec would turn the JPEG by 90 degrees; PIL, torchvision's ImageFolder and the reference do not
    assert codec_decode_jpeg(str(jpeg)).shape == (3, 64, 40)
    assert not isinstance(open_image_lazy(str(jpeg)), EncodedJpeg)  # the training crop takes PIL's path
    assert not png_without_exif(png.read_bytes()) and not still_webp_without_exif(webp.read_bytes())
    for path in (jpeg, png, webp):
        assert decode_codec(bytearray(path.read_bytes())) is None, path.name
        pixels = decode_file(str(path))
        assert pixels.shape == (3, 40, 64) and torch.equal(pixels, _pil_rgb(path)), path.name


def test_a_decoded_size_other_than_the_header_s_takes_the_pil_path(tmp_path):
    path = tmp_path / "x.jpg"
    natural_image(2, 48, 32, texture=5.0).save(path, quality=90)
    jpeg = open_image_lazy(str(path))
    wrong = EncodedJpeg(jpeg.path, jpeg.data, (32, 48), jpeg.components)  # as if TorchCodec had rotated it
    assert torch.equal(wrong.decode(), _pil_rgb(path))  # PIL's pixels, not a transposed tensor


def _folder(root):
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            natural_image(len(cls), 80, 60, texture=5.0).save(root / split / cls / "0.jpg", quality=90)
            natural_image(len(cls) + 5, 70, 50, texture=5.0).save(root / split / cls / "1.png")


@pytest.mark.filterwarnings("error::DeprecationWarning")
def test_imagefolder_decodes_without_deprecation_warnings(tmp_path):
    _folder(tmp_path)
    dm = MultiResDataModule(name="imagefolder", root=str(tmp_path), train_resolutions=(32, 16), batch_size=4,
                            num_workers=0, pin_memory=False)
    dm.setup("fit")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
        val = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    assert train.images.shape == val.images.shape == (4, 3, 32, 32)
    assert [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)] == []
