"""The papers' ``precision: 16-mixed`` recipe path on the CPU: fp16 autocast and a real gradient
scaler under the manual optimisation of :class:`~resnet_switch.training.module.SwitchTrainingModule`,
through Lightning's own precision plugin.

On a CPU ``Trainer(precision="16-mixed")`` silently runs ``bf16-mixed`` without a scaler, so the
tests pass the plugin a GPU run gets, ``MixedPrecision("16-mixed", "cpu", scaler=GradScaler("cpu"))``:
``manual_backward`` scales each loss, ``optimizer.step()`` unscales, calls ``on_before_optimizer_step``
(where the module clips), skips the step on inf/NaN gradients and updates the scale. Checked for
RS-Net (one backward per step) and SAN / MutualNet (one backward per configuration): the gradients
the optimizer sees equal the fp32 step's within fp16 tolerance; an inf gradient skips exactly that
step and halves the scale; clipping sees unscaled gradients; the NaN guard does not stop on a
scaler-skipped step; a resumed run continues with the saved scale.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.precision import MixedPrecision

from resnet_switch.data import MultiResDataModule
from resnet_switch.methods import build_method
from resnet_switch.models import create_model
from resnet_switch.training.lit_module import SwitchModule

METHOD_KWARGS = {"rsnet": {}, "san": {}, "mutualnet": {"width_range": [0.5, 1.0], "n_random": 1}}
RESOLUTIONS = [16, 12]
LR = 0.05
# the scale the tests start at: one the first steps of these tiny nets do not overflow (GradScaler's
# default 2**16 overflows SAN's first fp16 backward here: that step is skipped, the path tested below)
INIT_SCALE = 2.0**10


def fp16_plugin(init_scale: float = INIT_SCALE) -> MixedPrecision:
    """What ``precision=16-mixed`` gives a GPU run, on the CPU: fp16 autocast + a gradient scaler."""
    return MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=init_scale))


def make_module(method: str, clip: float | None = None) -> SwitchModule:
    torch.manual_seed(0)
    kwargs = METHOD_KWARGS[method]
    m = build_method(method, RESOLUTIONS, **kwargs)
    net = create_model("resnet20", method=m, num_classes=10, base_width=4)
    optim = {"lr": LR, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0, "warmup_epochs": 0,
             "clip_grad_norm": clip}
    return SwitchModule(m, net, optim, method_meta={"name": method, "kwargs": kwargs}, calibration_samples=4)


def make_data() -> MultiResDataModule:
    return MultiResDataModule(name="synthetic", train_resolutions=RESOLUTIONS, batch_size=4, num_workers=0,
                              train_samples=16, val_samples=4, pin_memory=False, synthetic={"native_size": 16})


class Probe(Callback):
    """Per batch: the weights before and after, the scale before; per optimizer step TAKEN (the
    scaler calls ``optimizer.step`` only on finite gradients): the gradients the optimizer sees
    (unscaled, clipped). ``inject_at``: a global step whose first backward gets an inf gradient."""

    def __init__(self, inject_at: int | None = None):
        self.inject_at = inject_at
        self.taken: dict[int, dict[str, torch.Tensor]] = {}
        self.before: list[dict[str, torch.Tensor]] = []
        self.after: list[dict[str, torch.Tensor]] = []
        self.scales: list[float] = []
        self.injected = False

    @staticmethod
    def weights(module) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in module.net.named_parameters()}

    def on_train_start(self, trainer, module):
        def grads(optimizer, args, kwargs):
            self.taken[trainer.global_step] = {n: p.grad.detach().clone() for n, p in module.net.named_parameters()
                                               if p.grad is not None}

        self.handle = trainer.optimizers[0].register_step_pre_hook(grads)

    def on_train_end(self, trainer, module):
        self.handle.remove()

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        scaler = trainer.precision_plugin.scaler if hasattr(trainer.precision_plugin, "scaler") else None
        self.scales.append(scaler.get_scale() if scaler is not None else 1.0)
        self.before.append(self.weights(module))
        self.injected = False

    def on_after_backward(self, trainer, module):
        if trainer.global_step == self.inject_at and not self.injected:
            next(module.net.parameters()).grad.view(-1)[0] = float("inf")  # a scaled gradient overflowed
            self.injected = True

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.after.append(self.weights(module))


def fit(module, steps: int, plugin=None, probe: Probe | None = None, root=None, ckpt_path=None, callbacks=()):
    """``steps`` optimizer steps of ``module`` on the CPU, fp32 or with ``plugin`` (no validation)."""
    probe = probe or Probe()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, limit_val_batches=0, num_sanity_val_steps=0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=root, callbacks=[probe, *callbacks],
                        plugins=[plugin] if plugin is not None else None)
    trainer.fit(module, datamodule=make_data(), ckpt_path=ckpt_path)
    return trainer, probe


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


def flat(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.flatten() for g in grads.values()])


@pytest.mark.parametrize("method", list(METHOD_KWARGS))
def test_fp16_step_gradients_equal_the_fp32_step_s(method):
    """(a) One step in 16-mixed with the scaler (every forward in fp16): the gradients the optimizer
    sees are the fp16 step's own, unscaled exactly (each parameter within 2 % of the same step
    without scaling, which only loses the values fp16 cannot hold; a missed, doubled or per-backward
    mismatched unscale is off by a factor >= 2), and equal the fp32 step's within fp16 rounding:
    the classifier's gradients within 1 %, the whole gradient at cosine >= 0.95. (The early layers
    of an untrained ResNet-20 have shattered gradients: rounding the fp32 step's INPUT alone to fp16
    moves its first conv's gradient by ~10 %, so a tighter bound there would measure the network's
    sensitivity, not the fp16 path.)"""
    dtypes = set()
    fp16 = make_module(method)
    fp16.net.register_forward_hook(lambda m, a, out: dtypes.add(out.dtype))
    _, scaled = fit(fp16, 1, fp16_plugin())
    _, unscaled = fit(make_module(method), 1, fp16_plugin(init_scale=1.0))
    _, fp32 = fit(make_module(method), 1)
    assert dtypes == {torch.float16}
    assert scaled.scales == [INIT_SCALE] and list(scaled.taken) == list(unscaled.taken) == list(fp32.taken) == [0]
    g16, g1, g32 = scaled.taken[0], unscaled.taken[0], fp32.taken[0]
    assert g16.keys() == g1.keys() == g32.keys() and len(g32) > 10
    for name, g in g1.items():
        if g.norm() > 1e-6:
            assert relative_error(g16[name], g) < 0.02, name
    for name in ("net.fc.weight", "net.fc.bias"):
        assert relative_error(g16[name], g32[name]) < 0.01, name
    assert float(torch.nn.functional.cosine_similarity(flat(g16), flat(g32), 0)) > 0.95


@pytest.mark.parametrize("method", list(METHOD_KWARGS))
def test_an_inf_gradient_skips_exactly_that_step_and_halves_the_scale(method):
    """(b) + (d) An inf in a (scaled) gradient at step 1 of 3: that step leaves every weight as it
    was and the scale halves; steps 0 and 2 update; the NaN guard (losses and logits, all finite)
    does not stop the run, and no checkpoint-time flush raises."""
    module = make_module(method)
    trainer, probe = fit(module, 3, fp16_plugin(), Probe(inject_at=1))
    assert trainer.global_step == 3  # the skipped step is still a step of the loop
    assert sorted(probe.taken) == [0, 2]  # the optimizer ran at steps 0 and 2 only
    assert probe.scales == [INIT_SCALE, INIT_SCALE, INIT_SCALE / 2]
    assert trainer.precision_plugin.scaler.get_scale() == INIT_SCALE / 2
    for k, changed in ((0, True), (1, False), (2, True)):
        same = all(torch.equal(probe.before[k][n], probe.after[k][n]) for n in probe.before[k])
        assert same is not changed, k
    module.finite_guard.flush()  # nothing pending or bad


def test_an_overflowing_scale_skips_steps_until_it_fits_without_stopping_the_run():
    """(b) + (d) The real overflow: a scale of 2**100 makes the fp16 backward overflow; each such
    step is skipped (weights kept) with the scale halved, and the NaN guard lets the run go on."""
    module = make_module("rsnet")
    trainer, probe = fit(module, 2, fp16_plugin(init_scale=2.0**100))
    assert probe.taken == {} and probe.scales == [2.0**100, 2.0**99]
    assert trainer.precision_plugin.scaler.get_scale() == 2.0**98
    for before, after in zip(probe.before, probe.after):
        assert all(torch.equal(before[n], after[n]) for n in before)


@pytest.mark.parametrize("method", ["rsnet", "mutualnet"])
def test_clipping_sees_unscaled_gradients(method):
    """(c) ``optim.clip_grad_norm``: the module clips in ``on_before_optimizer_step``, after the
    precision plugin unscaled the gradients, so the first step's update is ``lr`` x a gradient of
    norm ``clip`` in 16-mixed as in fp32 (clipping the scaled gradients, as the step did before,
    leaves ``clip / scale`` after unscaling). First SGD step, no weight decay: update = lr x grad."""
    clip = 0.05

    def applied(probe) -> torch.Tensor:  # the gradient the optimizer applied at step 0
        return flat({n: (probe.before[0][n] - probe.after[0][n]) / LR for n in probe.before[0]})

    _, p16 = fit(make_module(method, clip=clip), 1, fp16_plugin())
    _, p32 = fit(make_module(method, clip=clip), 1)
    _, free = fit(make_module(method), 1)
    assert float(applied(free).norm()) > 10 * clip  # the clip is active
    assert float(applied(p32).norm()) == pytest.approx(clip, rel=1e-3)
    assert float(applied(p16).norm()) == pytest.approx(clip, rel=1e-2)
    assert float(torch.nn.functional.cosine_similarity(applied(p16), applied(p32), 0)) > 0.95


def test_a_resumed_run_continues_with_the_saved_scale(tmp_path):
    """(e) The scaler's state (scale, growth tracker) is in the checkpoint and restored on resume:
    a run whose scale was halved once resumes at that scale, not at a fresh scaler's."""
    module = make_module("san")
    trainer, _ = fit(module, 2, fp16_plugin(), Probe(inject_at=0), root=tmp_path)
    path = tmp_path / "step2.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, map_location="cpu", weights_only=False)
    assert saved["MixedPrecision"]["scale"] == INIT_SCALE / 2
    resumed, probe = fit(make_module("san"), 3, fp16_plugin(init_scale=2.0**10), root=tmp_path, ckpt_path=str(path))
    assert probe.scales[0] == INIT_SCALE / 2  # the saved scale, not the new scaler's 2**10
    assert resumed.global_step == 3 and list(probe.taken) == [2]


def test_the_gpu_check_s_run_probe_records_the_scale_after_every_step(tmp_path):
    """The GPU check's ``train`` part runs ``16-mixed`` too; its probe writes the scaler's scale
    after each step next to the losses (a halving: a step the scaler skipped)."""
    import json

    from resnet_switch.gpu_check import RTOL, train_cases
    from resnet_switch.training.run_probe import RunProbe

    assert "16-mixed" in RTOL and any(c.precision == "16-mixed" for c in train_cases())
    run_probe = RunProbe(str(tmp_path / "probe.json"))
    module = make_module("rsnet")
    trainer, _ = fit(module, 2, fp16_plugin(), Probe(inject_at=0), callbacks=[run_probe])
    record = json.loads((tmp_path / "probe.json").read_text())
    assert record["scales"] == [INIT_SCALE / 2, INIT_SCALE / 2] and len(record["losses"]) == 2
