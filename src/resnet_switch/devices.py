"""The device a command runs on (``device=auto|cpu|cuda[:N]``), one rule for evaluation and the runtime."""

from __future__ import annotations

import torch

from .errors import ConfigError


def pick_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"``: cuda when available, else cpu; an explicit ``cuda`` without a visible GPU is a
    one-line :class:`ConfigError` naming ``device``."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda requested but no GPU is visible; use device=cpu or device=auto")
    return device
