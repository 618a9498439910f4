"""Bad input on the command line: exit code 2, ONE line on stderr naming the field, no traceback,
and nothing starts (each case fails before training)."""

import pytest

from .helpers import run_cli

TRAIN_CASES = [
    (["method=foo"], "method"),
    (["model=vgg16"], "model"),
    (["data=imagenet21k"], "data"),
    (["data.resolutions=[16,32]"], "data.resolutions"),
    (["data.resolutions=[32,32]"], "data.resolutions"),
    (["data.resolutions=[32,0]"], "data.resolutions"),
    (["data.resolutions=[32,-16]"], "data.resolutions"),
    (["ckpt_path=/no/such/file.ckpt"], "ckpt"),
    (["data=imagefolder", "data.root=/no/such/dir"], "data.root"),
    (["data=cifar10", "data.root=/no/such/dir"], "data"),
    (["method.distill=fancy"], "method.distill"),
    (["method=individual"], "data.resolutions"),
    (["trainer.max_epochs=abc"], "trainer.max_epochs"),
    (["data.batch_size=0"], "data.batch_size"),
    (["not_a_key=1"], "not_a_key"),
    (["method=san", "method.meta=quadratic"], "method.meta"),
    (["method=mutualnet", "method.width_range=[1.0,0.25]"], "method.width_range"),
    (["method=mutualnet", "method.width_range=[0.0,1.0]"], "method.width_range"),
    (["method=snet", "method.widths=[1.0,1.5]"], "method.widths"),
    (["data.crop=sideways"], "data.crop"),
    (["optim.decay_scope=some"], "optim.decay_scope"),
    (["data=imagefolder", "data.root=/tmp", "data.on_bad_image=maybe"], "data.on_bad_image"),
    (["callbacks.last_checkpoint.every_n_train_steps=-1"], "callbacks.last_checkpoint.every_n_train_steps"),
    (["callbacks.last_checkpoint.every_n_train_steps=often"], "callbacks.last_checkpoint.every_n_train_steps"),
    (["memory_format=nhwc"], "memory_format"),
    (["compile=maybe"], "compile"),
    (["method=mutualnet", "compile=true"], "compile"),
    (["method=san", "quant=lq"], "quant"),
    (["quant=lq", "quant.weight_bits=7"], "quant.weight_bits"),
    (["quant=lq", "compile=true"], "compile"),
]


def _assert_one_line_error(proc, field):
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert field in errors[0], errors[0]


@pytest.mark.parametrize("args,field", TRAIN_CASES, ids=[" ".join(a) for a, _ in TRAIN_CASES])
def test_train_rejects_bad_input(args, field):
    _assert_one_line_error(run_cli("resnet_switch.train", *args, "debug=fast", "hydra.run.dir=/tmp/rs_bad_input"), field)


EVALUATE_CASES = [
    (["ckpt=/no/such/file.ckpt"], "ckpt"),
    (["ckpt=/etc/hostname"], "ckpt"),
    (["ckpt=/etc/hostname", "test_resolutions=[16,32]"], "test_resolutions"),
    (["ckpt=/etc/hostname", "bn_mode=magic"], "bn_mode"),
]


@pytest.mark.parametrize("args,field", EVALUATE_CASES, ids=[" ".join(a) for a, _ in EVALUATE_CASES])
def test_evaluate_rejects_bad_input(args, field):
    _assert_one_line_error(run_cli("resnet_switch.evaluate", *args, "hydra.run.dir=/tmp/rs_bad_input"), field)
