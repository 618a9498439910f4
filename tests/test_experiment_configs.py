"""Every paper recipe in conf/experiment composes and builds its method with the paper's settings."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from resnet_switch.cli.overrides import CONF_DIR
from resnet_switch.methods import build_method
from resnet_switch.train import method_kwargs

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml") if not p.stem.startswith("detection_"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_builds(name):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={name}", "data.root=/imagenet", "run_dir=/tmp/x"])
    method_name, model_name = name.split("_")[:2]
    assert cfg.method.name == method_name and cfg.model.name == model_name
    assert cfg.data.name == "imagefolder" and cfg.trainer.strategy == "ddp"
    method = build_method(cfg.method.name, list(cfg.data.resolutions), **method_kwargs(cfg))
    assert method.resolutions[0] == 224
    if method_name in ("mutualnet", "usnet"):
        assert cfg.optim.decay_scope == "conv_fc" and cfg.optim.lr == 0.5
    if model_name == "mobilenetv2" and method_name == "san":
        assert method.layer_kwargs()["meta_roles"] == "all"  # every conv meta in SAN's MobileNetV2
