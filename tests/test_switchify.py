"""Model surgery (issue #22): torchvision and timm BatchNorm CNNs made switchable.

Every case starts from random weights written to a file (``model.pretrained``) with BN statistics
measured on random images (so BN matters). Checked against the libraries themselves: before training
the switchable network's outputs equal the source's at every resolution, and the materialised plain
network of every configuration loads strictly into ``torchvision.models.get_model(NAME)`` /
``timm.create_model(NAME)`` with equal outputs. Then one RS-Net and one SAN step (the BN sets and the
generated kernels become resolution-specific), the checkpoint rebuilt from the file alone, and export.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch
import torchvision
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from torch import nn

from resnet_switch.cli.overrides import CONF_DIR
from resnet_switch.data.multires import MultiResBatch
from resnet_switch.deploy.export import DEFAULTS as EXPORT_DEFAULTS
from resnet_switch.deploy.export import export
from resnet_switch.errors import ConfigError
from resnet_switch.layers.scale_conv import ScaleConv2d
from resnet_switch.layers.source_bn import SourcePrivateBatchNorm2d
from resnet_switch.methods import build_method
from resnet_switch.models import create_model, load_plain_weights, surgery, switchify
from resnet_switch.models.surgery import source_model
from resnet_switch.switch import SubnetConfig
from resnet_switch.train import train
from resnet_switch.training.checkpointing import load_checkpoint, make_checkpoint, rebuild_from_checkpoint

from .helpers import TINY, run_cli

HAS_TIMM = importlib.util.find_spec("timm") is not None
NO_TIMM = pytest.mark.skipif(not HAS_TIMM, reason="timm is an optional extra: pip install -e '.[timm]'")
CASES = [pytest.param(source, arch, id=f"{source}-{arch}", marks=[NO_TIMM] if source == "timm" else [])
         for source, arch in [("torchvision", "resnet34"), ("torchvision", "mobilenet_v3_large"),
                              ("torchvision", "efficientnet_b0"), ("torchvision", "regnet_y_400mf"),
                              ("torchvision", "shufflenet_v2_x1_0"), ("timm", "resnet50d"), ("timm", "efficientnet_b0"),
                              ("timm", "mobilenetv3_large_100"), ("timm", "regnety_008")]]
RESOLUTIONS = [48, 32]
NUM_CLASSES = 10
KIND_LAYERS = {"private_bn": "private_bn", "scale_conv": "san"}


def tiny_cfg(run_dir, *overrides: str):
    """The helpers' tiny run with a converted model instead of their resnet20."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        tiny = [o for o in TINY if not o.startswith("model")]
        return compose("train", overrides=[*tiny, f"run_dir={run_dir}", *overrides])


def library_model(source: str, arch: str) -> nn.Module:
    """The library's own constructor (the outside reference), random weights."""
    if source == "torchvision":
        return torchvision.models.get_model(arch, num_classes=NUM_CLASSES)
    import timm

    return timm.create_model(arch, pretrained=False, num_classes=NUM_CLASSES)


@torch.no_grad()
def random_weights(source: str, arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict of ``arch`` with random affine BN parameters and BN statistics measured on random
    images (every BN's exact batch statistics: eval-mode outputs of a few units, not 1e-10)."""
    torch.manual_seed(seed)
    model = library_model(source, arch)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_(0.0, 0.1)
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: one batch gives its exact statistics
    model.train()(torch.randn(4, 3, RESOLUTIONS[0], RESOLUTIONS[0]))
    return model.state_dict()


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    made: dict[tuple[str, str], object] = {}

    def get(source: str, arch: str):
        if (source, arch) not in made:
            path = tmp_path_factory.mktemp("pretrained") / f"{source}_{arch}.pth"
            torch.save(random_weights(source, arch), path)
            made[source, arch] = path
        return made[source, arch]

    return get


def converted(source: str, arch: str, layers: str, weights_path) -> nn.Module:
    net = create_model(source, RESOLUTIONS, layers=layers, num_classes=NUM_CLASSES, arch=arch)
    load_plain_weights(net, torch.load(weights_path, weights_only=True))  # what model.pretrained=FILE does
    return net.eval()


def assert_close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert b.abs().max() > 1e-3  # a meaningful comparison: the logits are not all ~0
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))


