"""Image comparison for tests: peak signal-to-noise ratio."""

from __future__ import annotations

import torch
from torch import Tensor


def psnr(a: Tensor, b: Tensor, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio (dB) of two same-shape images, ``10 log10(peak^2 / MSE)`` (inf when equal)."""
    mse = float(torch.mean((a.double() - b.double()) ** 2))
    return float("inf") if mse == 0 else 10.0 * torch.log10(torch.tensor(peak * peak / mse)).item()
