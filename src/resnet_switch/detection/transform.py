"""The detector's input size as part of the switch.

A detector's "resolution" is the size its images are resized to: torchvision's
``GeneralizedRCNNTransform`` scales each image so its shorter side is ``min_size`` (unless the longer
side would pass ``max_size``), normalises it and pads the batch to a multiple of 32. Here
``min_size`` is read from the shared switch state (the active configuration's ``resolution``), like
every other switchable layer reads its width or BN set; ``max_size`` stays fixed (MutualNet's
``1000 x {600, 480, 360, 240}``).
"""

from __future__ import annotations

from torchvision.models.detection.transform import GeneralizedRCNNTransform

from ..layers.contracts import SwitchableLeaf
from ..switch import SwitchState


class SwitchableTransform(SwitchableLeaf, GeneralizedRCNNTransform):
    """``GeneralizedRCNNTransform`` whose ``min_size`` is ``(state.config.resolution,)``.

    Boxes and masks of training targets are resized with the images; ``postprocess`` maps the
    detections back to each image's original size, so results at every size are comparable.
    """

    def __init__(self, state: SwitchState, max_size: int, image_mean: list[float], image_std: list[float],
                 size_divisible: int = 32):
        self.state = state  # read by min_size, which the parent's __init__ assigns
        super().__init__(state.config.resolution, max_size, image_mean, image_std, size_divisible)

    @property
    def min_size(self) -> tuple[int]:
        """The active configuration's size (never stored: it follows the switch)."""
        return (self.state.config.resolution,)

    @min_size.setter
    def min_size(self, value) -> None:
        value = tuple(value) if isinstance(value, (list, tuple)) else (value,)
        if value != self.min_size:
            raise AttributeError("min_size follows the active configuration; switch the detector instead")

    def to_plain(self) -> GeneralizedRCNNTransform:
        """A plain transform fixed at the active size (for a materialised detector)."""
        return GeneralizedRCNNTransform(self.min_size[0], self.max_size, list(self.image_mean),
                                        list(self.image_std), self.size_divisible)

    def load_plain(self, plain: GeneralizedRCNNTransform) -> None:
        """Nothing to copy: a transform holds no weights (its sizes and normalisation are settings)."""
