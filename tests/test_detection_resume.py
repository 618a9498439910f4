"""Detection resumes exactly like classification: a run killed mid-epoch and resumed with
``ckpt_path=last`` ends with the weights of an uninterrupted run, bit for bit."""

from .helpers import assert_crash_then_resume_is_exact
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


def test_detection_crash_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    # the crash comes after step 4: epoch 1, after its 1st of 3 batches; 6 steps in all
    assert_crash_then_resume_is_exact(compose_train, tmp_path, RUN,
                                      crash_step=4, epoch=1, batches=1, total_steps=6)
