"""MutualNet's query table (sec. 4, "query table" of width x resolution -> MAdds, accuracy): pick the
best configuration of ONE trained network under a MAdds or latency budget.

A row is ``{width, resolution, madds, params, latency_ms, top1, top5}`` (``latency_ms`` may be
``None`` when not measured). Selection and the Pareto frontier are pure functions of rows, so the
runtime API can use them on a table read back with :func:`read_query_table`.

Width grid: ``lo, lo + step, ..., hi`` (:meth:`~resnet_switch.models.inference_policy.WidthRule.query_grid`).
Two widths whose sub-networks have the same channel counts in every layer (and, for S-Net, the same
private BN set) are one configuration (:func:`~resnet_switch.models.inference_policy.unique_widths`);
the table keeps the LARGEST width of such a group as its label (so the full network is always width 1.0).
"""

from __future__ import annotations

import csv
import math
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .reporting import human_count, markdown_table, plot_accuracy_vs_madds, write_csv

COLUMNS = ("width", "resolution", "madds", "params", "latency_ms", "top1", "top5")


# ------------------------------------------------------------------------------------ parsing
def parse_positive(value: Any, field: str) -> float:
    """A positive float (``5``, ``'2.5'``) or a one-line error naming ``field``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{field}: {value!r} is not a number; give a positive number, e.g. {field}=5") from None
    if isinstance(value, bool) or not math.isfinite(number) or number <= 0:
        raise ConfigError(f"{field}: must be a positive number, got {value!r}")
    return number


# ------------------------------------------------------------------------------------ latency
def measure_latency_ms(model: nn.Module, resolution: int, in_channels: int = 3, runs: int = 20,
                       warmup: int = 5, threads: int = 1) -> float:
    """Median CPU wall time (ms) of ``model`` on one ``(1, in_channels, r, r)`` image over ``runs``
    calls after ``warmup`` calls, with ``torch.set_num_threads(threads)`` (restored afterwards)."""
    if runs < 1:
        raise ConfigError(f"latency_runs: must be at least 1, got {runs}")
    model = model.cpu().eval()
    image = torch.randn(1, in_channels, resolution, resolution)
    previous = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        for _ in range(warmup):
            model(image)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            model(image)
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return statistics.median(times) * 1e3


# --------------------------------------------------------------------------------- selection
def pareto_frontier(rows: Sequence[Mapping[str, Any]], cost: str = "madds") -> list[Mapping[str, Any]]:
    """Rows no other row beats (cost <= and top1 >=, one strictly), by ascending ``cost``.

    Of rows with equal cost only the most accurate can be on it; of exact (cost, top1) ties the
    first in ``rows`` order is kept. Top-1 strictly increases along the result."""
    ordered = sorted(enumerate(rows), key=lambda item: (item[1][cost], -item[1]["top1"], item[0]))
    frontier: list[Mapping[str, Any]] = []
    for _, row in ordered:
        if not frontier or row["top1"] > frontier[-1]["top1"]:
            frontier.append(row)
    return frontier


def budget_text(madds: float | None, latency_ms: float | None) -> str:
    """``'madds <= 150M and latency_ms <= 5'``."""
    parts = ([f"madds <= {human_count(madds)}"] if madds is not None else []) + (
        [f"latency_ms <= {latency_ms:g}"] if latency_ms is not None else [])
    return " and ".join(parts) or "no budget"


def select_under_budget(rows: Sequence[Mapping[str, Any]], madds: float | None = None,
                        latency_ms: float | None = None) -> Mapping[str, Any]:
    """The most accurate row with ``madds <= madds`` and ``latency_ms <= latency_ms`` (each bound
    only when given); ties on top-1 go to fewer MAdds, then lower latency, then fewer parameters.

    Raises ``ConfigError`` (message starts with ``budget:``) when no row fits."""
    if not rows:
        raise ConfigError("budget: the query table is empty")
    if latency_ms is not None and any(r.get("latency_ms") is None for r in rows):
        raise ConfigError("budget.latency_ms: the table has no latency measurements (latency_runs=0)")
    fits = [r for r in rows
            if (madds is None or r["madds"] <= madds) and (latency_ms is None or r["latency_ms"] <= latency_ms)]
    if not fits:
        cheapest = min(rows, key=lambda r: (r["latency_ms"], r["madds"]) if madds is None else (r["madds"],))
        raise ConfigError(
            f"budget: no configuration fits {budget_text(madds, latency_ms)}; the cheapest is width "
            f"{cheapest['width']:g} @ {cheapest['resolution']} ({human_count(cheapest['madds'])} MAdds"
            + (f", {cheapest['latency_ms']:.2f} ms)" if cheapest.get("latency_ms") is not None else ")")
        )
    return min(fits, key=lambda r: (-r["top1"], r["madds"], r.get("latency_ms") or 0.0, r["params"]))


# ------------------------------------------------------------------------------------ output
def read_query_table(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``query_table.csv`` with their types back (``latency_ms`` ``None`` when empty)."""
    types = {"width": float, "resolution": int, "madds": int, "params": int, "latency_ms": float,
             "top1": float, "top5": float}
    with Path(path).open(newline="") as f:
        return [{k: (types[k](v) if v not in ("", None) else None) if k in types else v for k, v in row.items()}
                for row in csv.DictReader(f)]


