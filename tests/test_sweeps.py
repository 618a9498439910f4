"""Sweeps: a multirun through submitit's local launcher (a dry run of hydra/launcher=submitit_slurm)
gives every job its own results and its own W&B run; the Optuna study persists in SQLite; the
launcher configs compose against the plugin's schema."""

import sqlite3

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from resnet_switch.cli.overrides import CONF_DIR

from .helpers import needs, run_cli

TINY = ["model=resnet20", "model.base_width=4", "data.batch_size=16", "data.num_workers=0",
        "data.train_samples=32", "data.val_samples=16", "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false", "callbacks.progress_bar=null"]


@needs("hydra_plugins.hydra_submitit_launcher", "wandb")
def test_multirun_through_submitit_local_gives_each_job_its_results_and_wandb_run(tmp_path):
    proc = run_cli("resnet_switch.train", "-m", "hydra/launcher=submitit_local", f"hydra.sweep.dir={tmp_path}",
                   "method=individual", "data.resolutions=[16],[12]", "logger=many", *TINY, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "validated against ConfigStore schema" not in proc.stderr
    jobs = sorted(p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(jobs) == 2
    for job, resolution in zip(jobs, ("12", "16")):  # sorted job folders: [12] before [16]
        assert f"data.resolutions=[{resolution}]" in job.name
        assert (job / "checkpoints" / "last.ckpt").is_file()
        assert (job / "results.csv").read_text().splitlines()[1].startswith(f"{resolution},")
        runs = list((job / "wandb").glob("offline-run-*/run-*.wandb"))
        assert len(runs) == 1, runs  # one W&B run per job ...
        record_log = runs[0].read_bytes()
        assert job.name.encode() in record_log  # ... named after the job's overrides
        other = "16" if resolution == "12" else "12"
        assert f"data.resolutions=[{other}]".encode() not in record_log
    assert len(list((tmp_path / ".submitit").iterdir())) >= 2  # submitit ran each job on its own


@needs("hydra_plugins.hydra_submitit_launcher", "hydra_plugins.hydra_optuna_sweeper")
def test_launcher_and_optuna_configs_compose():
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        slurm = compose("train", overrides=["hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu"],
                        return_hydra_config=True)
        study = compose("train", overrides=["hparams_search=optuna"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    assert slurm.hydra.launcher._target_.endswith("SlurmLauncher") and slurm.hydra.launcher.partition == "gpu"
    assert study.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert study.hydra.sweeper.direction == "maximize" and "optim.lr" in study.hydra.sweeper.params


@needs("hydra_plugins.hydra_optuna_sweeper")
def test_optuna_study_runs_and_persists_in_sqlite(tmp_path):
    db = tmp_path / "study" / "optuna.db"
    proc = run_cli("resnet_switch.train", "hparams_search=optuna", "hydra.sweeper.n_trials=2",
                   f"hydra.sweeper.storage=${{sqlite_url:{db}}}", f"hydra.sweep.dir={tmp_path / 'runs'}",
                   "method=individual", "data.resolutions=[16]", "logger=csv", *TINY, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with sqlite3.connect(db) as con:
        states = [row[0] for row in con.execute("SELECT state FROM trials")]
        values = [row[0] for row in con.execute("SELECT value FROM trial_values")]
    assert states == ["COMPLETE", "COMPLETE"] and len(values) == 2 and all(0 <= v <= 100 for v in values)
    assert (tmp_path / "runs" / "optimization_results.yaml").is_file()
