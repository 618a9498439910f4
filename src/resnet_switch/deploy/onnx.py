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

from ..counts import parse_count
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
        # slimmable files (.one_file_widths): the stored widths (highest first, fed as their index) and
        # the stored (resolution, width) configurations; None for files of one width (1.0)
        self.widths = None if metadata.get("widths") is None else [float(w) for w in metadata["widths"]]
        self.configs = None if metadata.get("configs") is None else [(int(r), float(w)) for r, w in metadata["configs"]]
        self._width_input = metadata.get("width_input") if self.widths else None

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
    def run(self, x: np.ndarray, width: float | None = None) -> np.ndarray:
        """Logits ``(B, num_classes)`` of already preprocessed float32 ``(B, C, r, r)`` (``width``:
        slimmable files, default the highest; not checked against the stored resolutions here)."""
        feeds = {self._input: np.ascontiguousarray(x, dtype=np.float32)}
        if self._width_input is not None:
            feeds[self._width_input] = np.array(self.width_index(width), dtype=np.int64)
        return self.session.run(None, feeds)[0]

    def width_index(self, width: Any) -> int:
        """The position of ``width`` among the file's widths, else a one-line ``ConfigError``."""
        if self.widths is None:
            if width is not None and (isinstance(width, bool) or not isinstance(width, (int, float, np.floating))
                                      or float(width) != 1.0):
                raise ConfigError(f"width: this file runs width 1.0 only (not slimmable), got {width!r}")
            return 0
        if width is None:
            return 0
        if isinstance(width, bool) or not isinstance(width, (int, float, np.floating, np.integer)):
            raise ConfigError(f"width: must be a number, got {width!r}")
        try:
            return self.widths.index(round(float(width), 6))
        except ValueError:
            raise ConfigError(f"width: {width!r} has no BN statistics stored in this file; choose from "
                              f"{self.widths}") from None

    def predict(self, images: Any, resolution: int | None = None, width: float | None = None,
                crop_ratio: float | None = None) -> np.ndarray:
        """Logits ``(B, num_classes)`` (float32) of ``images`` at ``resolution`` (default: the highest
        training resolution; any resolution in the exported range runs, an unseen one on the blend
        the method's rule gives). ``width``: slimmable files run their stored widths (default the
        highest) at the resolutions stored for that width only (exact statistics per configuration);
        other files width 1.0."""
        k = self.width_index(width)
        r = self.train_resolutions[0] if resolution is None else resolution
        if self.configs is not None:
            self.check_resolution(r)
            stored = sorted({cr for cr, cw in self.configs if cw == self.widths[k]}, reverse=True)
            if int(r) not in stored:
                raise ConfigError(f"resolution: {r} px has no BN statistics stored for width {self.widths[k]:g} in "
                                  f"this file (stored: {stored}); calibrate it and export again")
        return self.run(self.preprocess(images, r, crop_ratio), self.widths[k] if self.widths else None)

    # ------------------------------------------------------------------------- adaptive inference
    def adaptive_policy(self, policy: dict[str, Any] | str | os.PathLike | None = None) -> dict[str, Any]:
        """The cascade's policy as the JSON dict ``evaluate adaptive=true`` writes (``adaptive.json``):
        ``policy`` (that dict or its file), by default the copy the export stored in the file's
        metadata (``export ... configs=all`` when ``<ckpt>.adaptive.json`` lies beside the checkpoint)."""
        if policy is None:
            policy = self.metadata.get("adaptive")
            if policy is None:
                raise ConfigError("policy: this file carries no adaptive policy; pass policy=PATH (adaptive.json "
                                  "written by evaluate adaptive=true), or run evaluate ckpt=... adaptive=true "
                                  "before exporting")
        elif not isinstance(policy, dict):
            path = os.fspath(policy)
            if not os.path.isfile(path):
                raise ConfigError(f"policy: no file at {path}; write one with python -m resnet_switch.evaluate "
                                  "ckpt=... adaptive=true")
            with open(path) as handle:
                policy = json.load(handle)
        if policy.get("format") != ADAPTIVE_FORMAT or not policy.get("stages"):
            raise ConfigError(f"policy: not a {ADAPTIVE_FORMAT} policy (written by evaluate adaptive=true)")
        if policy.get("score") not in SCORES:
            raise ConfigError(f"policy: unknown confidence score {policy.get('score')!r}; known: {sorted(SCORES)}")
        return policy

    def predict_adaptive(self, images: Any, budget: Any = None, thresholds: Sequence[float | None] | None = None,
                         policy: dict[str, Any] | str | os.PathLike | None = None,
                         crop_ratio: float | None = None) -> tuple[np.ndarray, list[tuple[int, float]]]:
        """Cascade inference as :meth:`SwitchableClassifier.predict_adaptive
        <resnet_switch.deploy.runtime.SwitchableClassifier.predict_adaptive>` (numpy only): each image
        stops at the first stage (cheapest first) whose confidence (the policy's ``score`` of the stage's
        logits, or of the running ensemble) reaches the stage's threshold; the last stage takes the rest.

        Give ``budget`` (mean MAdds per image, ``2M`` / ``2e6``: the thresholds fitted for the largest
        stored budget within it) or ``thresholds`` (one per stage but the last; ``None`` skips a stage).
        Each image is cropped and resized ONCE to the largest stage's resolution (see :meth:`preprocess`);
        each stage resizes that (Pillow, bilinear, antialias) and runs on the still undecided images only.
        Returns ``(logits (B, K) float32, configs)``, ``configs[i] = (resolution, width)`` of image ``i``'s stop."""
        if (budget is None) == (thresholds is None):
            raise ConfigError("budget / thresholds: give exactly one of them")
        policy = self.adaptive_policy(policy)
        stages = [(int(s["resolution"]), float(s["width"])) for s in policy["stages"]]
        if budget is not None:
            thresholds = fitted_thresholds(policy, parse_count(budget, "budget"))
        thresholds = list(thresholds)
        if len(thresholds) != len(stages) - 1 or any(t is not None and not float(t) >= 0 for t in thresholds):
            raise ConfigError(f"thresholds: need {len(stages) - 1} numbers >= 0 or None (one per stage but the last)")
        for r, w in stages:  # every stage runnable by this file, before any runs
            self.check_resolution(r)
            self.width_index(w)
        x = self.preprocess(images, max(r for r, _ in stages), crop_ratio)
        n = x.shape[0]
        score = SCORES[policy["score"]]
        log_weights = policy.get("log_weights")
        weights = [1.0] * len(stages) if not log_weights else [float(np.exp(w)) for w in log_weights]
        ensemble = bool(policy.get("ensemble"))
        stops = np.full(n, -1, dtype=np.int64)
        final: np.ndarray | None = None
        undecided = np.arange(n)
        running, weight_sum = None, 0.0
        for s, (r, w) in enumerate(stages):
            last = s == len(stages) - 1
            t = None if last else thresholds[s]
            if not last and t is None:
                continue
            if undecided.size == 0:
                break
            logits = self.run(resize_batch(x[undecided], r), w)
            if ensemble:
                weighted = logits * np.float32(weights[s])
                running = weighted if running is None else running + weighted
                weight_sum += weights[s]
                logits = running / np.float32(weight_sum)
            if final is None:
                final = np.zeros((n, logits.shape[1]), np.float32)
            done = np.ones(undecided.size, bool) if last else score(logits) >= float(t)
            final[undecided[done]] = logits[done]
            stops[undecided[done]] = s
            undecided = undecided[~done]
            if running is not None:
                running = running[~done]
        return final, [stages[s] for s in stops.tolist()]


