"""BN post-statistics of a slimmable detection backbone, per configuration.

A slimmable backbone trains one shared BN whose running statistics mix every width; before
evaluation each (size, width) gets its exact statistics over training images (US-Net's
post-statistics). The one calibration entry point,
:func:`~resnet_switch.evaluation.accuracy.calibrate_configs`, runs on :class:`BackboneProbe`: a view
of the detector that runs only the resize and the backbone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor, nn

from ..switch import SubnetConfig
from .model import SwitchableDetector


class BackboneProbe(nn.Module):
    """``probe(images)``: the detector's transform (resize to the active size, normalise, pad) and
    backbone body only; ``state``/``switch`` are the detector's (what ``calibrate_bn`` needs)."""

    def __init__(self, detector: SwitchableDetector):
        super().__init__()
        self.detector = detector
        self.train(detector.training)  # calibrate_bn restores this mode on the detector afterwards

    @property
    def state(self):
        return self.detector.state

    @contextmanager
    def switch(self, config: SubnetConfig, bn_mode: str | None = None) -> Iterator[BackboneProbe]:
        with self.detector.switch(config, bn_mode):
            yield self

    def forward(self, images: list[Tensor]):
        batch, _ = self.detector.net.transform(images)
        return self.detector.net.backbone.body(batch.tensors)
