"""The inference policy: which configurations a switchable network runs, and on which BN statistics.

ONE object answers every inference question about a network; ``evaluate`` (its three jobs), the
runtime (:class:`~resnet_switch.deploy.runtime.SwitchableClassifier`, hence ``export``), adaptive
evaluation and the training module's validation ask it, ``init_from`` asks its :class:`WidthRule`::

    policy = InferencePolicy.for_method(net, method, bn_mode=None)  # or needs_calibration=, default_bn_mode=
    config = policy.check_config(160, 0.75)    # a ConfigError naming resolution / width otherwise
    policy.plan(config).source                 # BNSource.INTERPOLATED, STORED, TWIN, ...
    missing = policy.provide_statistics(configs)  # twins shared; the rest must be calibrated first
    with policy.switch(config):                # the state's BN mode and SAN's scale encoding
        logits = net(images)

The rule, for a configuration ``(resolution R, width w)``:

* Methods with ``needs_calibration`` (MutualNet, US-Net, S-Net) run EVERY configuration on
  statistics calibrated exactly for it (``SwitchState`` BN mode ``calibrated``): stored under its
  own key (:attr:`BNSource.STORED`), or stored for a *twin*, a configuration at the same resolution
  whose sub-network has the same channel counts (:func:`channel_signature`: the same plain
  network), whose statistics are then shared under the new key (:attr:`BNSource.TWIN`); otherwise
  they must be calibrated first (:attr:`BNSource.NEEDS_CALIBRATION`). ``bn_mode`` picks only the
  scale encoding for them.
* Other methods run a training resolution on its own BN set (:attr:`BNSource.OWN`) and an unseen
  one as the :data:`~resnet_switch.switch.INFERENCE_MODES` entry of ``bn_mode`` says (``None``: the
  method's ``default_bn_mode``): the nearest training resolution's set (:attr:`BNSource.NEAREST`),
  RS-Net's blend of the two neighbouring sets (:attr:`BNSource.INTERPOLATED`; the nearest end set
  outside the trained range), or exact statistics as above (``calibrate``, ``ideal``).
* SAN's convs use the mode's scale encoding at an unseen resolution: ``exact`` (R's own, SAN eq. 5)
  or ``nearest`` (the nearest training resolution's, eq. 6).

Widths (:class:`WidthRule`): a network that is not slimmable runs width 1.0 only; S-Net (one BN
set per width) its trained widths only; MutualNet / US-Net (shared BN) any width of the trained
range ``[lo, hi]`` (``allow_untrained``: any width in (0, 1], which the layers can slice but
training never visited).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Any

from torch import nn

from ..errors import ConfigError
from ..layers.calibration import calibratable_layers
from ..layers.scale_conv import encoding_resolution
from ..layers.slimmable import ChannelDim
from ..switch import BNBlend, InferenceMode, SubnetConfig, SwitchState, inference_mode

_KEY = re.compile(r"^r(\d+)_w([0-9.e+-]+)$")  # SubnetConfig.key()


class BNSource(str, Enum):
    """Which BN statistics one configuration runs on."""

    OWN = "own"  # a training resolution's own set
    NEAREST = "nearest"  # the nearest training resolution's set
    INTERPOLATED = "interpolated"  # RS-Net sec. 4.3: a blend of the two neighbouring sets
    STORED = "stored"  # statistics calibrated exactly for this configuration, stored in the net
    TWIN = "twin"  # those stored for a twin (same resolution, same channel counts), shared
    NEEDS_CALIBRATION = "needs_calibration"  # exact statistics needed, none stored: calibrate first


@dataclass(frozen=True)
class InferencePlan:
    """How one configuration runs.

    Attributes:
        config: the configuration.
        state_bn_mode: the :class:`~resnet_switch.switch.SwitchState` BN mode it runs with.
        source: the BN statistics it uses.
        blend: the state's BN blend (set indices and weights; ``calibrated``: exact statistics).
        scale_encoding: the state's scale encoding (SAN's convs; ``exact`` or ``nearest``).
        encoded_resolution: the resolution whose scale encoding SAN's convs use.
        twin: the stored configuration whose statistics it shares (``source`` TWIN), else ``None``.
    """

    config: SubnetConfig
    state_bn_mode: str
    source: BNSource
    blend: BNBlend
    scale_encoding: str
    encoded_resolution: int
    twin: SubnetConfig | None = None


# ------------------------------------------------------------------------------------ widths
def width_grid(lo: float, hi: float = 1.0, step: float = 0.05) -> list[float]:
    """``[lo, lo + step, ...]`` up to ``hi``, ``hi`` always included; rounded to 6 decimals
    (``SubnetConfig``'s precision), ascending."""
    if not 0.0 < step <= 1.0:
        raise ConfigError(f"width_step: must be in (0, 1], got {step!r}")
    if not 0.0 < lo <= hi <= 1.0:
        raise ConfigError(f"widths: need 0 < lo <= hi <= 1, got lo={lo}, hi={hi}")
    count = math.floor((hi - lo) / step + 1e-9) + 1
    widths = [round(lo + k * step, 6) for k in range(count)]
    if widths[-1] < round(hi, 6):
        widths.append(round(hi, 6))
    return widths


def channel_signature(net: nn.Module, width: float) -> tuple:
    """What makes the sub-network at ``width`` what it is: ``(out, in)`` channels of every conv and
    linear layer (computed from the layers' channel rules, no materialisation) plus the private BN
    set of S-Net's per-width BN. Equal signatures = the same plain network."""
    width = round(float(width), 6)
    signature: list[tuple] = []
    for module in net.modules():
        in_dim, out_dim = getattr(module, "in_dim", None), getattr(module, "out_dim", None)
        if isinstance(in_dim, ChannelDim) and isinstance(out_dim, ChannelDim):
            signature.append((out_dim.active(width), in_dim.active(width)))
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            signature.append(tuple(module.weight.shape[:2]))
        index_of_width = getattr(module, "index_of_width", None)
        if isinstance(index_of_width, Mapping):
            signature.append(("bn_set", index_of_width.get(width)))
    return tuple(signature)


def unique_widths(net: nn.Module, widths: Sequence[float]) -> dict[float, list[float]]:
    """``{kept width: [all widths with its channel signature]}``, kept = the largest of each group,
    ordered from the largest kept width down."""
    groups: dict[tuple, list[float]] = {}
    for w in sorted({round(float(w), 6) for w in widths}):
        groups.setdefault(channel_signature(net, w), []).append(w)
    return {max(g): g for g in sorted(groups.values(), key=max, reverse=True)}


def _listed(widths: Sequence[float], singular: str, plural: str) -> str:
    """``'0.75 has'`` / ``'0.75, 0.6 have'``."""
    return ", ".join(f"{w:g}" for w in widths) + " " + (singular if len(widths) == 1 else plural)


@dataclass(frozen=True)
class WidthRule:
    """Which widths a network runs (module docstring), from its spec.

    Attributes:
        slimmable: built with slimmable layers (any width is a slice of the full one).
        per_width_bn: S-Net: one private BN set per trained width.
        trained: the widths it was built for (``SwitchState.widths``), highest first; for MutualNet
            and US-Net the ends of the trained range.
    """

    slimmable: bool
    per_width_bn: bool
    trained: tuple[float, ...]

    @classmethod
    def of_spec(cls, spec: Mapping[str, Any]) -> WidthRule:
        """The rule of a network spec (``SwitchableNet.spec``, a checkpoint's ``net`` entry)."""
        widths = tuple(sorted({round(float(w), 6) for w in spec.get("widths") or (1.0,)}, reverse=True))
        per_width = bool((spec.get("layer_kwargs") or {}).get("private_bn_per_width"))
        return cls(spec.get("layers") == "slimmable", per_width, widths)

    @property
    def lowest(self) -> float:
        return self.trained[-1]

    @property
    def highest(self) -> float:
        return self.trained[0]

    def untrained(self, widths: Sequence[float]) -> list[float]:
        """The widths of ``widths`` a shared-BN slimmable network runs but never trained at
        (outside ``[lowest, highest]``)."""
        if not self.slimmable or self.per_width_bn:
            return []
        return [w for w in widths if not self.lowest <= round(float(w), 6) <= self.highest]

    def check(self, widths: Sequence[float], field: str = "widths", owner: str = "this network",
              allow_untrained: bool = False) -> list[float]:
        """``widths`` (each in (0, 1], already checked) if the network runs them, else a one-line
        ``ConfigError`` naming ``field``; ``allow_untrained``: also widths outside the trained range
        of a shared-BN slimmable network (:meth:`untrained` lists them)."""
        widths = [round(float(w), 6) for w in widths]
        if not self.slimmable:
            if any(w != 1.0 for w in widths):
                raise ConfigError(f"{field}: {owner} is not slimmable; use width 1.0 only")
        elif self.per_width_bn:
            bad = [w for w in widths if w not in self.trained]
            if bad:
                raise ConfigError(f"{field}: {_listed(bad, 'has', 'have')} no private BN in {owner} (S-Net); "
                                  f"choose from {list(self.trained)}")
        elif not allow_untrained and (bad := self.untrained(widths)):
            raise ConfigError(f"{field}: {_listed(bad, 'is', 'are')} outside the trained range "
                              f"[{self.lowest:g}, {self.highest:g}] of {owner}; choose a width in it")
        return widths

    def query_grid(self, step: float) -> list[float]:
        """The query table's candidate widths: ``lowest, lowest + step, ..., highest`` (MutualNet /
        US-Net), the trained widths (S-Net), ``[1.0]`` (not slimmable); ascending."""
        if not self.slimmable:
            return [1.0]
        if self.per_width_bn:
            return sorted(self.trained)
        return width_grid(self.lowest, self.highest, step)


# ------------------------------------------------------------------------------------ policy
def config_of_key(key: str) -> SubnetConfig | None:
    """The configuration of a :meth:`SubnetConfig.key` string (``'r160_w0.75'``), ``None`` otherwise."""
    match = _KEY.match(key)
    return SubnetConfig(int(match.group(1)), float(match.group(2))) if match else None


class InferencePolicy:
    """The inference policy of one network (module docstring).

    Args:
        net: the switchable network (a :class:`~resnet_switch.models.switchable.SwitchableNet`).
        needs_calibration: the method's fact: every configuration runs on exact statistics.
        default_bn_mode: the method's ``bn_mode`` for unseen resolutions when ``bn_mode`` is ``None``.
        bn_mode: the user's choice among :data:`~resnet_switch.switch.INFERENCE_MODES` (``None``:
            ``calibrate`` when ``needs_calibration``, else ``default_bn_mode``).
        owner: how error messages name the network (``"this rsnet checkpoint"``).
        field: the option ``bn_mode`` came from (named by its error).
    """

    def __init__(self, net: nn.Module, *, needs_calibration: bool = False, default_bn_mode: str = "nearest",
                 bn_mode: str | None = None, owner: str = "this network", field: str = "bn_mode"):
        self.net = net
        self.needs_calibration = bool(needs_calibration)
        self.mode: InferenceMode = inference_mode(
            bn_mode if bn_mode is not None else ("calibrate" if self.needs_calibration else default_bn_mode), field)
        self.owner = owner
        self.widths = WidthRule.of_spec({**net.spec, "widths": net.state.widths})

    @classmethod
    def for_method(cls, net: nn.Module, method: Any, bn_mode: str | None = None, **kwargs) -> InferencePolicy:
        """The policy of ``net`` trained by ``method`` (any object with ``needs_calibration`` and
        ``default_bn_mode``, e.g. a :class:`~resnet_switch.methods.base.Method`)."""
        return cls(net, needs_calibration=method.needs_calibration, default_bn_mode=method.default_bn_mode,
                   bn_mode=bn_mode, **kwargs)

    # ------------------------------------------------------------------------ can it run
    def check_config(self, resolution: Any, width: Any = 1.0, allow_untrained: bool = False) -> SubnetConfig:
        """The configuration ``(resolution, width)`` if the network can run it (widths: see
        :meth:`WidthRule.check`), else a one-line ``ConfigError`` naming ``resolution`` or ``width``.
        Whether its statistics exist is :meth:`plan`'s answer."""
        if isinstance(resolution, bool) or not isinstance(resolution, numbers.Integral) or resolution <= 0:
            raise ConfigError(f"resolution: must be a positive integer (pixels), got {resolution!r}")
        if isinstance(width, bool) or not isinstance(width, numbers.Real) or not 0.0 < float(width) <= 1.0:
            raise ConfigError(f"width: must be in (0, 1], got {width!r}")
        config = SubnetConfig(int(resolution), float(width))
        self.widths.check([config.width], "width", self.owner, allow_untrained)
        return config

    # ---------------------------------------------------------------------- which statistics
    @property
    def scale_encoding(self) -> str:
        """The state's scale encoding every configuration runs with (SAN's convs)."""
        return self.mode.scale_encoding

    def state_bn_mode(self, config: SubnetConfig) -> str:
        """The :class:`~resnet_switch.switch.SwitchState` BN mode ``config`` runs with."""
        if self.needs_calibration:
            return "calibrated"
        if self.net.state.train_index(config.resolution) is not None:
            return "nearest"  # a training resolution: its own set in every mode
        return self.mode.bn_mode

    def uses_exact_statistics(self, config: SubnetConfig) -> bool:
        """Whether ``config`` runs on statistics calibrated exactly for it (stored or to calibrate)."""
        return self.state_bn_mode(config) == "calibrated"

    def plan(self, config: SubnetConfig) -> InferencePlan:
        """How ``config`` runs now: BN mode, statistics, blend, scale encoding (nothing is changed)."""
        state = SwitchState(self.net.state.train_resolutions, self.net.state.widths)
        state.set_scale_encoding(self.scale_encoding)
        bn_mode = self.state_bn_mode(config)
        state.activate(config, bn_mode)  # the blend and encoding the network's state would compute
        blend, twin = state.blend, None
        if blend.calibrated:
            if self.is_stored(config):
                source = BNSource.STORED
            else:
                twin = self.twin(config)
                source = BNSource.NEEDS_CALIBRATION if twin is None else BNSource.TWIN
        elif len(blend.indices) > 1:
            source = BNSource.INTERPOLATED
        elif blend.single == state.train_index(config.resolution):
            source = BNSource.OWN
        else:
            source = BNSource.NEAREST
        return InferencePlan(config, bn_mode, source, blend, state.scale_encoding, encoding_resolution(state), twin)

    # ----------------------------------------------------------------- stored statistics
    def stored_configs(self) -> list[SubnetConfig]:
        """Configurations with exact statistics stored in every calibratable BN layer, largest first."""
        layers = calibratable_layers(self.net)
        if not layers:
            return []
        keys = set(layers[0].calibrated).intersection(*(layer.calibrated for layer in layers[1:]))
        return sorted((c for c in map(config_of_key, keys) if c is not None), reverse=True)

    def is_stored(self, config: SubnetConfig) -> bool:
        """Whether every calibratable BN layer holds exact statistics for ``config``."""
        layers = calibratable_layers(self.net)
        return bool(layers) and all(config.key() in layer.calibrated for layer in layers)

    def twin(self, config: SubnetConfig) -> SubnetConfig | None:
        """The largest stored configuration at ``config``'s resolution with its channel signature."""
        signature = None
        for stored in self.stored_configs():
            if stored.resolution != config.resolution or stored == config:
                continue
            signature = channel_signature(self.net, config.width) if signature is None else signature
            if channel_signature(self.net, stored.width) == signature:
                return stored
        return None

    def provide_statistics(self, configs: Sequence[SubnetConfig]) -> dict[SubnetConfig, BNSource]:
        """``{config: its source}``, after sharing each TWIN's statistics under the config's own
        key (the same tensors, not copies). NEEDS_CALIBRATION configurations must be calibrated
        (:func:`~resnet_switch.layers.calibration.calibrate_bn`) before they run."""
        sources = {}
        layers = calibratable_layers(self.net)
        for config in configs:
            plan = self.plan(config)
            if plan.source is BNSource.TWIN:
                for layer in layers:
                    layer.calibrated[config.key()] = layer.calibrated[plan.twin.key()]
            sources[config] = plan.source
        return sources

    def ensure_statistics(self, config: SubnetConfig, fix: str) -> BNSource:
        """:meth:`provide_statistics` for one configuration; a one-line ``ConfigError`` ending in
        ``fix`` when it needs calibration."""
        source = self.provide_statistics([config])[config]
        if source is BNSource.NEEDS_CALIBRATION:
            stored = ", ".join(f"w{c.width:g}@{c.resolution}" for c in self.stored_configs()) or "none"
            field = "width" if self.widths.slimmable else "resolution"
            raise ConfigError(f"{field}: no BN statistics stored for width {config.width:g} @ {config.resolution}px "
                              f"(stored: {stored}); {fix}")
        return source

    # ------------------------------------------------------------------------- running
    def activate(self, config: SubnetConfig) -> None:
        """Make ``config`` the network's active configuration with this policy's BN mode and scale encoding."""
        self.net.state.set_scale_encoding(self.scale_encoding)
        self.net.set_active(config, self.state_bn_mode(config))

    @contextmanager
    def switch(self, config: SubnetConfig) -> Iterator[nn.Module]:
        """Run a block in ``config`` as :meth:`activate` sets it; the previous configuration, BN
        mode and scale encoding are restored after."""
        state = self.net.state
        previous = state.scale_encoding
        state.set_scale_encoding(self.scale_encoding)
        try:
            with self.net.switch(config, self.state_bn_mode(config)):
                yield self.net
        finally:
            state.set_scale_encoding(previous)
