"""Fault tolerance on tiny runs: step checkpoints, exact mid-epoch resume, NaN stops, the loader's
resumable position."""

from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from resnet_switch.data.sampling import EpochShuffleSampler, ResumableLoader
from resnet_switch.models import create_model
from resnet_switch.switch import SubnetConfig
from resnet_switch.train import train
from resnet_switch.training.checkpointing import load_checkpoint
from resnet_switch.training.finite_guard import FiniteGuard, NonFiniteLossError

from .helpers import assert_crash_then_resume_is_exact, tiny_cfg

STEPS = ["callbacks.last_checkpoint.every_n_train_steps=1"]  # 64 samples / batch 16: 4 steps per epoch


def _ckpt(run_dir):
    return load_checkpoint(run_dir / "checkpoints" / "last.ckpt")


class Keys(torch.utils.data.Dataset):
    """Items are the sampler's keys ``epoch * 40 + index`` themselves."""

    def __len__(self):
        return 40

    def __getitem__(self, key):
        return key


def test_resumable_loader_skips_the_batches_already_served():
    dataset = Keys()
    loader = ResumableLoader(dataset, batch_size=4, sampler=EpochShuffleSampler(40, seed=3), drop_last=True)
    loader.sampler.set_epoch(2)
    full = [b.tolist() for b in loader]
    it = iter(loader)
    seen = [next(it).tolist() for _ in range(3)]
    state = loader.state_dict()
    assert state == {"epoch": 2, "batches": 3} and seen == full[:3]
    fresh = ResumableLoader(dataset, batch_size=4, sampler=EpochShuffleSampler(40, seed=3), drop_last=True)
    fresh.load_state_dict(state)
    fresh.sampler.set_epoch(2)  # Lightning sets the epoch after loading the state, before iterating
    assert len(fresh) == len(full) == 10
    assert [b.tolist() for b in fresh] == full[3:]
    assert [b.tolist() for b in fresh] == full  # the next iteration starts the epoch from its beginning
    other = ResumableLoader(dataset, batch_size=4, sampler=EpochShuffleSampler(40, seed=3), drop_last=True)
    other.load_state_dict(state)
    other.sampler.set_epoch(3)  # a state of another epoch skips nothing
    assert len(list(other)) == 10


def test_sharded_sampler_gives_each_step_the_same_samples_as_one_process():
    one = EpochShuffleSampler(50, seed=1)
    shards = [EpochShuffleSampler(50, seed=1, num_replicas=2, rank=r) for r in (0, 1)]
    for s in (one, *shards):
        s.set_epoch(4)
    keys, parts = list(one), [list(s) for s in shards]
    assert len(parts[0]) == len(parts[1]) == 25
    for step in range(25 // 4):  # batch 8 on one process == batch 4 on each of two
        assert sorted(keys[8 * step: 8 * step + 8]) == sorted(parts[0][4 * step: 4 * step + 4]
                                                              + parts[1][4 * step: 4 * step + 4])


@pytest.mark.parametrize("method", ["rsnet", "mutualnet"])
def test_crash_mid_epoch_then_resume_matches_an_uninterrupted_run(method, tmp_path):
    extra = [f"method={method}", "trainer.max_epochs=2", "trainer.deterministic=true", *STEPS]
    if method == "mutualnet":
        extra += ["method.width_range=[0.5,1.0]", "calibration_samples=16"]
    # the crash comes after step 6: epoch 1, after its 2nd of 4 batches; 8 steps in all
    assert_crash_then_resume_is_exact(tiny_cfg, tmp_path, extra, crash_step=6, epoch=1, batches=2, total_steps=8)


def test_nan_loss_stops_with_step_and_configuration_and_keeps_the_last_good_checkpoint(tmp_path):
    poison = ["+callbacks.poison._target_=tests.helpers.PoisonAtStep", "+callbacks.poison.step=5",
              "+callbacks.poison.set_index=1"]  # BN set of resolution 12 (data.resolutions=[16,12])
    with pytest.raises(NonFiniteLossError) as err:
        train(tiny_cfg(tmp_path, "trainer.max_epochs=2", *STEPS, *poison))
    message = str(err.value)
    assert "\n" not in message
    assert "global step 5" in message and "resolution=12 width=1" in message, message
    ckpt = _ckpt(tmp_path)
    assert ckpt["global_step"] == 5
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values()
               if isinstance(v, torch.Tensor) and v.is_floating_point())


class OnCuda(torch.Tensor):
    """A CPU tensor that reports ``device.type == "cuda"``: the guard takes its deferred (CUDA) path
    on this CPU-only machine (the real device is exercised in tests/test_cuda.py)."""

    @property
    def device(self):
        return torch.device("cuda")


