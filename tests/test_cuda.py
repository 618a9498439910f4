"""The CUDA paths (``@pytest.mark.cuda``: skipped without a device; ``make gpu-check`` runs them):
AMP with manual optimisation, channels_last, the asynchronous NaN check, pinned host memory, the
JPEG decode on the device against the CPU decode, CUDA peak memory."""

import math

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from resnet_switch.bench import step as bench_step
from resnet_switch.bench.data import natural_image
from resnet_switch.data import MultiResDataModule
from resnet_switch.data import device_decode as dd
from resnet_switch.data.datamodule import ToUint8CHW
from resnet_switch.data.decode import DecodeCropFlip, codec_decode_jpeg, open_image_lazy
from resnet_switch.evaluation.accuracy import to_device
from resnet_switch.methods import build_method
from resnet_switch.models import create_model
from resnet_switch.switch import SubnetConfig
from resnet_switch.train import train
from resnet_switch.training.finite_guard import FiniteGuard, NonFiniteLossError
from resnet_switch.training.speed import use_channels_last

from .helpers import tiny_cfg
from .image_metrics import psnr

pytestmark = pytest.mark.cuda
CUDA = torch.device("cuda")
GPU = ["trainer.accelerator=gpu", "trainer.devices=1", "model.base_width=8"]
RUNS: list["Record"] = []
RECORD = ["+callbacks.record._target_=tests.test_cuda.Record"]


class Record(Callback):
    """Per-step losses, the training logits' dtypes, whether the network's inputs and 4-D weights
    were channels_last, and the weights after training."""

    def __init__(self):
        RUNS.append(self)
        self.losses, self.logits_dtypes, self.inputs_channels_last = [], set(), []
        self.weights_channels_last, self.end, self._handles = None, {}, []

    def on_train_start(self, trainer, pl_module):
        net = pl_module.net
        self.weights_channels_last = all(p.is_contiguous(memory_format=torch.channels_last)
                                         for p in net.parameters() if p.dim() == 4)

        def backbone_input(module, args):
            if module.training:
                self.inputs_channels_last.append(args[0].is_contiguous(memory_format=torch.channels_last))

        def logits(module, args, output):
            if module.training:
                self.logits_dtypes.add(output.dtype)

        self._handles = [net.net.register_forward_pre_hook(backbone_input), net.register_forward_hook(logits)]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(trainer.callback_metrics["train/loss"]))

    def on_train_end(self, trainer, pl_module):
        for handle in self._handles:
            handle.remove()
        self.end = {k: v.detach().clone() for k, v in pl_module.net.state_dict().items()
                    if isinstance(v, torch.Tensor)}


@pytest.mark.parametrize("method", ["rsnet", "san", "mutualnet"])
def test_bf16_channels_last_training_on_cuda(method, tmp_path):
    extra = ["method.width_range=[0.5,1.0]", "calibration_samples=16"] if method == "mutualnet" else []
    train(tiny_cfg(tmp_path, *GPU, f"method={method}", "trainer.precision=bf16-mixed", "memory_format=channels_last",
                   "trainer.limit_train_batches=3", *RECORD, *extra))
    run = RUNS[-1]
    assert run.logits_dtypes == {torch.bfloat16}  # autocast on in every training forward
    assert run.weights_channels_last and run.inputs_channels_last and all(run.inputs_channels_last)
    assert len(run.losses) == 3 and all(math.isfinite(v) for v in run.losses), run.losses
    assert all(v.is_cuda for v in run.end.values())  # trained on the GPU
    assert all(torch.isfinite(v).all() for v in run.end.values() if v.is_floating_point())


def test_channels_last_equals_contiguous_on_cuda():
    torch.manual_seed(0)
    plain = create_model("resnet18", method=build_method("rsnet", [32, 24]), num_classes=10)
    nhwc = create_model("resnet18", method=build_method("rsnet", [32, 24]), num_classes=10)
    nhwc.load_state_dict(plain.state_dict())
    plain, nhwc = plain.to(CUDA).eval(), use_channels_last(nhwc.to(CUDA)).eval()
    with torch.no_grad():
        for config in (SubnetConfig(32), SubnetConfig(24)):
            x = torch.randn(8, 3, config.resolution, config.resolution, device=CUDA)
            with plain.switch(config), nhwc.switch(config):  # cuDNN may run either in TF32: ~1e-3
                torch.testing.assert_close(nhwc(x), plain(x), rtol=5e-3, atol=5e-3, msg=str(config))


