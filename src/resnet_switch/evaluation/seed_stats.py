"""Statistics over seeds: per-group summaries, paired differences with 95 % intervals, claim verdicts.

A *result* is one measured number of one run: ``Result(label, seed, resolution, width, value)``
(``label`` names what was trained, e.g. ``rsnet`` or ``individual@32``). Groups are
``(label, resolution, width)``; two labels are compared on the seeds both have (paired: same seed,
same data order), so seed-to-seed noise common to both cancels.

Intervals: ``t`` (default) is ``mean +- t_{0.975, n-1} * sd / sqrt(n)`` over the paired differences
(the exact Student-t quantile at every ``n - 1``, :func:`t_quantile`);
``bootstrap`` is the 2.5 / 97.5 percentile of the mean over 10 000 resamples of the seeds (fixed
generator: the same numbers every time). A difference is *shown* when its interval excludes 0.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from ..errors import ConfigError

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


def _central_mass_at_angle(theta: float, df: int) -> float:
    """``P(|T| <= sqrt(df) tan(theta))`` for Student's t with an integer ``df >= 1``: the exact finite
    series of Abramowitz & Stegun 26.7.3 (odd ``df``) and 26.7.4 (even ``df``); it rises from 0 at
    ``theta = 0`` to 1 at ``theta = pi/2``."""
    c2 = math.cos(theta) ** 2
    term = total = 1.0
    if df % 2:  # (2/pi) (theta + sin cos (1 + 2/3 c^2 + 2*4/(3*5) c^4 + ... up to c^(df-3)))
        if df == 1:
            return 2.0 * theta / math.pi
        for k in range(1, (df - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        return 2.0 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    for k in range(1, df // 2):  # sin (1 + 1/2 c^2 + 1*3/(2*4) c^4 + ... up to c^(df-2))
        term *= c2 * (2 * k - 1) / (2 * k)
        total += term
    return math.sin(theta) * total


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with an integer ``df >= 1`` (e.g. ``t_quantile(0.975, 2)`` =
    4.3027): the central mass ``2p - 1`` inverted by bisection on ``theta = atan(t / sqrt(df))`` in
    ``[0, pi/2]`` until the interval stops shrinking (double precision)."""
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"df must be an integer >= 1 (two or more values), got {df!r}")
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie in (0, 1), got {p!r}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    mass = 2.0 * p - 1.0
    lo, hi = 0.0, math.pi / 2
    while (mid := 0.5 * (lo + hi)) not in (lo, hi):
        if _central_mass_at_angle(mid, df) < mass:
            lo = mid
        else:
            hi = mid
    return math.sqrt(df) * math.tan(lo)


def mean_interval(values: Sequence[float], method: str = "t") -> tuple[float, float, float]:
    """``(mean, low, high)``: the 95 % interval of the mean of ``values`` (``low == high == mean`` for one)."""
    if method not in INTERVALS:
        raise ConfigError(f"interval: unknown {method!r}; choose one of {list(INTERVALS)}")
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return mean, mean, mean
    if method == "t":
        half = t_quantile(0.975, n - 1) * statistics.stdev(values) / math.sqrt(n)
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
            raise ConfigError(f"report: two results for {r.label} seed {r.seed} at {r.resolution} px width "
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
            raise ConfigError(f"pair: no results labelled {label!r}; labels: {sorted(labels)}")
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
        raise ConfigError("claim: no paired results at the asked resolutions")
    if any(d.verdict == "<" for d in chosen):
        return "does not hold"
    return "holds" if all(d.verdict == ">" for d in chosen) else "not shown"
