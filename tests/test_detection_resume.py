"""Detection resumes exactly like classification: a run killed mid-epoch and resumed with
``ckpt_path=last`` ends with the weights of an uninterrupted run, bit for bit."""

import pytest
import torch

from resnet_switch.train import train
from resnet_switch.training.checkpointing import load_checkpoint

from .helpers import TrainingCrash
from .test_detection_train import compose_train

# MutualNet-style detection (a random width and random sizes per step, BN post-statistics), 6 images of
# batch 2: 3 steps per epoch, a checkpoint after every step
RUN = [
    "task=detection", "method.n_random=1", "model.base_width=8", "data.resolutions=[64,48]", "data.batch_size=2", "data.num_workers=0",
    "data.train.num_samples=6", "data.val.num_samples=2", "data.train.image_size=64", "data.calibration_samples=2",
    "detector.fpn_channels=16", "detector.box_head_dim=32", "detector.mask_head_channels=[8]",
    "trainer.max_epochs=2", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "trainer.deterministic=true",
    "trainer.log_every_n_steps=1", "logger=csv", "callbacks.progress_bar=null",
    "callbacks.last_checkpoint.every_n_train_steps=1",
]


def _ckpt(run_dir):
    return load_checkpoint(run_dir / "checkpoints" / "last.ckpt")


def test_detection_crash_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    straight = train(compose_train(tmp_path / "straight", *RUN))
    crashed = tmp_path / "crashed"
    with pytest.raises(TrainingCrash):
        train(compose_train(crashed, *RUN, "+callbacks.crash._target_=tests.helpers.CrashAtStep",
                            "+callbacks.crash.step=4"))
    ckpt = _ckpt(crashed)
    assert ckpt["global_step"] == 4 and ckpt["epoch"] == 1  # epoch 1, after its 1st of 3 batches
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "batches": 1}]
    assert "rng_states" in ckpt
    resumed = train(compose_train(crashed, *RUN, "ckpt_path=last"))
    assert resumed == straight  # final AP per configuration, exactly
    a, b = _ckpt(tmp_path / "straight"), _ckpt(crashed)
    assert a["global_step"] == b["global_step"] == 6
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=0, msg=key)