@pytest.mark.parametrize("source,arch", CASES)
@torch.no_grad()
def test_switchable_equals_the_source_and_materialises_into_it(source, arch, weights_file):
    """For both kinds (private BN; SAN's generated kernels + private BN), built by name with
    ``model.pretrained`` and by :func:`switchify` on the loaded module itself."""
    path = weights_file(source, arch)
    reference = library_model(source, arch)
    reference.load_state_dict(torch.load(path, weights_only=True), strict=True)
    reference.eval()
    plain = library_model(source, arch).eval()
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in reference.modules())
    n_conv = sum(isinstance(m, nn.Conv2d) for m in reference.modules())
    x = {r: torch.randn(2, 3, r, r) for r in RESOLUTIONS}
    want = {r: reference(x[r]) for r in RESOLUTIONS}
    for kind, layers in KIND_LAYERS.items():
        net = converted(source, arch, layers, path)
        direct = switchify(reference, RESOLUTIONS, kind=kind).eval()  # the function, on the module itself
        for candidate in (net, direct):
            assert sum(isinstance(m, SourcePrivateBatchNorm2d) for m in candidate.modules()) == n_bn
            n_meta = sum(isinstance(m, ScaleConv2d) for m in candidate.modules())
            assert n_meta == (n_conv if kind == "scale_conv" else 0)
            for r in RESOLUTIONS:
                with candidate.switch(SubnetConfig(r)):
                    assert_close(candidate(x[r]), want[r])
        for r in RESOLUTIONS:
            plain.load_state_dict(net.materialize(SubnetConfig(r)).state_dict(), strict=True)
            assert_close(plain(x[r]), want[r])


def _batch() -> MultiResBatch:
    gen = torch.Generator().manual_seed(1)
    r = RESOLUTIONS[0]
    return MultiResBatch(torch.randn(4, 3, r, r, generator=gen), torch.randint(0, NUM_CLASSES, (4,), generator=gen))


@pytest.mark.parametrize("source,arch", CASES)
def test_one_rsnet_and_one_san_step(source, arch, weights_file):
    """RS-Net: after a step the BN sets hold different statistics per resolution (private BN);
    SAN: the meta-learners' slopes move off zero, so the kernels at 48 and 32 px differ."""
    torch.manual_seed(0)
    state_dict = torch.load(weights_file(source, arch), weights_only=True)
    for name in ("rsnet", "san"):
        method = build_method(name, RESOLUTIONS)
        net = create_model(source, method=method, num_classes=NUM_CLASSES, arch=arch)
        load_plain_weights(net, state_dict)
        net.train()
        optimizer = torch.optim.SGD([*net.parameters(), *method.parameters()], lr=0.01)
        out = method.training_step(net, _batch(), lambda loss: loss.backward())
        optimizer.step()
        assert torch.isfinite(out["loss"])
        bn = next(m for m in net.modules() if isinstance(m, SourcePrivateBatchNorm2d))
        assert not torch.equal(bn.sets[0].running_mean, bn.sets[1].running_mean)
        if name == "san":
            conv = next(m for m in net.modules() if isinstance(m, ScaleConv2d))
            assert conv.meta.weight.abs().max() > 0
            with torch.no_grad():
                assert not torch.equal(conv.meta(conv.eps_of(48)), conv.meta(conv.eps_of(32)))


@pytest.mark.parametrize("source,arch", CASES)
def test_checkpoint_rebuilds_from_the_file_alone_and_exports(source, arch, weights_file, tmp_path):
    method = build_method("rsnet", RESOLUTIONS)
    net = converted(source, arch, method.layers, weights_file(source, arch))
    with torch.no_grad():  # make the two BN sets differ, so the rebuilt network must pick the right one
        for m in net.modules():
            if isinstance(m, SourcePrivateBatchNorm2d):
                m.sets[1].running_var.mul_(1.5)
    ckpt = tmp_path / "rsnet.ckpt"
    run = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "data": {"name": "synthetic", "val_crop_ratio": 0.875}}
    torch.save(make_checkpoint(method, net, {"name": "rsnet", "kwargs": {}}, run), ckpt)
    _, rebuilt, meta = rebuild_from_checkpoint(load_checkpoint(ckpt))
    assert meta["net"]["name"] == source and meta["net"]["arch"] == arch
    with torch.no_grad():
        for config, bn_mode in ((SubnetConfig(48), None), (SubnetConfig(32), None), (SubnetConfig(40), "interpolate")):
            x = torch.randn(2, 3, config.resolution, config.resolution)
            with net.switch(config, bn_mode), rebuilt.switch(config, bn_mode):
                torch.testing.assert_close(rebuilt(x), net(x), rtol=0, atol=0)
    result = export({**EXPORT_DEFAULTS, "ckpt": str(ckpt), "resolution": 40, "format": "state_dict",
                     "bn_mode": "interpolate", "out": str(tmp_path / "plain.pth")})
    assert result["checked_with"].startswith("the source architecture") and result["max_abs_diff"] <= result["allowed"]
    library_model(source, arch).load_state_dict(torch.load(tmp_path / "plain.pth", weights_only=True), strict=True)


