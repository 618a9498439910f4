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

from ..errors import ConfigError
from ..user_files import existing_file, load_json
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
    info = load_json(trained, "ckpt", "its training folder's run.json is damaged; pass label=") if trained.is_file() else {}
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
        raise ConfigError(f"report: {path} holds no finished run ({RUN_INFO_FILE} + {RESULTS_FILE}); "
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
            raise ConfigError(f"report: no file or directory {path}")
    return out


def wall_times(paths: Iterable[str | Path]) -> dict[str, list[float]]:
    """``{label: [wall_s of each run]}`` of the run directories under ``paths`` that were not resumed
    (a resumed run's time is of its last part only); CSV files have none."""
    out: dict[str, list[float]] = {}
    for raw in paths:
        if Path(raw).is_dir():
            for run in run_dirs(Path(raw)):
                info = read_run_info(run)
                if "wall_s" in info and not info.get("resumed"):
                    out.setdefault(info["label"], []).append(float(info["wall_s"]))
    return out


def read_run_info(run_dir: Path) -> dict[str, Any]:
    """A run folder's ``run.json`` (written by ``train`` / ``evaluate``): a damaged one, or one without
    its ``label`` and ``seed``, is a one-line :class:`ConfigError`."""
    path = Path(run_dir) / RUN_INFO_FILE
    hint = "rerun the run, or remove the folder from the report's paths"
    info = load_json(path, "report", hint)
    if not isinstance(info, dict) or not {"label", "seed"} <= set(info):
        raise ConfigError(f"report: {path} has no label and seed; {hint}")
    return info


def read_run(run_dir: Path, metric: str = "top1") -> list[Result]:
    info = read_run_info(run_dir)
    path = Path(run_dir) / RESULTS_FILE
    rows = _rows(path, metric)
    return [_result(path, info["label"], info["seed"], r, metric) for r in rows]


def read_long_csv(path: Path, metric: str = "top1") -> list[Result]:
    rows = _rows(path, metric)
    label = next((c for c in LABEL_COLUMNS if c in rows[0]), None)
    if label is None or "seed" not in rows[0] or "resolution" not in rows[0]:
        raise ConfigError(f"report: {path} needs columns seed, resolution, {metric} and one of "
                         f"{', '.join(LABEL_COLUMNS)}; got {', '.join(rows[0])}")
    return [_result(path, r[label], r["seed"], r, metric) for r in rows]


def _result(path: Path, label: str, seed: Any, row: dict[str, str], metric: str) -> Result:
    """One row as a :class:`Result`; a value that is not a number is a one-line :class:`ConfigError`."""
    try:
        return Result(label, int(seed), int(row["resolution"]), float(row.get("width") or 1.0), float(row[metric]))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"report: {path}: a row has a value that is not a number ({err}): {row}") from None


def _rows(path: Path, metric: str) -> list[dict[str, str]]:
    existing_file(path, "report", f"write it with python -m resnet_switch.train or evaluate, or give {path.parent}'s "
                  "results as a long CSV")
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ConfigError(f"report: {path} has no rows")
    if metric not in rows[0]:
        raise ConfigError(f"metric: {path} has no column {metric!r}; columns: {', '.join(rows[0])}")
    return rows