# ------------------------------------------------------------------------------ adaptive helpers
ADAPTIVE_FORMAT = "resnet_switch.adaptive/1"  # as resnet_switch.evaluation.adaptive writes it


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float32) - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _max_softmax(logits: np.ndarray) -> np.ndarray:
    return _softmax(logits).max(-1)


def _margin(logits: np.ndarray) -> np.ndarray:
    p = np.sort(_softmax(logits), -1)
    return p[:, -1] - p[:, -2] if p.shape[1] > 1 else p[:, -1]


SCORES = {"max_softmax": _max_softmax, "margin": _margin}  # resnet_switch.evaluation.adaptive.SCORES in numpy


def fitted_thresholds(policy: dict[str, Any], budget_madds: float) -> list[float | None]:
    """The thresholds of the largest stored budget within ``budget_madds`` (as ``AdaptivePolicy.thresholds_for``)."""
    within = [f for f in policy.get("fits", []) if f["budget_madds"] <= budget_madds * (1 + 1e-9)]
    if not within:
        stored = ", ".join(f"{f['budget_madds']:g}" for f in policy.get("fits", [])) or "none"
        raise ConfigError(f"budget: no thresholds fitted for a budget within {budget_madds:g} MAdds (stored budgets: "
                          f"{stored}); run python -m resnet_switch.evaluate ckpt=... adaptive=true budget.madds=...")
    return list(max(within, key=lambda f: f["budget_madds"])["thresholds"])


def resize_batch(x: np.ndarray, r: int) -> np.ndarray:
    """Float ``(B, C, H, W)`` -> ``(B, C, r, r)``: Pillow's bilinear with antialiasing per channel (as
    :func:`resnet_switch.data.multires.resize_images`); ``x`` itself when it already is ``r x r``."""
    if x.shape[-2:] == (r, r):
        return x
    out = np.empty((*x.shape[:2], r, r), np.float32)
    for b in range(x.shape[0]):
        for c in range(x.shape[1]):
            out[b, c] = np.asarray(Image.fromarray(np.ascontiguousarray(x[b, c])).resize((r, r), Image.Resampling.BILINEAR))
    return out
