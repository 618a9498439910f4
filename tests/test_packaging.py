"""The package as a user installs it: a wheel (not editable) carries the Hydra configs, the commands run
from any directory, and a user's own config folder composes over ours (``--config-dir``,
``hydra.searchpath``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from resnet_switch.cli.overrides import CONF_DIR, HydraArgs, parse_hydra_args

from .helpers import REPO, TINY

USER_EXPERIMENT = """# @package _global_
defaults:
  - override /method: parallel
data:
  batch_size: 8
"""


def write_user_config(root: Path) -> Path:
    (root / "experiment").mkdir(parents=True)
    (root / "experiment" / "user_exp.yaml").write_text(USER_EXPERIMENT)
    return root


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory) -> tuple[Path, Path]:
    """``(wheel, site)``: the project built as a wheel from a copy of its sources, installed (without
    dependencies, which the test environment has) into ``site``."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(source)],
                   check=True, capture_output=True, cwd=tmp)
    (wheel,) = (tmp / "dist").glob("resnet_switch-*.whl")
    site = tmp / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True,
                   capture_output=True, cwd=tmp)
    return wheel, site


def run_installed(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(site), WANDB_MODE="offline", HYDRA_FULL_ERROR="0")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_wheel_ships_every_config(installed_wheel):
    wheel, _ = installed_wheel
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("resnet_switch/conf/")}
    ours = {f"resnet_switch/conf/{p.relative_to(CONF_DIR).as_posix()}" for p in CONF_DIR.rglob("*.yaml")}
    assert ours and ours <= shipped


def test_installed_wheel_composes_from_another_directory(installed_wheel, tmp_path):
    _, site = installed_wheel
    where = run_installed(site, tmp_path, "-c", "import resnet_switch; print(resnet_switch.__file__)")
    assert where.stdout.strip().startswith(str(site))  # the wheel's copy, not the source tree
    job = run_installed(site, tmp_path, "-m", "resnet_switch.train", "--cfg", "job")
    assert job.returncode == 0, job.stderr[-2000:]
    assert "name: rsnet" in job.stdout and "name: resnet20" in job.stdout


@pytest.mark.parametrize("how", ["--config-dir", "hydra.searchpath"])
def test_user_experiment_outside_the_repo_composes_over_ours(installed_wheel, tmp_path, how):
    _, site = installed_wheel
    user = write_user_config(tmp_path / "my_configs")
    where = ["--config-dir", str(user)] if how == "--config-dir" else [f"hydra.searchpath=[file://{user}]"]
    job = run_installed(site, tmp_path, "-m", "resnet_switch.train", *where, "experiment=user_exp", "--cfg", "job")
    assert job.returncode == 0, job.stderr[-2000:]
    assert "name: parallel" in job.stdout and "batch_size: 8" in job.stdout


def test_installed_wheel_trains_with_a_user_experiment(installed_wheel, tmp_path):
    _, site = installed_wheel
    user = write_user_config(tmp_path / "my_configs")
    run = run_installed(site, tmp_path, "-m", "resnet_switch.train", "--config-dir", str(user),
                        "experiment=user_exp", *TINY, "trainer.limit_train_batches=2", "data.val_samples=16",
                        f"hydra.run.dir={tmp_path / 'run'}")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "parallel / resnet20 / synthetic" in (tmp_path / "run" / "results.md").read_text()


def test_unknown_option_lists_the_users_options_too(tmp_path):
    user = write_user_config(tmp_path / "my_configs")
    proc = subprocess.run([sys.executable, "-m", "resnet_switch.train", "--config-dir", str(user), "experiment=nope"],
                          capture_output=True, text=True, cwd=tmp_path, env=dict(os.environ, WANDB_MODE="offline"),
                          timeout=120)
    assert proc.returncode == 2
    (error,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert "experiment: unknown option 'nope'" in error and "user_exp" in error and "rsnet_resnet18_imagenet" in error


def test_hydra_command_lines_split_into_overrides_flags_and_config_dirs(tmp_path):
    args = parse_hydra_args(["-cd", str(tmp_path), "method=san", "--cfg", "job", "-m",
                             "hydra.searchpath=[file:///opt/a,pkg://x.conf]", "--config-dir=/opt/b"])
    assert args == HydraArgs(["method=san", "hydra.searchpath=[file:///opt/a,pkg://x.conf]"],
                             ["-cd", "--cfg", "-m", "--config-dir"], [tmp_path, Path("/opt/b"), Path("/opt/a")])
    assert args.multirun and not args.composes_a_run
    assert parse_hydra_args(["--config-dir", "/x", "seed=1"]).composes_a_run
