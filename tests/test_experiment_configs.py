"""Every paper recipe in conf/experiment composes and builds its method with the paper's settings."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from resnet_switch.cli.overrides import CONF_DIR
from resnet_switch.errors import ConfigError
from resnet_switch.methods import build_method
from resnet_switch.train import check_init_options
from resnet_switch.training.tasks import method_arguments

from .helpers import run_cli

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml") if not p.stem.startswith("detection_"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_builds(name):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={name}", "data.root=/imagenet", "run_dir=/tmp/x"])
    method_name, model_name = name.split("_")[:2]
    assert cfg.method.name == method_name and cfg.model.name == model_name
    assert cfg.data.name == "imagefolder" and cfg.trainer.strategy == "ddp"
    method = build_method(cfg.method.name, list(cfg.data.resolutions), **method_arguments(dict(cfg.method)))
    assert method.resolutions[0] == 224
    if method_name in ("mutualnet", "usnet"):  # lr: ImageNet 0.5 (A.1), VGG-16 0.01 (A.2), transfer 0.1 (4.2)
        paper_lr = 0.1 if name.endswith("_transfer") else 0.01 if model_name == "vgg16" else 0.5
        assert cfg.optim.decay_scope == "conv_fc" and cfg.optim.lr == paper_lr
    if model_name == "mobilenetv2" and method_name == "san":
        assert method.layer_kwargs(model_name)["meta_roles"] == "all"  # every conv meta in SAN's MobileNetV2
    elif method_name == "san":  # SAN's ResNets: the factory default (block convs + shortcuts)
        assert "meta_roles" not in method.layer_kwargs(model_name)


def test_transfer_recipe_is_mutualnets_fine_tuning_and_needs_a_checkpoint():
    """Sec. 4.2: batch 256, lr 0.1 cosine, 100 epochs, widths [0.25, 1], resolutions 224..128."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=mutualnet_mobilenetv1_transfer", "run_dir=/tmp/x"])
    assert cfg.model.init.ckpt == "required"
    assert cfg.data.batch_size * 8 == 256 and cfg.trainer.max_epochs == 100 and cfg.optim.lr == 0.1
    assert list(cfg.method.width_range) == [0.25, 1.0] and list(cfg.data.resolutions) == [224, 192, 160, 128]
    with pytest.raises(ConfigError, match=r"^model.init.ckpt: this experiment fine-tunes"):
        check_init_options(cfg)


@pytest.mark.parametrize("overrides,lr", [
    (["method=san", "model=mobilenetv2"], 0.006),                    # the pair's file (method_model/)
    (["method=rsnet", "model=mobilenetv2"], 0.006),
    (["method=rsnet", "model=mobilenetv1"], 0.01),
    (["method=san", "model=mobilenetv2", "optim.lr=0.05"], 0.05),    # the command line wins
    (["experiment=san_mobilenetv2_imagenet", "data.root=/imagenet"], 0.05),  # a paper recipe wins
    (["method=san", "model=resnet20"], 0.02),                        # no file: optim's default
    ([], 0.02),
])
def test_method_model_file_sets_the_pairs_lr_below_recipes_and_the_command_line(overrides, lr):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, "run_dir=/tmp/x"])
    assert cfg.optim.lr == lr


@pytest.mark.parametrize("overrides,logged", [
    (["method=san", "model=mobilenetv2", "method.meta=bogus"], True),   # the pair has its own file
    (["method=mutualnet", "method.n_random=-1"], False),                 # mutualnet_resnet20: no file
])
def test_run_log_names_the_pair_file_only_when_it_exists(overrides, logged, tmp_path):
    # a bad method option stops the run right after the log line, before anything is built
    result = run_cli("resnet_switch.train", *overrides, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2, result.stderr[-500:]
    out = result.stdout + result.stderr
    assert ("this pair's own settings (conf/method_model/san_mobilenetv2.yaml): optim.lr=0.006" in out) is logged
    assert ("method_model=" in out) is logged
