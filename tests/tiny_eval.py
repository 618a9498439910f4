"""Tiny checkpoints whose run data is a small synthetic set, and their accuracy computed by hand: the
network rebuilt from the file, run configuration by configuration on the validation images that
``evaluate`` reads (the checkpoint's own data settings), top-1 / top-5 counted here."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from torch import Tensor

from resnet_switch.cli.overrides import CONF_DIR
from resnet_switch.data.datamodule import MultiResDataModule
from resnet_switch.data.multires import MultiResBatch
from resnet_switch.layers.calibration import calibrate_bn
from resnet_switch.methods import build_method
from resnet_switch.models import create_model
from resnet_switch.switch import SubnetConfig
from resnet_switch.training.checkpointing import load_checkpoint, make_checkpoint, rebuild_from_checkpoint

from .ckpt_factory import MEAN, STD, randomize_bn

DATA = {"_target_": "resnet_switch.data.datamodule.MultiResDataModule", "name": "synthetic", "batch_size": 32,
        "num_workers": 0, "train_samples": 64, "val_samples": 64, "resolutions": [16, 12]}


def write_tiny(path: Path, method: str = "rsnet", seed: int = 0, method_kwargs: dict | None = None,
               data: dict | None = None) -> Path:
    """A checkpoint of a fresh resnet20 (base width 4, random BN statistics drawn from ``seed``)
    trained at 16 and 12 px on ``data`` (default :data:`DATA`); RS-Net's ``alpha`` is ``[0.5, -0.5]``."""
    torch.manual_seed(seed)
    kwargs = dict(method_kwargs or {})
    m = build_method(method, list(DATA["resolutions"]), **kwargs)
    net = create_model("resnet20", method=m, num_classes=10, base_width=4)
    randomize_bn(net, seed=seed)
    net.eval()
    if m.needs_calibration:
        for config in m.eval_configs():
            r = config.resolution
            calibrate_bn(net, [torch.rand(8, 3, r, r) * 2 - 1], config, num_samples=8)
    if method == "rsnet":
        m.alpha.data = torch.tensor([0.5, -0.5])
    run_data = DATA if data is None else data
    torch.save(make_checkpoint(m, net, {"name": method, "kwargs": kwargs}, {"mean": MEAN, "std": STD, "data": run_data}),
               path)
    return path


def rebuilt(path: Path):
    """``(method, net in eval mode)`` rebuilt from the checkpoint file alone."""
    method, net, _ = rebuild_from_checkpoint(load_checkpoint(path))
    return method, net.eval()


def datamodule(test_resolutions) -> MultiResDataModule:
    """The data module of :data:`DATA` at ``test_resolutions`` (what evaluate builds from the run)."""
    kwargs = {k: v for k, v in DATA.items() if k not in ("_target_", "resolutions")}
    return MultiResDataModule(train_resolutions=DATA["resolutions"], test_resolutions=list(test_resolutions), **kwargs)


def batches(loader, dm: MultiResDataModule) -> list[MultiResBatch]:
    return [dm.on_after_batch_transfer(batch, 0) for batch in loader]


def validation_batches(test_resolutions) -> list[MultiResBatch]:
    """The validation split: per image the centre crop at the largest training resolution (and one per
    test resolution above it)."""
    dm = datamodule(test_resolutions)
    return batches(dm.val_dataloader(), dm)


@torch.no_grad()
def logits_by_hand(net, val: list[MultiResBatch], config: SubnetConfig, bn_mode: str | None = None
                   ) -> tuple[Tensor, Tensor]:
    """``(logits, targets)`` over the validation batches: ``net`` switched to ``config`` (``bn_mode``:
    a ``SwitchState`` BN mode) on the images at the config's resolution."""
    out, targets = [], []
    for batch in val:
        with net.switch(config, bn_mode):
            out.append(net(batch.at(config.resolution)))
        targets.append(batch.targets)
    return torch.cat(out), torch.cat(targets)


@torch.no_grad()
def plain_logits(module: torch.nn.Module, val: list[MultiResBatch], resolution: int) -> tuple[Tensor, Tensor]:
    """``(logits, targets)`` of a plain module (e.g. ``net.materialize(config)``) on the validation
    images at ``resolution``."""
    module.eval()
    return torch.cat([module(b.at(resolution)) for b in val]), torch.cat([b.targets for b in val])


def top1_top5(logits: Tensor, targets: Tensor) -> tuple[float, float]:
    """Top-1 and top-5 accuracy (%): the target is the highest logit / among the five highest."""
    ranked = logits.argsort(dim=1, descending=True)
    top1 = (ranked[:, 0] == targets).double().mean().item() * 100
    top5 = (ranked[:, :5] == targets[:, None]).any(dim=1).double().mean().item() * 100
    return top1, top5


@torch.no_grad()
def calibrate_by_hand(net, config: SubnetConfig, num_samples: int) -> None:
    """Exact BN statistics for ``config`` on the first ``num_samples`` training crops of the
    calibration loader (epoch-0 order, the same crops every time), made at its resolution."""
    dm = datamodule([config.resolution])
    images = (b.at(config.resolution) for b in batches(dm.calibration_dataloader(), dm))
    calibrate_bn(net, images, config, num_samples)


def eval_cfg(*overrides: str):
    """The ``evaluate`` command's configuration on the CPU with ``overrides``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("evaluate", overrides=["device=cpu", *overrides])
