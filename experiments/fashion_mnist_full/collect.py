"""Gather the study's runs into ``results.csv``: one row per (run, budget, seed, method, resolution).

Reads ``runs/e<epochs>/s<seed>/<run>/`` (``run.json`` + ``results.csv`` written by ``train``) and the
SAN evaluations ``runs/e<epochs>/s<seed>/san/eval_{proxy,ideal}/eval_rows.csv``. The ``run`` column
is the run's label at the main budget (``--epochs``, default 5) and ``<label> e<epochs>`` at the
others, so the report command keeps budgets apart. ``run_dir`` names the run folder under ``runs/``.

``results.csv`` is committed: rows of runs that are not on this machine are kept, and ``run.sh``
skips every run_dir it lists, so the study goes on from another clone. Written atomically.
Usage: ``python collect.py [--epochs 5] [--runs RUNS] [--out results.csv]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
COLUMNS = ("run_dir", "run", "budget_epochs", "seed", "method", "resolution", "width", "top1")


def rows_of_runs(runs: Path, main_epochs: int) -> list[dict]:
    out = []
    for info_path in sorted(runs.glob("e*/s*/*/run.json")):
        run = info_path.parent
        if not (run / "results.csv").is_file():
            continue
        info = json.loads(info_path.read_text())
        epochs = int(run.parent.parent.name[1:])
        name = info["label"] if epochs == main_epochs else f"{info['label']} e{epochs}"
        if info["label"] == "san":  # proxy and ideal inference, at the training resolutions and between
            for mode in ("proxy", "ideal"):
                evaluated = run / f"eval_{mode}" / "eval_rows.csv"
                if evaluated.is_file():
                    out += read_rows(evaluated, evaluated.parent.relative_to(runs).as_posix(),
                                     name.replace("san", f"san_{mode}", 1), epochs, info)
        else:
            out += read_rows(run / "results.csv", run.relative_to(runs).as_posix(), name, epochs, info)
    return out


def read_rows(path: Path, run_dir: str, label: str, epochs: int, info: dict) -> list[dict]:
    with path.open() as f:
        return [{"run_dir": run_dir, "run": label, "budget_epochs": epochs, "seed": info["seed"],
                 "method": info["method"], "resolution": r["resolution"], "width": r["width"], "top1": r["top1"]}
                for r in csv.DictReader(f)]


def merge_recorded(rows: list[dict], recorded: Path) -> list[dict]:
    """``rows`` plus the rows of ``recorded`` (an earlier results.csv) whose run_dir is not among them."""
    here = {r["run_dir"] for r in rows}
    kept = []
    if recorded.is_file():
        with recorded.open() as f:
            kept = [r for r in csv.DictReader(f) if r.get("run_dir") and r["run_dir"] not in here]
    return sorted(rows + kept, key=lambda r: (r["run_dir"], float(r["width"]), -int(r["resolution"])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=int(os.environ.get("EPOCHS", 5)))
    parser.add_argument("--runs", type=Path, default=HERE / "runs")
    parser.add_argument("--out", type=Path, default=HERE / "results.csv")
    args = parser.parse_args()
    target = args.out
    rows = merge_recorded(rows_of_runs(args.runs, args.epochs), target)
    if not rows:
        raise SystemExit(f"no finished runs under {args.runs}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, target)
    print(f"{len(rows)} rows -> {target}")


if __name__ == "__main__":
    main()
