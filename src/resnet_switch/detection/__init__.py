"""Detection (``task=detection``): a switchable backbone + FPN inside torchvision's Mask R-CNN /
Faster R-CNN (:mod:`.model`), its data, methods and training."""

from .model import DETECTORS, build_detector, list_detectors, load_detector, register_detector

__all__ = ["DETECTORS", "build_detector", "list_detectors", "load_detector", "register_detector"]
