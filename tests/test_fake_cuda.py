"""Every GPU path traced on the CPU under ``FakeTensorMode`` on ``cuda`` (:mod:`tests.fake_cuda`).

A tensor made on the CPU inside a path that runs on the GPU meets a (fake) CUDA tensor and raises
``FakeTensorDeviceMismatchError`` exactly where a real GPU run would fail. Traced here: the training
step's forwards and losses of every method x backbone family (backward needs a real CUDA context);
the evaluate command's BN preparation and evaluation at every configuration and unseen resolution in
every BN mode; the data module's device side (synthetic and image-folder batches, resize on the
device or in the workers, the MutualNet protocol's resize, JPEGs decoded on the device); BN
recalibration and the training module's validation step; the runtime (``predict``, ``predict_adaptive`` up to its first data-dependent
decision, ``calibrate``, ``materialize``) and BN folding of the export; the detector's switchable
parts. A deliberately CPU-made tensor in a method's step fails the trace (the harness can fail).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from resnet_switch.data.multires import MultiResBatch
from resnet_switch.methods.rsnet import RSNet
from resnet_switch.switch import INFERENCE_MODES, SubnetConfig
from resnet_switch.training.finite_guard import FiniteGuard

from .fake_cuda import (
    BACKBONES,
    CUDA,
    METHODS,
    FakeTensorDeviceMismatchError,
    build,
    cuda_autocast,
    fake_batch,
    fake_cuda,
    is_fake_cuda,
    on_fake_cuda,
)


# ------------------------------------------------------------------------------------ the harness
def test_fake_tensors_claim_cuda_and_a_cpu_tensor_meeting_them_fails():
    with fake_cuda():
        x = torch.ones(2, 3, device=CUDA)
        assert is_fake_cuda(x) and is_fake_cuda(x * 2)
        assert is_fake_cuda(x + torch.tensor(1.0))  # a 0-dim CPU tensor mixes with CUDA ones (as on a GPU)
        with pytest.raises(FakeTensorDeviceMismatchError):
            x + torch.ones(2, 3)


class CpuWeightedRSNet(RSNet):
    """RS-Net whose step weights its per-resolution losses by a tensor made on the CPU (the bug the
    traces are there to find); ``on_device=True``: the same tensor made on the logits' device."""

    on_device = False

    def training_step(self, net, batch, backward):
        logits = self.forward_all(net, batch)
        losses = torch.stack([F.cross_entropy(z, batch.targets) for z in logits])
        weights = torch.ones(len(self.resolutions), device=losses.device if self.on_device else None)
        loss = (losses * weights).sum()
        backward(loss)
        return {"loss": loss.detach()}


@pytest.mark.parametrize("on_device", [False, True])
def test_a_cpu_made_tensor_in_a_method_step_fails_the_trace(on_device):
    """The self-check: the harness catches a CPU tensor in a step (and passes once it is fixed)."""
    _, net, resolutions = build("rsnet", "resnet20")
    method = CpuWeightedRSNet(list(resolutions))
    method.on_device = on_device
    with fake_cuda():
        on_fake_cuda(net, method)
        batch = fake_batch(resolutions[0])
        losses = []
        if on_device:
            method.training_step(net, batch, losses.append)
            assert len(losses) == 1 and is_fake_cuda(losses[0])
        else:
            with pytest.raises(FakeTensorDeviceMismatchError):
                method.training_step(net, batch, losses.append)


# --------------------------------------------------------------------- training step: forward, losses
def assert_step_on_cuda(method, net, resolutions, batch_size: int = 2) -> dict:
    """One training step's forwards and losses on the fake device, with the NaN guard recording
    as in ``SwitchTrainingModule.training_step`` (its check reads values: not traced)."""
    net.train()
    guard = FiniteGuard()
    batch = fake_batch(resolutions[0], batch_size)
    losses = []

    def backward(loss):
        guard.record_loss(loss, net.state.config if method.per_config_backward else None)
        losses.append(loss)

    with guard.watch(net):
        logs = method.training_step(net, batch, backward)
        records = guard._records
    assert len(losses) == method.backward_calls()
    for loss in losses:
        assert is_fake_cuda(loss) and loss.dim() == 0 and loss.requires_grad
    assert all(is_fake_cuda(v) for v in logs.values()), {k: v.device for k, v in logs.items()}
    values = torch.stack([v for _, _, v in records])  # what FiniteGuard.check stacks
    assert is_fake_cuda(values) and len(records) >= len(losses) + 1
    assert all(is_fake_cuda(v) for v in method.logged_values().values())
    return logs


