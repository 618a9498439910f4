"""The end-of-run report: accuracy per configuration with its cost, as tables and a plot."""

from __future__ import annotations

from collections.abc import Sequence
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
        rows = evaluate_configs(module.net, datamodule, module.eval_configs, bn_mode=module.eval_bn_mode,
                                limit_batches=limit, progress=trainer.is_global_zero)
    return add_costs(rows, module.net)


def format_rows(rows: Sequence[dict]) -> list[dict]:
    return [{"resolution": r["resolution"], "width": r["width"], "top1": r["top1"], "top5": r["top5"],
             "MAdds": human_count(r["madds"]), "params": human_count(r["params"])} for r in rows]


def publish_results(rows: list[dict], run_dir: Path, loggers: Sequence = (), title: str = "") -> str:
    """Print the table and write ``results.md``, ``results.csv``, ``acc_vs_madds.png`` in ``run_dir``;
    log the table and plot to each W&B or TensorBoard logger. Returns the Markdown table."""
    run_dir = Path(run_dir)
    table = markdown_table(format_rows(rows))
    write_csv(rows, run_dir / "results.csv")
    (run_dir / "results.md").write_text(f"# {title}\n\n{table}\n")
    series: dict[str, list] = {}
    for r in rows:
        series.setdefault(f"width {r['width']:g}", []).append((r["madds"], r["top1"], str(r["resolution"])))
    plot = plot_accuracy_vs_madds(series, run_dir / "acc_vs_madds.png", title=title)
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
            "acc_vs_madds": wandb.Image(str(plot)),
        })
    elif isinstance(logger, TensorBoardLogger):
        import numpy as np
        from PIL import Image

        with Image.open(plot) as image:
            pixels = np.asarray(image.convert("RGB"))
        logger.experiment.add_text("results", table)
        logger.experiment.add_image("acc_vs_madds", pixels, dataformats="HWC")
        logger.experiment.flush()
