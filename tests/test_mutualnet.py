"""MutualNet / US-Net / S-Net training steps: sandwich order, losses, draws, private BN per width."""

import io

import pytest
import torch
import torch.nn.functional as F

from resnet_switch.data.multires import MultiResBatch
from resnet_switch.losses import kl_to_teacher
from resnet_switch.methods import METHODS, build_method
from resnet_switch.models import create_model
from resnet_switch.switch import SubnetConfig

RES = [32, 24, 16]


def setup(name, **kw):
    method = build_method(name, RES, **kw)
    net = create_model("resnet20", method=method, num_classes=5)
    batch = MultiResBatch(torch.randn(6, 3, 32, 32), torch.randint(0, 5, (6,)))
    return method, net, batch


def run_step(method, net, batch):
    """One training step; returns (outputs, configs forwarded in order, backward count)."""
    seen, backwards = [], []
    hook = net.register_forward_pre_hook(lambda m, inp: seen.append((m.config, inp[0].shape[-1])))

    def backward(loss):
        backwards.append(loss.detach())
        loss.backward()

    out = method.training_step(net, batch, backward)
    hook.remove()
    return out, seen, backwards


def test_registered_and_net_built_with_slimmable_layers():
    assert {"mutualnet", "usnet", "snet"} <= set(METHODS)
    method, net, _ = setup("mutualnet", width_range=[0.35, 1.0])
    assert net.spec["layers"] == "slimmable" and net.spec["layer_kwargs"] == {"divisor": 8}
    assert net.spec["widths"] == [1.0, 0.35] and method.per_config_backward


def test_sandwich_step_order_losses_and_no_optimizer_step():
    method, net, batch = setup("mutualnet", width_range=[0.25, 1.0], n_random=2, seed=1)
    twin = build_method("mutualnet", RES, width_range=[0.25, 1.0], n_random=2, seed=1)
    expected = twin.step_configs()
    before = [p.detach().clone() for p in net.parameters()]
    out, seen, backwards = run_step(method, net, batch)
    configs = [c for c, _ in seen]
    assert configs == expected and len(configs) == 4
    assert all(r == c.resolution for c, r in seen)  # each ran on the batch at its own resolution
    assert configs[0] == SubnetConfig(32, 1.0) and configs[1].width == 0.25
    assert all(0.25 <= c.width <= 1.0 and c.resolution in RES for c in configs[2:])
    assert len(backwards) == 4  # one backward per sub-network
    assert all(torch.equal(p, b) for p, b in zip(net.parameters(), before))  # the caller steps
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    # losses: CE for the full net, KL(p_full || p_sub) for the others (same weights, train-mode BN)
    with torch.no_grad(), net.switch(configs[0]):
        teacher = net(batch.at(32))
    with torch.no_grad(), net.switch(configs[1]):
        student = net(batch.at(configs[1].resolution))
    torch.testing.assert_close(out["ce_full"], F.cross_entropy(teacher, batch.targets), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["loss_min"], kl_to_teacher(student, teacher), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out["loss"], sum(backwards), rtol=1e-6, atol=1e-6)


def test_without_inplace_distillation_students_use_labels():
    method, net, batch = setup("mutualnet", inplace_distill=False, n_random=0, seed=2)
    out, seen, backwards = run_step(method, net, batch)
    assert len(backwards) == 2
    with torch.no_grad(), net.switch(seen[1][0]):
        student = net(batch.at(seen[1][0].resolution))
    torch.testing.assert_close(out["loss_min"], F.cross_entropy(student, batch.targets), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("epoch, distilled", [(0.0, False), (0.99, False), (1.0, True), (2.5, True)])
def test_distillation_warmup_students_learn_labels_first(epoch, distilled):
    method, net, batch = setup("mutualnet", n_random=0, seed=3, distill_warmup_epochs=1)
    method.set_epoch(epoch)
    out, seen, _ = run_step(method, net, batch)
    with torch.no_grad():
        with net.switch(seen[0][0]):
            teacher = net(batch.at(32))
        with net.switch(seen[1][0]):
            student = net(batch.at(seen[1][0].resolution))
    expected = kl_to_teacher(student, teacher) if distilled else F.cross_entropy(student, batch.targets)
    torch.testing.assert_close(out["loss_min"], expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("bad", [-1, True, float("nan")])
def test_distillation_warmup_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="method.distill_warmup_epochs"):
        build_method("mutualnet", RES, distill_warmup_epochs=bad)


def test_usnet_runs_every_subnetwork_at_the_highest_resolution():
    method, net, batch = setup("usnet", n_random=3)
    _, seen, backwards = run_step(method, net, batch)
    assert [r for _, r in seen] == [32] * 5 and len(backwards) == 5


def test_width_draws_reproducible_from_seed_and_resumable():
    a = build_method("mutualnet", RES, seed=7)
    b = build_method("mutualnet", RES, seed=7)
    c = build_method("mutualnet", RES, seed=8)
    seq_a = [a.step_configs() for _ in range(5)]
    assert seq_a == [b.step_configs() for _ in range(5)]
    assert seq_a != [c.step_configs() for _ in range(5)]
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)  # mid-run checkpoint
    continued = [a.step_configs() for _ in range(3)]
    resumed = build_method("mutualnet", RES, seed=0)
    buffer.seek(0)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert [resumed.step_configs() for _ in range(3)] == continued


@pytest.mark.parametrize("bad", [[0.0, 1.0], [0.5, 0.5], [0.8, 0.3], [0.25, 1.5], [0.25]])
def test_width_range_validation(bad):
    with pytest.raises(ValueError, match="method.width_range"):
        build_method("mutualnet", RES, width_range=bad)


def test_eval_configs_grid():
    method = build_method("mutualnet", RES, width_range=[0.25, 1.0])
    grid = method.eval_configs()
    assert {c.width for c in grid} == {1.0, 0.625, 0.25} and {c.resolution for c in grid} == set(RES)
    assert len(grid) == 9


def test_snet_sum_of_ce_over_widths_with_private_bn():
    method, net, batch = setup("snet", widths=[0.5, 1.0, 0.25])
    assert net.spec["layer_kwargs"] == {"divisor": 8, "private_bn_per_width": True}
    bn = net.net.bn1
    before = bn.sets[0].running_mean.clone()
    out, seen, backwards = run_step(method, net, batch)
    assert [c for c, _ in seen] == [SubnetConfig(32, w) for w in (1.0, 0.5, 0.25)]
    assert len(backwards) == 3
    torch.testing.assert_close(out["loss"], sum(backwards))
    assert not torch.equal(bn.sets[0].running_mean, before)
    with pytest.raises(ValueError, match="method.widths"):
        build_method("snet", RES, widths=[1.0, 1.0])
