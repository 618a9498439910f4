"""Tables and plots of the Fashion-MNIST experiment from the runs' CSVs (run.sh writes them).

Reads ``runs/s<seed>/eval_main/eval_rows.csv`` (RS-Net, parallel private/shared BN, the I-Nets,
checkpoints in run.sh's order), ``runs/s<seed>/eval_san_{proxy,ideal}/eval_rows.csv`` and
``runs/s<seed>/query_{mutualnet,usnet}/query_table.csv``; writes ``results.md``, ``results.csv``
(every number per seed), ``acc_vs_resolution.png`` and ``mutualnet_vs_usnet.png`` next to this file.
Usage: ``python experiments/fashion_mnist/report.py [--runs DIR] [--out DIR]`` (from anywhere).
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path
from statistics import mean

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
SEEDS = (0, 1)
RES = (28, 24, 20, 16, 12)
INET_RES = RES
# eval_main checkpoints, in run.sh's order
MAIN = ("rsnet", "parallel_private", "parallel_shared", *(f"inet{r}" for r in INET_RES))
NAMES = {
    "rsnet": "RS-Net (MRED, private BN)",
    "parallel_private": "parallel, private BN",
    "parallel_shared": "parallel, shared BN",
    "inet_own": "I-Net at its own resolution",
    **{f"inet{r}": f"I-Net {r}" for r in INET_RES},
    "san_proxy": "SAN, proxy inference",
    "san_ideal": "SAN, ideal inference",
    "mutualnet": "MutualNet, width 1.0",
    "usnet": "US-Net, width 1.0",
}


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def load(runs: Path) -> tuple[dict[tuple, float], dict[tuple, float]]:
    """``{(run, seed, resolution, width): top1}`` for every evaluated configuration, and MAdds."""
    acc: dict[tuple, float] = {}
    madds: dict[tuple, float] = {}
    for seed in SEEDS:
        base = runs / f"s{seed}"
        rows = read_csv(base / "eval_main" / "eval_rows.csv")
        labels = list(dict.fromkeys(r["model"] for r in rows))  # one label per checkpoint, in order
        if len(labels) != len(MAIN):
            raise SystemExit(f"{base}/eval_main: expected {len(MAIN)} checkpoints, found {len(labels)}")
        run_of = dict(zip(labels, MAIN))
        for r in rows:
            acc[(run_of[r["model"]], seed, int(r["resolution"]), 1.0)] = float(r["top1"])
            madds[(int(r["resolution"]), 1.0)] = float(r["madds"])
        for mode in ("proxy", "ideal"):
            for r in read_csv(base / f"eval_san_{mode}" / "eval_rows.csv"):
                acc[(f"san_{mode}", seed, int(r["resolution"]), 1.0)] = float(r["top1"])
        for m in ("mutualnet", "usnet"):
            for r in read_csv(base / f"query_{m}" / "query_table.csv"):
                key = (int(r["resolution"]), float(r["width"]))
                acc[(m, seed, *key)] = float(r["top1"])
                madds[key] = float(r["madds"])
    for seed in SEEDS:
        for r in INET_RES:
            acc[("inet_own", seed, r, 1.0)] = acc[(f"inet{r}", seed, r, 1.0)]
    return acc, madds


def seeds_of(acc, run, res, width=1.0) -> list[float] | None:
    values = [acc.get((run, s, res, width)) for s in SEEDS]
    return None if None in values else values


def cell(values: list[float] | None) -> str:
    """``mean ±half-range`` over the seeds."""
    if values is None:
        return "-"
    return f"{mean(values):.2f} ±{(max(values) - min(values)) / 2:.2f}"


def diff_cell(a: list[float], b: list[float]) -> str:
    """Mean difference a - b and the per-seed differences."""
    d = [x - y for x, y in zip(a, b)]
    return f"{mean(d):+.2f} ({', '.join(f'{x:+.2f}' for x in d)})"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def res_table(acc, runs, resolutions=RES, with_mean=True) -> str:
    header = ["model", *map(str, resolutions)] + (["mean"] if with_mean else [])
    rows = []
    for run in runs:
        cells = [cell(seeds_of(acc, run, r)) for r in resolutions]
        if with_mean:
            per_seed = [mean(acc[(run, s, r, 1.0)] for r in resolutions) for s in SEEDS]
            cells.append(cell(per_seed))
        rows.append([NAMES[run], *cells])
    return table(header, rows)


def diff_rows(acc, pairs, resolutions=RES) -> str:
    rows = []
    for label, a, b in pairs:
        rows.append([label, *(diff_cell(seeds_of(acc, a, r), seeds_of(acc, b, r)) for r in resolutions)])
    return table(["difference (mean (seed 0, seed 1))", *map(str, resolutions)], rows)


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points (MAdds, top-1) not beaten by a cheaper-or-equal, at-least-as-accurate point."""
    front, best = [], float("-inf")
    for m, a in sorted(points, key=lambda p: (p[0], -p[1])):
        if a > best:
            front.append((m, a))
            best = a
    return front


