"""Runtime API: load a checkpoint once, switch configurations cheaply, classify images of any size.

::

    clf = SwitchableClassifier.from_checkpoint("last.ckpt")        # cuda when available, else cpu
    logits = clf.predict(images, resolution=160)                   # (B, num_classes); images any size
    clf.switch(128, width=0.75)                                    # slimmable checkpoints take widths
    row = clf.select("query_table.csv", latency_ms=5)              # best configuration under a budget
    plain = clf.materialize()                                      # plain nn.Module of the active config
    logits, configs = clf.predict_adaptive(images, budget="2M")    # cascade: the cheapest config sure enough

``switch`` never rebuilds the network: it activates the configuration in the shared switch state.
SAN's generated kernels are made once per configuration and cached (``switch`` calls every switchable
leaf's ``warm_cache``). Which configurations run and on which BN statistics is the network's
:class:`~resnet_switch.models.inference_policy.InferencePolicy` (``clf.policy``): MutualNet / US-Net /
S-Net use the statistics recalibrated per (width, resolution) that the checkpoint stores
(``calibrate`` adds more from your own images).

Preprocessing (``predict``) follows the validation protocol of training: the central square of
``crop_ratio`` x the shorter side (``Resize(r / 0.875) + CenterCrop(r)`` keeps the same region),
resized to ``r x r`` on the device (bilinear, antialias), then ``(x - mean) / std`` with the mean and
std stored in the checkpoint (``resnet_switch.train`` always stores them; a checkpoint without them
gets no normalisation, so pass images already normalised as float in that case).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn
from torchvision.transforms.v2 import functional as TF

from ..counts import parse_count
from ..data.multires import resize_images
from ..devices import pick_device
from ..errors import ConfigError, MissingFileError
from ..evaluation import query_table as qt
from ..evaluation.adaptive import AdaptivePolicy, policy_path
from ..layers.calibration import calibrate_bn
from ..layers.contracts import switchable_leaves
from ..models.inference_policy import InferencePolicy
from ..models.switchable import SwitchableNet
from ..switch import SubnetConfig
from ..training.checkpointing import load_checkpoint, rebuild_from_checkpoint


class SwitchableClassifier:
    """One loaded switchable network and its active configuration.

    Args:
        net: the switchable network (moved to ``device``, put in eval mode).
        method_name: the training method (named in error messages).
        needs_calibration, default_bn_mode: the method's two facts its
            :class:`~resnet_switch.models.inference_policy.InferencePolicy` (``policy``) reads:
            every configuration runs on stored exact statistics; the ``bn_mode`` when none is given.
        mean, std: per-channel normalisation of the training data (``None``: none).
        crop_ratio: central fraction of the shorter side kept by ``predict`` (validation protocol).
        bn_mode: for resolutions the net was not trained at, one of
            :data:`~resnet_switch.switch.INFERENCE_MODES`: ``nearest``, ``interpolate`` (RS-Net
            sec. 4.3), ``proxy`` (SAN: nearest BN and scale encoding), ``calibrate``/``ideal``
            (statistics stored for that configuration). Training resolutions use their own BN;
            methods that need calibration always run on stored statistics.
    """

    def __init__(self, net: SwitchableNet, method_name: str = "unknown", needs_calibration: bool = False,
                 default_bn_mode: str = "nearest", mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, crop_ratio: float = 0.875,
                 device: str | torch.device | None = None, bn_mode: str | None = None):
        self.device = pick_device(device)
        self.net = net.to(self.device).eval()
        self.method_name = method_name
        self.policy = InferencePolicy(self.net, needs_calibration=needs_calibration, default_bn_mode=default_bn_mode,
                                      bn_mode=bn_mode, owner=f"this {method_name} checkpoint")
        self.needs_calibration = self.policy.needs_calibration
        self.inference = self.policy.mode
        self.bn_mode = self.inference.name
        if not 0.0 < float(crop_ratio) <= 1.0:
            raise ConfigError(f"crop_ratio: must be in (0, 1], got {crop_ratio!r}")
        self.crop_ratio = float(crop_ratio)
        channels = self.in_channels
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        for name, value in (("mean", self.mean), ("std", self.std)):
            if value is not None and value.shape[1] != channels:
                raise ConfigError(f"{name}: has {value.shape[1]} entries but the network takes {channels} channels")
        self._leaves = [leaf for _, leaf in switchable_leaves(self.net)]
        self._config: SubnetConfig | None = None
        self._ready: set[SubnetConfig] = set()  # configurations whose statistics switch() already ensured
        self._ready_stages: set[tuple[SubnetConfig, ...]] = set()  # adaptive stages already checked
        self.checkpoint_path: Path | None = None  # set by from_checkpoint (its adaptive policy lives beside it)
        self._start()

    def _start(self) -> None:
        """Activate the largest configuration (slimmable: the largest one with stored statistics)."""
        top = SubnetConfig(self.net.state.train_resolutions[0], self.net.state.widths[0])
        try:
            self.switch(top.resolution, top.width)
        except ConfigError:
            stored = self.stored_configs()
            if stored:
                self.switch(stored[0].resolution, stored[0].width)
            else:  # nothing stored: predict fails until calibrate() provides statistics
                self._config = top
                self.policy.activate(top)

    # ---------------------------------------------------------------------------------- loading
    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device | None = None,
                        bn_mode: str | None = None) -> SwitchableClassifier:
        """Rebuild the network of a ``resnet_switch`` checkpoint (architecture, weights, stored BN
        statistics, normalisation) on ``device`` (default: cuda when available)."""
        method, net, meta = rebuild_from_checkpoint(load_checkpoint(path))
        run = meta.get("run", {}) or {}
        data = run.get("data", {}) or {}
        clf = cls(net, method_name=meta["method"]["name"], needs_calibration=method.needs_calibration,
                  default_bn_mode=method.default_bn_mode, mean=run.get("mean"), std=run.get("std"),
                  crop_ratio=data.get("val_crop_ratio", 0.875), device=device, bn_mode=bn_mode)
        clf.checkpoint_path = Path(path)
        return clf

    # ------------------------------------------------------------------------------- properties
    @property
    def config(self) -> SubnetConfig:
        """The active configuration."""
        return self._config

    @property
    def in_channels(self) -> int:
        return int(self.net.spec.get("in_channels", 3))

    @property
    def num_classes(self) -> int:
        return int(self.net.spec["num_classes"])

    @property
    def slimmable(self) -> bool:
        return self.policy.widths.slimmable

    def stored_configs(self) -> list[SubnetConfig]:
        """Configurations with BN statistics stored in every calibratable layer, largest first."""
        return self.policy.stored_configs()

    # -------------------------------------------------------------------------------- switching
    def check_config(self, resolution: int, width: float | None = None) -> SubnetConfig:
        """The configuration ``(resolution, width)`` if this network can run it, else a one-line
        ``ConfigError`` naming the field (``width`` defaults to the active width); see
        :meth:`~resnet_switch.models.inference_policy.InferencePolicy.check_config`."""
        width = self._config.width if (width is None and self._config is not None) else width
        return self.policy.check_config(resolution, self.net.state.widths[0] if width is None else width)

    def state_bn_mode(self, config: SubnetConfig) -> str:
        """The switch state's BN mode for ``config`` (see ``bn_mode`` in the class docstring)."""
        return self.policy.state_bn_mode(config)

    @torch.no_grad()
    def switch(self, resolution: int, width: float | None = None) -> SubnetConfig:
        """Activate ``(resolution, width)`` and return it. Cheap: no rebuild and no copy of weights;
        SAN kernels are generated on the first visit of a configuration and cached."""
        config = self.check_config(resolution, width)
        if config not in self._ready:  # statistics are only ever added: checked (or provided) once per config
            self.policy.ensure_statistics(
                config, fix=f"pick a stored configuration or run clf.calibrate(images, {config.resolution}, "
                            f"{config.width:g}) on a few hundred training images first")
            self._ready.add(config)
        self.policy.activate(config)
        for leaf in self._leaves:  # SAN: kernels generated once per configuration, then a cache hit
            leaf.warm_cache()
        self._config = config
        return config

    def select(self, query_table: str | os.PathLike | Sequence[Mapping[str, Any]], madds: Any = None,
               latency_ms: Any = None) -> dict[str, Any]:
        """Switch to the most accurate row of a query table (``query_table.csv`` written by
        ``evaluate query_table=true``, or its rows) within ``madds`` (``150M``, ``1.2e8``) and/or
        ``latency_ms``; returns that row. See :func:`resnet_switch.evaluation.query_table.select_under_budget`."""
        if isinstance(query_table, (str, os.PathLike)):
            path = Path(query_table)
            if not path.is_file():
                raise MissingFileError(f"query_table: no file at {path}; write one with "
                                        "python -m resnet_switch.evaluate ckpt=... query_table=true")
            rows = qt.read_query_table(path)
        else:
            rows = [dict(r) for r in query_table]
        budget_madds = None if madds is None else parse_count(madds, "madds")
        budget_latency = None if latency_ms is None else qt.parse_positive(latency_ms, "latency_ms")
        row = dict(qt.select_under_budget(rows, budget_madds, budget_latency))
        self.switch(int(row["resolution"]), float(row["width"]))
        return row

    # -------------------------------------------------------------------------------- inference
    def preprocess(self, images: Any, resolution: int | None = None, crop_ratio: float | None = None) -> Tensor:
        """Images -> float ``(B, C, r, r)`` on the device, normalised as the training data.

        ``images``: a uint8 tensor (0..255) or a float tensor (0..1), ``(B, C, H, W)`` or
        ``(C, H, W)``; a PIL image; or a list of those (sizes may differ). Each image keeps its
        central square of ``crop_ratio`` (default: the checkpoint's validation ratio) x its shorter
        side, resized to ``r`` (bilinear, antialias); ``crop_ratio=1`` keeps the whole shorter side."""
        r = self._config.resolution if resolution is None else int(resolution)
        ratio = self.crop_ratio if crop_ratio is None else float(crop_ratio)
        if not 0.0 < ratio <= 1.0:
            raise ConfigError(f"crop_ratio: must be in (0, 1], got {crop_ratio!r}")
        if isinstance(images, (list, tuple)):
            if not images:
                raise ConfigError("images: empty list")
            return torch.cat([self.preprocess(im, r, ratio) for im in images])
        x = self._as_tensor(images)
        x = x.to(self.device, non_blocking=True)
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        h, w = x.shape[-2:]
        side = max(1, round(min(h, w) * ratio))
        top, left = (h - side) // 2, (w - side) // 2
        x = resize_images(x[..., top:top + side, left:left + side], r)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x

    def _as_tensor(self, image: Any) -> Tensor:
        """One input as a 4-D tensor with the network's channel count (grey repeated to RGB)."""
        if isinstance(image, Image.Image):
            image = TF.pil_to_tensor(image.convert("RGB" if self.in_channels == 3 else "L"))
        if not isinstance(image, Tensor):
            raise ConfigError(f"images: expected tensors or PIL images, got {type(image).__name__}")
        if image.dtype != torch.uint8 and not image.is_floating_point():
            raise ConfigError(f"images: expected uint8 (0..255) or float (0..1) tensors, got {image.dtype}")
        x = image.unsqueeze(0) if image.dim() == 3 else image
        if x.dim() != 4:
            raise ConfigError(f"images: expected (B, C, H, W) or (C, H, W), got shape {tuple(image.shape)}")
        if x.shape[1] == 1 and self.in_channels == 3:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[1] != self.in_channels:
            raise ConfigError(f"images: {x.shape[1]} channels but the network takes {self.in_channels}")
        return x

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` of already preprocessed ``x`` ``(B, C, r, r)`` at the active config."""
        return self.net(x)

    @torch.no_grad()
    def predict(self, images: Any, resolution: int | None = None, width: float | None = None,
                crop_ratio: float | None = None) -> Tensor:
        """Logits ``(B, num_classes)`` (``.softmax(-1)`` for probabilities) of ``images`` (see
        :meth:`preprocess`). Given ``resolution``/``width``, switches there first (and stays)."""
        if resolution is not None or width is not None:
            self.switch(self._config.resolution if resolution is None else resolution, width)
        return self.net(self.preprocess(images, crop_ratio=crop_ratio))

    # ------------------------------------------------------------------------- adaptive inference
    def adaptive_policy(self, policy: AdaptivePolicy | str | os.PathLike | None = None) -> AdaptivePolicy:
        """``policy`` (an :class:`~resnet_switch.evaluation.adaptive.AdaptivePolicy` or its JSON file),
        by default ``<checkpoint>.adaptive.json`` (written by ``evaluate ckpt=... adaptive=true``)."""
        if isinstance(policy, AdaptivePolicy):
            return policy
        if policy is None:
            if self.checkpoint_path is None:
                raise ConfigError("policy: this classifier was not loaded from a checkpoint; pass policy=PATH "
                                 "(adaptive.json written by evaluate adaptive=true)")
            policy = policy_path(self.checkpoint_path)
        return AdaptivePolicy.load(policy)

    @torch.no_grad()
    def predict_adaptive(self, images: Any, budget: Any = None, thresholds: Sequence[float | None] | None = None,
                         policy: AdaptivePolicy | str | os.PathLike | None = None,
                         crop_ratio: float | None = None) -> tuple[Tensor, list[SubnetConfig]]:
        """Cascade inference: each image stops at the first stage of ``policy`` (cheapest first) whose
        confidence passes the stage's threshold (:mod:`resnet_switch.evaluation.adaptive`).

        Give ``budget`` (mean MAdds per image, ``150M`` / ``1.5e8``: the thresholds fitted for the
        largest stored budget within it) or ``thresholds`` (one per stage but the last; ``None``
        skips a stage). ``policy``: see :meth:`adaptive_policy`. Each image is cropped ONCE (see
        :meth:`preprocess`) at the largest stage's resolution; every stage resizes that crop on the
        device and runs only on the images still undecided. Returns ``(logits (B, K), configs)``,
        ``configs[i]`` the configuration image ``i`` stopped at. The active configuration is kept."""
        if (budget is None) == (thresholds is None):
            raise ConfigError("budget / thresholds: give exactly one of them")
        policy = self.adaptive_policy(policy)
        if budget is not None:
            thresholds = policy.thresholds_for(parse_count(budget, "budget")).thresholds
        if tuple(policy.stages) not in self._ready_stages:  # checked once per list of stages
            for config in policy.stages:
                self.check_config(config.resolution, config.width)
            self._ready_stages.add(tuple(policy.stages))
        x = self.preprocess(images, max(c.resolution for c in policy.stages), crop_ratio=crop_ratio)
        previous = self._config

        def run(stage: int, index: Tensor) -> Tensor:
            config = policy.stages[stage]
            self.switch(config.resolution, config.width)
            xs = x if len(index) == x.shape[0] else x[index.to(x.device)]  # undecided: sorted, all at stage 0
            return self.net(resize_images(xs, config.resolution))

        try:
            result = policy.run(run, thresholds, num_images=x.shape[0])
        finally:
            self.switch(previous.resolution, previous.width)
        return result.logits, [policy.stages[s] for s in result.stops.tolist()]

    # ------------------------------------------------------------------------------ deployment
    def materialize(self) -> nn.Module:
        """A plain ``nn.Module`` equal to the network at the active configuration (eval mode)."""
        return self.net.materialize()

    @torch.no_grad()
    def calibrate(self, images: Any, resolution: int, width: float | None = None) -> SubnetConfig:
        """Exact BN statistics for ``(resolution, width)`` over ``images`` (training-like images, any
        size, see :meth:`preprocess`; a few hundred or more), stored for :meth:`switch`."""
        config = self.check_config(resolution, width)
        x = self.preprocess(images, config.resolution)
        calibrate_bn(self.net, [x], config, num_samples=x.shape[0])  # restores the active config
        return config
