"""Speed options of training: ``memory_format=channels_last``, ``trainer.precision=bf16-mixed`` with
every method's manual optimisation, and ``compile=true`` (one graph per configuration)."""

import csv
import math

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from resnet_switch.errors import ConfigError
from resnet_switch.methods import build_method
from resnet_switch.models import create_model
from resnet_switch.switch import SubnetConfig
from resnet_switch.train import train
from resnet_switch.training.checkpointing import load_checkpoint, rebuild_from_checkpoint
from resnet_switch.training.lit_module import SwitchModule
from resnet_switch.training.speed import compile_switchable, graphs_needed

from .helpers import FirstBatchProbe, tiny_cfg

CL = torch.channels_last
RUNS: list["RecordRun"] = []  # the RecordRun callbacks made by Hydra, newest last
RECORD = ["+callbacks.record._target_=tests.test_speed_options.RecordRun"]
PROBE = ["+callbacks.probe._target_=tests.helpers.FirstBatchProbe"]
# model.base_width=8: on this CPU build (torch 2.14.1, oneDNN 3.12) the weight gradient of a
# channels_last 1x1 stride-2 conv with 4 input channels (resnet20 at base_width=4) corrupts the heap
WIDER = ["model.base_width=8"]


class RecordRun(Callback):
    """Per-step losses, the logits of the first training forward per configuration, the network's
    weights at the start and end of training, the logits of a fixed input per evaluation
    configuration at the end, and facts about layouts and dtypes."""

    def __init__(self):
        RUNS.append(self)
        self.losses: list[float] = []
        self.inputs_channels_last: dict[str, list[bool]] = {"train": [], "val": []}
        self.logits_dtypes: set[torch.dtype] = set()
        self.first_logits: dict[SubnetConfig, torch.Tensor] = {}
        self.weights_channels_last: bool | None = None
        self.start: dict[str, torch.Tensor] = {}
        self.end: dict[str, torch.Tensor] = {}
        self.logits: dict[SubnetConfig, torch.Tensor] = {}
        self.inputs: dict[SubnetConfig, torch.Tensor] = {}
        self._handles = []

    def on_train_start(self, trainer, pl_module):
        net = pl_module.net
        convs = [p for p in net.parameters() if p.dim() == 4]
        self.weights_channels_last = bool(convs) and all(p.is_contiguous(memory_format=CL) for p in convs)
        self.start = {k: v.detach().clone() for k, v in net.state_dict().items() if isinstance(v, torch.Tensor)}

        def backbone_input(module, args):  # after the switchable net's own pre-hooks
            self.inputs_channels_last["train" if module.training else "val"].append(
                args[0].is_contiguous(memory_format=CL))

        def training_logits(module, args, output):
            if module.training:
                self.logits_dtypes.add(output.dtype)
                self.first_logits.setdefault(module.state.config, output.detach().float().clone())

        self._handles = [net.net.register_forward_pre_hook(backbone_input),
                         net.register_forward_hook(training_logits)]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(trainer.callback_metrics["train/loss"]))

    def on_train_end(self, trainer, pl_module):
        for handle in self._handles:
            handle.remove()
        net = pl_module.net
        self.end = {k: v.detach().clone() for k, v in net.state_dict().items() if isinstance(v, torch.Tensor)}
        was_training = net.training
        net.eval()
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for config in pl_module.eval_configs:
                x = self.inputs[config] = torch.randn(4, 3, config.resolution, config.resolution, generator=gen)
                with pl_module.policy.switch(config):
                    self.logits[config] = net(x).float()
        net.train(was_training)


def _run(tmp_path, name, *overrides):
    train(tiny_cfg(tmp_path / name, "trainer.limit_train_batches=2", "data.val_samples=16", *RECORD, *overrides))
    return RUNS[-1]