STEP_CASES = [(m, b) for b in BACKBONES for m in METHODS]


@pytest.mark.parametrize("method_name,backbone", STEP_CASES, ids=[f"{m}-{b}" for m, b in STEP_CASES])
def test_training_step_forward_and_losses_on_fake_cuda(method_name, backbone):
    method, net, resolutions = build(method_name, backbone)
    with fake_cuda():
        on_fake_cuda(net, method)
        assert all(is_fake_cuda(p) for p in net.parameters())
        assert_step_on_cuda(method, net, resolutions)


def test_training_step_of_lq_quantized_rsnet_on_fake_cuda():
    method, net, resolutions = build("rsnet", "resnet20", quant={"weight_bits": 2, "act_bits": 2})
    with fake_cuda():
        on_fake_cuda(net, method)
        assert_step_on_cuda(method, net, resolutions)


@pytest.mark.parametrize("method_name", ["rsnet", "san", "mutualnet"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_training_step_under_cuda_autocast_on_fake_cuda(method_name, dtype):
    """``precision=16-mixed|bf16-mixed`` on a GPU: the step under ``torch.autocast("cuda")``, the
    training inputs channels_last (``memory_format=channels_last``)."""
    from resnet_switch.training.speed import use_channels_last

    method, net, resolutions = build(method_name, "resnet20")
    use_channels_last(net)
    seen = set()
    net.register_forward_hook(lambda m, a, out: seen.add(out.dtype))
    with fake_cuda():
        on_fake_cuda(net, method)
        with cuda_autocast(dtype):
            assert_step_on_cuda(method, net, resolutions)
    assert seen == {dtype}


# ---------------------------------------------------------------------- evaluation, every BN mode
class DeviceCheckingAccuracy:
    """Stands in for torchmetrics' accuracy in :func:`evaluate_configs` (a metric reads values):
    every update must see fake CUDA logits and targets."""

    made: list = []

    def __init__(self, *args, **kwargs):
        self.updates = 0
        DeviceCheckingAccuracy.made.append(self)

    def to(self, device):
        assert torch.device(device).type == "cuda"
        return self

    def update(self, logits, targets):
        assert is_fake_cuda(logits) and is_fake_cuda(targets)
        self.updates += 1

    def compute(self):
        return 0.0


def synthetic_datamodule(train_resolutions, test_resolutions, **kwargs):
    from resnet_switch.data import MultiResDataModule

    from .fake_cuda import real_loaders

    dm = MultiResDataModule(name="synthetic", train_resolutions=train_resolutions, test_resolutions=test_resolutions,
                            batch_size=2, num_workers=0, train_samples=4, val_samples=2, pin_memory=False,
                            synthetic={"native_size": 16}, **kwargs)
    dm.setup("fit")
    real_loaders(dm, "val_dataloader", "calibration_dataloader", "train_dataloader")
    return dm


def eval_configs(method, resolutions):
    """The method's evaluation configurations plus unseen resolutions between, above and below the
    trained ones, at each evaluated width."""
    hi, lo = resolutions[0], resolutions[-1]
    unseen = sorted({hi + 4, (hi + lo) // 2, max(lo - 2, 4)} - set(resolutions), reverse=True)
    widths = sorted({c.width for c in method.eval_configs()}, reverse=True)
    return list(dict.fromkeys([*method.eval_configs(), *(SubnetConfig(r, w) for w in widths for r in unseen)]))


EVAL_METHODS = ["parallel", "rsnet", "san", "mutualnet", "usnet", "snet"]


@pytest.mark.parametrize("bn_mode", list(INFERENCE_MODES))
@pytest.mark.parametrize("method_name", EVAL_METHODS)
def test_evaluation_at_every_configuration_and_unseen_resolutions_on_fake_cuda(method_name, bn_mode, monkeypatch):
    """The evaluate command's path (``prepare_bn``: recalibration where the policy asks for it,
    then ``evaluate_configs`` through ``policy.switch``, RS-Net's ensemble) with the batches on the device."""
    import resnet_switch.evaluation.accuracy as accuracy
    from resnet_switch.evaluation.checkpoint_eval import LoadedCheckpoint, evaluate_with_bn
    from resnet_switch.models.inference_policy import InferencePolicy

    monkeypatch.setattr(accuracy, "MulticlassAccuracy", DeviceCheckingAccuracy)
    DeviceCheckingAccuracy.made = []
    method, net, resolutions = build(method_name, "resnet20")
    configs = eval_configs(method, resolutions)
    dm = synthetic_datamodule(resolutions, sorted({c.resolution for c in configs}, reverse=True))
    cfg = OmegaConf.create({"bn_mode": bn_mode, "recalibrate": False, "calibration_samples": 2, "limit_batches": 1})
    with fake_cuda():
        on_fake_cuda(net, method)
        policy = InferencePolicy.for_method(net, method, bn_mode=bn_mode)
        loaded = LoadedCheckpoint("", method, net, {}, method_name, policy)
        rows = evaluate_with_bn(loaded, dm, configs, cfg, extra={})
    assert [(r["resolution"], r["width"]) for r in rows] == [(c.resolution, c.width) for c in configs]
    updated = [m.updates for m in DeviceCheckingAccuracy.made]
    assert sum(u > 0 for u in updated) >= len(configs)  # every configuration ran on the device


def test_evaluation_with_statistics_stored_in_a_checkpoint_on_fake_cuda(tmp_path, monkeypatch):
    """``evaluate ckpt=... device=cuda`` of a MutualNet checkpoint: ``load_for_eval`` reads it on the
    host and moves the net to the GPU; the BN statistics stored in it are used without recalibration."""
    import resnet_switch.evaluation.accuracy as accuracy
    import resnet_switch.evaluation.checkpoint_eval as checkpoint_eval
    from resnet_switch.layers.calibration import calibratable_layers

    from .ckpt_factory import write_checkpoint
    from .fake_cuda import on_host

    monkeypatch.setattr(accuracy, "MulticlassAccuracy", DeviceCheckingAccuracy)
    monkeypatch.setattr(checkpoint_eval, "load_checkpoint", on_host(checkpoint_eval.load_checkpoint))
    monkeypatch.setattr(checkpoint_eval, "rebuild_from_checkpoint", on_host(checkpoint_eval.rebuild_from_checkpoint))
    path = write_checkpoint(tmp_path / "m.ckpt", "mutualnet", method_kwargs={"width_range": [0.5, 1.0]})
    dm = synthetic_datamodule((16, 12), (16, 12))
    dm.calibration_dataloader = lambda: pytest.fail("stored statistics must be reused, not recalibrated")
    cfg = OmegaConf.create({"bn_mode": None, "recalibrate": False, "calibration_samples": 2, "limit_batches": 1,
                            "device": "cuda"})
    with fake_cuda():
        loaded = checkpoint_eval.load_for_eval(str(path), cfg, device=CUDA)
        assert all(is_fake_cuda(t) for layer in calibratable_layers(loaded.net)
                   for pair in layer.calibrated.values() for t in pair)
        rows = checkpoint_eval.evaluate_with_bn(loaded, dm, loaded.method.eval_configs(), cfg)
    assert {r["bn"] for r in rows} == {"stored"}


def test_stored_bn_statistics_follow_the_network_s_moves():
    """The fix the trace above found, on real devices: ``.to(dtype)`` / ``.to(device)`` carry the
    per-configuration statistics (a dict, not buffers) along with the layer."""
    from resnet_switch.layers.calibration import calibratable_layers, calibrate_bn

    method, net, resolutions = build("mutualnet", "resnet20")
    config = method.eval_configs()[-1]
    calibrate_bn(net, [torch.randn(2, 3, config.resolution, config.resolution)], config, num_samples=2)
    net.to(torch.float64)
    layers = calibratable_layers(net)
    assert layers and all(t.dtype == torch.float64 for layer in layers for t in layer.calibrated[config.key()])
    net.eval()
    with torch.no_grad(), net.switch(config, "calibrated"):  # float32 statistics would refuse float64 inputs
        assert net(torch.randn(2, 3, config.resolution, config.resolution, dtype=torch.float64)).dtype == torch.float64
    net.to("meta")
    assert all(t.is_meta for layer in layers for t in layer.calibrated[config.key()])


# ------------------------------------------------------------------------------------ data module
def assert_multires_on_cuda(batch: MultiResBatch, resolutions, channels: int = 3) -> None:
    assert isinstance(batch, MultiResBatch)
    assert is_fake_cuda(batch.images) and batch.images.dtype == torch.float32 and is_fake_cuda(batch.targets)
    for r in resolutions:
        x = batch.at(r)
        assert is_fake_cuda(x) and x.dtype == torch.float32 and tuple(x.shape[1:]) == (channels, r, r), r


def transferred(dm, loader_name: str = "train_dataloader"):
    """The first batch of a loader, made for real on the host, moved to the fake device (as
    Lightning's transfer does) and handed to ``on_after_batch_transfer``."""
    from lightning.fabric.utilities.apply_func import move_data_to_device

    batch = next(iter(getattr(dm, loader_name)()))
    return dm.on_after_batch_transfer(move_data_to_device(batch, CUDA), 0)


@pytest.mark.parametrize("options", [{}, {"resize_on": "worker"}, {"crop": "multi"}, {"protocol": "mutualnet"},
                                     {"protocol": "rsnets"}],
                         ids=["device", "worker", "multi-crop", "mutualnet", "rsnets"])
def test_synthetic_batches_on_the_fake_device(options):
    train, test = (16, 12, 8), (16, 12, 10)
    dm = synthetic_datamodule(train, test, **options)
    with fake_cuda():
        assert_multires_on_cuda(transferred(dm), train)
        assert_multires_on_cuda(transferred(dm, "val_dataloader"), test)


@pytest.mark.parametrize("resize_on", ["device", "worker"])
def test_image_folder_batches_on_the_fake_device(tmp_path, resize_on):
    from resnet_switch.data import MultiResDataModule

    from .fake_cuda import real_loaders
    from .test_imagefolder import make_folder

    make_folder(tmp_path, bad=False)
    dm = MultiResDataModule(name="imagefolder", root=str(tmp_path), train_resolutions=(16, 12), batch_size=4,
                            num_workers=0, pin_memory=False, resize_on=resize_on)
    dm.setup("fit")
    real_loaders(dm, "train_dataloader", "val_dataloader")
    with fake_cuda():
        assert_multires_on_cuda(transferred(dm), (16, 12))
        assert_multires_on_cuda(transferred(dm, "val_dataloader"), (16, 12))


def test_jpegs_decoded_on_the_fake_device(tmp_path, monkeypatch):
    """``data.decode=device``: the deferred JPEG batch moved to the device, the decoder's output
    (nvJPEG: uint8 images on the device, stood in for by fake ones of each header's size) cropped,
    resized, rounded, flipped and placed into the batch on the device. (An image the device cannot
    decode is cropped on the host from its bytes, ``.numpy()`` of a host tensor: host code that a
    fake trace cannot run; its crop is then moved with ``.to(device)``.)"""
    import resnet_switch.data.datamodule as datamodule_module
    from resnet_switch.data import MultiResDataModule
    from resnet_switch.data import device_decode as dd
    from resnet_switch.data.decode import parse_jpeg_header

    from .fake_cuda import on_host, real, real_loaders
    from .test_device_decode import make_folder

    monkeypatch.setattr(datamodule_module, "device_decode_available", lambda: True)
    made = []

    def fake_decoder(jpegs, mode, device):
        assert torch.device(device).type == "cuda"
        with real():
            sizes = [parse_jpeg_header(bytes(j.numpy().tobytes()))[:2] for j in jpegs]  # (width, height)
        made.extend(sizes)
        return [torch.zeros(3, h, w, dtype=torch.uint8, device=device) for w, h in sizes]

    monkeypatch.setattr(dd.DeferredJpegBatch, "jpegs", on_host(dd.DeferredJpegBatch.jpegs))  # host bytes
    monkeypatch.setattr(dd, "decode_jpegs", fake_decoder)
    make_folder(tmp_path, extra=False)
    dm = MultiResDataModule(name="imagefolder", root=str(tmp_path), train_resolutions=(32, 16), batch_size=4,
                            num_workers=0, pin_memory=False, decode="device")
    dm.setup("fit")
    real_loaders(dm, "train_dataloader")
    with fake_cuda():
        batch = next(iter(dm.train_dataloader()))
        assert isinstance(batch, dd.DeferredJpegBatch)
        assert_multires_on_cuda(dm.on_after_batch_transfer(batch.to(CUDA), 0), (32, 16))
    assert made  # the device decoder was asked


# ------------------------------------------------------------------------------- BN recalibration
@pytest.mark.parametrize("method_name", ["rsnet", "mutualnet", "snet"])
def test_bn_recalibration_and_validation_on_fake_cuda(method_name):
    """Training's validation on the device: ``SwitchTrainingModule.recalibrate`` (exact statistics,
    from the data module's calibration loader, for the configurations its policy runs on them: all
    of MutualNet's / S-Net's, none of RS-Net's), then ``validation_step`` at every evaluation
    configuration (an unseen test resolution included) through ``policy.switch``; then
    ``calibrate_configs`` / ``calibrate_bn`` for any configuration: the stored statistics live on the
    device, and a calibrated forward uses them."""
    from resnet_switch.evaluation.accuracy import calibrate_configs
    from resnet_switch.layers.calibration import calibratable_layers, calibrate_bn
    from resnet_switch.training.lit_module import SwitchModule

    method, net, resolutions = build(method_name, "resnet20")
    test_resolutions = (*resolutions, resolutions[-1] - 2)
    module = SwitchModule(method, net, {"lr": 0.1}, {"name": method_name, "kwargs": METHODS[method_name]},
                          calibration_samples=3, test_resolutions=test_resolutions)
    exact = [c for c in module.eval_configs if module.policy.uses_exact_statistics(c)]
    assert bool(exact) == method.needs_calibration
    dm = synthetic_datamodule(resolutions, test_resolutions)
    with fake_cuda():
        on_fake_cuda(module)
        module.recalibrate(dm)
        layers = calibratable_layers(net)
        assert layers and all(set(layer.calibrated) == {c.key() for c in exact} for layer in layers)
        module.validation_step(transferred(dm, "val_dataloader"), 0)
        assert len(module.acc1) == len(module.eval_configs)
        for key, metric in module.acc1.items():  # every configuration updated its metric on the device
            assert metric._update_count == 1 and is_fake_cuda(metric.tp), key
        configs = eval_configs(method, resolutions)
        calibrate_configs(net, dm, configs, num_samples=3, progress=False)
        calibrate_bn(net, [fake_batch(16, 2).images], SubnetConfig(16, configs[-1].width), num_samples=2)
        for layer in layers:
            assert all(is_fake_cuda(t) for pair in layer.calibrated.values() for t in pair)
        net.eval()
        with torch.no_grad(), net.switch(configs[-1], "calibrated"):
            assert is_fake_cuda(net(fake_batch(configs[-1].resolution).images))


# ------------------------------------------------------------------------------------ runtime API
@pytest.fixture
def gpu_visible(monkeypatch):
    """``device=cuda`` / ``auto`` pick the GPU (the runtime refuses cuda when none is visible); the
    checkpoint is read and the network rebuilt on the host for real, as on a GPU machine."""
    import resnet_switch.deploy.runtime as runtime

    from .fake_cuda import on_host, seeing_a_gpu

    monkeypatch.setattr(runtime, "pick_device", seeing_a_gpu(runtime.pick_device))
    monkeypatch.setattr(runtime, "load_checkpoint", on_host(runtime.load_checkpoint))
    monkeypatch.setattr(runtime, "rebuild_from_checkpoint", on_host(runtime.rebuild_from_checkpoint))


@pytest.mark.parametrize("method_name", ["rsnet", "san", "mutualnet"])
def test_runtime_predict_calibrate_and_materialize_on_fake_cuda(method_name, tmp_path, gpu_visible):
    """``SwitchableClassifier.from_checkpoint(path)`` on a GPU machine: ``predict`` on images of
    any size (uint8, float, a list), at trained and unseen configurations, ``calibrate``, and the
    materialised plain module of the active configuration."""
    from resnet_switch.deploy.runtime import SwitchableClassifier

    from .ckpt_factory import write_checkpoint

    kwargs = {"width_range": [0.5, 1.0]} if method_name == "mutualnet" else {}
    path = write_checkpoint(tmp_path / "c.ckpt", method_name, method_kwargs=kwargs)
    with fake_cuda():
        clf = SwitchableClassifier.from_checkpoint(path)
        assert clf.device.type == "cuda" and all(is_fake_cuda(p) for p in clf.net.parameters())
        images = [torch.randint(0, 256, (3, 20, 24), dtype=torch.uint8), torch.rand(3, 18, 18)]
        assert is_fake_cuda(clf.predict(images)) and clf.predict(images).shape == (2, 10)
        batch = torch.randint(0, 256, (2, 3, 22, 22), dtype=torch.uint8)
        width = 0.5 if method_name == "mutualnet" else 1.0
        for resolution in (16, 12):
            assert is_fake_cuda(clf.predict(batch, resolution=resolution, width=width))
        config = clf.calibrate(torch.rand(4, 3, 20, 20), 14, width)
        assert is_fake_cuda(clf.predict(batch, resolution=config.resolution, width=config.width))
        if method_name != "mutualnet":  # unseen resolution in the method's default BN mode
            assert is_fake_cuda(clf.predict(batch, resolution=10))
        plain = clf.materialize()
        assert all(is_fake_cuda(p) for p in plain.parameters())
        x = clf.preprocess(batch)
        assert is_fake_cuda(plain(x)) and plain(x).shape == (2, 10)


def test_runtime_predict_adaptive_on_fake_cuda_up_to_its_first_decision(tmp_path, gpu_visible):
    """The cascade preprocesses once on the device, runs the first stage there, then decides on the
    host which images stop (a boolean mask of values: a fake tensor has none, so the trace ends
    there with ``DynamicOutputShapeException`` or ``DataDependentOutputException`` (the decision reads
    values), after the device part of the first stage)."""
    from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException

    from resnet_switch.deploy.runtime import SwitchableClassifier
    from resnet_switch.evaluation.adaptive import AdaptivePolicy

    from .ckpt_factory import write_checkpoint

    path = write_checkpoint(tmp_path / "m.ckpt", "mutualnet", method_kwargs={"width_range": [0.5, 1.0]})
    policy = AdaptivePolicy(stages=[SubnetConfig(12, 0.5), SubnetConfig(16, 1.0)], stage_madds=[1.0, 4.0])
    with fake_cuda():
        clf = SwitchableClassifier.from_checkpoint(path)
        seen = []
        clf.net.register_forward_hook(lambda m, a, out: seen.append((a[0], out)))
        images = torch.randint(0, 256, (3, 3, 20, 20), dtype=torch.uint8)
        with pytest.raises((DynamicOutputShapeException, DataDependentOutputException)):  # reading a value
            clf.predict_adaptive(images, thresholds=[0.5], policy=policy)
        assert len(seen) == 1 and all(is_fake_cuda(t) for t in seen[0])
        assert tuple(seen[0][0].shape) == (3, 3, 12, 12)
        assert clf.config == SubnetConfig(16, 1.0)  # the active configuration is restored after the error


@pytest.mark.parametrize("method_name", ["rsnet", "san", "mutualnet", "snet"])
def test_materialize_and_fold_batchnorm_on_fake_cuda(method_name):
    """``net.materialize`` at a trained and an unseen configuration (SAN kernels baked, widths
    sliced, BN chosen / interpolated / calibrated) and the export's BN folding (``torch.fx``
    trace of the plain module) on the device. The export command itself materialises, traces and
    checks on the CPU (``from_checkpoint(device="cpu")``): it has no GPU path."""
    from resnet_switch.deploy.export import fold_batchnorm
    from resnet_switch.layers.calibration import calibrate_bn

    method, net, resolutions = build(method_name, "resnet20")
    width = method.eval_configs()[-1].width
    with fake_cuda():
        on_fake_cuda(net, method)
        net.eval()
        for config, bn_mode in ((SubnetConfig(resolutions[0], width), None), (SubnetConfig(10, width), "interpolate")):
            x = fake_batch(config.resolution).images
            if method.needs_calibration:
                calibrate_bn(net, [x], config, num_samples=2)
                bn_mode = "calibrated"
            with torch.no_grad():
                plain = net.materialize(config, bn_mode)
                assert all(is_fake_cuda(t) for t in [*plain.parameters(), *plain.buffers()])
                assert is_fake_cuda(plain(x)) and plain(x).shape == (2, 10)
                folded, pairs = fold_batchnorm(plain)
                assert pairs > 0 and all(is_fake_cuda(p) for p in folded.parameters())
                assert is_fake_cuda(folded(x))


# -------------------------------------------------------------------------------------- detection
@pytest.mark.parametrize("layers,backbone", [("private_bn", "resnet18"), ("slimmable", "mobilenetv2")])
def test_detector_switchable_parts_on_fake_cuda(layers, backbone):
    """The detector's parts that are ours, at every configuration of a step and of evaluation, on
    the device: the switchable transform (resize to the configuration's size, eval mode: torchvision
    draws its training size with ``.item()``), backbone body and FPN, RPN head and anchors, and BN
    recalibration through :class:`~resnet_switch.detection.calibration.BackboneProbe`. torchvision's
    proposal filtering and RoI heads decide on values (NMS, sampling) and are not traced."""
    from torchvision.models.detection.image_list import ImageList

    from resnet_switch.detection.calibration import BackboneProbe
    from resnet_switch.detection.methods import build_detection_method
    from resnet_switch.detection.model import build_detector
    from resnet_switch.evaluation.accuracy import calibrate_configs

    sizes = [48, 32]
    name = "rsnet" if layers == "private_bn" else "mutualnet"
    kwargs = {"width_range": [0.5, 1.0], "n_random": 1} if name == "mutualnet" else {}
    method = build_detection_method(name, sizes, **kwargs)
    det = build_detector(backbone, sizes, num_classes=3, layers=layers, widths=method.net_widths(),
                         layer_kwargs=method.layer_kwargs(backbone), fpn_channels=16, box_head_dim=16,
                         mask_head_channels=[8], backbone_kwargs={"width_mult": 0.25})
    net = det.net
    with fake_cuda():
        on_fake_cuda(det)
        images = [torch.rand(3, 40, 52, device=CUDA), torch.rand(3, 36, 30, device=CUDA)]
        targets = [{"boxes": torch.tensor([[2.0, 3.0, 20.0, 30.0]], device=CUDA),
                    "labels": torch.tensor([1], device=CUDA),
                    "masks": torch.zeros(1, *im.shape[-2:], dtype=torch.uint8, device=CUDA)} for im in images]

        def run(config, training):
            det.train(training)
            with det.switch(config):
                net.transform.eval()
                batch, resized = net.transform(images, targets)
                assert is_fake_cuda(batch.tensors) and min(batch.image_sizes[0]) == config.resolution
                assert all(is_fake_cuda(t["boxes"]) for t in resized)
                features = net.backbone(batch.tensors)
                assert all(is_fake_cuda(f) for f in features.values())
                objectness, deltas = net.rpn.head(list(features.values()))
                anchors = net.rpn.anchor_generator(ImageList(batch.tensors, batch.image_sizes), list(features.values()))
                assert all(is_fake_cuda(t) for t in [*objectness, *deltas, *anchors])

        for config in method.step_configs():
            run(config, True)
        if method.needs_calibration:
            probe = BackboneProbe(det)
            calibrate_configs(probe, None, method.eval_configs(), num_samples=2, progress=False,
                              images=lambda config: [list(images)])
        for config in method.eval_configs():
            with det.switch(config, "calibrated" if method.needs_calibration else None):
                run(config, False)
