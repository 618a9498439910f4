"""``python -m resnet_switch.report PATH... [key=value]``: statistics over seeds of finished runs.

PATH: run directories written by ``train`` (``results.csv`` + ``run.json``), folders holding them
(searched recursively), or long-format CSV files (:mod:`.evaluation.runs`). Prints, per (label,
resolution, width): mean, std, min, max and n over seeds; for each ``pair`` the paired difference
over the shared seeds with its 95 % interval; for each claim of ``claims`` its verdict.

Options:
    metric=top1            the column to summarise (top1, top5, or any numeric results column)
    table=long|wide        long: one line per group; wide: ``mean +- std`` per resolution column
    pair=[A,B]             paired differences A - B (also a list of pairs: pair=[[A,B],[A,C]])
    labels=[A,B,...]       only the results of these labels (tables, claims, plot); default: every label
    plot_labels=[A,...]    only these labels in the plot (the tables keep every label); default: labels
    interval=t|bootstrap   95 % interval of a paired mean (t over seeds; seed bootstrap)
    claims=FILE.yaml       list of {claim: text, better: A, worse: B or [B, ...], at: [resolutions]}
    out=FILE.md csv=FILE.csv plot=FILE.png title=TEXT
"""

from __future__ import annotations

import statistics
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .cli.options import check_choice, parse_options, run_tool
from .errors import ConfigError
from .evaluation.reporting import markdown_table, write_csv
from .evaluation.runs import read_results, wall_times
from .evaluation.seed_stats import (
    INTERVALS,
    PairedDifference,
    Result,
    Summary,
    claim_verdict,
    paired_differences,
    summarise,
)
from .user_files import load_yaml

DEFAULTS: dict[str, Any] = {"metric": "top1", "table": "long", "pair": [], "labels": [], "plot_labels": [], "interval": "t", "claims": "",
                            "out": "", "csv": "", "plot": "", "title": ""}


def summary_table(summaries: Sequence[Summary], style: str = "long",
                  walls: dict[str, list[float]] | None = None) -> str:
    if style == "long":
        return markdown_table([{"label": s.label, "resolution": s.resolution, "width": f"{s.width:g}", "n": s.n,
                                "mean": s.mean, "std": s.std, "min": s.min, "max": s.max} for s in summaries])
    rows: dict[tuple[str, float], dict[str, Any]] = {}
    for s in summaries:
        row = rows.setdefault((s.label, s.width), {"label": s.label, "width": f"{s.width:g}"})
        row[str(s.resolution)] = f"{s.mean:.2f} ± {s.std:.2f}"
        row["n"] = min(row.get("n", s.n), s.n)
    columns = sorted({str(s.resolution) for s in summaries}, key=int, reverse=True)
    walls = walls or {}

    def wall(label: str) -> dict[str, str]:
        times = walls.get(label)
        return {"train s (median)": f"{statistics.median(times):.0f}" if times else "-"} if walls else {}

    return markdown_table([{"label": r["label"], "width": r["width"], **{c: r.get(c, "") for c in columns},
                            "n": r["n"], **wall(r["label"])} for r in rows.values()])


def difference_table(diffs: Sequence[PairedDifference], interval: str) -> str:
    return markdown_table([{"difference": f"{d.better} - {d.worse}", "resolution": d.resolution,
                            "width": f"{d.width:g}", "n": d.n, "mean": f"{d.mean:+.2f}",
                            f"95% interval ({interval})": f"[{d.low:+.2f}, {d.high:+.2f}]",
                            "shown": {">": "better", "<": "worse", "~": "no"}[d.verdict]} for d in diffs])


def parse_pairs(value: Any) -> list[tuple[str, str]]:
    if not value:
        return []
    pairs = value if isinstance(value[0], list) else [value]
    for p in pairs:
        if not isinstance(p, list) or len(p) != 2:
            raise ConfigError(f"pair: expected pair=[A,B] or pair=[[A,B],[A,C]], got {value!r}")
    return [(str(a), str(b)) for a, b in pairs]


def load_claims(path: str) -> list[dict[str, Any]]:
    file = Path(path)
    claims = load_yaml(file, "claims", "give a YAML list of {claim, better, worse, at}")
    if not isinstance(claims, list) or not all(isinstance(c, dict) and {"claim", "better", "worse"} <= set(c)
                                               for c in claims):
        raise ConfigError(f"claims: {file} must be a YAML list of {{claim, better, worse, at (optional)}}")
    return claims


