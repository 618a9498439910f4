"""The end-of-run report: accuracy per configuration with its cost, as tables and a plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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
    """Evaluate the trained network on its evaluation configurations (full validation split)."""
    module.recalibrate(datamodule)
    limit = trainer.limit_val_batches if isinstance(trainer.limit_val_batches, int) else None
    rows = evaluate_configs(module.net, datamodule, module.eval_configs, bn_mode=module.eval_bn_mode,
                            limit_batches=limit, progress=trainer.is_global_zero)
    return add_costs(rows, module.net)


def format_rows(rows: Sequence[dict]) -> list[dict]:
    return [{"resolution": r["resolution"], "width": r["width"], "top1": r["top1"], "top5": r["top5"],
             "MAdds": human_count(r["madds"]), "params": human_count(r["params"])} for r in rows]


def publish_results(rows: list[dict], run_dir: Path, loggers: Sequence = (), title: str = "") -> str:
    """Print the table and write ``results.md``, ``results.csv``, ``acc_vs_madds.png`` in ``run_dir``;
    log the table and plot to W&B when a W&B logger is present. Returns the Markdown table."""
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
        if type(logger).__name__ == "WandbLogger":
            import wandb

            logger.experiment.log({
                "results": wandb.Table(columns=list(rows[0]), data=[list(r.values()) for r in rows]),
                "acc_vs_madds": wandb.Image(str(plot)),
            })
    return table
