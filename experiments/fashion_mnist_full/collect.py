"""Gather the study's runs into ``results.csv``: one row per (run, budget, seed, method, resolution).

Reads ``runs/e<epochs>/s<seed>/<run>/`` (``run.json`` + ``results.csv`` written by ``train``) and the
SAN evaluations ``runs/e<epochs>/s<seed>/san/eval_{proxy,ideal}/eval_rows.csv``. The ``run`` column
is the run's label at the main budget (``--epochs``, default 5) and ``<label> e<epochs>`` at the
others, so the report command keeps budgets apart. ``run_dir`` names the run folder under ``runs/``.

``results.csv`` is committed: rows of runs that are not on this machine are kept, and ``run.sh``
skips every run_dir it lists, so the study goes on from another clone. Written atomically.
The selection runs (``runs/select/<run>/``: the I-Net at 28 px trained on 55000 images and scored on
the 5000 held out, ``data.holdout=5000``) go to ``selection.csv`` instead (``--selection``; one row per
run: lr, crop, epochs, seed, validation top-1): they never meet the test set.
Usage: ``python collect.py [--epochs 5] [--runs RUNS] [--out results.csv] [--selection selection.csv]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
COLUMNS = ("run_dir", "run", "budget_epochs", "seed", "method", "resolution", "width", "top1")
SELECTION_COLUMNS = ("run_dir", "lr", "crop_min", "epochs", "seed", "holdout", "resolution", "val_top1")


def rows_of_runs(runs: Path, main_epochs: int) -> list[dict]:
    out = []
    for info_path in sorted(runs.glob("e*/s*/*/run.json")):
        run = info_path.parent
        if not (run / "results.csv").is_file():
            continue
        info = json.loads(info_path.read_text())
        epochs = int(run.parent.parent.name[1:])
        name = info["label"] if epochs == main_epochs else f"{info['label']} e{epochs}"
        if info["label"] == "san" or info["label"].startswith("san_"):  # SAN (san, san_lr_one): proxy and
            # ideal inference, at the training resolutions and between (labels san_proxy..., san_ideal...)
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


def merge_recorded(rows: list[dict], recorded: Path, key=lambda r: (r["run_dir"], float(r["width"]), -int(r["resolution"]))
                   ) -> list[dict]:
    """``rows`` plus the rows of ``recorded`` (an earlier CSV) whose run_dir is not among them, sorted by ``key``."""
    here = {r["run_dir"] for r in rows}
    kept = []
    if recorded.is_file():
        with recorded.open() as f:
            kept = [r for r in csv.DictReader(f) if r.get("run_dir") and r["run_dir"] not in here]
    return sorted(rows + kept, key=key)


def rows_of_selection(runs: Path) -> list[dict]:
    """One row per finished selection run under ``runs/select/`` (its config from ``.hydra/config.yaml``)."""
    import yaml

    out = []
    for result in sorted((runs / "select").glob("*/results.csv")):
        cfg = yaml.safe_load((result.parent / ".hydra" / "config.yaml").read_text())
        with result.open() as f:
            for r in csv.DictReader(f):
                out.append({"run_dir": result.parent.relative_to(runs).as_posix(), "lr": cfg["optim"]["lr"],
                            "crop_min": cfg["data"]["crop_scale"][0], "epochs": cfg["trainer"]["max_epochs"],
                            "seed": cfg["seed"], "holdout": cfg["data"]["holdout"], "resolution": r["resolution"],
                            "val_top1": r["top1"]})
    return out


def write_rows(rows: list[dict], target: Path, columns) -> None:
    """``rows`` to the CSV ``target``, atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=int(os.environ.get("EPOCHS", 5)))
    parser.add_argument("--runs", type=Path, default=HERE / "runs")
    parser.add_argument("--out", type=Path, default=HERE / "results.csv")
    parser.add_argument("--selection", type=Path, default=HERE / "selection.csv")
    args = parser.parse_args()
    rows = merge_recorded(rows_of_runs(args.runs, args.epochs), args.out)
    if not rows:
        raise SystemExit(f"no finished runs under {args.runs}")
    write_rows(rows, args.out, COLUMNS)
    print(f"{len(rows)} rows -> {args.out}")
    selected = merge_recorded(rows_of_selection(args.runs), args.selection, key=lambda r: r["run_dir"])
    if selected:
        write_rows(selected, args.selection, SELECTION_COLUMNS)


if __name__ == "__main__":
    main()
