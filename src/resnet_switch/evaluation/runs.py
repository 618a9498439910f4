"""What a finished run directory holds for the ``report`` command: ``results.csv`` + ``run.json``.

``run.json`` (written by ``train`` beside ``results.csv``) names the run: ``label`` (``label=`` on the
command line, else the method, ``individual@R`` for an I-Net trained at ``R`` px), ``seed``, method,
model, data and training resolutions. Long-format CSV files (one row per run, seed and configuration:
columns ``seed``, ``resolution``, ``top1`` and one of ``label`` / ``run`` / ``method``; ``width``
optional) are read as well, so an experiment's ``results.csv`` feeds the same report.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .seed_stats import Result

RUN_INFO_FILE = "run.json"
RESULTS_FILE = "results.csv"
LABEL_COLUMNS = ("label", "run", "method")


def default_label(method: str, resolutions: Sequence[int]) -> str:
    """``individual@32`` for a one-resolution I-Net, else the method name."""
    return f"{method}@{resolutions[0]}" if method == "individual" else method


def write_run_info(run_dir: Path, info: dict[str, Any]) -> Path:
    path = Path(run_dir) / RUN_INFO_FILE
    path.write_text(json.dumps(info, indent=1) + "\n")
    return path


def evaluation_run_info(ckpt: str | Path, bn_mode: str | None, label: str | None,
                        checkpoint_seed: Callable[[], int | None]) -> dict[str, Any] | None:
    """``run.json`` of a one-checkpoint evaluation, so ``report`` reads it like a training run:
    ``label`` if given, else the training run's label (its ``run.json`` beside ``checkpoints/``) with
    ``_<bn_mode>`` appended when a BN mode was asked; the training run's seed (else ``checkpoint_seed()``).
    None when neither a label nor a seed can be told."""
    trained = Path(ckpt).resolve().parent.parent / RUN_INFO_FILE
    info = json.loads(trained.read_text()) if trained.is_file() else {}
    seed = info["seed"] if "seed" in info else checkpoint_seed()
    name = label or (info.get("label") and (f"{info['label']}_{bn_mode}" if bn_mode else info["label"]))
    if seed is None or not name:
        return None
    return {**{k: info[k] for k in ("task", "method", "model", "data", "resolutions") if k in info},
            "label": name, "seed": int(seed), "evaluated": str(ckpt), "bn_mode": bn_mode}


def run_dirs(path: Path) -> list[Path]:
    """The finished run directories at or under ``path`` (``run.json`` beside ``results.csv``)."""
    runs = sorted(p.parent for p in Path(path).rglob(RUN_INFO_FILE) if (p.parent / RESULTS_FILE).is_file())
    if not runs:
        raise ValueError(f"report: {path} holds no finished run ({RUN_INFO_FILE} + {RESULTS_FILE}); "
                         "pass run directories written by resnet_switch.train or a results CSV")
    return runs


def read_results(paths: Iterable[str | Path], metric: str = "top1") -> list[Result]:
    """Every result under ``paths``: a run directory (``results.csv`` + ``run.json``), a folder holding
    run directories (searched recursively), or a long-format CSV file."""
    out: list[Result] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            out += read_long_csv(path, metric)
        elif path.is_dir():
            for run in run_dirs(path):
                out += read_run(run, metric)
        else:
            raise ValueError(f"report: no file or directory {path}")
    return out


def wall_times(paths: Iterable[str | Path]) -> dict[str, list[float]]:
    """``{label: [wall_s of each run]}`` of the run directories under ``paths`` that were not resumed
    (a resumed run's time is of its last part only); CSV files have none."""
    out: dict[str, list[float]] = {}
    for raw in paths:
        if Path(raw).is_dir():
            for run in run_dirs(Path(raw)):
                info = json.loads((run / RUN_INFO_FILE).read_text())
                if "wall_s" in info and not info.get("resumed"):
                    out.setdefault(info["label"], []).append(float(info["wall_s"]))
    return out


def read_run(run_dir: Path, metric: str = "top1") -> list[Result]:
    info = json.loads((run_dir / RUN_INFO_FILE).read_text())
    rows = _rows(run_dir / RESULTS_FILE, metric)
    return [Result(info["label"], int(info["seed"]), int(r["resolution"]), float(r.get("width") or 1.0),
                   float(r[metric])) for r in rows]


def read_long_csv(path: Path, metric: str = "top1") -> list[Result]:
    rows = _rows(path, metric)
    label = next((c for c in LABEL_COLUMNS if c in rows[0]), None)
    if label is None or "seed" not in rows[0] or "resolution" not in rows[0]:
        raise ValueError(f"report: {path} needs columns seed, resolution, {metric} and one of "
                         f"{', '.join(LABEL_COLUMNS)}; got {', '.join(rows[0])}")
    return [Result(r[label], int(r["seed"]), int(r["resolution"]), float(r.get("width") or 1.0),
                   float(r[metric])) for r in rows]


def _rows(path: Path, metric: str) -> list[dict[str, str]]:
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"report: {path} has no rows")
    if metric not in rows[0]:
        raise ValueError(f"metric: {path} has no column {metric!r}; columns: {', '.join(rows[0])}")
    return rows
