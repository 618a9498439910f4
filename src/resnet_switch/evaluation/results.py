"""The end-of-run report: accuracy per configuration with its cost, as tables and a plot."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from ..models.switchable import SwitchableNet
from ..switch import SubnetConfig
from .accuracy import evaluate_configs
from .costs import count_costs
from .reporting import human_count, markdown_table, plot_accuracy_vs_madds, write_csv


def add_costs(rows: list[dict], net: SwitchableNet) -> list[dict]:
    """Add ``madds`` and ``params`` of each row's configuration (materialised plain model)."""
    for row in rows:
        madds, params = count_costs(net, SubnetConfig(row["resolution"], row["width"]))
        row["madds"], row["params"] = madds, params
    return rows


def final_results(trainer, module, datamodule) -> list[dict]:
    """Accuracy of the trained network on its evaluation configurations (full validation split).

    When the last validation ran on the whole split after the last optimizer step (the usual end of
    ``fit``), its figures are these and are reused; otherwise the network is evaluated again."""
    limit = trainer.limit_val_batches if isinstance(trainer.limit_val_batches, int) else None
    full = limit is not None or trainer.limit_val_batches == 1.0
    last = module.last_validation
    if full and last is not None and last[0] == module.global_step:
        rows = [dict(row) for row in last[1]]
    else:
        module.recalibrate(datamodule)
        rows = evaluate_configs(module.net, datamodule, module.eval_configs, policy=module.policy,
                                limit_batches=limit, progress=trainer.is_global_zero)
    return add_costs(rows, module.net)


@dataclass(frozen=True)
class ResultsLayout:
    """How a task's result rows (``resolution``, ``width``, its metric columns, ``madds``, ``params``)
    are shown.

    Args:
        plotted: metric column -> series label prefix; one line per (column, width) in the plot.
        plot_file: file name of the plot in the run directory (its stem names the logged image).
        ylabel, xlabel: plot axes.
        cost_prefix: prefix of the table's cost columns (``"backbone "`` for a detector).
        note: a sentence under the title of ``results.md``.
        formats: number formats of table columns (:func:`~.reporting.markdown_table`).
    """

    plotted: dict[str, str] = field(default_factory=lambda: {"top1": ""})
    plot_file: str = "acc_vs_madds.png"
    ylabel: str = "top-1 accuracy (%)"
    xlabel: str = "MAdds (M)"
    cost_prefix: str = ""
    note: str = ""
    formats: dict[str, str] | None = None


CLASSIFICATION_LAYOUT = ResultsLayout()


def format_rows(rows: Sequence[dict], cost_prefix: str = "") -> list[dict]:
    """Table rows: every column but the costs, then ``MAdds`` and ``params`` in human units."""
    return [{**{k: v for k, v in r.items() if k not in ("madds", "params")},
             f"{cost_prefix}MAdds": human_count(r["madds"]), f"{cost_prefix}params": human_count(r["params"])}
            for r in rows]


def publish_results(rows: list[dict], run_dir: Path, loggers: Sequence = (), title: str = "",
                    layout: ResultsLayout = CLASSIFICATION_LAYOUT) -> str:
    """Print the table and write ``results.md``, ``results.csv`` and the plot (``layout.plot_file``,
    metric against MAdds) in ``run_dir``; log the table and plot to each W&B or TensorBoard logger.
    Returns the Markdown table."""
    run_dir = Path(run_dir)
    table = markdown_table(format_rows(rows, layout.cost_prefix), formats=layout.formats)
    write_csv(rows, run_dir / "results.csv")
    note = f"{layout.note}\n\n" if layout.note else ""
    (run_dir / "results.md").write_text(f"# {title}\n\n{note}{table}\n")
    series: dict[str, list] = {}
    for r in rows:
        for column, prefix in layout.plotted.items():
            if column in r:
                series.setdefault(f"{prefix}width {r['width']:g}", []).append(
                    (r["madds"], r[column], str(r["resolution"])))
    plot = plot_accuracy_vs_madds(series, run_dir / layout.plot_file, title=title, ylabel=layout.ylabel,
                                  xlabel=layout.xlabel)
    print(f"\n{title}\n{table}\nresults: {run_dir / 'results.md'}  plot: {plot}", flush=True)
    for logger in loggers:
        log_report(logger, rows, table, plot)
    return table


def log_report(logger, rows: list[dict], table: str, plot: Path) -> None:
    """The results table and plot into a W&B run (a table and an image) or TensorBoard (text and an
    image); other loggers keep the metrics they logged during training."""
    if isinstance(logger, WandbLogger):
        import wandb

        logger.experiment.log({
            "results": wandb.Table(columns=list(rows[0]), data=[list(r.values()) for r in rows]),
            plot.stem: wandb.Image(str(plot)),
        })
    elif isinstance(logger, TensorBoardLogger):
        import numpy as np
        from PIL import Image

        with Image.open(plot) as image:
            pixels = np.asarray(image.convert("RGB"))
        logger.experiment.add_text("results", table)
        logger.experiment.add_image(plot.stem, pixels, dataformats="HWC")
        logger.experiment.flush()