def slim_grid(acc, madds) -> tuple[str, dict]:
    widths = sorted({w for (run, _, _, w) in acc if run == "mutualnet"}, reverse=True)
    rows, points = [], defaultdict(list)
    for w in widths:
        for r in RES:
            mn, us = seeds_of(acc, "mutualnet", r, w), seeds_of(acc, "usnet", r, w)
            if mn is None or us is None:
                continue
            rows.append([f"{w:g} @ {r}", f"{madds[(r, w)] / 1e6:.2f}M", cell(mn), cell(us), diff_cell(mn, us)])
            points["mutualnet"].append((madds[(r, w)], mean(mn)))
            points["usnet"].append((madds[(r, w)], mean(us)))
            if r == RES[0]:  # US-Net's own protocol: widths only, at the training resolution
                points["usnet_maxres"].append((madds[(r, w)], mean(us)))
    md = table(["width @ res", "MAdds", "MutualNet", "US-Net", "MutualNet - US-Net"], rows)
    return md, points


def frontier_table(points) -> str:
    """Best seed-mean top-1 within each grid configuration's MAdds: MutualNet, US-Net over the whole
    grid (BN recalibrated at resolutions it never trained at) and US-Net at 28 px only (widths only)."""
    fronts = {m: pareto(p) for m, p in points.items()}

    def best(run, budget):
        return max((a for c, a in fronts[run] if c <= budget), default=None)

    def fmt(value):
        return "-" if value is None else f"{value:.2f}"

    def gap(a, b):
        return "-" if a is None or b is None else f"{a - b:+.2f}"

    rows = []
    for budget in sorted({c for c, _ in points["mutualnet"]}):
        mn, us, us_max = best("mutualnet", budget), best("usnet", budget), best("usnet_maxres", budget)
        rows.append([f"{budget / 1e6:.2f}M", fmt(mn), fmt(us), gap(mn, us), fmt(us_max), gap(mn, us_max)])
    return table(["MAdds budget", "MutualNet", "US-Net (any res)", "MutualNet - US-Net",
                  f"US-Net ({RES[0]} px, widths only)", f"MutualNet - US-Net {RES[0]} px"], rows)