class HostEvent:
    """Stands in for ``torch.cuda.Event``: counts the waits for a queued step's flags."""

    waits = 0

    def record(self):
        pass

    def synchronize(self):
        HostEvent.waits += 1


def _tiny_net():
    return create_model("resnet20", [16, 12], num_classes=10, base_width=4)


def _train_step(guard, net, step, bad_config=None):
    """One step as the LightningModule runs it: a forward and a backward per configuration inside
    ``guard.watch``, each loss handed to ``record_loss``, then ``guard.check(step)``. The input of
    ``bad_config`` holds a NaN."""
    with guard.watch(net):
        for config in (SubnetConfig(16), SubnetConfig(12)):
            x = torch.randn(2, 3, config.resolution, config.resolution)
            if config == bad_config:
                x[0, 0, 0, 0] = float("nan")
            with net.switch(config):
                loss = torch.nn.functional.cross_entropy(net(x), torch.tensor([0, 1]))
            guard.record_loss(loss, config)
            loss.backward()
    guard.check(step)


def test_check_on_the_cpu_raises_at_the_bad_step_naming_its_configuration():
    net, guard = _tiny_net(), FiniteGuard(lag=2)
    for step in range(3):
        _train_step(guard, net, step)
    with pytest.raises(NonFiniteLossError) as err:
        _train_step(guard, net, 3, bad_config=SubnetConfig(12))
    message = str(err.value)
    assert "\n" not in message
    # the logits of resolution 12 are the first non-finite record of step 3 (its loss comes after them)
    assert message.startswith("train: non-finite logits (nan) at global step 3, configuration resolution=12 width=1;")
    assert "before the optimizer step" in message  # not deferred on the CPU


@pytest.fixture
def on_cuda(monkeypatch):
    """The guard sees every record on a CUDA device: the network's outputs are viewed as
    :class:`OnCuda` (a forward hook registered before the guard's own), events are host stand-ins."""
    monkeypatch.setattr(torch.cuda, "Event", HostEvent)
    HostEvent.waits = 0

    def view(net):
        net.register_forward_hook(lambda module, inputs, output: output.as_subclass(OnCuda))
        return net

    return view


@pytest.mark.parametrize("lag", [1, 2, 3])
def test_deferred_check_raises_lag_steps_later_or_on_flush(on_cuda, lag):
    net, guard = on_cuda(_tiny_net()), FiniteGuard(lag=lag)
    bad = 2
    for step in range(bad):
        _train_step(guard, net, step)
    _train_step(guard, net, bad, bad_config=SubnetConfig(16))  # queued: no raise at the bad step itself
    for step in range(bad + 1, bad + lag):
        _train_step(guard, net, step)  # the bad step's flags are not read yet
    assert HostEvent.waits == bad  # steps 0..bad-1 were read, the bad one not yet
    with pytest.raises(NonFiniteLossError) as err:
        _train_step(guard, net, bad + lag)  # exactly `lag` steps later its flags are read
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"train: non-finite logits (nan) at global step {bad}, configuration resolution=16 "
                              "width=1;"), message
    assert f"training stopped within {lag} steps, before any later checkpoint" in message

    # a bad last step (fewer than `lag` steps after it): flush, before the checkpoint, raises
    net, guard = on_cuda(_tiny_net()), FiniteGuard(lag=lag)
    _train_step(guard, net, 0)
    _train_step(guard, net, 1, bad_config=SubnetConfig(12))
    with pytest.raises(NonFiniteLossError, match=r"non-finite logits \(nan\) at global step 1, configuration "
                                                 r"resolution=12 width=1;"):
        guard.flush()
    guard.flush()  # read once: a later flush has nothing left to raise


class EpochOfLastCheckpoint(Callback):
    """At each epoch's start: the epoch stored in ``last.ckpt`` (None while there is none)."""

    seen: list = []

    def on_train_epoch_start(self, trainer, pl_module):
        path = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
        EpochOfLastCheckpoint.seen.append(load_checkpoint(path)["epoch"] if path.is_file() else None)


def test_last_checkpoint_is_refreshed_after_epochs_without_validation(tmp_path):
    """check_val_every_n_epoch=3: Lightning's ModelCheckpoint would save only after epoch 3's
    validation; a run killed in epoch 2 or 3 must still resume from the epoch before."""
    EpochOfLastCheckpoint.seen = []
    train(tiny_cfg(tmp_path, "trainer.max_epochs=3", "trainer.check_val_every_n_epoch=3",
                   "+callbacks.record._target_=tests.test_fault_tolerance.EpochOfLastCheckpoint"))
    assert EpochOfLastCheckpoint.seen == [None, 0, 1]  # saved after epochs 0 and 1, which have no validation
    assert _ckpt(tmp_path)["epoch"] == 2
