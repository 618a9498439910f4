"""The manual-step LightningModule every task trains with: one switchable network, one method.

What a training step is does not depend on the task: zero the gradients, let the task run the
method's configurations and call ``backward`` once (RS-Net: MRED needs every logit first) or once
per configuration (SAN, MutualNet, detection: one graph alive at a time), check for NaN/inf, take
ONE SGD step and one cosine LR step. Under ``precision=16-mixed`` Lightning's precision plugin scales
each ``backward``, and inside ``opt.step()`` unscales the gradients, calls
:meth:`~SwitchTrainingModule.on_before_optimizer_step` (gradient clipping) and skips the step when a
gradient is inf/NaN (halving the scale; the NaN guard watches losses and logits, not gradients).
Under DDP, gradients are synchronised once per step: by DDP's reducer in the single backward, or
(several backward calls, where a private BN set is in only one of the graphs) by one averaging of
all gradients before the optimizer step. Checkpoints carry the network's spec (rebuild from the file
alone) and the RNG states, restored when training resumes.

A task subclasses :class:`SwitchTrainingModule` and fills these hooks (lightning-hydra-template
style): :meth:`~SwitchTrainingModule.task_step` (the losses of one step),
:meth:`~SwitchTrainingModule.batch_size`, :meth:`~SwitchTrainingModule.calibration_images`
(BN recalibration), ``validation_step`` and ``on_validation_epoch_end`` (its metrics).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..evaluation.accuracy import calibrate_configs
from ..layers.sync_bn import convert_sync_bn
from ..methods import Method
from ..methods.base import Backward
from ..models.inference_policy import InferencePolicy
from ..switch import SubnetConfig
from .checkpointing import CHECKPOINT_KEY, checkpoint_meta
from .distributed import all_reduce_sum, average_gradients, world_size
from .finite_guard import FiniteGuard
from .optim import sgd_cosine
from .rng_state import capture_rng_states, restore_rng_states
from .speed import compile_switchable, resolve_memory_format, use_channels_last

RNG_KEY = "rng_states"


def metric_suffix(config: SubnetConfig) -> str:
    """``'160'`` at full width, ``'160_w0.5'`` otherwise (metric names ``val/acc1@160``...)."""
    return f"{config.resolution}" if config.width == 1.0 else f"{config.resolution}_w{config.width:g}"


def validation_configs(method_configs: Sequence[SubnetConfig], test_resolutions: Sequence[int] = ()
                       ) -> list[SubnetConfig]:
    """The method's evaluation configurations, then full width at each of ``test_resolutions`` not
    among them (highest first)."""
    configs = list(method_configs)
    extra = [SubnetConfig(int(r)) for r in sorted(set(test_resolutions), reverse=True)]
    return configs + [c for c in extra if c not in configs]


def module_key(config: SubnetConfig) -> str:
    """``config.key()`` without dots (``nn.ModuleDict`` keys cannot hold them)."""
    return config.key().replace(".", "p")


class SwitchTrainingModule(L.LightningModule):
    """Args:
        method: the training method (owns its extra parameters, e.g. RS-Net's alpha).
        net: the switchable network built for it (a classifier or a detector).
        optim: ``lr``, ``momentum``, ``weight_decay``, ``nesterov``, ``decay_scope`` (``all`` or
            ``conv_fc``: only non-depthwise conv and FC weights decay, MutualNet), ``warmup_epochs``
            and ``clip_grad_norm`` (null: no clipping); cosine to 0 over all steps, per iteration.
        method_meta, run_meta: facts stored in every checkpoint (method name/arguments, data set,
            normalisation, model config).
        calibration_samples: training images for the exact BN statistics per configuration
            (methods with ``needs_calibration``).
        sync_bn: under DDP, BN training statistics over all processes, every private set on its
            own (:mod:`resnet_switch.layers.sync_bn`; Lightning's ``sync_batchnorm`` would merge them).
        memory_format: ``contiguous``, ``channels_last`` or ``auto`` (:func:`.speed.resolve_memory_format`).
        compile_net: compile the network in place, one graph per configuration (:mod:`.speed`);
            methods drawing random widths (MutualNet, US-Net) are refused.
        test_resolutions: resolutions validated besides the method's own evaluation configurations
            (``data.test_resolutions``: e.g. the I-Net at 32 px tested at 32..16 px), at full width.

    Validation runs every configuration as the network's
    :class:`~resnet_switch.models.inference_policy.InferencePolicy` (``policy``, the method's
    default ``bn_mode``) says: ``with module.policy.switch(config): ...``; configurations on exact
    statistics are recalibrated first (:meth:`recalibrate`).
    """

    def __init__(self, method: Method, net: nn.Module, optim: dict[str, Any], method_meta: dict[str, Any],
                 run_meta: dict[str, Any] | None = None, calibration_samples: int = 2048, sync_bn: bool = False,
                 memory_format: str = "contiguous", compile_net: bool = False,
                 test_resolutions: Sequence[int] = ()):
        super().__init__()
        self.automatic_optimization = False
        self.method = method
        self.net = convert_sync_bn(net) if sync_bn else net
        self.optim = dict(optim)
        self.method_meta = dict(method_meta)
        self.run_meta = dict(run_meta or {})
        self.eval_configs = validation_configs(method.eval_configs(), test_resolutions)
        self.policy = InferencePolicy.for_method(self.net, method)
        self.calibration_samples = int(calibration_samples)
        self.calibrated_step: int | None = None  # global step of the last BN recalibration
        self.finite_guard = FiniteGuard()
        self._rng_to_restore: dict | None = None
        self.memory_format = resolve_memory_format(memory_format, self.net, torch.cuda.is_available())
        if self.memory_format == "channels_last":
            use_channels_last(self.net)
        self.compile_configs: list[SubnetConfig] | None = None  # compiled in configure_model
        if compile_net:
            train_configs = method.train_configs()
            if train_configs is None:
                name = self.method_meta.get("name", type(method).__name__)
                raise ConfigError(f"compile: method={name} trains a new random width every step (a new graph "
                                  "each, then eager); use compile=false")
            self.compile_configs = list(dict.fromkeys([*train_configs, *self.eval_configs]))

    # ------------------------------------------------------------ task hooks
    def task_step(self, batch: Any, backward: Backward) -> dict[str, Tensor]:
        """Run this step's configurations on ``batch``, call ``backward(loss)`` exactly
        :meth:`backward_calls` times; return detached scalars to log (``loss``: the total)."""
        raise NotImplementedError

    def backward_calls(self) -> int:
        """How many times :meth:`task_step` calls ``backward`` (DDP syncs on the last one only)."""
        return self.method.backward_calls()

    @property
    def per_config_backward(self) -> bool:
        """True when each ``backward`` belongs to one configuration (named by the NaN guard)."""
        return self.method.per_config_backward

    def batch_size(self, batch: Any) -> int:
        return len(batch)

    def calibration_images(self, datamodule) -> Callable[[SubnetConfig], Iterable[Any]] | None:
        """``images(config)``: fresh training inputs for BN recalibration at ``config`` (the network's
        own input); ``None``: :func:`~resnet_switch.evaluation.accuracy.calibrate_configs`' default."""
        return None

    def calibration_probe(self) -> nn.Module:
        """The module :func:`~resnet_switch.layers.calibration.calibrate_bn` runs (default: the net)."""
        return self.net

    # --------------------------------------------------------------- the step
    def configure_model(self) -> None:
        """``compile_net``: compile the network in this process, once (pickling, as ddp_spawn does,
        drops a module's compiled call, so each process compiles its own)."""
        if self.compile_configs is not None and getattr(self.net, "_compiled_call_impl", None) is None:
            compile_switchable(self.net, self.compile_configs)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        opt, sched = self.optimizers(), self.lr_schedulers()
        opt.zero_grad(set_to_none=True)
        calls = self.backward_calls()
        average_after = calls > 1 and world_size() > 1  # DDP's reducer wants one backward per step
        per_config = self.per_config_backward
        done = [0]

        def backward(loss: Tensor) -> None:
            done[0] += 1
            self.finite_guard.record_loss(loss, self.net.state.config if per_config else None)
            with nullcontext() if done[0] >= calls and not average_after else self._no_sync():
                self.manual_backward(loss)

        batches = self.trainer.num_training_batches  # steps per epoch (inf: an unsized loader, whole epochs)
        finite = 0 < batches < float("inf")
        self.method.set_epoch(self.global_step / batches if finite else float(self.current_epoch))
        with self.finite_guard.watch(self.net):
            logs = self.task_step(batch, backward)
        self.finite_guard.check(self.global_step)
        if average_after:
            average_gradients(self.parameters())
        opt.step()  # precision plugin: unscale (16-mixed), on_before_optimizer_step (clipping), step or skip
        sched.step()
        bs = self.batch_size(batch)
        self.log("train/loss", logs.pop("loss"), prog_bar=True, batch_size=bs)
        for name, value in {**logs, **self.method.logged_values()}.items():
            self.log(f"train/{name}", value, batch_size=bs)
        self.log("train/lr", sched.get_last_lr()[0], batch_size=bs)

    def on_before_optimizer_step(self, optimizer) -> None:
        """``optim.clip_grad_norm``: clip here, where Lightning's precision plugin has unscaled the
        gradients (``16-mixed``: its ``GradScaler``), right before the optimizer step. The unscale
        happens inside ``opt.step()``: clipping any earlier would clip the SCALED gradients, leaving
        them at ``clip / scale`` after unscaling."""
        if self.optim.get("clip_grad_norm"):
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), float(self.optim["clip_grad_norm"]))

    def _no_sync(self):
        """DDP: keep the reducer out of this backward (gradients accumulate locally)."""
        strategy_model = getattr(self.trainer.strategy, "model", None)
        if hasattr(strategy_model, "no_sync"):
            return strategy_model.no_sync()
        return nullcontext()

    def configure_optimizers(self):
        return sgd_cosine(self.optim, self.net, self.trainer, extra_no_decay=list(self.method.no_decay_parameters()))

    # ---------------------------------------------------- BN recalibration
    def recalibrate(self, datamodule=None) -> None:
        """Exact BN statistics for every evaluation configuration the policy runs on them (slimmable
        methods: all), once per step (stored ones too: they go stale as the weights move).
        ``datamodule``: default the trainer's (a ddp_spawn parent's module has no trainer after fit)."""
        configs = [c for c in self.eval_configs if self.policy.uses_exact_statistics(c)]
        if configs and self.calibrated_step != self.global_step:
            datamodule = datamodule or self.trainer.datamodule
            calibrate_configs(self.calibration_probe(), datamodule, configs, self.calibration_samples,
                              progress=False, images=self.calibration_images(datamodule))
            self.calibrated_step = self.global_step

    def on_validation_epoch_start(self) -> None:
        self.recalibrate()

    # ------------------------------------------------- faults and resuming
    def on_fit_start(self) -> None:
        self.finite_guard.reduce = all_reduce_sum if world_size() > 1 else None

    def on_train_start(self) -> None:
        if self._rng_to_restore is not None:  # as late as possible: nothing draws before the next step
            restore_rng_states(self._rng_to_restore)
            self._rng_to_restore = None

    def on_train_epoch_end(self) -> None:
        self.finite_guard.flush()
        count_bad = getattr(self.trainer.datamodule, "bad_image_count", None)
        if count_bad is not None and (bad := count_bad()):
            self.log("data/bad_images", float(bad))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.finite_guard.flush()  # raises before a checkpoint after a NaN step is written
        checkpoint[CHECKPOINT_KEY] = checkpoint_meta(self.net, self.method_meta, self.run_meta)
        checkpoint[RNG_KEY] = capture_rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._rng_to_restore = checkpoint.get(RNG_KEY)
