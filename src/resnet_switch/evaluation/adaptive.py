"""Adaptive (cascade) inference: each image stops at the cheapest configuration that is sure enough.

Stages ``s = 0 .. S-1`` are configurations ordered by cost, with MAdds ``m_s``. Every image runs stage
0; after stage ``s`` its confidence ``c_s`` (a :data:`SCORES` entry of the stage's logits, or of the
running ensemble of the logits computed so far) is compared with the stage's threshold ``t_s``:
``c_s >= t_s`` stops it with those logits, otherwise it goes on. The last stage takes every image
that reaches it, so there are ``S - 1`` thresholds. A threshold ``None`` skips its stage (nobody runs
it); a threshold of 0 stops everything there (later stages are never run); a threshold above 1 sends
everything on (scores lie in [0, 1]).

Honest cost: an image that stops at ``s`` pays ``sum_{j <= s, j run} m_j`` -- the passes of the
stages it went through are counted too. ``mean MAdds`` is that average over the images.

Running ensemble (``ensemble=True``, RS-Net eq. 4 over the stages run so far):
``z_s^ens = sum_{j run, j <= s} w_j z_j / sum w_j``, ``w_j = exp(log_weights_j)`` (RS-Net:
``alpha`` of the stage's resolution, i.e. ``softmax(alpha)`` renormalised over the stages run;
otherwise uniform).

:func:`fit_thresholds` chooses thresholds on calibration images (held-out training images, never
the validation/test split) that maximise top-1 within a mean-MAdds budget; :class:`AdaptivePolicy`
holds stages and fitted thresholds, saved as JSON beside the checkpoint and read back by the runtime.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, MissingFileError
from ..registry import Registry
from ..switch import SubnetConfig
from .query_table import pareto_frontier
from .reporting import human_count

SCORES: Registry[Callable[[Tensor], Tensor]] = Registry("confidence score", field="cascade.score")
NEVER = 2.0  # a threshold above every score: the stage sends every image on
FORMAT = "resnet_switch.adaptive/1"


@SCORES.register("max_softmax")
def max_softmax(logits: Tensor) -> Tensor:
    """``max_k softmax(z)_k`` per row: ``(B, K) -> (B,)`` in [1/K, 1]."""
    return logits.float().softmax(-1).amax(-1)


@SCORES.register("margin")
def margin(logits: Tensor) -> Tensor:
    """Top-1 minus top-2 softmax probability per row: ``(B, K) -> (B,)`` in [0, 1]."""
    top2 = logits.float().softmax(-1).topk(min(2, logits.shape[-1]), dim=-1).values
    return top2[:, 0] - top2[:, 1] if top2.shape[1] > 1 else top2[:, 0]


# ---------------------------------------------------------------------------------------- stages
def cascade_stages(rows: Sequence[Mapping[str, Any]], frontier: bool = True) -> list[Mapping[str, Any]]:
    """The cascade's stages from measured rows ``{resolution, width, madds, top1}`` (top-1 on the
    calibration images), cheapest first: with ``frontier`` (slimmable networks, width x resolution)
    the MAdds / top-1 Pareto frontier; otherwise (one width: the resolutions) every row by cost --
    a resolution a cheaper one beats is left to the threshold fit, which can stop everything before it."""
    if frontier:
        return list(pareto_frontier(rows))
    return sorted(rows, key=lambda r: (r["madds"], -r["top1"]))


def check_thresholds(thresholds: Sequence[float | None], num_stages: int) -> list[float | None]:
    """``S - 1`` thresholds, each ``None`` (skip the stage) or a number >= 0."""
    values = list(thresholds)
    if len(values) != num_stages - 1:
        raise ConfigError(f"thresholds: need {num_stages - 1} (one per stage but the last) for {num_stages} "
                         f"stages, got {len(values)}")
    out: list[float | None] = []
    for t in values:
        if t is None:
            out.append(None)
            continue
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(float(t)) or t < 0:
            raise ConfigError(f"thresholds: each must be a number >= 0 or null (skip the stage), got {t!r}")
        out.append(float(t))
    return out


def paid_madds(stage_madds: Sequence[float], thresholds: Sequence[float | None]) -> list[float]:
    """MAdds an image pays when it stops at each stage: its own plus every earlier stage run."""
    thresholds = check_thresholds(thresholds, len(stage_madds))
    paid, total = [], 0.0
    for s, m in enumerate(stage_madds):
        ran = s == len(stage_madds) - 1 or thresholds[s] is not None
        paid.append(total + float(m))
        total += float(m) if ran else 0.0
    return paid


# --------------------------------------------------------------------------------------- cascade
@dataclass
class CascadeResult:
    """What :func:`cascade` decided for ``N`` images.

    ``stops``: ``(N,)`` int64 stage index each image stopped at; ``logits``: ``(N, K)`` its final
    logits (the running ensemble's with ``ensemble=True``); ``madds``: ``(N,)`` float64 MAdds each
    image paid; ``shares``: fraction of images stopping at each stage (length ``S``)."""

    stops: Tensor
    logits: Tensor
    madds: Tensor
    shares: list[float]

    @property
    def mean_madds(self) -> float:
        return float(self.madds.mean()) if self.madds.numel() else 0.0


StageRunner = Callable[[int, Tensor], Tensor]  # (stage, image indices (n,) int64) -> logits (n, K)


def cascade(stage_logits: Sequence[Tensor] | StageRunner, thresholds: Sequence[float | None],
            stage_madds: Sequence[float], score: str = "max_softmax", ensemble: bool = False,
            log_weights: Sequence[float] | None = None, num_images: int | None = None) -> CascadeResult:
    """Run the cascade (module docstring) over ``N`` images.

    Args:
        stage_logits: ``S`` tensors ``(N, K)`` (precomputed), or a callable ``run(s, index)`` giving
            the logits ``(n, K)`` of stage ``s`` for the images ``index`` only (then ``num_images``).
            Batched: stage ``s`` runs once, on the images still undecided.
        thresholds: ``S - 1`` values (see :func:`check_thresholds`).
        stage_madds: ``S`` MAdds per image of each stage.
        score: a :data:`SCORES` name; ``ensemble``: score the running ensemble (``log_weights``:
            ``S`` log-weights, default uniform).
    """
    num_stages = len(stage_madds)
    thresholds = check_thresholds(thresholds, num_stages)
    confidence = SCORES.get(score)
    if callable(stage_logits):
        run = stage_logits
        if num_images is None:
            raise ConfigError("num_images: needed when stage_logits is a callable")
        n = int(num_images)
    else:
        tensors = list(stage_logits)
        if len(tensors) != num_stages:
            raise ConfigError(f"stage_logits: {len(tensors)} tensors for {num_stages} stages")
        n = tensors[0].shape[0]

        def run(s: int, index: Tensor) -> Tensor:
            return tensors[s][index.to(tensors[s].device)]

    weights = [1.0] * num_stages if log_weights is None else [math.exp(float(w)) for w in log_weights]
    # host work per stage kept to what deciding needs (batch 1 is the case that pays for it): the
    # images' costs are gathered once at the end (an image that stops at s paid paid_madds[s]), and
    # the logits are scattered into one tensor only when the stops split the batch
    undecided = torch.arange(n)
    parts: list[tuple[Tensor, Tensor]] = []  # (image indices, their final logits)
    stop_of = [-1] * n  # bookkeeping in Python: a few torch ops fewer per stage
    running, weight_sum = None, 0.0
    for s in range(num_stages):
        last = s == num_stages - 1
        t = None if last else thresholds[s]
        if not last and t is None:
            continue
        if undecided.numel() == 0:
            break
        logits = run(s, undecided)
        if ensemble:
            weighted = logits.float() * weights[s]
            running = weighted if running is None else running + weighted
            weight_sum += weights[s]
            logits = running / weight_sum
        done_list = [True] * len(undecided) if last else (confidence(logits) >= t).tolist()
        for i, stops_here in zip(undecided.tolist(), done_list):
            if stops_here:
                stop_of[i] = s
        if all(done_list):
            parts.append((undecided, logits))
            break
        done = torch.tensor(done_list)
        if any(done_list):
            parts.append((undecided[done], logits[done.to(logits.device)]))
        undecided = undecided[~done]
        if running is not None:
            running = running[(~done).to(running.device)]
    if len(parts) == 1 and len(parts[0][0]) == n:  # one stage decided every image: its logits, in order
        final = parts[0][1]
    elif parts:
        final = parts[0][1].new_zeros((n, parts[0][1].shape[1]))
        for index, logits in parts:
            final[index.to(final.device)] = logits.to(final.dtype)
    else:
        final = torch.zeros((0, 0))
    paid = paid_madds(stage_madds, thresholds)
    stops = torch.tensor(stop_of, dtype=torch.int64)
    madds = torch.tensor([paid[k] for k in stop_of], dtype=torch.float64)
    shares = [stop_of.count(k) / n if n else 0.0 for k in range(num_stages)]
    return CascadeResult(stops=stops, logits=final, madds=madds, shares=shares)


# ------------------------------------------------------------------------------ threshold fitting
@dataclass
class Fit:
    """Thresholds fitted for ``budget_madds`` and their figures on the calibration images."""

    budget_madds: float
    thresholds: list[float | None]
    top1: float  # % on the calibration images
    mean_madds: float  # on the calibration images

    def as_dict(self) -> dict[str, Any]:
        return {"budget_madds": self.budget_madds, "thresholds": self.thresholds, "top1": self.top1,
                "mean_madds": self.mean_madds}


class _CalibrationTable:
    """Confidence and correctness per (stage, stages run before it), computed once (numpy)."""

    def __init__(self, stage_logits: Sequence[Tensor], targets: Tensor, score: str, ensemble: bool,
                 log_weights: Sequence[float] | None):
        self.logits = [z.float().cpu() for z in stage_logits]
        self.targets = targets.cpu()
        self.score = SCORES.get(score)
        self.ensemble = ensemble
        count = len(self.logits)
        self.weights = [1.0] * count if log_weights is None else [math.exp(float(w)) for w in log_weights]
        self._cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def get(self, stage: int, run_before: int) -> tuple[np.ndarray, np.ndarray]:
        """``(confidence (N,), correct (N,) bool)`` at ``stage`` when the stages in bit mask
        ``run_before`` ran before it (only matters for the running ensemble)."""
        key = (stage, run_before if self.ensemble else 0)
        if key not in self._cache:
            logits = self.logits[stage]
            if self.ensemble:
                members = [j for j in range(stage) if run_before >> j & 1] + [stage]
                total = sum(self.weights[j] for j in members)
                logits = sum(self.logits[j] * (self.weights[j] / total) for j in members)
            self._cache[key] = (self.score(logits).numpy().astype(np.float64),
                                (logits.argmax(-1) == self.targets).numpy())
        return self._cache[key]


def _simulate(table: _CalibrationTable, thresholds: Sequence[float | None], stage_madds: Sequence[float],
              n: int) -> tuple[int, float]:
    """``(correct images, total MAdds)`` of the cascade on the calibration images."""
    alive = np.ones(n, dtype=bool)
    run_before, correct, cost = 0, 0, 0.0
    last = len(stage_madds) - 1
    for s in range(last + 1):
        t = None if s == last else thresholds[s]
        if s < last and t is None:
            continue
        n_alive = int(alive.sum())
        if n_alive == 0:
            break
        cost += n_alive * float(stage_madds[s])
        conf, right = table.get(s, run_before)
        run_before |= 1 << s
        stop = alive if s == last else alive & (conf >= t)
        correct += int((stop & right).sum())
        alive = alive & ~stop
    return correct, cost


def threshold_grid(confidences: np.ndarray, points: int) -> list[float | None]:
    """Candidate thresholds of one stage: 0 (stop all), ``points`` quantiles of its calibration
    confidences, :data:`NEVER` (send all on) and ``None`` (skip the stage)."""
    quantiles = np.quantile(confidences, np.linspace(0.0, 1.0, max(points, 2))) if confidences.size else []
    values = sorted({0.0, *(float(q) for q in quantiles), NEVER})
    return [*values, None]


def fit_thresholds(stage_logits: Sequence[Tensor], targets: Tensor, stage_madds: Sequence[float],
                   budget_madds: float, score: str = "max_softmax", ensemble: bool = False,
                   log_weights: Sequence[float] | None = None, grid_points: int = 32,
                   max_sweeps: int = 6) -> Fit:
    """Thresholds with the highest top-1 on the calibration images whose mean MAdds (every pass
    counted) is at most ``budget_madds``; ties go to the lower mean MAdds.

    Search: coordinate ascent over the ``S - 1`` thresholds, each over :func:`threshold_grid` of its
    stage (0, ``grid_points`` quantiles of its calibration confidences, :data:`NEVER`, skip), until a
    sweep changes nothing (at most ``max_sweeps``); it starts from every static configuration that
    fits the budget (earlier stages skipped, the stage's threshold 0), so the result is never worse
    on the calibration images than the best static stage within the budget. Exact for the grid it
    visits, a local optimum overall.

    Args:
        stage_logits: ``S`` tensors ``(N, K)``, the stages' logits on the calibration images.
        targets: ``(N,)`` labels. Raises ``ConfigError`` (``budget.madds: ...``) when even the
        cheapest stage exceeds the budget.
    """
    num_stages = len(stage_madds)
    if len(stage_logits) != num_stages:
        raise ConfigError(f"stage_logits: {len(stage_logits)} tensors for {num_stages} stages")
    n = int(targets.shape[0])
    if n == 0:
        raise ConfigError("calibration: no images to fit thresholds on")
    cheapest = min(float(m) for m in stage_madds)
    if budget_madds < cheapest:
        raise ConfigError(f"budget.madds: {human_count(budget_madds)} is below the cheapest stage's "
                         f"{human_count(cheapest)} MAdds; give at least that")
    table = _CalibrationTable(stage_logits, targets, score, ensemble, log_weights)
    all_before = [(1 << s) - 1 for s in range(num_stages)]
    grids = [threshold_grid(table.get(s, all_before[s])[0], grid_points) for s in range(num_stages - 1)]
    limit = budget_madds * n * (1 + 1e-9)

    def key(th: Sequence[float | None]) -> tuple[int, float] | None:
        correct, cost = _simulate(table, th, stage_madds, n)
        return (correct, -cost) if cost <= limit else None

    best_th: list[float | None] | None = None
    best_key: tuple[int, float] | None = None
    for start in range(num_stages):  # static at stage `start`
        if float(stage_madds[start]) > budget_madds:
            continue
        th: list[float | None] = [None] * start + [0.0] * (num_stages - 1 - start)
        current = key(th)
        for _ in range(max_sweeps):
            changed = False
            for s in range(num_stages - 1):
                for value in grids[s]:
                    if value == th[s]:
                        continue
                    trial = [*th[:s], value, *th[s + 1:]]
                    k = key(trial)
                    if k is not None and (current is None or k > current):
                        th, current, changed = trial, k, True
            if not changed:
                break
        if current is not None and (best_key is None or current > best_key):
            best_th, best_key = th, current
    assert best_th is not None and best_key is not None  # the cheapest stage always fits
    return Fit(budget_madds=float(budget_madds), thresholds=best_th, top1=100.0 * best_key[0] / n,
               mean_madds=-best_key[1] / n)


# ---------------------------------------------------------------------------------------- policy
@dataclass
class AdaptivePolicy:
    """Stages, score and fitted thresholds of one checkpoint (JSON: :meth:`save` / :meth:`load`).

    ``log_weights``: the running ensemble's per-stage log-weights (``None``: uniform);
    ``fits``: one :class:`Fit` per budget, ascending budget; ``calibration``: how the thresholds
    were fitted (images, their source)."""

    stages: list[SubnetConfig]
    stage_madds: list[float]
    score: str = "max_softmax"
    ensemble: bool = False
    log_weights: list[float] | None = None
    fits: list[Fit] = field(default_factory=list)
    calibration: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None

    def __post_init__(self) -> None:
        SCORES.get(self.score)
        if not self.stages or len(self.stages) != len(self.stage_madds):
            raise ConfigError(f"stages: {len(self.stages)} stages for {len(self.stage_madds)} MAdds entries")
        self.fits.sort(key=lambda f: f.budget_madds)

    def thresholds_for(self, budget_madds: float) -> Fit:
        """The fit of the largest stored budget within ``budget_madds``."""
        within = [f for f in self.fits if f.budget_madds <= budget_madds * (1 + 1e-9)]
        if not within:
            stored = ", ".join(human_count(f.budget_madds) for f in self.fits) or "none"
            raise ConfigError(f"budget: no thresholds fitted for a budget within {human_count(budget_madds)} MAdds "
                             f"(stored budgets: {stored}); run python -m resnet_switch.evaluate ckpt=... "
                             f"adaptive=true budget.madds=...")
        return within[-1]

    def run(self, stage_logits: Sequence[Tensor] | StageRunner, thresholds: Sequence[float | None],
            num_images: int | None = None) -> CascadeResult:
        """:func:`cascade` with this policy's stages, score and ensemble."""
        return cascade(stage_logits, thresholds, self.stage_madds, score=self.score, ensemble=self.ensemble,
                       log_weights=self.log_weights, num_images=num_images)

    def as_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "checkpoint": self.checkpoint, "score": self.score, "ensemble": self.ensemble,
                "stages": [{"resolution": c.resolution, "width": c.width, "madds": m}
                           for c, m in zip(self.stages, self.stage_madds)],
                "log_weights": self.log_weights, "calibration": self.calibration,
                "fits": [f.as_dict() for f in self.fits]}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the JSON atomically (a killed writer leaves the previous file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.as_dict(), indent=1) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> AdaptivePolicy:
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"policy: no file at {path}; write one with python -m resnet_switch.evaluate "
                                    "ckpt=... adaptive=true")
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise ConfigError(f"policy: {path} is not a {FORMAT} file")
        return cls(stages=[SubnetConfig(s["resolution"], s["width"]) for s in data["stages"]],
                   stage_madds=[float(s["madds"]) for s in data["stages"]], score=data["score"],
                   ensemble=bool(data["ensemble"]), log_weights=data.get("log_weights"),
                   fits=[Fit(**f) for f in data.get("fits", [])], calibration=data.get("calibration") or {},
                   checkpoint=data.get("checkpoint"))


def policy_path(checkpoint: str | os.PathLike) -> Path:
    """Where the policy of ``checkpoint`` lives: ``<checkpoint>.adaptive.json`` beside it."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + ".adaptive.json")