def describe(row: Mapping[str, Any]) -> str:
    """``'width 0.55 @ 32px: top-1 71.20% (120M MAdds, 3.10 ms)'``."""
    latency = f", {row['latency_ms']:.2f} ms" if row.get("latency_ms") is not None else ""
    return (f"width {row['width']:g} @ {row['resolution']}px: top-1 {row['top1']:.2f}% "
            f"({human_count(row['madds'])} MAdds{latency})")


def write_query_table(rows: Sequence[Mapping[str, Any]], run_dir: Path, header: str = "",
                      chosen: Sequence[Mapping[str, Any]] = ()) -> tuple[Path, Path]:
    """``query_table.csv`` (raw numbers, :data:`COLUMNS`) and ``query_table.md`` (frontier rows
    starred, chosen rows marked) in ``run_dir``."""
    run_dir = Path(run_dir)
    csv_path = write_csv([{c: r.get(c) for c in COLUMNS} for r in rows], run_dir / "query_table.csv")
    frontier = {id(r) for r in pareto_frontier(rows)}
    picked = {id(r) for r in chosen}
    table = markdown_table([
        {"width": f"{r['width']:g}", "resolution": r["resolution"], "MAdds": human_count(r["madds"]),
         "params": human_count(r["params"]), "latency_ms": r.get("latency_ms"), "top1": r["top1"],
         "top5": r["top5"], "frontier": "*" if id(r) in frontier else "",
         "chosen": "<-" if id(r) in picked else ""}
        for r in rows
    ])
    md_path = run_dir / "query_table.md"
    md_path.write_text(f"{header}\n\n{table}\n" if header else f"{table}\n")
    return csv_path, md_path


def plot_query_frontier(rows: Sequence[Mapping[str, Any]], path: Path,
                        chosen: Sequence[Mapping[str, Any]] = (), title: str = "query table") -> Path:
    """Top-1 vs MAdds: one marker series per resolution (widths joined), the Pareto frontier
    labelled ``w@r``, the chosen configurations circled."""
    series: dict[str, list] = {}
    for r in sorted(rows, key=lambda r: -r["resolution"]):
        series.setdefault(f"{r['resolution']}px", []).append((r["madds"], r["top1"], ""))
    series["Pareto frontier"] = [(r["madds"], r["top1"], f"w{r['width']:g}@{r['resolution']}")
                                 for r in pareto_frontier(rows)]
    marked = [(r["madds"], r["top1"], "chosen") for r in chosen]
    return plot_accuracy_vs_madds(series, path, title=title, marked=marked)


# --------------------------------------------------------------------------------------- W&B
def log_to_wandb(rows: Sequence[Mapping[str, Any]], plot: Path, start: bool = False,
                 init_kwargs: Mapping[str, Any] | None = None) -> bool:
    """Log the table and plot to W&B: into the active run when there is one; else, when ``start``,
    into a new run made with ``wandb.init(**init_kwargs)`` and finished here. Returns whether
    anything was logged. W&B is only imported when a run may be started (an active run means the
    module is already imported)."""
    wandb = sys.modules.get("wandb")
    active = wandb is not None and wandb.run is not None
    if not active and not start:
        return False
    if wandb is None:
        try:
            import wandb
        except ImportError:
            raise ConfigError("wandb: true needs the wandb package; pip install wandb or set wandb=false") from None
    if not active:
        wandb.init(**dict(init_kwargs or {}))
    try:
        wandb.log({"query_table": wandb.Table(columns=list(COLUMNS), data=[[r.get(c) for c in COLUMNS] for r in rows]),
                   "query_frontier": wandb.Image(str(plot))})
    finally:
        if not active:
            wandb.finish()
    return True
