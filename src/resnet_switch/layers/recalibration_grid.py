"""BN post-statistics over a grid of configurations (US-Net / MutualNet "post-statistics").

For each ``(width, resolution)`` the exact BN statistics over ``num_samples`` training images are
recomputed with :func:`~resnet_switch.layers.calibration.calibrate_bn` and kept in each BN layer
(saved with the state dict). Every configuration sees the same crops, resized to its resolution the
way training does (``MultiResBatch.at``: bilinear, antialias).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from torch import Tensor

from ..data.multires import resize_images
from ..switch import SubnetConfig
from .calibration import calibrate_bn


def images_at(batches: Iterable[Any], resolution: int) -> Iterator[Tensor]:
    """Images ``(B, C, r, r)`` of each batch: ``batch.at(r)`` for a ``MultiResBatch``; a tensor or an
    ``(images, targets)`` pair is resized with the same bilinear-antialias rule."""
    for batch in batches:
        if hasattr(batch, "at"):
            yield batch.at(resolution)
            continue
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        yield resize_images(images, resolution)


def recalibrate_grid(net, batches_fn: Callable[[], Iterable[Any]], configs: Sequence[SubnetConfig],
                     num_samples: int = 2048) -> dict[str, int]:
    """Recalibrate BN of ``net`` (a ``SwitchableNet``) for every config over exactly ``num_samples``
    images; ``batches_fn()`` gives a fresh iterable of batches for each config (the same crops each
    time if the loader is deterministic). Returns ``{config.key(): images used}``. Afterwards run
    the net with ``bn_mode="calibrated"`` at any of these configs.
    """
    if num_samples < 1:
        raise ValueError(f"calibration.num_samples: must be >= 1, got {num_samples}")
    used = {}
    for config in configs:
        used[config.key()] = calibrate_bn(net, images_at(batches_fn(), config.resolution), config, num_samples)
    return used
