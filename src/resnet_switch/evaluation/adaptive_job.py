"""``evaluate ckpt=... adaptive=true [budget.madds=150M] [cascade.score=margin]``: ONE checkpoint
run as a cascade (each image stops at the cheapest configuration sure enough; thresholds fitted on
held-out training images), see :func:`.adaptive_eval.run_adaptive`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ..errors import ConfigError
from ..models.inference_policy import unique_widths
from ..switch import SubnetConfig
from .adaptive import SCORES
from .adaptive_eval import run_adaptive
from .checkpoint_eval import (
    LoadedCheckpoint,
    build_eval_datamodule,
    checked_widths,
    checkpoint_paths,
    load_for_eval,
    parse_budget,
    prepare_bn,
    resolve_test_resolutions,
)
from .costs import check_widths


def adaptive_options(cfg: DictConfig) -> dict[str, Any]:
    """The checked ``cascade.*`` settings and ``budget.madds`` of ``adaptive=true`` (one-line errors)."""
    if cfg.get("query_table"):
        raise ConfigError("adaptive: query_table=true and adaptive=true are two jobs; run them one at a time")
    cascade = cfg.get("cascade") or {}
    score = cascade.get("score", "max_softmax")
    SCORES.get(score)
    ensemble, store = cascade.get("ensemble", False), cascade.get("store", True)
    for key, value in (("cascade.ensemble", ensemble), ("cascade.store", store)):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false, got {value!r}")
    images = cascade.get("calibration_images", 2048)
    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise ConfigError(f"cascade.calibration_images: must be an integer >= 1 (held-out training images), "
                          f"got {images!r}")
    widths = cascade.get("widths")
    madds, latency = parse_budget(cfg)
    if latency is not None:
        raise ConfigError("budget.latency_ms: adaptive=true fits thresholds to a MAdds budget; use budget.madds=")
    return {"score": score, "ensemble": ensemble, "store": store, "calibration_images": images,
            "widths": None if widths is None else check_widths(list(widths)), "budget_madds": madds}


def adaptive_widths(loaded: LoadedCheckpoint) -> list[float]:
    """Default candidate widths of the cascade: the method's evaluation widths (their BN statistics
    are stored in the checkpoint), with widths of identical channels merged; ``[1.0]`` when the
    network is not slimmable."""
    if not loaded.policy.widths.slimmable:
        return [1.0]
    return list(unique_widths(loaded.net, sorted({c.width for c in loaded.method.eval_configs()})))


def adaptive_job(cfg: DictConfig) -> list[dict]:
    """Cascade inference of ONE checkpoint: :func:`.adaptive_eval.run_adaptive`."""
    paths = checkpoint_paths(cfg)
    if len(paths) != 1:
        raise ConfigError(f"ckpt: adaptive=true takes ONE checkpoint, got {len(paths)}")
    options = adaptive_options(cfg)
    test_resolutions = resolve_test_resolutions(cfg, paths[0])
    loaded = load_for_eval(paths[0], cfg)
    widths = checked_widths(loaded, options["widths"]) if options["widths"] else adaptive_widths(loaded)
    configs = [SubnetConfig(r, w) for w in widths for r in test_resolutions]
    datamodule = build_eval_datamodule(loaded.meta, cfg, test_resolutions)
    prepare_bn(loaded, datamodule, configs, cfg)
    return run_adaptive(loaded.net, loaded.method, datamodule, configs, loaded.policy, options, Path(cfg.run_dir),
                        paths[0], loaded.label, limit_batches=cfg.limit_batches)
