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

from collections.abc import Callable, Sequence

from ..errors import ConfigError
from ..methods import Method, build_method
from ..registry import Registry

# ``method.name`` (with task=detection) -> builder ``(sizes, **settings) -> Method``
DETECTION_METHODS: Registry[Callable[..., Method]] = Registry("detection method", field="method.name")


@DETECTION_METHODS.register("mutualnet", schedule="mutualnet")
def mutualnet(sizes: Sequence[int], **kwargs) -> Method:
    """MutualNet's sandwich rule; every sub-network learns from the labels (no inplace distillation)."""
    return build_method("mutualnet", sizes, **{**kwargs, "inplace_distill": False})


@DETECTION_METHODS.register("usnet", schedule="usnet")
def usnet(sizes: Sequence[int], **kwargs) -> Method:
    """US-Net's sandwich rule at the largest size; every sub-network learns from the labels."""
    return build_method("usnet", sizes, **{**kwargs, "inplace_distill": False})


@DETECTION_METHODS.register("rsnet", schedule="parallel")
def rsnet(sizes: Sequence[int], **kwargs) -> Method:
    """RS-Net's parallel training: private BN per size, every size each step."""
    return build_method("parallel", sizes, **kwargs)


def list_detection_methods() -> list[str]:
    """Registered detection method names, sorted (``method=detection_<name>``)."""
    return DETECTION_METHODS.list()


def build_detection_method(name: str, sizes: Sequence[int], task: str = "detection", **kwargs) -> Method:
    """The method object for ``name`` over input ``sizes`` (highest first); ``task``: the method
    config's marker (``detection``)."""
    if name not in DETECTION_METHODS or task != "detection":
        raise ConfigError(f"method.name: {name!r} is not a detection method; with task=detection use one of "
                         f"{list_detection_methods()} (method=detection_mutualnet, detection_usnet, detection_rsnet)")
    return DETECTION_METHODS.get(name)(sizes, **kwargs)
