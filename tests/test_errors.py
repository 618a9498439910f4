"""User errors against bugs at the command boundary (resnet_switch.errors): a ConfigError is one line
and exit 2; anything else keeps its traceback, exits 1 and ends with the closing line."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from resnet_switch.errors import EXIT_BUG, EXIT_USER_ERROR, ConfigError, MissingFileError, user_errors
from resnet_switch.training.instantiate import instantiate_checked
from resnet_switch.user_files import load_tensor_dict, load_yaml

from .helpers import REPO, TINY, run_cli

CLOSING = "resnet_switch: this is a bug, not a problem with your input"


def _run_train_with_bug(tmp_path, extra_env=None):
    """``python -m resnet_switch.train`` with a KeyError injected into RS-Net's training step."""
    script = tmp_path / "buggy_train.py"
    script.write_text(textwrap.dedent("""
        import sys
        from resnet_switch.methods import rsnet

        def broken_step(self, net, batch, backward):
            return {}["a key the step never had"]

        rsnet.RSNet.training_step = broken_step
        from resnet_switch.train import main

        sys.argv = ["train", *sys.argv[1:]]
        main()
    """))
    env = dict(os.environ, WANDB_MODE="offline", HYDRA_FULL_ERROR="0", **(extra_env or {}))
    return subprocess.run([sys.executable, str(script), *TINY, "trainer.max_epochs=1",
                           f"hydra.run.dir={tmp_path / 'run'}", f"run_dir={tmp_path / 'run'}"],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=300)


def test_a_bug_inside_a_method_step_keeps_its_traceback_and_is_not_exit_2(tmp_path):
    proc = _run_train_with_bug(tmp_path)
    assert proc.returncode == EXIT_BUG, proc.stderr[-3000:]
    assert "Traceback (most recent call last)" in proc.stderr
    assert "KeyError: 'a key the step never had'" in proc.stderr
    assert "broken_step" in proc.stderr  # the frame of the bug is shown
    assert proc.stderr.strip().splitlines()[-1].startswith(CLOSING), proc.stderr[-1000:]
    assert not any(line.startswith("error:") for line in proc.stderr.splitlines())


def test_user_errors_boundary_in_process(capsys):
    with pytest.raises(SystemExit) as stop:
        with user_errors():
            raise ConfigError("data.batch_size: must be >= 1, got 0\nsecond line is not shown")
    assert stop.value.code == EXIT_USER_ERROR
    assert capsys.readouterr().err == "error: data.batch_size: must be >= 1, got 0\n"

    with pytest.raises(SystemExit) as stop:
        with user_errors():
            {}["missing"]  # a bug: a KeyError from our code is not a user error any more
    assert stop.value.code == EXIT_BUG
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "KeyError: 'missing'" in err
    assert err.strip().splitlines()[-1].startswith(CLOSING) and "(KeyError)" in err.strip().splitlines()[-1]

    with pytest.raises(SystemExit) as stop, user_errors():
        raise ValueError("a ValueError from inside torch is a bug too")
    assert stop.value.code == EXIT_BUG


def test_debug_switch_shows_the_traceback_of_a_user_error(monkeypatch):
    monkeypatch.setenv("RESNET_SWITCH_DEBUG", "1")
    with pytest.raises(ConfigError, match="data.batch_size"), user_errors():
        raise ConfigError("data.batch_size: must be >= 1")
    proc = run_cli("resnet_switch.train", "data.batch_size=0", "hydra.run.dir=/tmp/rs_bad_input",
                   env_extra={"RESNET_SWITCH_DEBUG": "1"})
    assert proc.returncode not in (0, EXIT_USER_ERROR)
    assert "Traceback" in proc.stderr and "ConfigError: data.batch_size" in proc.stderr


def test_missing_file_error_is_both_kinds():
    err = MissingFileError("ckpt: no file x")
    assert isinstance(err, ConfigError) and isinstance(err, FileNotFoundError)


# ------------------------------------------------------------------ the three named bad inputs
def test_damaged_pretrained_state_dict_for_a_timm_model_is_one_line(tmp_path):
    pytest.importorskip("timm")
    damaged = tmp_path / "weights.pth"
    torch.save({"conv1.weight": torch.zeros(2, 3, 3, 3)}, damaged)
    damaged.write_bytes(damaged.read_bytes()[:40])  # truncated
    tiny = [a for a in TINY if not a.startswith("model")]
    proc = run_cli("resnet_switch.train", *tiny, "model=timm", "model.arch=resnet18", f"model.pretrained={damaged}",
                   "data.resolutions=[16]", f"hydra.run.dir={tmp_path / 'run'}", f"run_dir={tmp_path / 'run'}")
    _assert_one_line(proc, "model.pretrained:")


