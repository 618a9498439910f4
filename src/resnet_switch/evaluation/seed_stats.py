"""Statistics over seeds: per-group summaries, paired differences with 95 % intervals, claim verdicts.

A *result* is one measured number of one run: ``Result(label, seed, resolution, width, value)``
(``label`` names what was trained, e.g. ``rsnet`` or ``individual@32``). Groups are
``(label, resolution, width)``; two labels are compared on the seeds both have (paired: same seed,
same data order), so seed-to-seed noise common to both cancels.

Intervals: ``t`` (default) is ``mean +- t_{0.975, n-1} * sd / sqrt(n)`` over the paired differences;
``bootstrap`` is the 2.5 / 97.5 percentile of the mean over 10 000 resamples of the seeds (fixed
generator: the same numbers every time). A difference is *shown* when its interval excludes 0.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

# Student t 0.975 quantiles for 1..30 degrees of freedom (above 30 the normal 1.96 is within 2 %)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)
INTERVALS = ("t", "bootstrap")
BOOTSTRAP_RESAMPLES = 10_000


@dataclass(frozen=True)
class Result:
    label: str
    seed: int
    resolution: int
    width: float
    value: float


@dataclass(frozen=True)
class Summary:
    """One group's values over seeds (``std``: sample std, ddof 1; 0 for one seed)."""

    label: str
    resolution: int
    width: float
    n: int
    mean: float
    std: float
    min: float
    max: float


@dataclass(frozen=True)
class PairedDifference:
    """``better - worse`` over the ``n`` shared seeds at one (resolution, width), with its interval."""

    better: str
    worse: str
    resolution: int
    width: float
    n: int
    mean: float
    low: float
    high: float

    @property
    def verdict(self) -> str:
        """``>`` (interval above 0), ``<`` (below 0) or ``~`` (it spans 0, or one seed only)."""
        if self.n >= 2 and self.low > 0:
            return ">"
        if self.n >= 2 and self.high < 0:
            return "<"
        return "~"


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` >= 1 degrees of freedom."""
    if df < 1:
        raise ValueError(f"t interval needs >= 2 seeds, got df={df}")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def mean_interval(values: Sequence[float], method: str = "t") -> tuple[float, float, float]:
    """``(mean, low, high)``: the 95 % interval of the mean of ``values`` (``low == high == mean`` for one)."""
    if method not in INTERVALS:
        raise ValueError(f"interval: unknown {method!r}; choose one of {list(INTERVALS)}")
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return mean, mean, mean
    if method == "t":
        half = t_quantile_975(n - 1) * statistics.stdev(values) / math.sqrt(n)
        return mean, mean - half, mean + half
    data = torch.tensor(values, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    picks = torch.randint(0, n, (BOOTSTRAP_RESAMPLES, n), generator=gen)
    means = data[picks].mean(1)
    low, high = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return mean, low, high


def group(results: Iterable[Result]) -> dict[tuple[str, int, float], dict[int, float]]:
    """``{(label, resolution, width): {seed: value}}``; a repeated (group, seed) is an error."""
    groups: dict[tuple[str, int, float], dict[int, float]] = {}
    for r in results:
        seeds = groups.setdefault((r.label, r.resolution, r.width), {})
        if r.seed in seeds:
            raise ValueError(f"report: two results for {r.label} seed {r.seed} at {r.resolution} px width "
                             f"{r.width:g}; give each run once (or label runs apart)")
        seeds[r.seed] = r.value
    return groups


def summarise(results: Iterable[Result]) -> list[Summary]:
    """One :class:`Summary` per (label, resolution, width), labels in first-seen order, resolutions high->low."""
    out = []
    for (label, res, width), by_seed in group(results).items():
        values = list(by_seed.values())
        out.append(Summary(label, res, width, len(values), statistics.fmean(values),
                           statistics.stdev(values) if len(values) > 1 else 0.0, min(values), max(values)))
    order = {s.label: i for i, s in reversed(list(enumerate(out)))}
    return sorted(out, key=lambda s: (order[s.label], -s.resolution, -s.width))


def paired_differences(results: Iterable[Result], better: str, worse: str,
                       interval: str = "t") -> list[PairedDifference]:
    """``better - worse`` per (resolution, width) both were tested at, over their shared seeds."""
    groups = group(results)
    labels = {k[0] for k in groups}
    for label in (better, worse):
        if label not in labels:
            raise ValueError(f"pair: no results labelled {label!r}; labels: {sorted(labels)}")
    out = []
    for (label, res, width), a in groups.items():
        if label != better or (worse, res, width) not in groups:
            continue
        b = groups[(worse, res, width)]
        seeds = sorted(set(a) & set(b))
        if not seeds:
            continue
        mean, low, high = mean_interval([a[s] - b[s] for s in seeds], interval)
        out.append(PairedDifference(better, worse, res, width, len(seeds), mean, low, high))
    return sorted(out, key=lambda d: (-d.resolution, -d.width))


def claim_verdict(diffs: Sequence[PairedDifference], resolutions: Sequence[int] | None = None) -> str:
    """``holds`` when ``better > worse`` is shown at every asked resolution, ``does not hold`` when the
    opposite is shown at one of them, else ``not shown`` (an interval spans 0)."""
    chosen = [d for d in diffs if resolutions is None or d.resolution in resolutions]
    if not chosen:
        raise ValueError("claim: no paired results at the asked resolutions")
    if any(d.verdict == "<" for d in chosen):
        return "does not hold"
    return "holds" if all(d.verdict == ">" for d in chosen) else "not shown"
