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

This module is the command: its options, checked before any checkpoint is read, and the dispatch to
the three jobs (:mod:`~resnet_switch.evaluation.table_job`, :mod:`~resnet_switch.evaluation.query_job`,
:mod:`~resnet_switch.evaluation.adaptive_job`). Every job runs each configuration as the checkpoint's
:class:`~resnet_switch.models.inference_policy.InferencePolicy` says.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from .cli.overrides import CONF_DIR, EVALUATE_RENAMED_KEYS, check_overrides, check_renamed, parse_hydra_args
from .errors import user_errors
from .evaluation.adaptive_job import adaptive_job, adaptive_options
from .evaluation.costs import check_widths
from .evaluation.query_job import check_query_options, query_table_job
from .evaluation.table_job import table_job
from .switch import check_resolutions, inference_mode


def check_options(cfg: DictConfig) -> None:
    """Fail on a bad option in one line before any checkpoint is read."""
    if cfg.bn_mode is not None:
        inference_mode(cfg.bn_mode)
    if cfg.test_resolutions:
        check_resolutions(list(cfg.test_resolutions), "test_resolutions")
    check_widths(list(cfg.get("widths") or [1.0]))
    if cfg.get("query_table"):
        check_query_options(cfg)
    if cfg.get("adaptive"):
        adaptive_options(cfg)


def evaluate(cfg: DictConfig) -> list[dict]:
    """Run the job ``cfg`` asks for; returns its rows."""
    check_options(cfg)
    if cfg.get("query_table"):
        return query_table_job(cfg)
    if cfg.get("adaptive"):
        return adaptive_job(cfg)
    return table_job(cfg)


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
