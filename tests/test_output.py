"""What a run prints when its output goes to a file or a CI log, and the speed default it picks."""

import pytest

from resnet_switch.models import create_model
from resnet_switch.training.speed import onednn_nhwc_hazard, resolve_memory_format

from .helpers import TINY, run_cli

QUIET_TINY = [a for a in TINY if not a.startswith(("trainer.enable_progress_bar", "callbacks.progress_bar"))]


def test_run_logs_plain_progress_lines_and_no_third_party_noise(tmp_path):
    proc = run_cli("resnet_switch.train", *QUIET_TINY, "trainer.limit_train_batches=4", "data.val_samples=16",
                   "callbacks.progress_bar.every_n_steps=2", f"hydra.run.dir={tmp_path}", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "\r" not in out and "it/s]" not in out  # no redrawn tqdm bar
    steps = [line for line in out.splitlines() if line.startswith("epoch 1/1  step ")]
    assert [line.split()[3] for line in steps] == ["2/4", "4/4"]
    assert all("train/loss" in line and "it/s)" in line for line in steps)
    assert any(line.startswith("epoch 1/1  validation  val/acc1_mean ") for line in out.splitlines())
    assert "| 16 |" in out  # the results table
    both = out + proc.stderr
    for noise in ("litlogger", "LeafSpec", "estimate number of stepping batches", "ConfigStore schema"):
        assert noise not in both, noise


@pytest.mark.parametrize("base_width,on_cuda,expected", [
    (16, False, "channels_last"),  # oneDNN's NHWC kernels: the faster CPU layout
    (16, True, "contiguous"),
    (4, False, "contiguous"),  # a 1x1 stride-2 conv with 4 input channels: torch 2.14.1's oneDNN bug
])
def test_memory_format_auto(base_width, on_cuda, expected):
    net = create_model("resnet20", [16, 12], num_classes=10, base_width=base_width)
    assert onednn_nhwc_hazard(net) == (base_width < 8)
    assert resolve_memory_format("auto", net, on_cuda) == expected
    assert resolve_memory_format("contiguous", net, False) == "contiguous"