def test_nan_check_on_cuda_raises_lag_steps_later_and_on_flush():
    net = create_model("resnet20", method=build_method("rsnet", [16]), num_classes=10, base_width=8)
    net = net.to(CUDA)
    x = torch.randn(4, 3, 16, 16, device=CUDA)

    def step(guard, index, bad):
        with net.switch(SubnetConfig(16)), guard.watch(net):
            loss = net(x).logsumexp(1).mean() * (float("nan") if bad else 1.0)
            guard.record_loss(loss, SubnetConfig(16))
        guard.check(index)

    guard = FiniteGuard(lag=2)
    step(guard, 0, bad=True)  # queued: no host read on CUDA
    step(guard, 1, bad=False)
    assert len(guard._pending) == 2
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) at global step 0, configuration resolution=16"):
        step(guard, 2, bad=False)  # step 0's flags are read now
    guard = FiniteGuard(lag=2)
    step(guard, 5, bad=True)
    with pytest.raises(NonFiniteLossError, match="global step 5"):
        guard.flush()  # before a checkpoint


def test_loaders_pin_host_memory_on_cuda(tmp_path):
    dm = MultiResDataModule(name="synthetic", train_resolutions=(16, 12), batch_size=4, num_workers=0,
                            train_samples=8, val_samples=8)
    assert dm.pin_memory  # the default with CUDA
    dm.setup("fit")
    images, targets = next(iter(dm.train_dataloader()))
    assert images.is_pinned() and targets.is_pinned()
    path = tmp_path / "x.jpg"
    natural_image(1, 96, 72, texture=5.0).save(path, quality=90)
    item = DecodeCropFlip(32, (0.08, 1.0), 3, ToUint8CHW(3), defer=True)(open_image_lazy(str(path)))
    batch = dd.DeferredCollate(3, 32)([(item, 0), (item, 1)]).pin_memory()
    assert batch.images.is_pinned() and batch.targets.is_pinned()
    moved = batch.to(CUDA)
    assert moved.images.is_cuda and moved.flips.is_cuda and not moved.encoded.is_cuda  # nvJPEG reads host bytes


def test_device_jpeg_decode_matches_cpu_decode(tmp_path):
    for split in ("train", "val"):
        for c, cls in enumerate(("a", "b")):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(6):
                image = natural_image(10 * c + i, 100 + 4 * i, 80 + 2 * i, texture=20.0)
                image.save(tmp_path / split / cls / f"{i}.jpg", quality=90, progressive=i % 3 == 2)
    natural_image(99, 90, 70).convert("L").save(tmp_path / "train" / "a" / "grey.jpg")
    path = str(tmp_path / "train" / "a" / "0.jpg")
    cpu, gpu = codec_decode_jpeg(path), codec_decode_jpeg([path], device=CUDA)[0]
    assert gpu.is_cuda and gpu.shape == cpu.shape and (gpu.cpu().int() - cpu.int()).abs().float().mean() <= 1.0

    def loader(decode):  # 48 px crops of <= 124 x 90 images: never a reduced-scale (draft) decode in the workers
        dm = MultiResDataModule(name="imagefolder", root=str(tmp_path), train_resolutions=(48, 32), batch_size=4,
                                num_workers=2, decode=decode)
        dm.setup("fit")
        return dm, dm.train_dataloader()

    dm_gpu, on_gpu = loader("device")
    assert dm_gpu.decode_on_device
    _, on_cpu = loader("worker")
    count = 0
    for batch, (images, targets) in zip(on_gpu, on_cpu):
        assert isinstance(batch, dd.DeferredJpegBatch)
        moved = to_device(batch, CUDA)
        decoded = dd.decode_batch(moved)
        assert decoded.is_cuda and decoded.dtype == torch.uint8 and torch.equal(moved.targets.cpu(), targets)
        for a, b in zip(decoded.cpu(), images):  # nvJPEG + float kernel vs libjpeg-turbo + uint8 kernel
            assert (a.int() - b.int()).abs().float().mean() <= 2.0 and psnr(a, b) >= 35.0
        multires = dm_gpu.on_after_batch_transfer(to_device(batch, CUDA), 0)
        assert multires.images.is_cuda and multires.at(32).shape == (4, 3, 32, 32)
        count += 1
    assert count == len(on_cpu) == 3


def test_bench_memory_reads_cuda_peak_memory():
    opts = dict(bench_step.DEFAULTS, model="resnet20", resolutions=[32, 16], batch_size=8, num_classes=10,
                precision="bf16-mixed", memory_format="channels_last")
    images, targets = bench_step.make_data(opts, CUDA)
    mb = {role: bench_step.measure_step_mb(bench_step.build_step(role, opts, {}, images, targets, CUDA), CUDA)
          for role in ("ours", "baseline")}
    assert all(v > 0 for v in mb.values()), mb
