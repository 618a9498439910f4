"""Using a trained network: the runtime API (:class:`SwitchableClassifier`) and export of one
configuration as a plain, verified model file."""

from .runtime import SwitchableClassifier

__all__ = ["SwitchableClassifier"]
