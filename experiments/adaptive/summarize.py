"""Tables of the adaptive experiment: ``python summarize.py RUNS_DIR OUT_DIR``.

Reads every ``RUNS_DIR/<run>/adaptive.csv`` and ``adaptive.json`` (``evaluate adaptive=true`` of one
checkpoint; the checkpoint's method / backbone / seed are read from the checkpoint the JSON names)
and writes ``OUT_DIR/results.csv`` (one row per checkpoint and budget) and ``OUT_DIR/results.md``:

- per group (method, backbone, training resolutions) and budget: mean +- std over seeds of the
  cascade's validation mean MAdds and top-1, of the static frontier interpolated at that mean MAdds
  (:func:`static_at`: the validation Pareto frontier of the static configurations, linear in MAdds;
  the top configuration's top-1 beyond it; none below the cheapest), and of their difference;
- per group: the MAdds saved at the full configuration's accuracy (:func:`madds_at_accuracy`: the
  first mean MAdds along the adaptive curve whose top-1 reaches the largest static configuration's,
  linear between budgets; saved = 1 - that / the full configuration's MAdds), mean +- std over the
  seeds where it is reached, and how many seeds reach it;
- the check of issue #23: at the middle static resolution's MAdds (budget = that stage's MAdds) the
  adaptive top-1 against that static configuration's, per seed.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import torch


def read_csv(path: Path) -> list[dict]:
    def number(value: str):
        try:
            return float(value)
        except (TypeError, ValueError):
            return value or None

    with path.open(newline="") as f:
        return [{k: number(v) for k, v in row.items()} for row in csv.DictReader(f)]


def checkpoint_group(ckpt: str) -> tuple[str, int]:
    """``("rsnet resnet20 @32-16", seed)`` from the checkpoint's stored metadata."""
    meta = torch.load(ckpt, map_location="cpu", weights_only=True)["resnet_switch"]
    res = meta["net"]["resolutions"]
    span = f"{res[0]}" if len(res) == 1 else f"{res[0]}-{res[-1]}"
    data = (meta.get("run") or {}).get("data") or {}
    seed = (meta.get("run") or {}).get("seed", data.get("seed", -1))
    return f"{meta['method']['name']} {meta['net']['name']} @{span} ({data.get('name', '?')})", int(seed)


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(MAdds, top-1) points no cheaper-or-equal point beats, ascending MAdds, top-1 increasing."""
    out: list[tuple[float, float]] = []
    for m, a in sorted(points, key=lambda p: (p[0], -p[1])):
        if not out or a > out[-1][1]:
            out.append((m, a))
    return out


def static_at(frontier: list[tuple[float, float]], madds: float) -> float:
    """Top-1 of the static frontier at ``madds`` (linear between its points; NaN below the cheapest)."""
    if madds < frontier[0][0] * (1 - 1e-9):
        return math.nan
    for (m0, a0), (m1, a1) in zip(frontier, frontier[1:]):
        if madds <= m1:
            return a0 + (a1 - a0) * (madds - m0) / (m1 - m0)
    return frontier[-1][1]


def madds_at_accuracy(curve: list[tuple[float, float]], target: float) -> float:
    """First MAdds along the (MAdds-sorted) adaptive curve where top-1 reaches ``target`` (linear
    between neighbouring budgets); NaN when it never does."""
    curve = sorted(curve)
    for i, (m, a) in enumerate(curve):
        if a >= target:
            if i == 0:
                return m
            m0, a0 = curve[i - 1]
            return m0 + (m - m0) * (target - a0) / (a - a0) if a > a0 else m
    return math.nan


def mean_std(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} +- {sd:.2f}"


def main(runs: Path, out: Path) -> None:
    rows, checks, saved = [], defaultdict(list), defaultdict(list)
    for csv_path in sorted(runs.glob("*/adaptive.csv")):
        policy = json.loads((csv_path.parent / "adaptive.json").read_text())
        group, seed = checkpoint_group(policy["checkpoint"])
        table = read_csv(csv_path)
        static = [r for r in table if r["kind"] == "static"]
        adaptive = [r for r in table if r["kind"] == "adaptive"]
        frontier = pareto([(r["mean_madds"], r["top1"]) for r in static])
        full = max(static, key=lambda r: (r["mean_madds"], r["top1"]))
        for r in adaptive:
            interp = static_at(frontier, r["mean_madds"])
            rows.append({"group": group, "seed": seed, "run": csv_path.parent.name, "budget_madds": r["budget_madds"],
                         "mean_madds": r["mean_madds"], "adaptive_top1": r["top1"], "static_top1_interp": interp,
                         "gain": r["top1"] - interp, "calibration_top1": r["calibration_top1"],
                         "calibration_mean_madds": r["calibration_mean_madds"], "thresholds": r["thresholds"]})
        reached = madds_at_accuracy([(r["mean_madds"], r["top1"]) for r in adaptive], full["top1"])
        saved[group].append((seed, 100.0 * (1 - reached / full["mean_madds"]) if not math.isnan(reached) else math.nan,
                             full))
        stages = [(s["resolution"], s["width"], s["madds"]) for s in policy["stages"]]
        middle = sorted(stages, key=lambda s: s[2])[len(stages) // 2]
        at_middle = next((r for r in adaptive if abs(r["budget_madds"] - middle[2]) <= 1e-6 * middle[2]), None)
        static_middle = next(r for r in static if r["resolution"] == middle[0] and r["width"] == middle[1])
        if at_middle is not None:
            checks[group].append((seed, at_middle["top1"], static_middle["top1"], middle))
    if not rows:
        raise SystemExit(f"no */adaptive.csv under {runs}")
    out.mkdir(parents=True, exist_ok=True)
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    lines = ["# Adaptive (cascade) inference vs the static frontier", "",
             "Validation split; thresholds fitted on held-out training images. mean +- std over seeds.", ""]
    for group in sorted({r["group"] for r in rows}):
        mine = [r for r in rows if r["group"] == group]
        seeds = sorted({r["seed"] for r in mine})
        lines += [f"## {group}: seeds {seeds}", "",
                  "| budget (MAdds) | adaptive mean MAdds | adaptive top-1 | static frontier top-1 at equal MAdds | "
                  "adaptive - static |", "|---:|---:|---:|---:|---:|"]
        by_budget = defaultdict(list)
        for r in mine:
            by_budget[round(r["budget_madds"])].append(r)
        for budget in sorted(by_budget):
            rs = by_budget[budget]
            lines.append(f"| {budget / 1e6:.2f}M | {mean_std([r['mean_madds'] / 1e6 for r in rs])}M | "
                         f"{mean_std([r['adaptive_top1'] for r in rs])} | {mean_std([r['static_top1_interp'] for r in rs])} | "
                         f"{mean_std([r['gain'] for r in rs])} |")
        values = saved[group]
        full = values[0][2]
        n_reached = sum(not math.isnan(v) for _, v, _ in values)
        lines += ["", f"MAdds saved at the full configuration's accuracy (w{full['width']:g}@{int(full['resolution'])}, "
                  f"{full['mean_madds'] / 1e6:.2f}M MAdds; top-1 {mean_std([v[2]['top1'] for v in values])}): "
                  f"{mean_std([v for _, v, _ in values])} % ({n_reached} of {len(values)} seeds reach that accuracy)."]
        for seed, adaptive_top1, static_top1, middle in sorted(checks[group]):
            verdict = "ok" if adaptive_top1 >= static_top1 else "NOT MET"
            lines.append(f"- seed {seed}: at the middle stage's MAdds (w{middle[1]:g}@{middle[0]}, {middle[2] / 1e6:.2f}M) "
                         f"adaptive {adaptive_top1:.2f} % vs static {static_top1:.2f} %: {verdict}")
        lines.append("")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python summarize.py RUNS_DIR OUT_DIR")
    main(Path(sys.argv[1]), Path(sys.argv[2]))