def test_malformed_claims_yaml_for_report_is_one_line(tmp_path):
    claims = tmp_path / "claims.yaml"
    claims.write_text("- claim: a\n  better: [unclosed\n")
    (tmp_path / "runs").mkdir()
    proc = run_cli("resnet_switch.report", str(tmp_path / "runs"), f"claims={claims}")
    _assert_one_line(proc, "claims:")


def test_a_data_set_smaller_than_one_batch_is_one_line(tmp_path):
    proc = run_cli("resnet_switch.train", *TINY, "data.train_samples=8", "data.batch_size=16",
                   f"hydra.run.dir={tmp_path / 'run'}", f"run_dir={tmp_path / 'run'}")
    _assert_one_line(proc, "data.batch_size: 16 is more than the 8 training images")


def _assert_one_line(proc, start):
    assert proc.returncode == EXIT_USER_ERROR, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {start}"), proc.stderr[-2000:]


# ---------------------------------------------------------------------- the file boundaries
def test_load_tensor_dict_names_the_field(tmp_path):
    with pytest.raises(MissingFileError, match=r"^model\.pretrained: no file"):
        load_tensor_dict(tmp_path / "absent.pth", "model.pretrained")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a zip or pickle")
    with pytest.raises(ConfigError, match=r"^model\.pretrained: .* is damaged, truncated or not a PyTorch file"):
        load_tensor_dict(garbage, "model.pretrained")
    tensor_only = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor_only)
    with pytest.raises(ConfigError, match=r"holds a Tensor, not a state dict"):
        load_tensor_dict(tensor_only, "model.pretrained")
    good = tmp_path / "good.pth"
    torch.save({"w": torch.arange(3.0)}, good)
    assert torch.equal(load_tensor_dict(good, "model.pretrained")["w"], torch.arange(3.0))


def test_load_yaml_names_the_field(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match=r"^claims: .* is not valid YAML"):
        load_yaml(bad, "claims", "give a list")
    good = tmp_path / "g.yaml"
    good.write_text("- claim: x\n  at: [32, 16]\n")
    assert load_yaml(good, "claims", "give a list") == [{"claim": "x", "at": [32, 16]}]


# ------------------------------------------------------------------------ Hydra instantiate
class _Target:
    def __init__(self, x: int = 1):
        if x == 3:
            raise ConfigError("x: must not be 3; use 1")
        if x == 4:
            {}["a bug"]


def _cfg(**entries):
    from omegaconf import OmegaConf

    return OmegaConf.create({"_target_": f"{__name__}._Target", **entries})


def test_instantiate_reports_the_configs_mistakes_and_keeps_bugs():
    with pytest.raises(ConfigError, match=r"^data: .*unexpected keyword argument 'y'"):
        instantiate_checked(_cfg(y=2), "data")
    with pytest.raises(ConfigError, match=r"^data\._target_: cannot import 'no_such_module\.Thing'"):
        instantiate_checked({"_target_": "no_such_module.Thing"}, "data")
    with pytest.raises(ConfigError, match=r"^x: must not be 3"):
        instantiate_checked(_cfg(x=3), "data")
    with pytest.raises(Exception) as err:  # a bug in a constructor is not turned into a user error
        instantiate_checked(_cfg(x=4), "data")
    assert not isinstance(err.value, ConfigError)
    assert isinstance(err.value.__cause__, KeyError)


def test_a_library_constructor_rejecting_a_value_is_the_configs_mistake():
    with pytest.raises(ConfigError, match=r"^trainer: Precision 17 is invalid"):
        instantiate_checked({"_target_": "lightning.pytorch.Trainer", "precision": 17}, "trainer")


def test_a_file_torch_load_cannot_read_is_one_line_whatever_torch_raises(tmp_path):
    from resnet_switch.training.checkpointing import CheckpointError, load_checkpoint

    text = tmp_path / "notes.ckpt"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")  # torch's unpickler raises IndexError on this
    with pytest.raises(CheckpointError, match=r"^ckpt: .* is damaged, truncated or not a checkpoint"):
        load_checkpoint(text)


def test_report_on_a_damaged_run_folder_is_one_line(tmp_path):
    run = tmp_path / "runs" / "a"
    run.mkdir(parents=True)
    (run / "run.json").write_text("{not json")
    (run / "results.csv").write_text("resolution,top1\n32,90.0\n")
    _assert_one_line(run_cli("resnet_switch.report", str(tmp_path / "runs")), "report: ")
    (run / "run.json").write_text('{"label": "a", "seed": 0}')
    (run / "results.csv").write_text("resolution,top1\n32,ninety\n")
    _assert_one_line(run_cli("resnet_switch.report", str(tmp_path / "runs")), "report: ")