def claims_table(results: Sequence[Result], claims: Sequence[dict[str, Any]], interval: str) -> str:
    """One line per claim: its verdict and the pair that decides it (the one shown worse when the claim
    does not hold, else the one with the lowest interval bound). A claim whose runs
    are missing (a study still running) reads ``no results`` and names what is missing."""
    labels = {r.label for r in results}
    rows = []
    for c in claims:
        worse = c["worse"] if isinstance(c["worse"], list) else [c["worse"]]
        at = c.get("at")
        verdicts, evidence = [], []
        for w in worse:
            missing = [name for name in (str(c["better"]), str(w)) if name not in labels]
            diffs = [] if missing else paired_differences(results, str(c["better"]), str(w), interval)
            chosen = [d for d in diffs if at is None or d.resolution in at]
            if not chosen:
                verdicts.append("no results")
                evidence.append(f"vs {w}: no results for {', '.join(missing)}" if missing
                                else f"vs {w}: no shared seeds at {at}")
                continue
            verdicts.append(claim_verdict(chosen))
            against = [d for d in chosen if d.verdict == "<"]  # what refutes it, else the weakest support
            worst = min(against, key=lambda d: d.high) if against else min(chosen, key=lambda d: d.low)
            evidence.append(f"vs {w} @{worst.resolution}: {worst.mean:+.2f} [{worst.low:+.2f}, {worst.high:+.2f}] "
                            f"(n={worst.n})")
        verdict = ("does not hold" if "does not hold" in verdicts else "no results" if "no results" in verdicts
                   else "holds" if all(v == "holds" for v in verdicts) else "not shown")
        rows.append({"claim": c["claim"], "verdict": verdict, "deciding pair (mean [95% interval], n seeds)":
                     "; ".join(evidence)})
    return markdown_table(rows)


def plot_summaries(summaries: Sequence[Summary], path: Path, title: str, metric: str) -> Path:
    """``metric`` against resolution, one line per (label, width), error bars = std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    lines: dict[tuple[str, float], list[Summary]] = {}
    for s in summaries:
        lines.setdefault((s.label, s.width), []).append(s)
    if len(lines) > 10:  # the default cycle repeats its 10 colours
        ax.set_prop_cycle(color=plt.get_cmap("tab20").colors)
    for (label, width), points in lines.items():
        points = sorted(points, key=lambda s: s.resolution)
        name = label if width == 1.0 else f"{label} w{width:g}"
        ax.errorbar([p.resolution for p in points], [p.mean for p in points], yerr=[p.std for p in points],
                    marker="o", capsize=3, label=f"{name} (n={min(p.n for p in points)})")
    ax.set_xlabel("test resolution (px)")
    ax.set_ylabel(f"{metric} (%), mean ± std over seeds")
    ax.set_title(textwrap.fill(title or f"{metric} over seeds", 60), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def keep_labels(results: Sequence[Result], labels: Sequence[str]) -> list[Result]:
    """The results of ``labels`` only (all when empty); a label without results is an error."""
    wanted = {labels} if isinstance(labels, str) else set(labels)
    if not wanted:
        return list(results)
    have = {r.label for r in results}
    missing = sorted(wanted - have)
    if missing:
        raise ConfigError(f"labels: no results labelled {missing[0]!r}; give labels the runs have, "
                         f"e.g. labels=[{','.join(sorted(have)[:2])}]")
    return [r for r in results if r.label in wanted]


def build_report(paths: Sequence[str], opts: dict[str, Any]) -> tuple[str, list[Summary], list[Result]]:
    check_choice("table", opts["table"], ("long", "wide"))
    check_choice("interval", opts["interval"], INTERVALS)
    pairs = parse_pairs(opts["pair"])
    claims = load_claims(opts["claims"]) if opts["claims"] else []
    if not paths:
        raise ConfigError("report: give run directories or results CSV files, e.g. "
                         "python -m resnet_switch.report outputs/train/*")
    results = keep_labels(read_results(paths, opts["metric"]), opts.get("labels") or [])
    summaries = summarise(results)
    parts = [f"# {opts['title']}\n" if opts["title"] else "",
             f"{opts['metric']} over seeds (mean, sample std, min, max, n seeds):\n",
             summary_table(summaries, opts["table"], wall_times(paths))]
    for better, worse in pairs:
        parts += [f"\nPaired difference over shared seeds, 95 % {opts['interval']} interval:\n",
                  difference_table(paired_differences(results, better, worse, opts["interval"]), opts["interval"])]
    if claims:
        parts += ["\nClaims (holds: shown at every asked resolution; does not hold: the opposite is shown "
                  "somewhere; not shown: an interval spans 0; no results: runs missing):\n", claims_table(results, claims, opts["interval"])]
    return "\n".join(p for p in parts if p) + "\n", summaries, results


def main(argv: list[str]) -> None:
    paths = [a for a in argv if "=" not in a]
    opts, _ = parse_options(DEFAULTS, [a for a in argv if "=" in a])
    text, summaries, _ = build_report(paths, opts)
    print(text, end="", flush=True)
    if opts["out"]:
        Path(opts["out"]).parent.mkdir(parents=True, exist_ok=True)
        Path(opts["out"]).write_text(text)
    if opts["csv"]:
        write_csv([vars(s) for s in summaries], Path(opts["csv"]))
    if opts["plot"]:
        wanted = set(opts["plot_labels"] or [])
        have = {s.label for s in summaries}
        if wanted - have:
            raise ConfigError(f"plot_labels: no results labelled {sorted(wanted - have)[0]!r}; "
                             f"give labels the runs have, e.g. plot_labels=[{','.join(sorted(have)[:2])}]")
        summaries = [s for s in summaries if not wanted or s.label in wanted]
        print(f"plot: {plot_summaries(summaries, Path(opts['plot']), opts['title'], opts['metric'])}")


if __name__ == "__main__":
    run_tool(main, sys.argv[1:])
