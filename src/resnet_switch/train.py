"""``python -m resnet_switch.train [overrides]``: train one switchable network (any task).

The command: early one-line checks of the command line, then Hydra composes the config and
:func:`resnet_switch.pipeline.train` runs it (the Optuna sweeper's objective is the mean of its metrics).
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from .cli.overrides import CONF_DIR, check_group_choices, check_overrides, check_renamed, parse_hydra_args
from .errors import user_errors
from .pipeline import check_init_options, train
from .training.loggers import wandb_offline
from .training.quiet import quiet_third_party
from .training.tasks import build_datamodule

__all__ = ["build_datamodule", "check_init_options", "main", "train", "wandb_offline"]


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> float:
    with user_errors():
        metrics = train(cfg)
    return sum(metrics.values()) / max(1, len(metrics))  # the Optuna sweeper's objective


def main() -> None:
    quiet_third_party()
    args = parse_hydra_args(sys.argv[1:])
    conf_dirs = [CONF_DIR, *args.config_dirs]
    with user_errors():
        check_renamed(args.overrides)
        if args.multirun:
            check_group_choices(args.overrides, conf_dirs)
        elif args.composes_a_run:
            check_overrides(args.overrides, "train", conf_dirs)
    _hydra_main()


if __name__ == "__main__":
    main()
