"""Stop training at the first NaN/inf with one line naming the step and the configuration.

During a training step the guard records, in execution order, the magnitude of every forward's
logits (with the active configuration) and every loss handed to ``backward``; at the end of the
step all of them are checked at once. The first non-finite record names the configuration: for a
joint loss (RS-Net: one backward for every resolution) the logits records still say which
resolution went wrong first.

Cost: on the CPU the check runs right after the backward calls, before the optimizer step, so the
weights and every checkpoint stay finite (one tiny host read per step). On CUDA a host read per
step would stall the GPU queue, so the flags are copied to the host asynchronously and each step's
flags are read ``lag`` steps later (by then long computed) and before every checkpoint is written
(``flush``): the run stops at most ``lag`` steps after the bad one, with the same message, and no
checkpoint is written after it. Under DDP the flags are summed over the processes first, so every
process stops at the same step.
"""

from __future__ import annotations

from collections import deque
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..switch import SubnetConfig


class NonFiniteLossError(ConfigError):
    """A NaN/inf loss or logits (one line: step, configuration, the way out)."""


def config_label(config: SubnetConfig | None) -> str:
    """``resolution=160 width=0.75``; ``None`` (a joint loss) -> every configuration of the step."""
    return "all of this step's (joint loss)" if config is None else f"resolution={config.resolution} width={config.width:g}"


class FiniteGuard:
    """Args:
        lag: steps between a CUDA step and the read of its flags (deferred mode).
        reduce: ``flags -> flags`` summed over processes (DDP), or None.
    """

    def __init__(self, lag: int = 2, reduce=None):
        self.lag, self.reduce = int(lag), reduce
        self._records: list[tuple[str, str, Tensor]] | None = None
        self._pending: deque = deque()

    # ---- recording during a step ---------------------------------------------------------------
    @contextmanager
    def watch(self, net: nn.Module):
        """Record the logits of every forward of ``net`` (with its active configuration)."""
        self._records = []

        def hook(module, inputs, output):
            if isinstance(output, Tensor) and self._records is not None:
                self._records.append(("logits", config_label(module.state.config),
                                      output.detach().abs().amax().float()))

        handle = net.register_forward_hook(hook)
        try:
            yield self
        finally:
            handle.remove()

    def record_loss(self, loss: Tensor, config: SubnetConfig | None) -> None:
        """A loss handed to ``backward`` (``config`` None: a joint loss of several configurations)."""
        if self._records is not None:
            self._records.append(("loss", config_label(config), loss.detach().float().reshape(())))

    # ---- checking ----------------------------------------------------------------------------------
    def check(self, step: int) -> None:
        """End of a step's backward calls: check now (CPU) or queue the check (CUDA)."""
        records, self._records = self._records or [], None
        if not records:
            return
        values = torch.stack([v for _, _, v in records])
        flags = (~torch.isfinite(values)).to(torch.int32)
        if self.reduce is not None:
            flags = self.reduce(flags)
        labels = [(kind, config) for kind, config, _ in records]
        if values.device.type != "cuda":
            raise_if_bad(step, labels, values, flags, "before the optimizer step")
            return
        host_values = values.to("cpu", non_blocking=True)
        host_flags = flags.to("cpu", non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._pending.append((step, labels, host_values, host_flags, event))
        while len(self._pending) > self.lag:
            self._resolve(self._pending.popleft())

    def flush(self) -> None:
        """Read every queued check (before a checkpoint is written, at the end of an epoch)."""
        while self._pending:
            self._resolve(self._pending.popleft())

    def _resolve(self, entry) -> None:
        step, labels, values, flags, event = entry
        event.synchronize()
        raise_if_bad(step, labels, values, flags, f"within {self.lag} steps, before any later checkpoint")


def raise_if_bad(step: int, labels: list[tuple[str, str]], values: Tensor, flags: Tensor, when: str) -> None:
    """Raise :class:`NonFiniteLossError` for the first flagged record (a local one first)."""
    flagged = flags.nonzero().flatten()
    if flagged.numel() == 0:
        return
    local = (~torch.isfinite(values)).nonzero().flatten()
    k = int(local[0]) if local.numel() else int(flagged[0])
    kind, config = labels[k]
    value = str(float(values[k])) if local.numel() else "in another process"
    raise NonFiniteLossError(
        f"train: non-finite {kind} ({value}) at global step {step}, configuration {config}; training "
        f"stopped {when} and the last good checkpoint is kept (lower optim.lr, raise optim.warmup_epochs "
        "or check the data)"
    )