def _logged(run_dir, column):
    with (run_dir / "csv" / "version_0" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    return [float(r[column]) for r in rows if r.get(column)]


# ------------------------------------------------------------------------------------ channels_last
def test_channels_last_trains_like_contiguous(tmp_path):
    # the recipe whose two-step losses agree to 1e-5 across layouts (at lr 0.02 a ReLU flip shows more)
    recipe = ("optim.lr=0.1", "data.crop_scale=[0.25,1.0]")
    plain = _run(tmp_path, "contiguous", *WIDER, *recipe, "memory_format=contiguous")
    nhwc = _run(tmp_path, "channels_last", *WIDER, *recipe, "memory_format=channels_last")
    assert plain.weights_channels_last is False
    assert nhwc.weights_channels_last is True  # every 4-D weight, after setup (device placement)
    for split in ("train", "val"):  # every image the network got, training and validation
        assert nhwc.inputs_channels_last[split] and all(nhwc.inputs_channels_last[split]), split
    configs = {SubnetConfig(16), SubnetConfig(12)}
    # same seed, same weights: the first step's logits per resolution, then every step's loss
    assert set(nhwc.first_logits) == set(plain.first_logits) == configs
    for config, logits in plain.first_logits.items():
        torch.testing.assert_close(nhwc.first_logits[config], logits, rtol=0, atol=1e-5, msg=str(config))
    assert len(plain.losses) == len(nhwc.losses) == 2
    assert nhwc.losses == pytest.approx(plain.losses, rel=1e-5)
    # weights after 2 SGD steps agree only loosely: an activation within rounding of 0 takes the
    # other side of a ReLU in one layout, which moves its gradient by O(1e-3) in this tiny net
    for key, value in plain.end.items():
        torch.testing.assert_close(nhwc.end[key], value, rtol=0, atol=5e-3, msg=key)
    # the checkpoint rebuilds a plain (contiguous) network: the same logits as the NHWC one
    _, net, _ = rebuild_from_checkpoint(load_checkpoint(tmp_path / "channels_last" / "checkpoints" / "last.ckpt"))
    assert set(nhwc.logits) == configs
    with torch.no_grad():
        for config, logits in nhwc.logits.items():
            with net.switch(config):
                torch.testing.assert_close(net(nhwc.inputs[config]), logits, rtol=0, atol=1e-5, msg=str(config))


# ------------------------------------------------------------------------------------- bf16-mixed AMP
AMP_METHODS = [
    ("rsnet", []),
    ("san", []),
    ("mutualnet", ["method.width_range=[0.5,1.0]", "calibration_samples=16"]),
]


@pytest.mark.parametrize("method,extra", AMP_METHODS, ids=[m for m, _ in AMP_METHODS])
def test_bf16_mixed_trains_with_manual_optimisation(method, extra, tmp_path):
    run = _run(tmp_path, method, f"method={method}", "trainer.precision=bf16-mixed",
               "trainer.limit_train_batches=3", *extra, *PROBE)
    assert run.logits_dtypes == {torch.bfloat16}  # autocast was on in the training forwards
    assert len(run.losses) == 3 and all(math.isfinite(v) for v in run.losses), run.losses
    changed = [k for k, v in run.start.items() if v.is_floating_point() and not torch.equal(v, run.end[k])]
    assert any(k.endswith("weight") and run.start[k].dim() == 4 for k in changed), "conv weights did not move"
    assert all(torch.isfinite(v).all() for v in run.end.values() if v.is_floating_point())
    # learning: the first bf16 step lowers the float32 cross-entropy of its own batch against the
    # untrained net (seeds 0-2: by 0.08-0.36 nats from ~2.4; no step: exactly 0)
    probe = FirstBatchProbe.made[-1]
    assert probe.loss_after_step < probe.loss_before - 0.03, (probe.loss_before, probe.loss_after_step)
    assert _logged(tmp_path / method, "val/acc1_mean")  # validation ran and was logged


# ------------------------------------------------------------------------------------ torch.compile
def _tiny(method="rsnet", **method_kwargs):
    built = build_method(method, [16, 12], **method_kwargs)
    return built, create_model("resnet20", method=built, num_classes=10, base_width=4)


def _module(method, net, **kwargs):
    return SwitchModule(method, net, optim={"lr": 0.1, "weight_decay": 0.0}, method_meta={"name": "x"}, **kwargs)


def test_compile_is_in_place_and_sized_for_every_configuration():
    method, net = _tiny()
    keys = list(net.state_dict())
    module = _module(method, net, compile_net=True)
    assert module.compile_configs == [SubnetConfig(16), SubnetConfig(12)]
    assert net._compiled_call_impl is None  # compiled in configure_model, in each process
    module.configure_model()
    compiled = net._compiled_call_impl
    module.configure_model()
    assert compiled is not None and net._compiled_call_impl is compiled  # in place, once, compiled lazily
    assert list(net.state_dict()) == keys  # no `_orig_mod.` prefixes: checkpoints stay loadable
    assert torch._dynamo.config.cache_size_limit >= graphs_needed(2)


@pytest.mark.parametrize("method", ["mutualnet", "usnet"])
def test_compile_refuses_methods_with_random_widths(method):
    m, net = _tiny(method, width_range=[0.5, 1.0])
    with pytest.raises(ConfigError, match=r"^compile: method=x .*use compile=false$"):
        _module(m, net, compile_net=True)


def test_snet_compiles_its_fixed_widths():
    method, net = _tiny("snet", widths=[1.0, 0.5])
    assert _module(method, net, compile_net=True).compile_configs == [
        SubnetConfig(16, 1.0), SubnetConfig(16, 0.5), SubnetConfig(12, 1.0), SubnetConfig(12, 0.5)]


@pytest.mark.slow
def test_compiled_network_equals_eager_with_one_graph_per_configuration():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    method, net = _tiny()
    net.eval()
    configs = [SubnetConfig(16), SubnetConfig(12)]
    gen = torch.Generator().manual_seed(0)
    inputs = {c: torch.randn(8, 3, c.resolution, c.resolution, generator=gen) for c in configs}
    with torch.no_grad():
        eager = {}
        for c in configs:
            with net.switch(c):
                eager[c] = net(inputs[c])
        compile_switchable(net, configs)
        for _ in range(2):  # switching back and forth reuses each configuration's graph
            for c in configs:
                with net.switch(c):
                    torch.testing.assert_close(net(inputs[c]), eager[c], rtol=0, atol=1e-5, msg=str(c))
    assert counters["stats"]["unique_graphs"] == 2
    torch._dynamo.reset()
