"""Using a trained network: the runtime API (:class:`SwitchableClassifier`), export of one
configuration as a plain, verified model file, ONE ONNX file for every resolution (:mod:`.one_file`)
and its runtime without torch (:mod:`resnet_switch.deploy.onnx`).

``SwitchableClassifier`` is imported on first use, so that ``resnet_switch.deploy.onnx`` (numpy,
onnxruntime and Pillow only) imports where torch is not installed."""

from typing import Any

__all__ = ["SwitchableClassifier"]


def __getattr__(name: str) -> Any:
    if name == "SwitchableClassifier":
        from .runtime import SwitchableClassifier

        return SwitchableClassifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
