"""The LightningModule: one switchable network, one method, SGD + cosine, per-configuration metrics.

Optimisation is manual so a method may call ``backward`` once (RS-Net: MRED needs every logit first)
or once per configuration (SAN, MutualNet: peak activation memory of one configuration); there is
exactly one optimizer step per training step either way. Under DDP, gradients are synchronised once
per step: by DDP's reducer in the single backward, or (several backward calls, where a private BN
set is in only one of the graphs) by one averaging of all gradients before the optimizer step.
A NaN/inf stops training with one line naming the step and configuration (:mod:`.finite_guard`);
checkpoints carry the RNG states, restored when training resumes. ``memory_format=channels_last``
and ``compile=True`` are applied to the network here (:mod:`.speed`).
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from ..data.multires import MultiResBatch
from ..errors import ConfigError
from ..evaluation.accuracy import calibrate_configs
from ..layers.sync_bn import convert_sync_bn
from ..methods import Method
from ..models.switchable import SwitchableNet
from ..switch import SubnetConfig
from .checkpointing import CHECKPOINT_KEY, checkpoint_meta
from .distributed import all_reduce_sum, average_gradients, world_size
from .finite_guard import FiniteGuard
from .rng_state import capture_rng_states, restore_rng_states
from .speed import compile_switchable, resolve_memory_format, use_channels_last

RNG_KEY = "rng_states"


def metric_suffix(config: SubnetConfig) -> str:
    """``'160'`` at full width, ``'160_w0.5'`` otherwise (metric names ``val/acc1@160``...)."""
    return f"{config.resolution}" if config.width == 1.0 else f"{config.resolution}_w{config.width:g}"


def _module_key(config: SubnetConfig) -> str:
    """``config.key()`` without dots (ModuleDict keys cannot hold them)."""
    return config.key().replace(".", "p")


class SwitchModule(L.LightningModule):
    """Args:
        method: the training method (owns its extra parameters, e.g. RS-Net's alpha).
        net: the switchable network built for it (:func:`resnet_switch.methods.build.build_net_for_method`).
        optim: ``lr``, ``momentum``, ``weight_decay``, ``nesterov``, ``decay_scope`` (``all`` or
            ``conv_fc``: only non-depthwise conv and FC weights decay, MutualNet) and
            ``warmup_epochs``; the schedule is cosine to 0 over all steps, stepped per iteration.
        run_meta: extra facts stored in every checkpoint (data set, normalisation).
        sync_bn: under DDP, BN training statistics over all processes, every private set on its
            own (:mod:`resnet_switch.layers.sync_bn`; Lightning's ``sync_batchnorm`` would merge them).
        memory_format: ``contiguous``, ``channels_last`` (4-D weights and every input image NHWC) or
            ``auto`` (:func:`.speed.resolve_memory_format`; CUDA when it is available).
        compile_net: compile the network in place, one graph per configuration (:mod:`.speed`);
            methods drawing random widths (MutualNet, US-Net) are refused.
    """

    def __init__(self, method: Method, net: SwitchableNet, optim: dict[str, Any],
                 method_meta: dict[str, Any], run_meta: dict[str, Any] | None = None,
                 calibration_samples: int = 2048, sync_bn: bool = False,
                 memory_format: str = "contiguous", compile_net: bool = False):
        super().__init__()
        self.automatic_optimization = False
        self.method = method
        self.net = convert_sync_bn(net) if sync_bn else net
        self.finite_guard = FiniteGuard()
        self._rng_to_restore: dict | None = None
        self.optim = dict(optim)
        self.method_meta = dict(method_meta)
        self.run_meta = dict(run_meta or {})
        self.eval_configs = method.eval_configs()
        self.calibration_samples = int(calibration_samples)
        self.calibrated_step: int | None = None  # global step of the last BN recalibration
        # (global step, rows {resolution, width, top1, top5}) of the last full validation
        self.last_validation: tuple[int, list[dict]] | None = None
        num_classes = net.spec["num_classes"]
        top5 = min(5, num_classes)
        self.acc1 = nn.ModuleDict({_module_key(c): MulticlassAccuracy(num_classes, top_k=1, average="micro")
                                   for c in self.eval_configs})
        self.acc5 = nn.ModuleDict({_module_key(c): MulticlassAccuracy(num_classes, top_k=top5, average="micro")
                                   for c in self.eval_configs})
        # the method's ensemble of its evaluation configurations (RS-Net): val/acc1_ensemble
        self.acc1_ensemble = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self._ensemble_seen = False
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

    def configure_model(self) -> None:
        """``compile_net``: compile the network in this process, once (pickling, as ddp_spawn does,
        drops a module's compiled call, so each process compiles its own)."""
        if self.compile_configs is not None and getattr(self.net, "_compiled_call_impl", None) is None:
            compile_switchable(self.net, self.compile_configs)

    # ----------------------------------------------------------------- training
    def training_step(self, batch: MultiResBatch, batch_idx: int) -> None:
        opt = self.optimizers()
        sched = self.lr_schedulers()
        opt.zero_grad(set_to_none=True)
        calls = self.method.backward_calls()
        average_after = calls > 1 and world_size() > 1  # DDP's reducer wants one backward per step
        per_config = self.method.per_config_backward
        done = [0]

        def backward(loss: Tensor) -> None:
            done[0] += 1
            self.finite_guard.record_loss(loss, self.net.state.config if per_config else None)
            with nullcontext() if done[0] >= calls and not average_after else self._no_sync():
                self.manual_backward(loss)

        with self.finite_guard.watch(self.net):
            logs = self.method.training_step(self.net, batch, backward)
        self.finite_guard.check(self.global_step)
        if average_after:
            average_gradients(self.parameters())
        opt.step()
        sched.step()
        bs = len(batch)
        self.log("train/loss", logs.pop("loss"), prog_bar=True, batch_size=bs)
        for name, value in logs.items():
            self.log(f"train/{name}", value, batch_size=bs)
        for name, value in self.method.logged_values().items():
            self.log(f"train/{name}", value, batch_size=bs)
        self.log("train/lr", sched.get_last_lr()[0], batch_size=bs)

    def _no_sync(self):
        """DDP: keep the reducer out of this backward (gradients accumulate locally)."""
        strategy_model = getattr(self.trainer.strategy, "model", None)
        if hasattr(strategy_model, "no_sync"):
            return strategy_model.no_sync()
        return nullcontext()

    # --------------------------------------------------------------- validation
    @property
    def eval_bn_mode(self) -> str | None:
        return "calibrated" if self.method.needs_calibration else None

    def recalibrate(self, datamodule=None) -> None:
        """Exact BN statistics for every evaluation configuration (slimmable methods), once per step.
        ``datamodule``: default the trainer's (a ddp_spawn parent's module has no trainer after fit)."""
        if self.method.needs_calibration and self.calibrated_step != self.global_step:
            calibrate_configs(self.net, datamodule or self.trainer.datamodule, self.eval_configs,
                              self.calibration_samples, progress=False)
            self.calibrated_step = self.global_step

    def on_validation_epoch_start(self) -> None:
        self.recalibrate()

    def validation_step(self, batch: MultiResBatch, batch_idx: int) -> None:
        full_width: dict[int, Tensor] = {}
        for config in self.eval_configs:
            with self.net.switch(config, self.eval_bn_mode):
                logits = self.net(batch.at(config.resolution))
            self.acc1[_module_key(config)].update(logits, batch.targets)
            self.acc5[_module_key(config)].update(logits, batch.targets)
            if config.width == 1.0:
                full_width[config.resolution] = logits
        ensemble = self.method.ensemble(full_width)
        if ensemble is not None:
            self.acc1_ensemble.update(ensemble, batch.targets)
            self._ensemble_seen = True

    def on_validation_epoch_end(self) -> None:
        top1, top5 = [], []
        for config in self.eval_configs:
            metric1, metric5 = self.acc1[_module_key(config)], self.acc5[_module_key(config)]
            acc1, acc5 = metric1.compute(), metric5.compute()
            metric1.reset()
            metric5.reset()
            suffix = metric_suffix(config)
            self.log(f"val/acc1@{suffix}", acc1 * 100, sync_dist=True)
            self.log(f"val/acc5@{suffix}", acc5 * 100, sync_dist=True)
            top1.append(acc1)
            top5.append(acc5)
        self.log("val/acc1_mean", torch.stack(top1).mean() * 100, prog_bar=True, sync_dist=True)
        if self._ensemble_seen:
            self.log("val/acc1_ensemble", self.acc1_ensemble.compute() * 100, sync_dist=True)
            self.acc1_ensemble.reset()
            self._ensemble_seen = False
        if not self.trainer.sanity_checking:  # one host copy per validation, for the final report
            values = (torch.stack([*top1, *top5]) * 100).tolist()
            n = len(self.eval_configs)
            self.last_validation = (self.global_step, [
                {"resolution": c.resolution, "width": c.width, "top1": values[k], "top5": values[n + k]}
                for k, c in enumerate(self.eval_configs)])

    # ------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        return sgd_cosine(self.optim, self.net, self.trainer, extra_no_decay=list(self.method.no_decay_parameters()))

    # ------------------------------------------------------ faults and resuming
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


def sgd_cosine(optim: dict, net: nn.Module, trainer: L.Trainer, extra_no_decay: list[nn.Parameter] = ()) -> dict:
    """Lightning's ``configure_optimizers`` answer for an ``optim/sgd_cosine`` config: SGD with the
    weight-decay split of :func:`split_weight_decay` (``extra_no_decay``: e.g. RS-Net's alpha), and
    :func:`cosine_with_warmup` stepped per iteration over the trainer's estimated steps."""
    decay, no_decay = split_weight_decay(net, optim.get("decay_scope", "all"))
    groups = [{"params": decay, "weight_decay": optim["weight_decay"]},
              {"params": no_decay + list(extra_no_decay), "weight_decay": 0.0}]
    optimizer = torch.optim.SGD(groups, lr=optim["lr"], momentum=optim.get("momentum", 0.9),
                                nesterov=optim.get("nesterov", False))
    total = max(1, int(trainer.estimated_stepping_batches))
    steps_per_epoch = max(1, total // max(1, trainer.max_epochs or 1))
    warmup = int(optim.get("warmup_epochs", 0) * steps_per_epoch)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(total, warmup))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def cosine_with_warmup(total_steps: int, warmup_steps: int = 0):
    """LR factor: linear warm-up to 1, then cosine to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def split_weight_decay(net: nn.Module, scope: str = "all") -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``all``: every parameter decays. ``conv_fc``: only weights of non-depthwise convs and linear
    layers decay (MutualNet's recipe); BN, biases and depthwise kernels do not."""
    if scope not in ("all", "conv_fc"):
        raise ValueError(f"optim.decay_scope: unknown {scope!r}; choose all or conv_fc")
    if scope == "all":
        return list(net.parameters()), []
    decay_ids = set()
    for m in net.modules():
        weight = getattr(m, "weight", None)
        if isinstance(weight, nn.Parameter) and weight.dim() in (2, 4):
            if weight.dim() == 2 or getattr(m, "groups", 1) == 1:
                decay_ids.add(id(weight))
    decay = [p for p in net.parameters() if id(p) in decay_ids]
    no_decay = [p for p in net.parameters() if id(p) not in decay_ids]
    return decay, no_decay