def plot_resolution(acc, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    left = ["rsnet", "parallel_private", "parallel_shared", "inet_own", "san_proxy", "mutualnet", "usnet"]
    for ax, runs, title in ((axes[0], left, "methods (I-Net: each tested at its own resolution)"),
                            (axes[1], ["rsnet", *(f"inet{r}" for r in INET_RES)], "I-Nets at every resolution")):
        for run in runs:
            ys = [seeds_of(acc, run, r) for r in RES]
            m = [mean(v) for v in ys]
            err = [(max(v) - min(v)) / 2 for v in ys]
            style = "--" if run == "inet_own" else "-"
            ax.errorbar(RES, m, yerr=err, marker="o", ms=4, capsize=3, ls=style, label=NAMES[run])
        ax.set_xlabel("test resolution (px)")
        ax.set_title(title, fontsize=10)
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("top-1 (%), mean of 2 seeds")
    fig.suptitle("Fashion-MNIST test set (10k images); error bars: half the seed-to-seed range", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_slim(acc, madds, points, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 5))
    for m, color in (("mutualnet", "tab:blue"), ("usnet", "tab:orange")):
        pts = points[m]
        ax.scatter([p[0] / 1e6 for p in pts], [p[1] for p in pts], color=color, s=18, alpha=0.5)
        front = pareto(pts)
        ax.plot([p[0] / 1e6 for p in front], [p[1] for p in front], color=color, marker="o",
                label=f"{'MutualNet' if m == 'mutualnet' else 'US-Net'} (frontier; dots: every width x resolution)")
    widths_only = sorted(points["usnet_maxres"])
    ax.plot([p[0] / 1e6 for p in widths_only], [p[1] for p in widths_only], color="tab:orange", ls="--",
            marker="s", ms=4, label=f"US-Net at {RES[0]} px, widths only (its own protocol)")
    ax.set_xscale("log")
    ax.set_xlabel("MAdds per image (millions, log scale)")
    ax.set_ylabel("top-1 (%), mean of 2 seeds")
    ax.set_title("MutualNet vs US-Net, widths 0.25..1 x resolutions 28..12")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_long_csv(acc, madds, path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "seed", "resolution", "width", "madds", "top1"])
        for (run, seed, r, w), a in sorted(acc.items()):
            if run != "inet_own":
                writer.writerow([run, seed, r, w, int(madds.get((r, w), 0)) or "", f"{a:.2f}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=HERE / "runs", help="run.sh's output directory")
    parser.add_argument("--out", type=Path, default=HERE, help="where the tables and plots go")
    args = parser.parse_args()
    out = args.out
    acc, madds = load(args.runs)
    slim_md, points = slim_grid(acc, madds)
    san_res = sorted({r for (run, _, r, _) in acc if run == "san_proxy"}, reverse=True)
    sections = [
        "# Fashion-MNIST results (generated by report.py; top-1 % on the 10k test images, "
        "mean ±half-range over seeds 0 and 1)",
        "## Main table (rows: trained model; columns: test resolution)",
        res_table(acc, ["rsnet", "parallel_private", "parallel_shared", "inet_own", "inet28",
                        "san_proxy", "mutualnet", "usnet"]),
        "## I-Nets at every test resolution (RS-Net for reference)",
        res_table(acc, ["rsnet", *(f"inet{r}" for r in INET_RES)]),
        "## SAN: proxy vs ideal inference (ideal: exact scale encoding, BN recalibrated on 2048 "
        "training images; identical at the training resolutions)",
        res_table(acc, ["san_proxy", "san_ideal"], san_res, with_mean=False),
        diff_rows(acc, [("ideal - proxy", "san_ideal", "san_proxy")], [r for r in san_res if r not in RES]),
        "## Differences behind the papers' claims",
        diff_rows(acc, [
            ("private BN - shared BN (parallel)", "parallel_private", "parallel_shared"),
            ("RS-Net (MRED) - parallel (private BN)", "rsnet", "parallel_private"),
            ("parallel (private BN) - I-Net at its resolution", "parallel_private", "inet_own"),
            ("RS-Net - I-Net at its resolution", "rsnet", "inet_own"),
            ("RS-Net - I-Net 28", "rsnet", "inet28"),
            ("SAN (proxy) - I-Net at its resolution", "san_proxy", "inet_own"),
            ("RS-Net - SAN (proxy)", "rsnet", "san_proxy"),
            ("MutualNet w1.0 - US-Net w1.0", "mutualnet", "usnet"),
        ]),
        "## MutualNet vs US-Net on the width x resolution grid (BN recalibrated per configuration)",
        slim_md,
        "### Best accuracy within a MAdds budget (Pareto frontiers of the seed-mean accuracies)",
        frontier_table(points),
    ]
    (out / "results.md").write_text("\n\n".join(sections) + "\n")
    write_long_csv(acc, madds, out / "results.csv")
    plot_resolution(acc, out / "acc_vs_resolution.png")
    plot_slim(acc, madds, points, out / "mutualnet_vs_usnet.png")
    print(f"wrote {out / 'results.md'}, results.csv, acc_vs_resolution.png, mutualnet_vs_usnet.png")


if __name__ == "__main__":
    main()
