"""``evaluate adaptive=true`` for one checkpoint: the cascade of :mod:`.adaptive` measured honestly.

1. Logits of every candidate configuration on CALIBRATION images -- held-out training images
   (:func:`heldout_images`: training-split images the run never trained on, shown with the
   validation transform) -- and on the validation split (one centre crop per image, every
   resolution made from it on the device, as in :func:`~.accuracy.evaluate_configs`).
2. Stages (:func:`~.adaptive.cascade_stages`): the resolutions by cost; for slimmable networks the
   MAdds / top-1 Pareto frontier of the (width, resolution) candidates on the calibration images.
3. For each budget of :func:`budget_sweep` (and ``budget.madds``): thresholds fitted on the
   calibration images (:func:`~.adaptive.fit_thresholds`), then the cascade on the validation split.
4. ``adaptive.csv`` (``kind`` = static | adaptive, ``mean_madds``, ``top1``, one ``share_<config>``
   column per stage: the fraction of images stopping there), ``adaptive.png`` (the adaptive curve
   over the static points) and ``adaptive.json`` (the :class:`~.adaptive.AdaptivePolicy`).

Validation-split logits are computed for every configuration at once, so the cascade there is
replayed from them (:func:`~.adaptive.cascade` on precomputed logits: the same decisions as running
only the undecided images, since an eval-mode network treats each image on its own).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from ..data.datamodule import TransformedDataset
from ..data.datasets import build_dataset
from ..errors import ConfigError
from ..models.inference_policy import InferencePolicy
from ..models.switchable import SwitchableNet
from ..switch import SubnetConfig
from .accuracy import device_batches
from .adaptive import AdaptivePolicy, cascade, cascade_stages, fit_thresholds, policy_path
from .costs import count_costs
from .query_table import pareto_frontier
from .reporting import human_count, plot_accuracy_vs_madds, write_csv


# ------------------------------------------------------------------------------ calibration images
def heldout_images(datamodule, count: int) -> tuple[Dataset, str]:
    """``count`` training-split images the run did not train on, with ``datamodule``'s validation
    transform, and a sentence saying where they come from.

    Generated data sets (``synthetic``): train-split indices ``[train_samples, train_samples + count)``
    (the run trained on ``[0, train_samples)``). Data sets on disk: images outside the run's
    ``data.train_samples`` subset (the subset rule of ``MultiResDataModule``: the first
    ``train_samples`` of a seed-0 permutation; the held-out ones are the next ``count``). When the run
    used the whole training split there is nothing held out: the first ``count`` images of that
    permutation are used and the sentence says their confidences are optimistic."""
    if count < 1:
        raise ConfigError(f"cascade.calibration_images: must be >= 1, got {count}")
    kwargs = dict(datamodule.synthetic)
    used = datamodule.train_samples
    if datamodule.entry.generated:
        kwargs["num_samples"] = int(used) + count
        full = build_dataset(datamodule.name, "train", datamodule.root, datamodule.download, **kwargs).dataset
        indices = list(range(int(used), int(used) + count))
        note = f"{count} held-out training images (generated train-split indices {used}..{used + count - 1})"
    else:
        full = build_dataset(datamodule.name, "train", datamodule.root, datamodule.download, **kwargs).dataset
        order = torch.randperm(len(full), generator=torch.Generator().manual_seed(0)).tolist()
        rest = order[used:] if used is not None and used < len(full) else []
        if rest:
            indices = sorted(rest[:count])
            note = f"{len(indices)} held-out training images (outside the run's {used}-image training subset)"
        else:
            indices = sorted(order[:count])
            note = (f"{len(indices)} training images SEEN in training (the run used the whole training split, "
                    "nothing is held out; confidences are optimistic)")
    return TransformedDataset(Subset(full, indices), datamodule.val_transform()), note


def calibration_batches(datamodule, dataset: Dataset, device: torch.device) -> Iterator:
    """Multi-resolution batches (``MultiResBatch``) of ``dataset`` on ``device``, in order."""
    loader = DataLoader(dataset, batch_size=datamodule.batch_size, shuffle=False,
                        num_workers=datamodule.num_workers)
    return device_batches(datamodule, loader, device)


# ------------------------------------------------------------------------------------ logits
@torch.no_grad()
def collect_logits(net: SwitchableNet, batches, configs: Sequence[SubnetConfig], inference: InferencePolicy,
                   limit_batches: int | None = None, desc: str = "logits") -> tuple[dict[SubnetConfig, Tensor], Tensor]:
    """``({config: logits (N, K) float on the CPU}, targets (N,))`` over ``batches`` (``MultiResBatch``
    each), every configuration as the inference policy runs it (``inference.switch(config)``)."""
    was_training = net.training
    net.eval()
    parts: dict[SubnetConfig, list[Tensor]] = {c: [] for c in configs}
    targets = []
    for i, batch in enumerate(tqdm(batches, desc=desc, leave=False)):
        if limit_batches is not None and i >= limit_batches:
            break
        for config in configs:
            with inference.switch(config):
                parts[config].append(net(batch.at(config.resolution)).float().cpu())
        targets.append(batch.targets.cpu())
    net.train(was_training)
    if not targets:
        raise ConfigError("data: no images to evaluate the cascade on")
    return {c: torch.cat(p) for c, p in parts.items()}, torch.cat(targets)


def top1(logits: Tensor, targets: Tensor) -> float:
    return 100.0 * float((logits.argmax(-1) == targets).float().mean())


def ensemble_log_weights(method, stages: Sequence[SubnetConfig]) -> list[float] | None:
    """Running-ensemble log-weights per stage: RS-Net's ``alpha`` of the stage's resolution (full
    width; the mean alpha for a resolution it was not trained at), ``None`` (uniform) otherwise."""
    alpha = getattr(method, "alpha", None)
    if not isinstance(alpha, Tensor):
        return None
    values = alpha.detach().float().cpu().tolist()
    index = {r: i for i, r in enumerate(method.resolutions)}
    mean = sum(values) / len(values)
    return [values[index[c.resolution]] if c.resolution in index and c.width == 1.0 else mean for c in stages]


def budget_sweep(stage_madds: Sequence[float], extra: float | None = None) -> list[float]:
    """Budgets for the adaptive curve: each stage's MAdds and the geometric midpoint of each
    neighbouring pair (plus ``extra``), ascending."""
    madds = sorted(float(m) for m in stage_madds)
    budgets = set(madds) | {math.sqrt(a * b) for a, b in zip(madds, madds[1:])}
    if extra is not None and extra >= madds[0]:
        budgets.add(float(extra))
    return sorted(budgets)


# --------------------------------------------------------------------------------------- job
def run_adaptive(net: SwitchableNet, method, datamodule, configs: Sequence[SubnetConfig],
                 inference: InferencePolicy, options: Mapping[str, Any], run_dir: Path,
                 checkpoint: str, label: str, limit_batches: int | None = None) -> list[dict[str, Any]]:
    """Fit, evaluate and write (module docstring); returns the ``adaptive.csv`` rows.

    ``inference``: how each configuration runs; its BN statistics must be ready
    (:func:`.checkpoint_eval.prepare_bn`).

    ``options``: ``score``, ``ensemble``, ``calibration_images``, ``budget_madds`` (or ``None``),
    ``store`` (also write the policy beside the checkpoint)."""
    device = next(net.parameters()).device
    run_dir = Path(run_dir)
    madds = {c: count_costs(net, c)[0] for c in configs}
    user_budget = options.get("budget_madds")
    if user_budget is not None and user_budget < min(madds.values()):
        cheapest = min(configs, key=lambda c: madds[c])
        raise ConfigError(f"budget.madds: {human_count(user_budget)} is below the cheapest configuration "
                         f"(w{cheapest.width:g}@{cheapest.resolution}, {human_count(madds[cheapest])} MAdds); "
                         "give at least that")
    dataset, source = heldout_images(datamodule, int(options["calibration_images"]))
    cal_logits, cal_targets = collect_logits(net, calibration_batches(datamodule, dataset, device), configs,
                                             inference, desc="calibration logits")
    val_logits, val_targets = collect_logits(net, device_batches(datamodule, datamodule.val_dataloader(), device),
                                             configs, inference, limit_batches=limit_batches, desc="validation logits")
    measured = [{"resolution": c.resolution, "width": c.width, "madds": madds[c], "top1": top1(cal_logits[c], cal_targets),
                 "config": c} for c in configs]
    stages = [row["config"] for row in cascade_stages(measured, frontier=inference.widths.slimmable)]
    stage_madds = [float(madds[c]) for c in stages]
    policy = AdaptivePolicy(stages=stages, stage_madds=stage_madds, score=options["score"],
                            ensemble=bool(options["ensemble"]), log_weights=ensemble_log_weights(method, stages),
                            calibration={"images": len(cal_targets), "source": source}, checkpoint=str(checkpoint))
    share_cols = [f"share_{c.key()}" for c in stages]

    rows: list[dict[str, Any]] = []
    for c in sorted(configs, key=lambda c: madds[c]):
        shares = {col: (1.0 if c == s else 0.0) if c in stages else None for col, s in zip(share_cols, stages)}
        rows.append({"kind": "static", "budget_madds": None, "mean_madds": float(madds[c]),
                     "top1": top1(val_logits[c], val_targets), "width": c.width, "resolution": c.resolution,
                     "calibration_top1": next(m["top1"] for m in measured if m["config"] == c),
                     "calibration_mean_madds": float(madds[c]), "thresholds": None, **shares})
    for budget in budget_sweep(stage_madds, user_budget):
        fit = fit_thresholds([cal_logits[c] for c in stages], cal_targets, stage_madds, budget, score=policy.score,
                             ensemble=policy.ensemble, log_weights=policy.log_weights)
        policy.fits.append(fit)
        result = cascade([val_logits[c] for c in stages], fit.thresholds, stage_madds, score=policy.score,
                         ensemble=policy.ensemble, log_weights=policy.log_weights)
        rows.append({"kind": "adaptive", "budget_madds": budget, "mean_madds": result.mean_madds,
                     "top1": top1(result.logits, val_targets), "width": None, "resolution": None,
                     "calibration_top1": fit.top1, "calibration_mean_madds": fit.mean_madds,
                     "thresholds": json.dumps(fit.thresholds), **dict(zip(share_cols, result.shares))})
    policy.fits.sort(key=lambda f: f.budget_madds)

    csv_path = write_csv(rows, run_dir / "adaptive.csv")
    json_path = policy.save(run_dir / "adaptive.json")
    beside = policy.save(policy_path(checkpoint)) if options.get("store", True) else None
    plot = plot_adaptive(rows, run_dir / "adaptive.png", user_budget, title=f"adaptive vs static: {label}")
    print_summary(rows, stages, source, policy, user_budget)
    print(f"\ncsv: {csv_path}  plot: {plot}  policy: {json_path}" + (f" (and {beside})" if beside else ""), flush=True)
    return rows


def plot_adaptive(rows: Sequence[Mapping[str, Any]], path: Path, user_budget: float | None = None,
                  title: str = "adaptive vs static") -> Path:
    """Top-1 vs mean MAdds: the static configurations (``w@r``), their Pareto frontier and the
    adaptive curve over budgets; the row at ``budget.madds`` circled."""
    static = [r for r in rows if r["kind"] == "static"]
    adaptive = [r for r in rows if r["kind"] == "adaptive"]
    series = {
        "static": [(r["mean_madds"], r["top1"], f"w{r['width']:g}@{r['resolution']}") for r in static],
        "static frontier": [(r["mean_madds"], r["top1"], "") for r in pareto_frontier(static, cost="mean_madds")],
        "adaptive (budgets)": [(r["mean_madds"], r["top1"], "") for r in adaptive],
    }
    marked = [(r["mean_madds"], r["top1"], f"budget {human_count(user_budget)}") for r in adaptive
              if user_budget is not None and r["budget_madds"] == user_budget]
    return plot_accuracy_vs_madds(series, path, title=title, marked=marked, xlabel="mean MAdds per image (M)")


def print_summary(rows, stages, source: str, policy: AdaptivePolicy, user_budget: float | None) -> None:
    print(f"\ncascade: {len(stages)} stage(s) " + " -> ".join(f"w{c.width:g}@{c.resolution}" for c in stages)
          + f"; score {policy.score}{' (running ensemble)' if policy.ensemble else ''}; thresholds fitted on {source}",
          flush=True)
    for r in rows:
        what = (f"static w{r['width']:g}@{r['resolution']}" if r["kind"] == "static"
                else f"adaptive budget {human_count(r['budget_madds'])}")
        print(f"  {what:>28}: top-1 {r['top1']:6.2f}%  mean MAdds {human_count(r['mean_madds'])}", flush=True)
    if user_budget is not None:
        row = next(r for r in rows if r["kind"] == "adaptive" and r["budget_madds"] == user_budget)
        print(f"adaptive under budget.madds={human_count(user_budget)}: top-1 {row['top1']:.2f}% at "
              f"{human_count(row['mean_madds'])} mean MAdds (calibration: {row['calibration_top1']:.2f}% at "
              f"{human_count(row['calibration_mean_madds'])}); thresholds {row['thresholds']}", flush=True)
