"""What a training method is: which layers it needs, which configurations it trains and evaluates,
and one training step that calls ``backward`` once or once per configuration.

A method is an ``nn.Module`` so its own parameters (RS-Net's ensemble weights alpha) live in the
checkpoint; :meth:`no_decay_parameters` go to the optimizer without weight decay. It is the layer
choice :func:`resnet_switch.models.create_model` builds the network from
(:class:`~resnet_switch.models.create.LayerChoice`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from ..data.multires import MultiResBatch
from ..errors import ConfigError
from ..layers.quant import QUANTIZABLE_LAYERS
from ..models.registry import BACKBONES
from ..models.switchable import SwitchableNet
from ..switch import SubnetConfig, check_resolutions

Backward = Callable[[Tensor], None]


class Method(nn.Module):
    """Base class. Subclasses set ``layers`` (the layer factory they need) and implement
    :meth:`training_step`.

    Args:
        resolutions: training resolutions, highest first.
        widths: width multipliers evaluated (slimmable methods); ``(1.0,)`` otherwise.
    """

    layers = "private_bn"
    registered_name = ""  # ``method.name`` (set by register_method; named in messages)
    # True: training_step calls backward once per configuration of the step (teacher first; one graph
    # alive), False: once for all of them (backward_calls follows from it)
    per_config_backward = False
    default_bn_mode = "nearest"  # evaluate's bn_mode for unseen resolutions when none is given
    needs_calibration = False  # True: BN statistics are recalibrated per configuration before evaluation
    # the training crop the method's data needs (``data.crop`` reads ``method.crop``): ``single`` (one crop,
    # every resolution resized from it) | ``multi`` (RS-Net's ablation: an independent crop per resolution)
    crop = "single"

    def __init__(self, resolutions: Sequence[int], widths: Sequence[float] = (1.0,)):
        super().__init__()
        self.resolutions = check_resolutions(resolutions, "data.resolutions")
        self.widths = tuple(widths)

    def layer_kwargs(self, backbone: str | None = None) -> dict:
        """Extra arguments for the layer factory (e.g. SAN's meta-learner kind); ``backbone``: the
        backbone's name, for settings whose paper default depends on it (SAN's ``meta_roles``)."""
        return {}

    def net_widths(self) -> tuple[float, ...]:
        """Widths the network is built for (its ``SwitchState.widths``)."""
        return self.widths

    def configs_per_step(self) -> int:
        """How many configurations one training step runs (default: the :meth:`train_configs`)."""
        return len(self.train_configs())

    def backward_calls(self) -> int:
        """How many times :meth:`training_step` calls ``backward`` (DDP syncs gradients on the last):
        one per configuration with :attr:`per_config_backward`, else one."""
        return self.configs_per_step() if self.per_config_backward else 1

    def check_backbone(self, backbone: str, quant: dict | None) -> None:
        """One-line refusal when this method cannot run on ``backbone`` (before anything is built):
        ``quant`` asked of layers that are not plain convs (SAN's generated kernels, slimmable
        widths), or layers the backbone cannot be built with (converted torchvision/timm models: no
        slimmable widths, their channel dependencies are unknown)."""
        name = self.registered_name or type(self).__name__
        if quant is not None and self.layers not in QUANTIZABLE_LAYERS:
            raise ConfigError(f"quant: method={name} is not supported with quant=lq; "
                              "use method=individual|parallel|rsnet")
        supported = BACKBONES.info(backbone).get("layers") if backbone in BACKBONES else None
        if supported is not None and self.layers not in supported:
            raise ConfigError(f"method: {name} is not supported with model={backbone} (its {self.layers} layers "
                              "slice channels, which needs the architecture's channel dependencies); "
                              "use method=individual|parallel|rsnet|san")

    def no_decay_parameters(self) -> list[nn.Parameter]:
        return list(self.parameters())

    def eval_configs(self) -> list[SubnetConfig]:
        """Configurations validated during training (``val/acc1@R`` per entry)."""
        return [SubnetConfig(r) for r in self.resolutions]

    def train_configs(self) -> list[SubnetConfig] | None:
        """Configurations a training step runs; ``None`` when drawn at random from a range
        (``compile=true`` needs a finite set: one graph per configuration)."""
        return [SubnetConfig(r) for r in self.resolutions]

    def step_configs(self) -> list[SubnetConfig]:
        """The configurations of this training step, the full network first (MutualNet / US-Net:
        a fresh random draw per call; otherwise :meth:`train_configs`). Tasks whose loss is not the
        method's own (detection) run each of these and call ``backward`` once per configuration."""
        return list(self.train_configs())

    def set_epoch(self, epoch: float) -> None:
        """Called before each training step with the training progress in epochs (``1.5``: halfway
        through the second epoch), for methods whose loss changes over training; default: ignored."""

    def training_step(self, net: SwitchableNet, batch: MultiResBatch, backward: Backward) -> dict[str, Tensor]:
        """Train one step: call ``backward(loss)`` one or more times, return detached scalars to log
        (``loss`` is the total, plus per-part entries)."""
        raise NotImplementedError

    def ensemble(self, logits_by_resolution: dict[int, Tensor]) -> Tensor | None:
        """Logits of the method's ensemble of its evaluation configurations, or ``None`` (no
        ensemble, or not every member among ``logits_by_resolution``). RS-Net: ``val/acc1_ensemble``."""
        return None

    def logged_values(self) -> dict[str, Tensor]:
        """Extra per-step values to log (e.g. ``softmax(alpha)``); detached."""
        return {}
