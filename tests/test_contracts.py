"""The layer-factory and switchable-leaf contracts, every backbone x factory x quantizer, and the
registries' contracts.

Every registered factory (and the LQ wrapper) has exactly the signatures of ``LayerFactory``; every
layer class with a plain equivalent is a ``SwitchableLeaf``. Every backbone the registry holds, built
(at the small size it registers, ``tiny``) with every factory, float and ``quant=lq``, either runs
(output shape, and for plain / private BN the materialised network gives the same logits) or is
refused in one line by the method's check (``Method.check_backbone``, which ``create_model`` and the
train command ask before building). A registry finds the modules of its package without a list, and
every method's step calls ``backward`` exactly ``backward_calls()`` times.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys

import pytest
import torch
from torch import nn

import resnet_switch.layers as layers_pkg
import resnet_switch.models as models_pkg
from resnet_switch.data.multires import MultiResBatch
from resnet_switch.detection.transform import SwitchableTransform
from resnet_switch.errors import ConfigError
from resnet_switch.layers.contracts import LayerFactory, SwitchableLeaf, switchable_leaves
from resnet_switch.layers.factory import build_layers, list_layer_factories
from resnet_switch.layers.lq import LQActQuantizer
from resnet_switch.layers.quant import QUANTIZABLE_LAYERS, QuantLayers
from resnet_switch.methods import build_method, list_methods
from resnet_switch.models import BACKBONES, create_model, list_backbones
from resnet_switch.models.surgery import is_converted
from resnet_switch.registry import Registry
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
# one method per factory (the factory it asks for is checked below): the train command's path
FACTORY_METHODS = {"plain": ("parallel", {"private_bn": False}), "private_bn": ("rsnet", {}), "san": ("san", {}),
                   "private_conv": ("san", {"conv": "private"}), "slimmable": ("usnet", {}),
                   "slimmable_per_width_bn": ("snet", {})}


def test_the_matrix_covers_every_factory():
    assert {name.removesuffix("_per_width_bn") for name in FACTORY_METHODS} == set(FACTORY_NAMES)


def test_the_registry_holds_every_backbone_with_a_config_file():
    """The backbones come from the registry; each one a ``model=NAME`` selects has a registered
    backbone, and each registered backbone has its config file."""
    from resnet_switch.cli.overrides import CONF_DIR

    files = {p.stem for p in (CONF_DIR / "model").glob("*.yaml")}
    assert files == set(list_backbones())


def small_resolutions(backbone: str) -> list[int]:
    """Two small training resolutions the backbone can classify (VGG-16: >= 32 px)."""
    least = BACKBONES.info(backbone)["min_resolution"]
    return [max(16, least + 8), max(8, least)]


@pytest.mark.parametrize("quant", [None, LQ], ids=["none", "lq"])
@pytest.mark.parametrize("factory", list(FACTORY_METHODS))
@pytest.mark.parametrize("backbone", list_backbones())
def test_every_backbone_with_every_factory_runs_or_is_refused_in_one_line(backbone, factory, quant):
    torch.manual_seed(0)
    resolutions = small_resolutions(backbone)
    method_name, method_kwargs = FACTORY_METHODS[factory]
    method = build_method(method_name, resolutions, **method_kwargs)
    assert method.layers == factory.removesuffix("_per_width_bn")
    info = BACKBONES.info(backbone)
    if info.get("requires"):
        pytest.importorskip(info["requires"], reason=f"{info['requires']} is an optional extra")
    kwargs = info["tiny"]
    if is_converted(backbone) and (quant is not None or method.layers == "slimmable"):
        with pytest.raises(ConfigError) as refused:
            create_model(backbone, method=method, num_classes=10, quant=quant, **kwargs)
        message = str(refused.value)
        assert "\n" not in message and message.startswith("quant: " if quant is not None else "method: ")
        return
    if quant is not None and method.layers not in QUANTIZABLE_LAYERS:
        with pytest.raises(ConfigError) as refused:
            create_model(backbone, method=method, num_classes=10, quant=quant, **kwargs)
        message = str(refused.value)
        assert "\n" not in message and message.startswith(f"quant: method={method_name} is not supported")
        return
    net = create_model(backbone, method=method, num_classes=10, quant=quant, **kwargs)
    assert net.spec["resolutions"] == resolutions and net.spec["layers"] == method.layers
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
    net = create_model("vgg16", [32, 16], layers="private_bn", num_classes=10, hidden=16,
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


# ---- registration without a hand-kept list ------------------------------------------------------
def test_a_registry_imports_every_module_of_its_package_on_first_lookup(tmp_path, monkeypatch):
    """A part is registered by its module existing in the package: nothing imports the modules
    before the first lookup, and every one of them is imported then."""
    package = tmp_path / "parts_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from resnet_switch.registry import Registry\n"
                                         "PARTS = Registry('part', field='part.name', package=__name__)\n")
    for name in ("alpha", "beta"):
        (package / f"{name}.py").write_text(f"from . import PARTS\n\n\n@PARTS.register({name!r})\n"
                                            f"def {name}():\n    return {name!r}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    parts = importlib.import_module("parts_pkg").PARTS
    try:
        assert "parts_pkg.alpha" not in sys.modules and "parts_pkg.beta" not in sys.modules
        assert parts.list() == ["alpha", "beta"] and parts.get("beta")() == "beta"
        with pytest.raises(ConfigError, match=r"^part.name: unknown part 'gamma'; choose one of \['alpha', 'beta'\]"):
            parts.get("gamma")
    finally:
        for module in ("parts_pkg", "parts_pkg.alpha", "parts_pkg.beta"):
            sys.modules.pop(module, None)


def test_a_registry_without_a_package_holds_what_was_registered():
    parts: Registry = Registry("part", field="part.name")
    parts.add("one", object)
    assert parts.list() == ["one"] and "two" not in parts


# ---- a method's backward calls follow from per_config_backward ----------------------------------
METHOD_KWARGS = {"mutualnet": {"n_random": 1}, "usnet": {"n_random": 3}, "snet": {"widths": [1.0, 0.5]}}
# by hand, at resolutions [16, 12, 8]: one backward for the parallel family (MRED needs every logit);
# SAN one per resolution; the sandwich rule full + smallest + n_random widths; S-Net one per width
BACKWARDS = {"individual": 1, "parallel": 1, "rsnet": 1, "san": 3, "mutualnet": 3, "usnet": 5, "snet": 2}


@pytest.mark.parametrize("name", list_methods())
def test_training_step_calls_backward_as_often_as_the_method_says(name):
    """``backward_calls()`` (what DDP's no-sync and the NaN guard rely on) is the number of
    ``backward`` calls a step makes, derived from ``per_config_backward`` (a new method must be in
    the hand count above)."""
    torch.manual_seed(0)
    resolutions = [16] if name == "individual" else [16, 12, 8]
    method = build_method(name, resolutions, **METHOD_KWARGS.get(name, {}))
    net = create_model("resnet20", method=method, num_classes=4, base_width=2).train()
    batch = MultiResBatch(torch.randn(4, 3, 16, 16), torch.arange(4))
    losses: list[torch.Tensor] = []
    method.training_step(net, batch, losses.append)
    assert len(losses) == method.backward_calls() == BACKWARDS[name]
    assert method.per_config_backward == (name in ("san", "mutualnet", "usnet", "snet"))
