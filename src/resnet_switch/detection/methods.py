"""Detection training methods: which configurations (input size, backbone width) a step trains.

The schedules are the classification methods' own (one implementation of each paper rule); what
changes for detection is the loss: every configuration learns from the labels (torchvision's RPN,
box and mask losses), as MutualNet trains Mask R-CNN (sec. 4.3, A.3).

| ``method.name`` | layers | configurations per step | evaluated |
|---|---|---|---|
| ``mutualnet`` | slimmable | full width at the largest size, the smallest and ``n_random`` random widths at sizes drawn from the list | {lo, mid, hi} x sizes |
| ``usnet`` | slimmable | the same widths, all at the largest size | {lo, mid, hi} x sizes |
| ``rsnet`` | private BN per size | width 1 at every size (RS-Net's parallel training) | width 1 x sizes |
"""

from __future__ import annotations

from collections.abc import Sequence

from ..methods import Method, build_method
from ..switch import SubnetConfig

# detection method -> the classification method whose schedule, layers and evaluation it uses
SCHEDULES = {"mutualnet": "mutualnet", "usnet": "usnet", "rsnet": "parallel"}


def build_detection_method(name: str, sizes: Sequence[int], **kwargs) -> Method:
    """The method object for ``name`` over input ``sizes`` (highest first)."""
    if name not in SCHEDULES:
        raise ValueError(f"method.name: {name!r} is not a detection method; with task=detection use one of "
                         f"{sorted(SCHEDULES)} (method=detection_mutualnet, detection_usnet, detection_rsnet)")
    if SCHEDULES[name] in ("mutualnet", "usnet"):
        kwargs["inplace_distill"] = False  # every sub-network learns from the labels
    return build_method(SCHEDULES[name], sizes, **kwargs)


def step_configs(method: Method) -> list[SubnetConfig]:
    """This step's configurations, the full network first (random draws for MutualNet / US-Net)."""
    sample = getattr(method, "sample_configs", None)
    return sample() if sample is not None else method.train_configs()
