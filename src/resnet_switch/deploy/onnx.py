"""Runtime without torch for the one-file ONNX export (``export ... format=onnx configs=all``).

Imports numpy, onnxruntime and Pillow only (it imports and runs where torch is not installed)::

    from resnet_switch.deploy.onnx import SwitchableSession

    session = SwitchableSession.from_file("model_all.onnx")
    logits = session.predict(images, resolution=160)   # (B, num_classes) float32 numpy
    session.train_resolutions                           # [224, 192, 160, 128, 96]: any other runs too

The file's ``metadata_props['resnet_switch']`` (JSON, written at export) carries what preprocessing
needs: the training data's ``mean``/``std``, the validation ``crop_ratio`` and the training
resolutions. ``predict`` preprocesses as validation does (as
:meth:`~resnet_switch.deploy.runtime.SwitchableClassifier.preprocess`): each image keeps its central
square of ``crop_ratio`` x its shorter side (side ``round``-ed, offsets floored), converted to float
in [0, 1], resized to ``r x r`` bilinear with antialiasing (Pillow's ``resize(BILINEAR)`` of each
channel as 32-bit float; PyTorch's ``interpolate(antialias=True)`` follows the same filter, they
differ by float rounding: about 1e-6 on [0, 1] pixels), then ``(x - mean) / std``. The input
resolution selects the configuration in the graph (RS-Net's BN blend for an unseen one).

Images: PIL images (converted to RGB, or L for one-channel networks), or uint8 (0..255) / float
(0..1) numpy arrays laid out as image libraries do, channels last: ``(H, W, C)`` or ``(H, W)`` one
image, ``(B, H, W, C)`` a batch of equal-sized images; or a list of those (sizes may differ).
Already preprocessed input: :meth:`SwitchableSession.run` takes float ``(B, C, r, r)``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image

from ..errors import ConfigError

METADATA_KEY = "resnet_switch"  # as resnet_switch.deploy.one_file writes it


class SwitchableSession:
    """One ONNX Runtime session of the one-file export and its preprocessing.

    Args:
        session: an ``onnxruntime.InferenceSession`` of the file.
        metadata: the file's ``resnet_switch`` metadata (dict).
    """

    def __init__(self, session: ort.InferenceSession, metadata: dict[str, Any]):
        self.session = session
        self.metadata = metadata
        self.train_resolutions = [int(r) for r in metadata["train_resolutions"]]
        self.num_classes = int(metadata["num_classes"])
        self.in_channels = int(metadata.get("in_channels", 3))
        self.crop_ratio = float(metadata.get("crop_ratio", 0.875))
        mean, std = metadata.get("mean"), metadata.get("std")
        self.mean = None if mean is None else np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
        self.std = None if std is None else np.asarray(std, np.float32).reshape(1, -1, 1, 1)
        self.min_side = int(metadata.get("min_side", 1))
        self.max_side = int(metadata.get("max_side", 1 << 16))
        self._input = session.get_inputs()[0].name

    @classmethod
    def from_file(cls, path: str | os.PathLike, providers: Sequence[str] | None = None,
                  threads: int | None = None) -> SwitchableSession:
        """Open a file written by ``export ... format=onnx configs=all``. ``providers``: ONNX Runtime
        execution providers (default CPU); ``threads``: intra-op threads (default: ONNX Runtime's)."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ConfigError(f"path: no file at {path}; write one with python -m resnet_switch.export ckpt=... "
                              "format=onnx configs=all")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        session = ort.InferenceSession(path, options, providers=list(providers or ["CPUExecutionProvider"]))
        raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if raw is None:
            raise ConfigError(f"path: {path} has no {METADATA_KEY} metadata; it was not written by "
                              "resnet_switch.export configs=all")
        return cls(session, json.loads(raw))

    # ------------------------------------------------------------------------------ preprocessing
    def check_resolution(self, resolution: Any) -> int:
        if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)):
            raise ConfigError(f"resolution: must be an integer (pixels), got {resolution!r}")
        if not self.min_side <= int(resolution) <= self.max_side:
            raise ConfigError(f"resolution: {resolution} is outside [{self.min_side}, {self.max_side}] px, the "
                              "range the file was exported for")
        return int(resolution)

    def preprocess(self, images: Any, resolution: int, crop_ratio: float | None = None) -> np.ndarray:
        """Images (see the module docstring) -> float32 ``(B, C, r, r)``, normalised as the training data."""
        r = self.check_resolution(resolution)
        ratio = self.crop_ratio if crop_ratio is None else float(crop_ratio)
        if not 0.0 < ratio <= 1.0:
            raise ConfigError(f"crop_ratio: must be in (0, 1], got {crop_ratio!r}")
        batch = np.stack([self._one(image, r, ratio) for image in self._split(images)])
        if self.mean is not None:
            batch = (batch - self.mean) / self.std
        return np.ascontiguousarray(batch, dtype=np.float32)

    def _split(self, images: Any) -> list[Any]:
        if isinstance(images, (list, tuple)):
            if not images:
                raise ConfigError("images: empty list")
            return [one for image in images for one in self._split(image)]
        if isinstance(images, np.ndarray) and images.ndim == 4:
            return list(images)
        return [images]

    def _one(self, image: Any, r: int, ratio: float) -> np.ndarray:
        """One image -> float32 ``(C, r, r)`` in [0, 1] (cropped and resized, not normalised)."""
        if isinstance(image, Image.Image):
            image = np.asarray(image.convert("RGB" if self.in_channels == 3 else "L"))
        if not isinstance(image, np.ndarray):
            raise ConfigError(f"images: expected numpy arrays or PIL images, got {type(image).__name__}")
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3:
            raise ConfigError(f"images: expected (H, W, C), (H, W) or (B, H, W, C), got shape {image.shape}")
        if image.dtype == np.uint8:
            x = image.astype(np.float32) / np.float32(255.0)
        elif np.issubdtype(image.dtype, np.floating):
            x = image.astype(np.float32)
        else:
            raise ConfigError(f"images: expected uint8 (0..255) or float (0..1) arrays, got {image.dtype}")
        if x.shape[2] == 1 and self.in_channels == 3:
            x = np.repeat(x, 3, axis=2)
        if x.shape[2] != self.in_channels:
            raise ConfigError(f"images: {x.shape[2]} channels (last axis) but the network takes {self.in_channels}")
        h, w = x.shape[:2]
        side = max(1, round(min(h, w) * ratio))
        top, left = (h - side) // 2, (w - side) // 2
        x = x[top:top + side, left:left + side]
        if side == r:
            return x.transpose(2, 0, 1)
        channels = [np.asarray(Image.fromarray(np.ascontiguousarray(x[:, :, c]))
                               .resize((r, r), Image.Resampling.BILINEAR)) for c in range(x.shape[2])]
        return np.stack(channels)

    # ---------------------------------------------------------------------------------- inference
    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits ``(B, num_classes)`` of already preprocessed float32 ``(B, C, r, r)``."""
        return self.session.run(None, {self._input: np.ascontiguousarray(x, dtype=np.float32)})[0]

    def predict(self, images: Any, resolution: int | None = None, width: float | None = None,
                crop_ratio: float | None = None) -> np.ndarray:
        """Logits ``(B, num_classes)`` (float32) of ``images`` at ``resolution`` (default: the highest
        training resolution; any resolution in the exported range runs, an unseen one on the blend
        the method's rule gives). ``width``: slimmable files are not supported yet (1.0 only)."""
        if width is not None and float(width) != 1.0:
            raise ConfigError("width: this file runs width 1.0 only (slimmable one-file export is not supported yet)")
        r = self.train_resolutions[0] if resolution is None else resolution
        return self.run(self.preprocess(images, r, crop_ratio))
