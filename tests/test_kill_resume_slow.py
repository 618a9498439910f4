"""``kill -9`` mid-epoch, then ``ckpt_path=last``: the resumed run ends exactly where an uninterrupted
run with the same seed ends (CPU, deterministic mode), on real subprocesses."""

import csv
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from resnet_switch.training.checkpointing import load_checkpoint

from .helpers import REPO

STEPS_PER_EPOCH = 4  # 64 samples / batch 16
ARGS = [
    "model=resnet20", "model.base_width=4", "data.resolutions=[16,12]", "data.batch_size=16",
    "data.num_workers=1", "data.train_samples=64", "data.val_samples=32", "trainer.max_epochs=2",
    "trainer.accelerator=cpu", "trainer.deterministic=true", "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1", "callbacks.progress_bar=null", "logger=csv",
    "callbacks.last_checkpoint.every_n_train_steps=1",
]


def _command(run_dir, *extra):
    return [sys.executable, "-m", "resnet_switch.train", *ARGS, f"hydra.run.dir={run_dir}", *extra]


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline")


def _run(run_dir, *extra):
    proc = subprocess.run(_command(run_dir, *extra), capture_output=True, text=True, cwd=REPO, env=_env(),
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _final_acc1_mean(run_dir):
    """The last logged ``val/acc1_mean`` (the newest CSV version: a resumed run writes a new one)."""
    newest = sorted((run_dir / "csv").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name[8:]))[-1]
    values = [r["val/acc1_mean"] for r in csv.DictReader(newest.open()) if r.get("val/acc1_mean")]
    return float(values[-1])


@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume_reaches_the_uninterrupted_result(tmp_path):
    # a random mid-epoch step (KILL_STEP=k reproduces one); the step-k checkpoint is then on disk
    step = int(os.environ.get("KILL_STEP") or random.choice([s for s in range(1, 2 * STEPS_PER_EPOCH)
                                                             if s % STEPS_PER_EPOCH]))
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    _run(straight)

    marker = tmp_path / "hanging"
    proc = subprocess.Popen(
        _command(killed, "+callbacks.hang._target_=tests.helpers.HangAtStep", f"+callbacks.hang.step={step}",
                 f"+callbacks.hang.marker={marker}"),
        cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not marker.exists():
        assert proc.poll() is None, f"run ended before step {step}: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "timed out waiting for the run to reach the kill step"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    ckpt = load_checkpoint(killed / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == step, f"kill step {step}"
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"epoch": step // STEPS_PER_EPOCH, "batches": step % STEPS_PER_EPOCH}]
    _run(killed, "ckpt_path=last")

    assert _final_acc1_mean(killed) == _final_acc1_mean(straight), f"kill step {step}"
    a = load_checkpoint(straight / "checkpoints" / "last.ckpt")
    b = load_checkpoint(killed / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 2 * STEPS_PER_EPOCH
    for key, value in a["state_dict"].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, b["state_dict"][key]), f"{key} (kill step {step})"
    assert (killed / "results.csv").read_text() == (straight / "results.csv").read_text()
