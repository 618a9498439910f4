"""What training needs under Hydra sweeps and cluster launchers (``conf/hydra/launcher``,
``conf/hparams_search``).

- ``${run_name:}``: a multirun job's W&B run name (its ``override_dirname``, so every job is its own,
  recognisable run); ``None`` in a single run (W&B picks one).
- ``${sqlite_url:path}``: an SQLite URL for Optuna's storage, creating the folder (SQLite does not).
- :func:`cluster_plugins`: under submitit, Lightning must not requeue the SLURM job itself on the
  time-limit signal (submitit does, with the same overrides; ``ckpt_path=auto`` then resumes).
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf


def run_name() -> str | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return hydra_cfg.job.override_dirname or f"{hydra_cfg.job.name}_{hydra_cfg.job.num}"


def sqlite_url(path: str) -> str:
    target = Path(path).expanduser().resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{target}"


for _name, _fn in (("run_name", run_name), ("sqlite_url", sqlite_url)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)


def cluster_plugins() -> list:
    """Extra Trainer plugins for the process's launcher (none outside submitit)."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return []
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if os.environ["SUBMITIT_EXECUTOR"] == "slurm" else []
