"""The layer-factory and switchable-leaf contracts, and every backbone x factory x quantizer.

Every registered factory (and the LQ wrapper) has exactly the signatures of ``LayerFactory``; every
layer class with a plain equivalent is a ``SwitchableLeaf``. Every backbone built with every
factory, float and ``quant=lq``, either runs (output shape, and for plain / private BN the
materialised network gives the same logits) or is refused in one line by the check the train
command calls before building (``check_quant_method``).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
import torch
from torch import nn

import resnet_switch.layers as layers_pkg
import resnet_switch.models as models_pkg
from resnet_switch.detection.transform import SwitchableTransform
from resnet_switch.layers.contracts import LayerFactory, SwitchableLeaf, switchable_leaves
from resnet_switch.layers.factory import build_layers, list_layer_factories
from resnet_switch.layers.lq import LQActQuantizer
from resnet_switch.layers.quant import QUANTIZABLE_LAYERS, QuantLayers
from resnet_switch.methods import build_method
from resnet_switch.methods.build import build_net_for_method, check_quant_method
from resnet_switch.models import build_switchable, list_backbones
from resnet_switch.switch import SubnetConfig, SwitchState

from .helpers import run_cli

FACTORY_NAMES = ("plain", "private_bn", "san", "private_conv", "slimmable")
LQ = {"weight_bits": 2, "act_bits": 2}


def _contract_signature(name: str) -> inspect.Signature:
    sig = inspect.signature(getattr(LayerFactory, name))
    return sig.replace(parameters=list(sig.parameters.values())[1:], return_annotation=inspect.Signature.empty)


def _bound_signature(factory, name: str) -> inspect.Signature:
    return inspect.signature(getattr(factory, name)).replace(return_annotation=inspect.Signature.empty)


def _factories() -> list[tuple[str, object]]:
    state = SwitchState((32, 16), widths=(1.0, 0.5))
    made = [(name, build_layers(name, state)) for name in list_layer_factories()]
    made += [(f"lq({name})", QuantLayers(build_layers(name, state), **LQ)) for name in QUANTIZABLE_LAYERS]
    return made


def test_every_factory_is_registered():
    assert set(FACTORY_NAMES) <= set(list_layer_factories())


@pytest.mark.parametrize("label,factory", _factories(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_factory_satisfies_the_layer_factory_contract(label, factory):
    assert isinstance(factory, LayerFactory)
    assert isinstance(factory.state, SwitchState)
    for method in ("conv", "bn", "linear"):
        got = [(p.name, p.kind, p.default) for p in _bound_signature(factory, method).parameters.values()]
        want = [(p.name, p.kind, p.default) for p in _contract_signature(method).parameters.values()]
        assert got == want, f"{label}.{method}"
    assert "in_positions" in inspect.signature(factory.linear).parameters


def _classes_with_to_plain() -> list[type]:
    """Every nn.Module class defined in resnet_switch.layers / resnet_switch.models (and the
    detector's transform) that has a ``to_plain``."""
    found = {SwitchableTransform}
    for package in (layers_pkg, models_pkg):
        for info in pkgutil.iter_modules(package.__path__, f"{package.__name__}."):
            module = importlib.import_module(info.name)
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if cls.__module__ == module.__name__ and issubclass(cls, nn.Module) and hasattr(cls, "to_plain"):
                    found.add(cls)
    return sorted(found, key=lambda c: c.__qualname__)


# LQActQuantizer.to_plain gives the fixed quantizer LQConv2d.to_plain puts in front of its conv; the
# quantizer is a part of the leaf LQConv2d (its output does not depend on the configuration)
PARTS_OF_A_LEAF = {LQActQuantizer}


def test_every_layer_with_a_plain_equivalent_is_a_switchable_leaf():
    classes = _classes_with_to_plain()
    names = {c.__name__ for c in classes}
    assert {"PrivateBatchNorm2d", "ScaleConv2d", "PrivateConv2d", "SlimmableConv2d", "SlimmableLinear",
            "SlimmableBatchNorm2d", "WidthPrivateBatchNorm2d", "LQConv2d", "SwitchableTransform"} <= names
    for cls in classes:
        if cls not in PARTS_OF_A_LEAF:
            assert issubclass(cls, SwitchableLeaf), cls.__qualname__
    for cls in PARTS_OF_A_LEAF:
        assert not issubclass(cls, SwitchableLeaf)


def test_a_leaf_must_implement_the_contract():
    class Incomplete(SwitchableLeaf):
        def to_plain(self) -> nn.Module:
            return nn.Identity()

    with pytest.raises(TypeError, match="load_plain"):
        Incomplete()


# ---- every backbone x every factory x quant=none|lq ---------------------------------------------
# small builds: build-time width multipliers / base widths where the backbone has them
BACKBONE_KWARGS = {"resnet18": {"width_mult": 0.25}, "resnet50": {"width_mult": 0.125},
                   "resnet20": {"base_width": 4}, "preresnet18": {}, "preresnet20": {"base_width": 4},
                   "mobilenetv2": {"width_mult": 0.25}, "mobilenetv1": {"width_mult": 0.25},
                   "vgg16": {"hidden": 16},
                   # converted library models (models/surgery.py): no slimmable widths, no LQ
                   "torchvision": {"arch": "resnet18"}, "timm": {"arch": "resnet18"}}
CONVERTED = ("torchvision", "timm")
# one method per factory (the factory it asks for is checked below): the train command's path
FACTORY_METHODS = {"plain": ("parallel", {"private_bn": False}), "private_bn": ("rsnet", {}), "san": ("san", {}),
                   "private_conv": ("san", {"conv": "private"}), "slimmable": ("usnet", {}),
                   "slimmable_per_width_bn": ("snet", {})}


def test_the_matrix_covers_every_backbone_and_factory():
    assert set(BACKBONE_KWARGS) == set(list_backbones())
    assert {name.removesuffix("_per_width_bn") for name in FACTORY_METHODS} == set(FACTORY_NAMES)


@pytest.mark.parametrize("quant", [None, LQ], ids=["none", "lq"])
@pytest.mark.parametrize("factory", list(FACTORY_METHODS))
@pytest.mark.parametrize("backbone", list(BACKBONE_KWARGS))
def test_every_backbone_with_every_factory_runs_or_is_refused_in_one_line(backbone, factory, quant):
    torch.manual_seed(0)
    resolutions = [40, 32] if backbone == "vgg16" else [16, 8]  # VGG-16: five 2x2 max-pools
    method_name, method_kwargs = FACTORY_METHODS[factory]
    method = build_method(method_name, resolutions, **method_kwargs)
    assert method.layers == factory.removesuffix("_per_width_bn")
    kwargs = BACKBONE_KWARGS[backbone]
    if backbone == "timm":
        pytest.importorskip("timm", reason="timm is an optional extra: pip install -e '.[timm]'")
    if backbone in CONVERTED and (quant is not None or method.layers == "slimmable"):
        with pytest.raises(ValueError) as refused:
            build_net_for_method(method, backbone, num_classes=10, quant=quant, **kwargs)
        message = str(refused.value)
        assert "\n" not in message and message.startswith("quant: " if quant is not None else "method: ")
        return
    if quant is not None and method.layers not in QUANTIZABLE_LAYERS:
        with pytest.raises(ValueError) as refused:
            check_quant_method(method, quant)
        message = str(refused.value)
        assert "\n" not in message and message.startswith("quant: ")
        return
    check_quant_method(method, quant)
    net = build_net_for_method(method, backbone, num_classes=10, quant=quant, **kwargs)
    leaves = [leaf for _, leaf in switchable_leaves(net)]
    if method.layers != "plain" or quant is not None:
        assert leaves, "a switchable network without a switchable leaf"

    top = SubnetConfig(resolutions[0], net.state.widths[0])
    net.train()
    with net.switch(top):
        loss = net(torch.randn(2, 3, top.resolution, top.resolution)).logsumexp(1).mean()
    loss.backward()
    assert torch.isfinite(loss)

    net.eval()
    configs = [SubnetConfig(r, w) for r in resolutions for w in net.state.widths]
    x = {r: torch.randn(2, 3, r, r) for r in resolutions}
    with torch.no_grad():
        for config in configs:
            with net.switch(config):
                for leaf in leaves:
                    leaf.warm_cache()
                out = net(x[config.resolution])
            assert out.shape == (2, 10) and torch.isfinite(out).all(), config
        if method.layers in ("plain", "private_bn"):
            config = SubnetConfig(resolutions[0])
            plain = net.materialize(config)
            assert not any(isinstance(m, SwitchableLeaf) for m in plain.modules())
            with net.switch(config):
                torch.testing.assert_close(plain(x[config.resolution]), net(x[config.resolution]))


def test_vgg_refuses_inputs_below_32_px_in_one_line():
    """``train model=vgg16`` with the default synthetic resolutions (32..16) stops with one line
    naming data.resolutions (exit 2) instead of a max-pool error deep inside torch."""
    net = build_switchable("vgg16", [32, 16], layers="private_bn", num_classes=10, hidden=16,
                           quant={"weight_bits": 2, "act_bits": 2}).eval()
    with torch.no_grad(), net.switch(SubnetConfig(16)), pytest.raises(ValueError) as refused:
        net(torch.randn(1, 3, 16, 16))
    message = str(refused.value)
    assert "\n" not in message and message.startswith("data.resolutions: VGG-16 needs inputs of at least 32 px")


def test_train_quant_lq_vgg16_debug_fast_exits_2_with_one_line(tmp_path):
    """``python -m resnet_switch.train quant=lq model=vgg16 debug=fast``: the LQ factory builds VGG-16
    (its first FC takes ``in_positions``); the default synthetic resolutions (32..16) are refused in
    one line naming data.resolutions before any training starts, exit 2, no traceback."""
    proc = run_cli("resnet_switch.train", "quant=lq", "model=vgg16", "debug=fast", f"hydra.run.dir={tmp_path}",
                   timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "TypeError" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: data.resolutions: vgg16 needs inputs of at least 32 px")
    assert "GPU available" not in proc.stderr + proc.stdout  # refused before the Trainer was built
