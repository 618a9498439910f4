"""``python -m resnet_switch.evaluate ckpt=PATH test_resolutions=[...] [widths=[...]] bn_mode=...``

Accuracy of one or more checkpoints at any test resolutions (and, for slimmable checkpoints, any
widths): a checkpoint-by-test-resolution table (Markdown + CSV, SAN Table 1 layout), a long CSV
with MAdds, and ``acc_vs_madds.png``. With ONE checkpoint it also writes ``results.csv`` + ``run.json``
(label: ``label=``, else the training run's with ``_<bn_mode>``; its seed), so
``python -m resnet_switch.report`` reads the evaluation like a training run.

``query_table=true`` instead builds MutualNet's query table of ONE checkpoint (every width from the
method's smallest to its largest in ``width_step`` steps x test resolutions, BN recalibrated per
configuration, MAdds, parameters, CPU latency, top-1/top-5; see :mod:`resnet_switch.evaluation.query_table`),
and with ``budget.madds=150M`` / ``budget.latency_ms=5`` prints the best configuration that fits.

``adaptive=true [budget.madds=150M] [cascade.score=margin]`` runs ONE checkpoint as a cascade (each image
stops at the cheapest configuration sure enough; thresholds fitted on held-out training images):
``adaptive.csv``, ``adaptive.png``, ``adaptive.json`` (see :mod:`resnet_switch.evaluation.adaptive_eval`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from .cli.overrides import CONF_DIR, EVALUATE_RENAMED_KEYS, check_overrides, check_renamed, parse_hydra_args
from .deploy.runtime import pick_device
from .errors import ConfigError, user_errors
from .evaluation import query_table as qt
from .evaluation.accuracy import calibrate_configs, evaluate_configs
from .evaluation.adaptive import SCORES
from .evaluation.adaptive_eval import run_adaptive
from .evaluation.costs import check_widths, count_costs
from .evaluation.reporting import markdown_table, pivot, plot_accuracy_vs_madds, write_csv
from .evaluation.results import add_costs
from .evaluation.runs import RESULTS_FILE, evaluation_run_info, write_run_info
from .layers.calibration import calibratable_layers
from .methods import Method
from .models.switchable import SwitchableNet
from .switch import SubnetConfig, check_resolutions, inference_mode
from .training.checkpointing import load_checkpoint, rebuild_from_checkpoint


def checkpoint_label(meta: dict[str, Any]) -> str:
    res = meta["net"]["resolutions"]
    span = f"{res[0]}" if len(res) == 1 else f"{res[0]}-{res[-1]}"
    quant = meta["net"].get("quant")
    bits = f" w{quant['weight_bits']}a{quant['act_bits']}" if quant else ""
    return f"{meta['method']['name']} {meta['net']['name']}{bits} @{span}"


KEEP_WHEN_NULL = ("batch_size", "num_workers")  # evaluate.yaml's data keys: null = the training run's


def build_eval_datamodule(meta: dict[str, Any], cfg: DictConfig, test_resolutions):
    data = dict(meta["run"]["data"])
    data.pop("resolutions", None)
    overrides = OmegaConf.to_container(cfg.data, resolve=True) or {}
    # null keeps the run's value for the keys conf/evaluate.yaml lists; a key added with + is applied
    # as given, null included (+data.val_samples=null: the whole validation split)
    data.update({key: value for key, value in overrides.items() if value is not None or key not in KEEP_WHEN_NULL})
    data["train_resolutions"] = meta["net"]["resolutions"]
    data["test_resolutions"] = list(test_resolutions)
    return instantiate(data, _convert_="all")


# ------------------------------------------------------------------------------------ widths
def is_slimmable(net: SwitchableNet) -> bool:
    return net.spec.get("layers") == "slimmable"


def has_private_bn_per_width(net: SwitchableNet) -> bool:
    return bool((net.spec.get("layer_kwargs") or {}).get("private_bn_per_width"))


def check_eval_widths(net: SwitchableNet, widths, model: str = "this") -> list[float]:
    """Widths a checkpoint can run: any in (0, 1] for a slimmable net with shared BN, the trained
    list for S-Net (private BN per width), only 1.0 otherwise."""
    widths = check_widths(list(widths))
    if not is_slimmable(net):
        if widths != [1.0]:
            raise ConfigError(f"widths: {model} checkpoint is not slimmable; use widths=[1.0]")
    elif has_private_bn_per_width(net):
        bad = [w for w in widths if SubnetConfig(1, w).width not in net.state.widths]
        if bad:
            raise ConfigError(f"widths: {bad} have no private BN in {model} checkpoint (S-Net); "
                              f"choose from {list(net.state.widths)}")
    elif min(widths) < net.state.widths[-1]:
        print(f"warning: widths below {net.state.widths[-1]:g}, the smallest width {model} was trained at, "
              "are evaluated but were never trained", flush=True)
    return widths


def query_widths(net: SwitchableNet, step: float) -> list[float]:
    """The query table's candidate widths: ``lo, lo + step, ..., hi`` of the trained range
    (MutualNet/US-Net), the trained list (S-Net), ``[1.0]`` for non-slimmable nets."""
    if not is_slimmable(net):
        return [1.0]
    if has_private_bn_per_width(net):
        return sorted(net.state.widths)
    return qt.width_grid(net.state.widths[-1], net.state.widths[0], qt.parse_positive(step, "width_step"))


# -------------------------------------------------------------------------------- BN handling
def is_stored(net: SwitchableNet, config: SubnetConfig) -> bool:
    """Whether every calibratable BN layer holds recalibrated statistics for ``config``."""
    return all(config.key() in layer.calibrated for layer in calibratable_layers(net))


def reuse_stored_statistics(net: SwitchableNet, configs, candidates=()) -> list[SubnetConfig]:
    """Configurations of ``configs`` that still need calibration.

    A configuration is served by statistics already in the net (from the checkpoint) when they are
    stored under its own key, or under the key of a stored configuration (from ``configs`` or
    ``candidates``) at the same resolution with the same channel signature -- the same plain
    network -- whose statistics are then shared under the new key."""
    layers = calibratable_layers(net)
    twins: dict[tuple, SubnetConfig] = {}
    for config in [*configs, *candidates]:
        if is_stored(net, config):
            twins.setdefault((config.resolution, qt.channel_signature(net, config.width)), config)
    missing = []
    for config in configs:
        if is_stored(net, config):
            continue
        twin = twins.get((config.resolution, qt.channel_signature(net, config.width)))
        if twin is None:
            missing.append(config)
            continue
        for layer in layers:
            layer.calibrated[config.key()] = layer.calibrated[twin.key()]
    return missing


def prepare_bn(method: Method, net: SwitchableNet, datamodule, configs: list[SubnetConfig],
               cfg: DictConfig) -> dict[SubnetConfig, tuple[str, str]]:
    """Make every configuration's BN ready to run: ``{config: (bn_mode for net.switch, label)}``.

    Methods that need calibration (MutualNet, US-Net, S-Net) use exact statistics for every
    configuration (``bn_mode`` null or ``calibrate``): those stored in the checkpoint are reused
    (``recalibrate=true``: none), the others recalibrated on ``calibration_samples`` training images
    (labels ``stored`` / ``recalibrated``). Other methods: training resolutions use their own BN
    (``own``), unseen ones ``bn_mode`` (method default when null; label: the mode's name)."""
    mode = inference_mode(cfg.bn_mode or ("calibrate" if method.needs_calibration else method.default_bn_mode))
    net.state.set_scale_encoding(mode.scale_encoding)  # read by SAN's scale-conditioned convs
    if method.needs_calibration and mode.recalibrates:
        missing = list(configs) if cfg.get("recalibrate") else reuse_stored_statistics(net, configs, method.eval_configs())
        if missing:
            calibrate_configs(net, datamodule, missing, cfg.calibration_samples)
        print(f"BN: {len(configs) - len(missing)} configuration(s) use statistics stored in the checkpoint, "
              f"{len(missing)} recalibrated on {cfg.calibration_samples} images", flush=True)
        return {c: ("calibrated", "recalibrated" if c in missing else "stored") for c in configs}
    trained = set(net.state.train_resolutions)
    unseen = [c for c in configs if c.resolution not in trained]
    if mode.recalibrates and unseen:
        calibrate_configs(net, datamodule, unseen, cfg.calibration_samples)
    return {c: ("nearest", "own") if c.resolution in trained else (mode.bn_mode, mode.name) for c in configs}


def evaluate_with_bn(method: Method, net: SwitchableNet, datamodule, configs: list[SubnetConfig],
                     cfg: DictConfig, extra: dict | None = None) -> list[dict]:
    """Rows ``{resolution, width, top1, top5, bn}`` in ``configs`` order, BN as :func:`prepare_bn`
    makes it. ``extra["ensemble"]``: the method's ensemble accuracy (RS-Net, over its training
    resolutions with their own BN) when it has one."""
    bn = prepare_bn(method, net, datamodule, configs, cfg)
    groups: dict[str, list[SubnetConfig]] = {}
    for config in configs:
        groups.setdefault(bn[config][0], []).append(config)
    by_config = {}
    for bn_mode, group in groups.items():
        ensemble = method.ensemble if bn_mode == "nearest" else None  # RS-Net: its training resolutions
        for row, config in zip(evaluate_configs(net, datamodule, group, bn_mode=bn_mode,
                                                limit_batches=cfg.limit_batches, ensemble=ensemble,
                                                extra=extra), group):
            by_config[config] = {**row, "bn": bn[config][1]}
    return [by_config[c] for c in configs]


# ------------------------------------------------------------------------------ plain evaluate
def load_for_eval(path: str, device: torch.device):
    method, net, meta = rebuild_from_checkpoint(load_checkpoint(path))
    return method, net.to(device), meta


def evaluate_checkpoint(path: str, cfg: DictConfig, test_resolutions, device: torch.device,
                        extra: dict | None = None) -> list[dict]:
    """Rows ``{model, resolution, width, top1, top5, bn, madds, params}`` for one checkpoint;
    ``extra[model label]``: the method's ensemble accuracy (RS-Net), when all its members ran."""
    method, net, meta = load_for_eval(path, device)
    label = checkpoint_label(meta)
    widths = check_eval_widths(net, cfg.get("widths") or [1.0], label)
    configs = [SubnetConfig(r, w) for w in widths for r in test_resolutions]
    datamodule = build_eval_datamodule(meta, cfg, test_resolutions)
    found: dict = {}
    rows = evaluate_with_bn(method, net, datamodule, configs, cfg, extra=found)
    if "ensemble" in found and extra is not None:
        extra[label] = found["ensemble"]
    return [{"model": label, **r} for r in add_costs(rows, net)]


def write_report_run(run_dir: Path, ckpt: str, rows: list[dict], cfg: DictConfig) -> None:
    """``results.csv`` + ``run.json`` of a one-checkpoint evaluation (the files ``train`` writes), when
    its label and seed are known (:func:`.evaluation.runs.evaluation_run_info`)."""
    def checkpoint_seed():  # a checkpoint without its training folder: the seed its data settings kept
        return load_checkpoint(ckpt)["resnet_switch"].get("run", {}).get("data", {}).get("seed")

    info = evaluation_run_info(ckpt, cfg.bn_mode, cfg.get("label"), checkpoint_seed)
    if info is None:
        return
    columns = ("resolution", "width", "top1", "top5", "madds", "params")
    write_csv([{c: r[c] for c in columns} for r in rows], run_dir / RESULTS_FILE)
    write_run_info(run_dir, info)


def unique_labels(labels: list[str], paths: list[str]) -> list[str]:
    """Table row names, one per checkpoint: a label that several checkpoints share (two seeds, or
    an ablation such as ``private_bn=false`` of the same method) gets its checkpoint path appended,
    otherwise their rows would merge into one."""
    counts = Counter(labels)
    return [f"{label} ({path})" if counts[label] > 1 else label for label, path in zip(labels, paths)]


def checkpoint_paths(cfg: DictConfig) -> list[str]:
    return [cfg.ckpt] if isinstance(cfg.ckpt, str) else list(cfg.ckpt)


def resolve_test_resolutions(cfg: DictConfig, first_path: str):
    if cfg.test_resolutions:
        return check_resolutions(list(cfg.test_resolutions), "test_resolutions")
    return load_checkpoint(first_path)["resnet_switch"]["net"]["resolutions"]


def check_options(cfg: DictConfig) -> None:
    """Fail on a bad option in one line before any checkpoint is read."""
    if cfg.bn_mode is not None:
        inference_mode(cfg.bn_mode)
    if cfg.test_resolutions:
        check_resolutions(list(cfg.test_resolutions), "test_resolutions")
    check_widths(list(cfg.get("widths") or [1.0]))
    if cfg.get("query_table"):
        qt.width_grid(0.5, 1.0, qt.parse_positive(cfg.width_step, "width_step"))  # validates width_step
        parse_budget(cfg)
        for key, least in (("latency_runs", 0), ("latency_warmup", 0), ("threads", 1)):
            if isinstance(cfg[key], bool) or not isinstance(cfg[key], int) or cfg[key] < least:
                raise ConfigError(f"{key}: must be an integer >= {least}, got {cfg[key]!r}")
    if cfg.get("adaptive"):
        adaptive_options(cfg)


def evaluate(cfg: DictConfig) -> list[dict]:
    check_options(cfg)
    if cfg.get("query_table"):
        return query_table_job(cfg)
    if cfg.get("adaptive"):
        return adaptive_job(cfg)
    paths = checkpoint_paths(cfg)
    test_resolutions = resolve_test_resolutions(cfg, paths[0])
    device = pick_device(cfg.device)
    found = [{} for _ in paths]  # per checkpoint: {its label: ensemble accuracy} (RS-Net)
    per_checkpoint = [evaluate_checkpoint(path, cfg, test_resolutions, device, extra=extra)
                      for path, extra in zip(paths, found)]
    names = unique_labels([ck_rows[0]["model"] for ck_rows in per_checkpoint], paths)
    rows = [{**r, "model": name} for name, ck_rows in zip(names, per_checkpoint) for r in ck_rows]
    ensembles = {name: acc for name, extra in zip(names, found) for acc in extra.values()}
    several_widths = len({r["width"] for r in rows}) > 1
    for r in rows:
        r["subnet"] = f"{r['model']} w{r['width']:g}" if several_widths else r["model"]
    run_dir = Path(cfg.run_dir)
    table = pivot([{"model": r["subnet"], "resolution": r["resolution"], "top1": r["top1"]} for r in rows],
                  "model", "resolution", "top1", col_label="{}")
    if ensembles:  # RS-Net: val/acc1_ensemble, the softmax(alpha)-weighted logits of its training resolutions
        for row in table:
            row["ensemble"] = ensembles.get(row["model"], {}).get("top1")
    md = markdown_table(table)
    write_csv(table, run_dir / "eval_table.csv")
    write_csv(rows, run_dir / "eval_rows.csv")
    if len(paths) == 1:
        write_report_run(run_dir, paths[0], rows, cfg)
    (run_dir / "eval_table.md").write_text(f"top-1 (%) by test resolution, bn_mode={cfg.bn_mode or 'method default'}\n\n{md}\n")
    series: dict[str, list] = {}
    for r in rows:
        series.setdefault(r["subnet"], []).append((r["madds"], r["top1"], str(r["resolution"])))
    plot_accuracy_vs_madds(series, run_dir / "acc_vs_madds.png", title="top-1 vs MAdds by test resolution")
    print(f"\n{md}\n\ntables: {run_dir / 'eval_table.md'}  plot: {run_dir / 'acc_vs_madds.png'}", flush=True)
    for label, acc in ensembles.items():
        print(f"val/acc1_ensemble {label}: {acc['top1']:.2f} (top-5 {acc['top5']:.2f}; softmax(alpha)-weighted logits "
              "of its training resolutions)", flush=True)
    return rows


# --------------------------------------------------------------------------------- query table
def parse_budget(cfg: DictConfig) -> tuple[float | None, float | None]:
    budget = cfg.get("budget") or {}
    madds, latency = budget.get("madds"), budget.get("latency_ms")
    return (None if madds is None else qt.parse_count(madds, "budget.madds"),
            None if latency is None else qt.parse_positive(latency, "budget.latency_ms"))


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
    method, net, meta = load_for_eval(paths[0], pick_device(cfg.device))
    groups = qt.unique_widths(net, query_widths(net, cfg.width_step))
    merged = {kept: g for kept, g in groups.items() if len(g) > 1}
    configs = [SubnetConfig(r, w) for r in test_resolutions for w in groups]
    datamodule = build_eval_datamodule(meta, cfg, test_resolutions)
    evaluated = evaluate_with_bn(method, net, datamodule, configs, cfg)
    rows = [query_row(net, e, cfg) for e in evaluated]

    run_dir = Path(cfg.run_dir)
    chosen, verdict = [], ""
    if madds_budget is not None or latency_budget is not None:
        try:
            chosen = [qt.select_under_budget(rows, madds_budget, latency_budget)]
            verdict = f"best under {qt.budget_text(madds_budget, latency_budget)}: {qt.describe(chosen[0])}"
        except ValueError as err:
            verdict = str(err)
    label = checkpoint_label(meta)
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
        from .training.loggers import wandb_offline

        init_kwargs = {"project": cfg.wandb_project, "dir": str(run_dir), "job_type": "query_table",
                       "mode": "offline" if wandb_offline() else "online",
                       "config": {"ckpt": str(paths[0]), "width_step": cfg.width_step,
                                  "test_resolutions": list(test_resolutions)}}
    qt.log_to_wandb(rows, plot, start=start, init_kwargs=init_kwargs)
    return rows


# ------------------------------------------------------------------------- adaptive inference
def adaptive_options(cfg: DictConfig) -> dict[str, Any]:
    """The checked ``cascade.*`` settings and ``budget.madds`` of ``adaptive=true`` (one-line errors)."""
    if cfg.get("query_table"):
        raise ConfigError("adaptive: query_table=true and adaptive=true are two jobs; run them one at a time")
    cascade = cfg.get("cascade") or {}
    score = cascade.get("score", "max_softmax")
    SCORES.get(score)
    ensemble, store = cascade.get("ensemble", False), cascade.get("store", True)
    for key, value in (("cascade.ensemble", ensemble), ("cascade.store", store)):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false, got {value!r}")
    images = cascade.get("calibration_images", 2048)
    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise ConfigError(f"cascade.calibration_images: must be an integer >= 1 (held-out training images), "
                          f"got {images!r}")
    widths = cascade.get("widths")
    madds, latency = parse_budget(cfg)
    if latency is not None:
        raise ConfigError("budget.latency_ms: adaptive=true fits thresholds to a MAdds budget; use budget.madds=")
    return {"score": score, "ensemble": ensemble, "store": store, "calibration_images": images,
            "widths": None if widths is None else check_widths(list(widths)), "budget_madds": madds}


def adaptive_widths(method: Method, net: SwitchableNet) -> list[float]:
    """Default candidate widths of the cascade: the method's evaluation widths (their BN statistics
    are stored in the checkpoint), with widths of identical channels merged; ``[1.0]`` otherwise."""
    if not is_slimmable(net):
        return [1.0]
    return list(qt.unique_widths(net, sorted({c.width for c in method.eval_configs()})))


def adaptive_job(cfg: DictConfig) -> list[dict]:
    """Cascade inference of ONE checkpoint: :func:`resnet_switch.evaluation.adaptive_eval.run_adaptive`."""
    paths = checkpoint_paths(cfg)
    if len(paths) != 1:
        raise ConfigError(f"ckpt: adaptive=true takes ONE checkpoint, got {len(paths)}")
    options = adaptive_options(cfg)
    test_resolutions = resolve_test_resolutions(cfg, paths[0])
    method, net, meta = load_for_eval(paths[0], pick_device(cfg.device))
    label = checkpoint_label(meta)
    widths = check_eval_widths(net, options["widths"], label) if options["widths"] else adaptive_widths(method, net)
    configs = [SubnetConfig(r, w) for w in widths for r in test_resolutions]
    datamodule = build_eval_datamodule(meta, cfg, test_resolutions)
    bn_modes = {c: mode for c, (mode, _) in prepare_bn(method, net, datamodule, configs, cfg).items()}
    return run_adaptive(net, method, datamodule, configs, bn_modes, options, Path(cfg.run_dir), paths[0], label,
                        limit_batches=cfg.limit_batches)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="evaluate")
def _hydra_main(cfg: DictConfig) -> None:
    with user_errors():
        evaluate(cfg)


def main() -> None:
    import sys

    args = parse_hydra_args(sys.argv[1:])
    with user_errors():
        check_renamed(args.overrides, EVALUATE_RENAMED_KEYS)
        if args.composes_a_run and not args.multirun:
            check_overrides(args.overrides, "evaluate", [CONF_DIR, *args.config_dirs])
    _hydra_main()


if __name__ == "__main__":
    main()
