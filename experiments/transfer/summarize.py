"""Tables and plot of the transfer experiment: ``python summarize.py RUNS_DIR OUT_DIR``.

Reads ``RUNS_DIR/{scratch,finetune}_s<seed>/results.csv`` (top-1 per width x resolution written by
``resnet_switch.train``), writes ``OUT_DIR/results.md`` (mean over seeds and each seed) and
``OUT_DIR/plot.png`` (top-1 vs resolution per width, fine-tuned solid, scratch dashed).
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path
from statistics import mean

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ARMS = ("scratch", "finetune")


def read_runs(runs: Path) -> tuple[dict, dict, list[int]]:
    """``top1[arm][(width, res)] -> [per seed]``, ``madds[(width, res)]``, seeds."""
    top1: dict = {arm: defaultdict(list) for arm in ARMS}
    madds: dict = {}
    seeds = sorted({int(p.name.split("_s")[1]) for p in runs.glob("scratch_s*") if (p / "results.csv").is_file()})
    for arm in ARMS:
        for seed in seeds:
            for row in csv.DictReader((runs / f"{arm}_s{seed}" / "results.csv").open()):
                key = (float(row["width"]), int(row["resolution"]))
                top1[arm][key].append(float(row["top1"]))
                madds[key] = int(row["madds"])
    return top1, madds, seeds


def table(top1: dict, madds: dict, seeds: list[int]) -> str:
    lines = ["| width | res | MAdds | scratch | fine-tuned | gain | " + " | ".join(
        f"scratch s{s} | fine-tuned s{s}" for s in seeds) + " |",
        "|---:|---:|---:|---:|---:|---:|" + "---:|---:|" * len(seeds)]
    for key in sorted(madds, key=lambda k: (-k[0], -k[1])):
        a, b = mean(top1["scratch"][key]), mean(top1["finetune"][key])
        seeds_cells = " | ".join(f"{s:.1f} | {f:.1f}" for s, f in zip(top1["scratch"][key], top1["finetune"][key]))
        lines.append(f"| {key[0]:g} | {key[1]} | {madds[key] / 1e6:.1f}M | {a:.1f} | {b:.1f} | {b - a:+.1f} | "
                     f"{seeds_cells} |")
    overall = [mean(top1[arm][k]) for arm in ARMS for k in madds]
    n = len(madds)
    lines.append(f"| mean | | | {mean(overall[:n]):.1f} | {mean(overall[n:]):.1f} | "
                 f"{mean(overall[n:]) - mean(overall[:n]):+.1f} |" + " |" * (2 * len(seeds)))
    return "\n".join(lines)


def plot(top1: dict, madds: dict, path: Path) -> None:
    widths = sorted({w for w, _ in madds}, reverse=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, w in enumerate(widths):
        res = sorted(r for ww, r in madds if ww == w)
        for arm, style in (("finetune", "-o"), ("scratch", "--x")):
            ax.plot(res, [mean(top1[arm][(w, r)]) for r in res], style, color=f"C{i}",
                    label=f"w={w:g} {'fine-tuned' if arm == 'finetune' else 'scratch'}")
    ax.set_xlabel("resolution (px)")
    ax.set_ylabel("top-1 (%), mean over seeds")
    ax.set_title("15-class target: fine-tuned from MutualNet vs scratch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(runs: str, out: str) -> None:
    top1, madds, seeds = read_runs(Path(runs))
    text = table(top1, madds, seeds)
    Path(out, "results.md").write_text(
        "# Transfer: top-1 (%) on the 15-class target, fine-tuned from the 10-class MutualNet vs scratch\n\n"
        f"Seeds {seeds}; 'scratch' / 'fine-tuned' are their mean; BN recalibrated per (width, resolution).\n\n"
        + text + "\n")
    plot(top1, madds, Path(out, "plot.png"))
    print(text)


if __name__ == "__main__":
    main(*sys.argv[1:3])