@torch.no_grad()
def test_small_input_stem_keeps_keys_and_cuts_the_stride():
    """``small_input``: same state-dict keys as the library's model; the feature map before the
    classifier is 4x larger per side for a ResNet at 32 px (stride 8 instead of 32)."""
    net = create_model("torchvision", [32], layers="private_bn", num_classes=NUM_CLASSES, arch="resnet18",
                       small_input=True).eval()
    plain = net.materialize()
    torchvision.models.resnet18(num_classes=NUM_CLASSES).load_state_dict(plain.state_dict(), strict=True)
    assert isinstance(plain.maxpool, nn.Identity) and plain.conv1.stride == (1, 1)
    features = nn.Sequential(*list(plain.children())[:-2])
    assert features(torch.zeros(1, 3, 32, 32)).shape[-1] == 4


def test_bn_momentum_sets_every_private_set_and_rebuilds_from_the_spec():
    """``model.bn_momentum``: torchvision's MobileNetV3 keeps its BN statistics at momentum 0.01; the
    option sets every private BN set's momentum, and the checkpoint's spec rebuilds the same source."""
    def momenta(module):
        return {m.momentum for m in module.modules() if isinstance(m, nn.BatchNorm2d)}

    library = create_model("torchvision", [32, 16], layers="private_bn", num_classes=NUM_CLASSES,
                           arch="mobilenet_v3_small")
    assert momenta(library) == {0.01}
    net = create_model("torchvision", [32, 16], layers="private_bn", num_classes=NUM_CLASSES,
                       arch="mobilenet_v3_small", bn_momentum=0.1)
    assert momenta(net) == {0.1} and net.spec["bn_momentum"] == 0.1
    assert momenta(surgery.source_model(net.spec)) == {0.1}
    with pytest.raises(ConfigError, match="^model.bn_momentum: must be in"):
        surgery.build_source("torchvision", "mobilenet_v3_small", bn_momentum=1.5)


@pytest.mark.parametrize("overrides,starts", [
    (["model=timm", "model.arch=efficientnet_b0", "method=mutualnet"], "method: mutualnet is not supported with model=timm"),
    (["model=torchvision", "model.arch=resnet19"], "model.arch: unknown torchvision model 'resnet19'; did you mean 'resnet18'"),
    (["model=torchvision", "model.kwargs={weights:DEFAULT}"], "model.kwargs.weights: not allowed"),
    (["model=timm", "model.arch=convnext_nano"], "model.arch: timm convnext_nano has no BatchNorm2d layer"),
], ids=["mutualnet", "unknown-arch", "weights-download", "no-batchnorm"])
def test_refusals_are_one_line_naming_the_field(overrides, starts, tmp_path):
    """In process (the command line turns the same ValueError into ``error: <line>``, exit 2: the
    slow test below runs it)."""
    if "model=timm" in overrides and not HAS_TIMM:
        pytest.skip("timm is an optional extra: pip install -e '.[timm]'")
    with pytest.raises(ValueError) as refused:
        train(tiny_cfg(tmp_path, *overrides))
    message = str(refused.value)
    assert "\n" not in message and message.startswith(starts), message


