"""Bad input on the command line: exit code 2, ONE line on stderr naming the field, no traceback,
and nothing starts (each case fails before training)."""

import pytest
from omegaconf import OmegaConf

from resnet_switch.cli.overrides import CONF_DIR
from resnet_switch.cli.ranges import check_ranges, rules_for
from resnet_switch.errors import ConfigError

from .helpers import compose_train, run_cli

TRAIN_CASES = [
    (["method=foo"], "method"),
    (["model=vgg19"], "model"),
    (["data=imagenet21k"], "data"),
    (["data.resolutions=[16,32]"], "data.resolutions"),
    (["data.resolutions=[32,32]"], "data.resolutions"),
    (["data.resolutions=[32,0]"], "data.resolutions"),
    (["data.resolutions=[32,-16]"], "data.resolutions"),
    (["ckpt_path=/no/such/file.ckpt"], "ckpt"),
    (["model.init.ckpt=/no/such/file.ckpt"], "model.init.ckpt"),
    (["model.init.bn_mode=closest", "model.init.ckpt=/no/such/file.ckpt"], "model.init"),
    (["model.init_from=/no/such/file.ckpt"], "model.init_from: renamed; use model.init.ckpt=PATH"),
    (["model.init_bn_mode=nearest"], "model.init_bn_mode: renamed; use model.init.bn_mode="),
    (["model.init_classifier=replace"], "model.init_classifier: renamed; use model.init.classifier="),
    (["data=imagefolder", "data.root=/no/such/dir"], "data.root"),
    (["data=cifar10", "data.root=/no/such/dir"], "data"),
    (["method.distill=fancy"], "method.distill"),
    (["method=individual"], "data.resolutions"),
    (["trainer.max_epochs=abc"], "trainer.max_epochs"),
    (["data.batch_size=0"], "data.batch_size"),
    (["model.base_width=0"], "model.base_width"),
    (["optim.lr=-0.1"], "optim.lr"),
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
    (["ckpt=/etc/hostname", "batch_size=8"], "batch_size: renamed; use data.batch_size=N"),
    (["ckpt=/etc/hostname", "num_workers=2"], "num_workers: renamed; use data.num_workers=N"),
]


@pytest.mark.parametrize("args,field", EVALUATE_CASES, ids=[" ".join(a) for a, _ in EVALUATE_CASES])
def test_evaluate_rejects_bad_input(args, field):
    _assert_one_line_error(run_cli("resnet_switch.evaluate", *args, "hydra.run.dir=/tmp/rs_bad_input"), field)


# Every numeric setting of model/, data/, optim/ and trainer/ has a range rule; checked in-process
# (the CLI path above is the same ConfigError, printed as one line).
RANGE_CASES = [
    (["model.base_width=0"], "model.base_width: expected an integer >= 1, got 0"),
    (["model=mobilenetv2", "model.width_mult=0"], "model.width_mult: expected a number > 0, got 0"),
    (["model=mobilenetv2", "model.dropout=1.0"], "model.dropout: expected a number in [0, 1), got 1.0"),
    (["data.num_workers=-1"], "data.num_workers: expected an integer >= 0"),
    (["data.crop_scale=[0.9,0.2]"], "data.crop_scale: expected [low, high] with 0 < low <= high <= 1"),
    (["data.crop_scale=[0.0,1.0]"], "data.crop_scale:"),
    (["data.val_crop_ratio=1.5"], "data.val_crop_ratio: expected a number in (0, 1]"),
    (["data.train_samples=0"], "data.train_samples: expected an integer >= 1"),
    (["data.synthetic.num_classes=1"], "data.synthetic.num_classes: expected an integer in [2, 15]"),
    (["optim.lr=0"], "optim.lr: expected a number > 0, got 0"),
    (["optim.lr=fast"], "optim.lr: expected a number > 0, got 'fast'"),
    (["optim.momentum=1.0"], "optim.momentum: expected a number in [0, 1)"),
    (["optim.weight_decay=-1e-4"], "optim.weight_decay: expected a number >= 0"),
    (["optim.warmup_epochs=-1"], "optim.warmup_epochs: expected a number >= 0"),
    (["trainer.max_epochs=0"], "trainer.max_epochs: expected an integer >= 1, got 0"),
    (["trainer.devices=0"], "trainer.devices: expected auto, a device count >= 1"),
    (["trainer=ddp", "trainer.num_nodes=0"], "trainer.num_nodes: expected an integer >= 1"),
    (["trainer.log_every_n_steps=0"], "trainer.log_every_n_steps: expected an integer >= 1"),
    (["trainer.limit_train_batches=1.5"], "trainer.limit_train_batches: expected a batch count >= 1 or a fraction"),
    (["trainer.limit_val_batches=0"], "trainer.limit_val_batches: expected a batch count >= 1 or a fraction"),
    (["trainer.check_val_every_n_epoch=0"], "trainer.check_val_every_n_epoch: expected an integer >= 1"),
    (["seed=-1"], "seed: expected an integer >= 0, got -1"),
    (["calibration_samples=0"], "calibration_samples: expected an integer >= 1, got 0"),
]


@pytest.mark.parametrize("overrides,message", RANGE_CASES, ids=[" ".join(o) for o, _ in RANGE_CASES])
def test_numeric_settings_out_of_range_name_the_field(overrides, message):
    cfg = compose_train(*overrides)
    with pytest.raises(ConfigError) as err:
        check_ranges(cfg)
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("overrides", [[], ["model=mobilenetv2"], ["data=fashion_mnist"], ["trainer=ddp"],
                                       ["trainer.limit_train_batches=0.5", "trainer.limit_val_batches=3"]])
def test_valid_settings_pass_the_range_checks(overrides):
    check_ranges(compose_train(*overrides))


def _numeric_leaves(node, prefix):
    """Dotted keys of numbers (and lists of numbers) in a composed config node."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _numeric_leaves(value, f"{prefix}.{key}")
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield prefix
    elif isinstance(node, list) and node and all(isinstance(v, (int, float)) for v in node):
        yield prefix


CHECKED_ELSEWHERE = {"data.resolutions", "data.test_resolutions"}  # switch.check_resolutions


@pytest.mark.parametrize("group", ["model", "data", "optim", "trainer"])
def test_every_numeric_field_of_a_group_has_a_range_rule(group):
    options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
    missing = set()
    for option in options:
        text = (CONF_DIR / group / f"{option}.yaml").read_text()
        extra = ["data.root=/tmp"] if group == "data" and "root: ???" in text else []
        extra += ["task=detection"] if "task: detection" in text else []
        cfg = compose_train(f"{group}={option}", *extra)
        node = OmegaConf.to_container(cfg[group], resolve=True)
        missing |= {key for key in _numeric_leaves(node, group) if key not in rules_for(cfg)} - CHECKED_ELSEWHERE
    assert not missing, f"numeric settings without a rule (cli.ranges.RULES or the registration): {sorted(missing)}"
