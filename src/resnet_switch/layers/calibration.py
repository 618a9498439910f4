"""Exact BatchNorm statistics recalibration for one configuration.

Used by RS-Net/SAN ``calibrate``/``ideal`` inference at unseen resolutions and by MutualNet's
post-statistics per (width, resolution). Unlike a 0.1 moving average, the result is the exact
mean and unbiased variance over every pixel of exactly ``num_samples`` images, computed with no
gradient. Results are kept per configuration and saved in the state dict (``_extra_state``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..switch import SubnetConfig


class CalibratedStatsMixin:
    """Per-configuration recalibrated statistics for a BN-like layer.

    The layer calls :meth:`_init_calibration` in ``__init__`` and :meth:`_calibration_forward`
    while ``state.calibrating`` is set (:func:`calibrate_bn`: ``with state.collecting_statistics()``).
    Statistics are accumulated in float64 as per-channel sums over ``B*H*W`` values and turned into
    ``(mean, unbiased var)`` by :meth:`finish_calibration`.
    """

    def _init_calibration(self) -> None:
        self.calibrated: dict[str, tuple[Tensor, Tensor]] = {}
        self._acc: list | None = None  # [stacked (sum, sum of squares), count]

    def _calibration_forward(self, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """Accumulate exact statistics of ``x`` (B,C,H,W) and normalise with the batch's own."""
        xd = x.detach().transpose(0, 1).reshape(x.shape[1], -1).double()
        stats = torch.stack([xd.sum(1), (xd * xd).sum(1)])
        if self._acc is None:
            self._acc = [stats, xd.shape[1]]
        else:
            self._acc[0] += stats
            self._acc[1] += xd.shape[1]
        return F.batch_norm(x, None, None, weight, bias, True, 0.0, self.eps)

    def finish_calibration(self, config: SubnetConfig) -> None:
        """Store the accumulated ``(mean, var)`` for ``config`` and reset the accumulator."""
        if self._acc is None:
            raise RuntimeError("finish_calibration without any calibration batch")
        (s, sq), n = self._acc[0], self._acc[1]
        mean = s / n
        var = (sq - s * mean) / max(n - 1, 1)
        dtype = self.sets[0].running_mean.dtype if hasattr(self, "sets") else torch.float32
        self.calibrated[config.key()] = (mean.to(dtype), var.clamp_min(0).to(dtype))
        self._acc = None

    def calibrated_stats(self, config: SubnetConfig) -> tuple[Tensor, Tensor]:
        try:
            return self.calibrated[config.key()]
        except KeyError:
            raise ConfigError(
                f"bn_mode=calibrated: no statistics for {config}; run calibrate_bn for it first"
            ) from None

    def _apply(self, fn, recurse=True):
        # .to(device) / .half(): the stored statistics (a dict, not buffers) follow the layer. Without
        # this, statistics loaded from a checkpoint on the CPU stayed there when the network moved to
        # the GPU, and every calibrated forward (evaluate, the runtime) failed with a device mismatch.
        with torch.no_grad():
            self.calibrated = {k: (fn(mean), fn(var)) for k, (mean, var) in self.calibrated.items()}
        return super()._apply(fn, recurse)

    def get_extra_state(self) -> dict:
        return {"calibrated": {k: {"mean": m, "var": v} for k, (m, v) in self.calibrated.items()}}

    def set_extra_state(self, state: dict) -> None:
        self.calibrated = {
            k: (d["mean"], d["var"]) for k, d in state.get("calibrated", {}).items()
        }


def calibratable_layers(model: nn.Module) -> list[CalibratedStatsMixin]:
    return [m for m in model.modules() if isinstance(m, CalibratedStatsMixin)]


@torch.no_grad()
def calibrate_bn(
    model: nn.Module,
    batches: Iterable[Tensor],
    config: SubnetConfig,
    num_samples: int,
    prepare: Callable[[Tensor], Tensor] | None = None,
) -> int:
    """Recalibrate BN statistics of ``model`` for ``config`` over exactly ``num_samples`` images.

    ``model`` is a :class:`~resnet_switch.models.switchable.SwitchableNet` (or a module with its
    ``state`` and ``switch``); ``batches`` yields image tensors ``(B, C, H, W)`` or lists of images
    (already at ``config.resolution`` unless ``prepare`` maps them there; a detector resizes itself).
    The last batch is truncated so exactly ``num_samples`` images are used; returns that count.
    """
    state = model.state
    layers = calibratable_layers(model)
    was_training = model.training
    model.eval()
    used = 0
    try:
        with state.collecting_statistics(), model.switch(config, bn_mode="calibrated"):
            for images in batches:
                images = images[: num_samples - used]
                if prepare is not None:
                    images = prepare(images)
                model(images)
                used += len(images)
                if used >= num_samples:
                    break
    finally:
        model.train(was_training)
    if used < num_samples:
        for layer in layers:
            layer._acc = None
        raise ConfigError(
            f"calibration.num_samples: asked for {num_samples} images but the loader gave {used}"
        )
    for layer in layers:
        layer.finish_calibration(config)
    return used
