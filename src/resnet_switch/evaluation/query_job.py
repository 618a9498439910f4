"""``evaluate ckpt=... query_table=true [width_step=0.05] [budget.madds=150M | budget.latency_ms=5]``.

MutualNet's query table of ONE checkpoint: every width of its query grid
(:meth:`~resnet_switch.models.inference_policy.WidthRule.query_grid`; widths with identical channels
merged) x test resolutions, BN as the inference policy says, MAdds, parameters, CPU latency,
top-1/top-5 (:mod:`.query_table`), and the best configuration under the budget.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from ..errors import ConfigError
from ..models.inference_policy import unique_widths, width_grid
from ..models.switchable import SwitchableNet
from ..switch import SubnetConfig
from . import query_table as qt
from .checkpoint_eval import (
    build_eval_datamodule,
    checkpoint_paths,
    evaluate_with_bn,
    load_for_eval,
    parse_budget,
    resolve_test_resolutions,
)
from .costs import count_costs


def check_query_options(cfg: DictConfig) -> None:
    """Fail on a bad ``width_step``, budget or latency setting in one line."""
    width_grid(0.5, 1.0, qt.parse_positive(cfg.width_step, "width_step"))  # validates width_step
    parse_budget(cfg)
    for key, least in (("latency_runs", 0), ("latency_warmup", 0), ("threads", 1)):
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], int) or cfg[key] < least:
            raise ConfigError(f"{key}: must be an integer >= {least}, got {cfg[key]!r}")


def query_row(net: SwitchableNet, evaluated: dict, cfg: DictConfig) -> dict:
    """One query-table row: costs of the materialised plain model and its CPU latency."""
    config = SubnetConfig(evaluated["resolution"], evaluated["width"])
    plain = net.materialize(config)
    madds, params = count_costs(plain, config)
    latency = None
    if cfg.latency_runs:
        latency = qt.measure_latency_ms(plain, config.resolution, net.spec.get("in_channels", 3),
                                        runs=int(cfg.latency_runs), warmup=int(cfg.latency_warmup),
                                        threads=int(cfg.threads))
    return {"width": config.width, "resolution": config.resolution, "madds": madds, "params": params,
            "latency_ms": latency, "top1": evaluated["top1"], "top5": evaluated["top5"]}


def query_table_job(cfg: DictConfig) -> list[dict]:
    """Build, write and plot the query table of one checkpoint; print the choice under the budget."""
    paths = checkpoint_paths(cfg)
    if len(paths) != 1:
        raise ConfigError(f"ckpt: query_table=true takes ONE checkpoint, got {len(paths)}")
    madds_budget, latency_budget = parse_budget(cfg)  # fail on a bad budget before any work
    if latency_budget is not None and not cfg.latency_runs:
        raise ConfigError("budget.latency_ms: needs latency measurements; set latency_runs > 0")
    test_resolutions = resolve_test_resolutions(cfg, paths[0])
    loaded = load_for_eval(paths[0], cfg)
    net = loaded.net
    groups = unique_widths(net, loaded.policy.widths.query_grid(qt.parse_positive(cfg.width_step, "width_step")))
    merged = {kept: g for kept, g in groups.items() if len(g) > 1}
    configs = [SubnetConfig(r, w) for r in test_resolutions for w in groups]
    datamodule = build_eval_datamodule(loaded.meta, cfg, test_resolutions)
    evaluated = evaluate_with_bn(loaded, datamodule, configs, cfg)
    rows = [query_row(net, e, cfg) for e in evaluated]

    run_dir = Path(cfg.run_dir)
    chosen, verdict = [], ""
    if madds_budget is not None or latency_budget is not None:
        try:
            chosen = [qt.select_under_budget(rows, madds_budget, latency_budget)]
            verdict = f"best under {qt.budget_text(madds_budget, latency_budget)}: {qt.describe(chosen[0])}"
        except ConfigError as err:
            verdict = str(err)
    label = loaded.label
    notes = [f"Query table of {label} ({paths[0]}); BN: {', '.join(sorted({e['bn'] for e in evaluated}))}."]
    if merged:
        notes.append("Widths with identical channels were merged into the largest: "
                     + "; ".join(f"{k:g} <- {', '.join(f'{w:g}' for w in g if w != k)}" for k, g in merged.items()))
    if cfg.latency_runs:
        notes.append(f"latency_ms: CPU, batch 1, median of {cfg.latency_runs} runs, {cfg.threads} thread(s).")
    notes.append("frontier: on the MAdds / top-1 Pareto frontier.")
    if verdict:
        notes.append(verdict)
    csv_path, md_path = qt.write_query_table(rows, run_dir, header="\n".join(notes), chosen=chosen)
    plot = qt.plot_query_frontier(rows, run_dir / "query_frontier.png", chosen=chosen,
                                  title=f"query table: {label}")
    frontier = qt.pareto_frontier(rows)
    summary = notes[:-1] if verdict else notes  # the verdict is printed last
    print("\n".join(["", *summary, "", "Pareto frontier:", *(f"  {qt.describe(r)}" for r in frontier)]),
          flush=True)
    print(f"\ntable: {md_path}  csv: {csv_path}  plot: {plot}", flush=True)
    if verdict:
        print(verdict, flush=True)
    start = bool(cfg.get("wandb"))
    init_kwargs = {}
    if start:
        from ..training.loggers import wandb_offline

        init_kwargs = {"project": cfg.wandb_project, "dir": str(run_dir), "job_type": "query_table",
                       "mode": "offline" if wandb_offline() else "online",
                       "config": {"ckpt": str(paths[0]), "width_step": cfg.width_step,
                                  "test_resolutions": list(test_resolutions)}}
    qt.log_to_wandb(rows, plot, start=start, init_kwargs=init_kwargs)
    return rows