@pytest.mark.slow
@NO_TIMM
def test_train_refuses_a_network_without_batchnorm_exit_2_one_line(tmp_path):
    proc = run_cli("resnet_switch.train", "model=timm", "model.arch=convnext_nano", "debug=fast",
                   f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.stderr.strip().splitlines() == errors and len(errors) == 1  # nothing else, no traceback
    assert errors[0].startswith("error: model.arch: timm convnext_nano has no BatchNorm2d layer")


@NO_TIMM
@pytest.mark.parametrize("method", ["rsnet", "san"])
def test_train_timm_efficientnet_runs(method, tmp_path):
    """``train model=timm model.arch=efficientnet_b0 method=...`` (tiny data) trains, and its checkpoint
    holds the architecture (rebuilt from the file alone)."""
    metrics = train(tiny_cfg(tmp_path, "model=timm", "model.arch=efficientnet_b0", f"method={method}",
                             "trainer.limit_train_batches=2", "data.val_samples=16"))
    assert set(metrics) == {"acc1@16", "acc1@12"}
    _, net, meta = rebuild_from_checkpoint(load_checkpoint(tmp_path / "checkpoints" / "last.ckpt"))
    assert meta["net"]["name"] == "timm" and meta["net"]["arch"] == "efficientnet_b0"
    assert any(isinstance(m, ScaleConv2d if method == "san" else SourcePrivateBatchNorm2d) for m in net.modules())


@pytest.mark.slow
@NO_TIMM
@pytest.mark.parametrize("method", ["rsnet", "san"])
def test_train_debug_fast_command(method, tmp_path):
    """The issue's commands, as written: ``python -m resnet_switch.train model=timm
    model.arch=efficientnet_b0 method=rsnet|san debug=fast``."""
    proc = run_cli("resnet_switch.train", "model=timm", "model.arch=efficientnet_b0", f"method={method}",
                   "debug=fast", f"hydra.run.dir={tmp_path}", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "results.md").is_file()


def test_source_model_of_the_spec_is_the_library_architecture():
    net = create_model("torchvision", RESOLUTIONS, layers="private_bn", num_classes=NUM_CLASSES,
                       arch="mobilenet_v3_large")
    assert type(source_model(net.spec)) is torchvision.models.MobileNetV3


# ---- image channels, the small-input stem, refusals --------------------------------------------
@pytest.mark.parametrize("source", [pytest.param("torchvision"), pytest.param("timm", marks=[NO_TIMM])])
@torch.no_grad()
def test_grey_images_build_a_one_channel_stem_equal_to_the_library(source):
    """``in_channels=1``: the first conv takes one channel, the network runs on ``(B, 1, R, R)`` and,
    materialised, loads strictly into the library's one-channel model with equal outputs
    (torchvision: its resnet18 with a 1-channel conv1; timm: ``in_chans=1``)."""
    torch.manual_seed(0)
    net = create_model(source, [16, 12], layers="private_bn", num_classes=3, arch="resnet18", in_channels=1,
                       small_input=False).eval()
    assert net.net.conv1.in_channels == 1
    x = torch.randn(2, 1, 12, 12)
    with net.switch(SubnetConfig(12)):
        got = net(x)
    if source == "torchvision":
        library = torchvision.models.resnet18(num_classes=3)
        library.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    else:
        import timm

        library = timm.create_model("resnet18", pretrained=False, num_classes=3, in_chans=1)
    library.load_state_dict(net.materialize(SubnetConfig(12)).state_dict(), strict=True)
    assert got.shape == (2, 3)
    assert_close(got, library.eval()(x))


def last_map_side(model: nn.Module, resolution: int) -> int:
    """The side of the network's last feature map (the output of its last BatchNorm: the layer before
    global pooling in every family here) on a ``resolution``-px image."""
    sides = []
    hooks = [m.register_forward_hook(lambda module, inputs, out: sides.append(out.shape[-1]))
             for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, resolution, resolution))
    for hook in hooks:
        hook.remove()
    return sides[-1]


# the library model's output stride is 32; with small_input (docs/switchify.md) the stem's stride-2
# conv (and a stem max-pool) is gone: ResNets and ShuffleNetV2 32 / 2 / 2 = 8, the stem-conv-only
# families (MobileNetV3, EfficientNet, RegNet) 32 / 2 = 16
SMALL_INPUT_STRIDE = {"resnet34": 8, "shufflenet_v2_x1_0": 8, "resnet50d": 8, "mobilenet_v3_large": 16,
                      "efficientnet_b0": 16, "regnet_y_400mf": 16, "mobilenetv3_large_100": 16, "regnety_008": 16}


