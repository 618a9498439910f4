"""Tiny checkpoints written without training (export, runtime and bench tests)."""

from __future__ import annotations

from pathlib import Path

import torch

from resnet_switch.layers.calibration import calibrate_bn
from resnet_switch.methods import build_method
from resnet_switch.models import create_model
from resnet_switch.training.checkpointing import make_checkpoint

MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.3, 0.35]


@torch.no_grad()
def randomize_bn(net: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine parameters (so BN choice and folding matter)."""
    gen = torch.Generator().manual_seed(seed)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            shape = module.running_mean.shape
            module.running_mean.copy_(torch.randn(shape, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(shape, generator=gen) + 0.5)
            module.weight.copy_(torch.rand(shape, generator=gen) + 0.5)
            module.bias.copy_(torch.randn(shape, generator=gen) * 0.1)


def write_checkpoint(path: Path, method: str = "rsnet", model: str = "resnet20", resolutions=(16, 12),
                     num_classes: int = 10, method_kwargs: dict | None = None, model_kwargs: dict | None = None,
                     calibrate: bool = True, quant: dict | None = None) -> Path:
    """A ``resnet_switch`` checkpoint of a freshly built net with random BN statistics. Slimmable
    methods get BN statistics calibrated (on random images) for their evaluation configurations."""
    torch.manual_seed(0)
    if model_kwargs is None:
        model_kwargs = {"base_width": 4} if model == "resnet20" else {}
    kwargs = dict(method_kwargs or {})
    m = build_method(method, list(resolutions), **kwargs)
    net = create_model(model, method=m, num_classes=num_classes, quant=quant, **model_kwargs)
    randomize_bn(net)
    net.eval()
    if m.needs_calibration and calibrate:
        for config in m.eval_configs():
            r = config.resolution
            calibrate_bn(net, [torch.rand(4, 3, r, r) * 2 - 1], config, num_samples=4)
    run = {"mean": MEAN, "std": STD, "data": {"name": "synthetic", "val_crop_ratio": 0.875}}
    torch.save(make_checkpoint(m, net, {"name": method, "kwargs": kwargs}, run), path)
    return path


def write_method_checkpoints(root: Path) -> dict[str, Path]:
    """One tiny checkpoint per method family (rsnet, san, mutualnet) under ``root``."""
    return {
        "rsnet": write_checkpoint(root / "rsnet.ckpt", "rsnet"),
        "san": write_checkpoint(root / "san.ckpt", "san"),
        "mutualnet": write_checkpoint(root / "mutualnet.ckpt", "mutualnet", method_kwargs={"width_range": [0.5, 1.0]}),
    }
