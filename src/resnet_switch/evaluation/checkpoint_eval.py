"""What the three ``evaluate`` jobs share: a checkpoint loaded for evaluation with its inference
policy, the evaluation data module, BN made ready per configuration, accuracy with that BN.

The jobs: :mod:`.table_job` (checkpoint x test-resolution table), :mod:`.query_job` (MutualNet's
query table), :mod:`.adaptive_job` (cascade inference); :mod:`resnet_switch.evaluate` dispatches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ..counts import parse_count
from ..data.datamodule import validation_reference
from ..devices import pick_device
from ..methods import Method
from ..models.inference_policy import BNSource, InferencePolicy
from ..models.switchable import SwitchableNet
from ..switch import SubnetConfig, check_resolutions
from ..training.checkpointing import load_checkpoint, rebuild_from_checkpoint
from . import query_table as qt
from .accuracy import calibrate_configs, evaluate_configs

KEEP_WHEN_NULL = ("batch_size", "num_workers")  # evaluate.yaml's data keys: null = the training run's


@dataclass
class LoadedCheckpoint:
    """One checkpoint rebuilt for evaluation: its method, network (on the device), metadata, label
    and the inference policy of ``cfg.bn_mode``."""

    path: str
    method: Method
    net: SwitchableNet
    meta: dict[str, Any]
    label: str
    policy: InferencePolicy


def checkpoint_label(meta: dict[str, Any]) -> str:
    """``'rsnet resnet20 @32-16'`` (``' w2a2'`` after the backbone for a quantized network)."""
    res = meta["net"]["resolutions"]
    span = f"{res[0]}" if len(res) == 1 else f"{res[0]}-{res[-1]}"
    quant = meta["net"].get("quant")
    bits = f" w{quant['weight_bits']}a{quant['act_bits']}" if quant else ""
    return f"{meta['method']['name']} {meta['net']['name']}{bits} @{span}"


def load_for_eval(path: str, cfg: DictConfig, device: torch.device | None = None) -> LoadedCheckpoint:
    """Rebuild the checkpoint at ``path`` on ``device`` (default: ``cfg.device``) with the policy of
    ``cfg.bn_mode``."""
    method, net, meta = rebuild_from_checkpoint(load_checkpoint(path))
    net = net.to(pick_device(cfg.device) if device is None else device)
    label = checkpoint_label(meta)
    policy = InferencePolicy.for_method(net, method, bn_mode=cfg.bn_mode, owner=f"the {label} checkpoint")
    return LoadedCheckpoint(str(path), method, net, meta, label, policy)


def checkpoint_paths(cfg: DictConfig) -> list[str]:
    return [cfg.ckpt] if isinstance(cfg.ckpt, str) else list(cfg.ckpt)


def resolve_test_resolutions(cfg: DictConfig, first_path: str):
    """``cfg.test_resolutions``, else the first checkpoint's training resolutions."""
    if cfg.test_resolutions:
        return check_resolutions(list(cfg.test_resolutions), "test_resolutions")
    return load_checkpoint(first_path)["resnet_switch"]["net"]["resolutions"]


def parse_budget(cfg: DictConfig) -> tuple[float | None, float | None]:
    """``(budget.madds, budget.latency_ms)`` as numbers (``None`` when not given)."""
    budget = cfg.get("budget") or {}
    madds, latency = budget.get("madds"), budget.get("latency_ms")
    return (None if madds is None else parse_count(madds, "budget.madds"),
            None if latency is None else qt.parse_positive(latency, "budget.latency_ms"))


def build_eval_datamodule(meta: dict[str, Any], cfg: DictConfig, test_resolutions):
    """The training run's data module (``meta["run"]["data"]``) with ``cfg.data``'s overrides and
    ``test_resolutions`` as its validation resolutions, cropping at the run's validation reference."""
    data = dict(meta["run"]["data"])
    data.pop("resolutions", None)
    overrides = OmegaConf.to_container(cfg.data, resolve=True) or {}
    # null keeps the run's value for the keys conf/evaluate.yaml lists; a key added with + is applied
    # as given, null included (+data.val_samples=null: the whole validation split)
    data.update({key: value for key, value in overrides.items() if value is not None or key not in KEEP_WHEN_NULL})
    data["train_resolutions"] = meta["net"]["resolutions"]
    # the run's reference crop, not this evaluation's largest resolution (data.val_reference overrides it)
    data["val_reference"] = data.get("val_reference") or validation_reference(meta["run"]["data"],
                                                                              meta["net"]["resolutions"])
    data["test_resolutions"] = list(test_resolutions)
    return instantiate(data, _convert_="all")


def checked_widths(loaded: LoadedCheckpoint, widths) -> list[float]:
    """``widths`` the checkpoint can run (:meth:`~resnet_switch.models.inference_policy.WidthRule.check`;
    evaluation also measures untrained widths of a shared-BN slimmable network, with a warning)."""
    rule = loaded.policy.widths
    widths = rule.check(list(widths), "widths", loaded.policy.owner, allow_untrained=True)
    if untrained := rule.untrained(widths):
        print(f"warning: widths {', '.join(f'{w:g}' for w in untrained)} lie outside [{rule.lowest:g}, "
              f"{rule.highest:g}], the widths {loaded.label} was trained at; they are evaluated but were "
              "never trained", flush=True)
    return widths


# -------------------------------------------------------------------------------- BN handling
def prepare_bn(loaded: LoadedCheckpoint, datamodule, configs: list[SubnetConfig],
               cfg: DictConfig) -> dict[SubnetConfig, str]:
    """Make every configuration's BN ready to run as the policy says; ``{config: label}``.

    Configurations on exact statistics reuse those stored in the checkpoint (their own or a twin's;
    ``recalibrate=true``: none) and are recalibrated on ``calibration_samples`` training images
    otherwise. Labels: ``stored`` / ``recalibrated`` for methods that need calibration; else
    ``own`` at a training resolution and the ``bn_mode``'s name at an unseen one."""
    policy = loaded.policy
    exact = [c for c in configs if policy.uses_exact_statistics(c)]
    if cfg.get("recalibrate"):
        missing = exact
    else:
        sources = policy.provide_statistics(exact)
        missing = [c for c in exact if sources[c] is BNSource.NEEDS_CALIBRATION]
    if missing:
        calibrate_configs(loaded.net, datamodule, missing, cfg.calibration_samples)
    if policy.needs_calibration:
        print(f"BN: {len(configs) - len(missing)} configuration(s) use statistics stored in the checkpoint, "
              f"{len(missing)} recalibrated on {cfg.calibration_samples} images", flush=True)
        return {c: "recalibrated" if c in missing else "stored" for c in configs}
    trained = set(loaded.net.state.train_resolutions)
    return {c: "own" if c.resolution in trained else policy.mode.name for c in configs}


def evaluate_with_bn(loaded: LoadedCheckpoint, datamodule, configs: list[SubnetConfig], cfg: DictConfig,
                     extra: dict | None = None) -> list[dict]:
    """Rows ``{resolution, width, top1, top5, bn}`` in ``configs`` order, BN as :func:`prepare_bn`
    makes it. ``extra["ensemble"]``: the method's ensemble accuracy (RS-Net, over its training
    resolutions with their own BN) when it has one."""
    labels = prepare_bn(loaded, datamodule, configs, cfg)
    rows = evaluate_configs(loaded.net, datamodule, configs, policy=loaded.policy, limit_batches=cfg.limit_batches,
                            ensemble=loaded.method.ensemble, extra=extra)
    return [{**row, "bn": labels[config]} for row, config in zip(rows, configs)]