@pytest.mark.parametrize("source,arch", CASES)
def test_small_input_stem_strides_by_hand(source, arch):
    """At 64 px the library model's last map is 64 / 32 = 2; with the small-input stem it is
    64 / (its output stride); the first conv alone changes stride, every other conv keeps the
    library's, and the state-dict keys and shapes are the library's."""
    library = library_model(source, arch)
    net = create_model(source, [64], layers="plain", num_classes=NUM_CLASSES, arch=arch, small_input=True).net
    assert last_map_side(library, 64) == 64 // 32
    assert last_map_side(net, 64) == 64 // SMALL_INPUT_STRIDE[arch]
    strides = [m.stride for m in library.modules() if isinstance(m, nn.Conv2d)]
    small_strides = [m.stride for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert small_strides == [(1, 1), *strides[1:]] and strides[0] == (2, 2)
    assert {k: v.shape for k, v in net.state_dict().items()} == {k: v.shape for k, v in library.state_dict().items()}


def refusals():
    """Every refusal of the surgery: ``(call, the field its one line starts with)``."""
    def conv_net(*layers):
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), *layers)

    return [
        (lambda: create_model("torchvision", [32], num_classes=3), "model.arch: required"),
        (lambda: create_model("torchvision", [32], num_classes=3, arch="resnet19"),
         "model.arch: unknown torchvision model 'resnet19'; did you mean 'resnet18'"),
        (lambda: create_model("torchvision", [32], num_classes=3, arch="resnet18", kwargs=[1]),
         "model.kwargs: expected a mapping"),
        (lambda: create_model("torchvision", [32], num_classes=3, arch="resnet18", kwargs={"weights": "DEFAULT"}),
         "model.kwargs.weights: not allowed"),
        (lambda: create_model("torchvision", [32], num_classes=3, arch="resnet18", kwargs={"num_classes": 5}),
         "model.kwargs.num_classes: not allowed"),
        (lambda: create_model("torchvision", [32], num_classes=3, arch="resnet18", kwargs={"colour": 1}),
         "model.kwargs: torchvision resnet18 does not take ['colour']"),
        (lambda: create_model("torchvision", [32], num_classes=3, arch="resnet18", bn_momentum=0.0),
         "model.bn_momentum: must be in"),
        (lambda: create_model("torchvision", [32], num_classes=3, arch="resnet18", quant={"weight_bits": 2}),
         "quant: converted models"),
        (lambda: create_model("torchvision", [32], layers="slimmable", widths=[1.0, 0.5], num_classes=3,
                              arch="resnet18"), "method: slimmable layers slice channels"),
        (lambda: create_model("torchvision", [32], layers="san", num_classes=3, arch="resnet18", layer_kwargs={"meta": "cubic"}),
         "method.meta: unknown meta-learner 'cubic'"),
        (lambda: create_model("torchvision", [32], num_classes=3, arch="vit_b_16"),
         "model.arch: torchvision vit_b_16 has no BatchNorm2d layer"),
        (lambda: surgery.list_archs("keras"), "model.name: unknown model source 'keras'"),
        (lambda: surgery.small_input_stem(nn.Sequential(nn.Linear(3, 3))), "model.small_input: the network has no Conv2d"),
        (lambda: switchify(conv_net(), [32]), "model: Sequential has no BatchNorm2d layer"),
        (lambda: switchify(conv_net(nn.BatchNorm2d(4, affine=False)), [32]),
         "model: layer '1' is a BatchNorm2d (without affine parameters or running statistics)"),
        (lambda: switchify(conv_net(nn.BatchNorm2d(4, track_running_stats=False)), [32]),
         "model: layer '1' is a BatchNorm2d (without affine parameters or running statistics)"),
        (lambda: switchify(conv_net(OwnForwardBN(4)), [32]), "model: layer '1' is a OwnForwardBN (a BatchNorm2d with its own forward)"),
        (lambda: switchify(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), nn.BatchNorm2d(4)), [32],
                           kind="scale_conv"), "method: layer '0' is a Conv2d (own forward, non-zero padding mode"),
        (lambda: switchify(conv_net(nn.BatchNorm2d(4)), [32], kind="slim"), "kind: unknown 'slim'"),
        (lambda: load_plain_weights(create_model("torchvision", [32], num_classes=3, arch="resnet18"),
                                    torchvision.models.resnet34(num_classes=3).state_dict()),
         "model.pretrained: weights do not fit torchvision resnet18"),
    ]


class OwnForwardBN(nn.BatchNorm2d):
    def forward(self, x):
        return super().forward(x) * 2


@pytest.mark.parametrize("index", range(len(refusals())))
def test_every_surgery_refusal_is_a_config_error_naming_the_field(index):
    call, starts = refusals()[index]
    with pytest.raises(ConfigError) as refused:
        call()
    message = str(refused.value)
    assert "\n" not in message and message.startswith(starts), message


def test_without_timm_the_timm_backbone_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # ``import timm`` raises ImportError
    with pytest.raises(ConfigError, match=r"^model=timm: timm is not installed; pip install -e '\.\[timm\]'$"):
        create_model("timm", [32], num_classes=3, arch="resnet18")
