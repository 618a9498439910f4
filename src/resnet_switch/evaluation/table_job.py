"""``evaluate ckpt=... test_resolutions=[...] [widths=[...]]``: accuracy of one or more checkpoints.

A checkpoint-by-test-resolution table (Markdown + CSV, SAN Table 1 layout), a long CSV with MAdds
and ``acc_vs_madds.png``; with ONE checkpoint also ``results.csv`` + ``run.json`` (the files
``train`` writes), so ``python -m resnet_switch.report`` reads the evaluation like a training run.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
from omegaconf import DictConfig

from ..devices import pick_device
from ..switch import SubnetConfig
from ..training.checkpointing import load_checkpoint
from .checkpoint_eval import (
    build_eval_datamodule,
    checked_widths,
    checkpoint_paths,
    evaluate_with_bn,
    load_for_eval,
    resolve_test_resolutions,
)
from .reporting import markdown_table, pivot, plot_accuracy_vs_madds, write_csv
from .results import add_costs
from .runs import RESULTS_FILE, evaluation_run_info, write_run_info


def evaluate_checkpoint(path: str, cfg: DictConfig, test_resolutions, device: torch.device,
                        extra: dict | None = None) -> list[dict]:
    """Rows ``{model, resolution, width, top1, top5, bn, madds, params}`` for one checkpoint;
    ``extra[model label]``: the method's ensemble accuracy (RS-Net), when all its members ran."""
    loaded = load_for_eval(path, cfg, device)
    widths = checked_widths(loaded, cfg.get("widths") or [1.0])
    configs = [SubnetConfig(r, w) for w in widths for r in test_resolutions]
    datamodule = build_eval_datamodule(loaded.meta, cfg, test_resolutions)
    found: dict = {}
    rows = evaluate_with_bn(loaded, datamodule, configs, cfg, extra=found)
    if "ensemble" in found and extra is not None:
        extra[loaded.label] = found["ensemble"]
    return [{"model": loaded.label, **r} for r in add_costs(rows, loaded.net)]


def write_report_run(run_dir: Path, ckpt: str, rows: list[dict], cfg: DictConfig) -> None:
    """``results.csv`` + ``run.json`` of a one-checkpoint evaluation (the files ``train`` writes), when
    its label and seed are known (:func:`.runs.evaluation_run_info`)."""
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


def table_job(cfg: DictConfig) -> list[dict]:
    """Evaluate every checkpoint of ``cfg.ckpt``; write and print the table; returns the long rows."""
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
