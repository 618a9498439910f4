"""Result tables (Markdown + CSV) and the accuracy-vs-MAdds plot written into a run directory."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def human_count(value: float) -> str:
    """``1.82e9 -> '1.82G'``, ``931e6 -> '931M'`` (3 significant digits)."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def markdown_table(rows: Sequence[Mapping[str, Any]], formats: Mapping[str, str] | None = None) -> str:
    """A GitHub Markdown table of ``rows`` (columns from the first row); floats use ``formats``."""
    formats = dict(formats or {})
    columns = list(rows[0])

    def cell(col: str, value: Any) -> str:
        if value is None or value == "":
            return "-"
        if col in formats:
            return format(value, formats[col])
        if isinstance(value, float):
            return f"{value:.2f}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(c, r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def pivot(rows: Sequence[Mapping[str, Any]], row_key: str, col_key: str, value_key: str,
          col_label: str = "{}") -> list[dict[str, Any]]:
    """Long rows -> one row per ``row_key`` value with a column per ``col_key`` value
    (e.g. train config x test resolution, SAN Table 1)."""
    cols: list[Any] = []
    table: dict[Any, dict[str, Any]] = {}
    for r in rows:
        if r[col_key] not in cols:
            cols.append(r[col_key])
        table.setdefault(r[row_key], {row_key: r[row_key]})[col_label.format(r[col_key])] = r[value_key]
    return [{row_key: k, **{col_label.format(c): v.get(col_label.format(c)) for c in cols}}
            for k, v in table.items()]


def plot_accuracy_vs_madds(series: Mapping[str, Sequence[tuple[float, float, str]]], path: Path,
                           title: str = "top-1 vs MAdds", marked: Sequence[tuple[float, float, str]] = (),
                           ylabel: str = "top-1 accuracy (%)", xlabel: str = "MAdds (M)") -> Path:
    """One line per series of ``(madds, value, label)`` points; ``marked`` points are circled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for name, points in series.items():
        pts = sorted(points)
        xs = [p[0] / 1e6 for p in pts]
        ys = [p[1] for p in pts]
        ax.plot(xs, ys, marker="o", label=name)
        for x, y, label in zip(xs, ys, [p[2] for p in pts]):
            if label:
                ax.annotate(label, (x, y), textcoords="offset points", xytext=(3, 4), fontsize=7)
    for x, y, label in marked:
        ax.scatter([x / 1e6], [y], s=160, facecolors="none", edgecolors="red", linewidths=1.5, zorder=5)
        ax.annotate(label, (x / 1e6, y), textcoords="offset points", xytext=(6, -12), fontsize=8, color="red")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
