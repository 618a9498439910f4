"""The active configuration of a switchable network and the state object its layers share.

A switchable network runs in one configuration at a time, ``SubnetConfig(resolution, width)``.
The model owns one :class:`SwitchState`; every switchable layer holds a reference to it and reads
the active configuration from it. Switching is explicit (``state.activate(cfg)`` or the model's
``switch`` context manager); nothing is global and nothing is looked up by float equality.

:data:`INFERENCE_MODES` is the one table of the user-facing ``bn_mode`` names (``evaluate``,
``export``, the runtime): each maps to the state's BN mode, its scale encoding and whether BN
statistics are recalibrated first.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from .errors import ConfigError

STATE_BN_MODES = ("nearest", "interpolate", "calibrated")  # values of SwitchState.bn_mode
SCALE_ENCODINGS = ("exact", "nearest")  # values of SwitchState.scale_encoding (SAN sec. 3.3)


@dataclass(frozen=True)
class InferenceMode:
    """One user-facing ``bn_mode`` of ``evaluate``, ``export`` and the runtime: how a resolution the
    network was not trained at runs (training resolutions always use their own BN set).

    Attributes:
        name: the command-line spelling.
        bn_mode: the :class:`SwitchState` BN mode it runs with (one of :data:`STATE_BN_MODES`).
        scale_encoding: the :class:`SwitchState` scale encoding it runs with (SAN's convs).
        recalibrates: BN statistics are recalibrated exactly for each configuration first.
    """

    name: str
    bn_mode: str
    scale_encoding: str
    recalibrates: bool


INFERENCE_MODES: dict[str, InferenceMode] = {m.name: m for m in (
    InferenceMode("nearest", "nearest", "nearest", False),  # the nearest training resolution's BN set
    InferenceMode("interpolate", "interpolate", "nearest", False),  # RS-Net sec. 4.3: blend of the two neighbours
    InferenceMode("calibrate", "calibrated", "nearest", True),  # exact statistics for the configuration
    InferenceMode("proxy", "nearest", "nearest", False),  # SAN eq. 6: nearest BN set and scale encoding
    InferenceMode("ideal", "calibrated", "exact", True),  # SAN eq. 5: own encoding, recalibrated BN
)}
BN_MODES = tuple(INFERENCE_MODES)  # the user-facing names, in the order they are listed to users


def inference_mode(name: str, field: str = "bn_mode") -> InferenceMode:
    """The :class:`InferenceMode` called ``name``; a one-line ``ConfigError`` naming ``field`` otherwise."""
    mode = INFERENCE_MODES.get(name) if isinstance(name, str) else None
    if mode is None:
        raise ConfigError(f"{field}: unknown {name!r}; choose one of {list(BN_MODES)}")
    return mode


@dataclass(frozen=True, order=True)
class SubnetConfig:
    """One runnable configuration: input resolution (pixels, square) and width multiplier."""

    resolution: int
    width: float = 1.0

    def __post_init__(self) -> None:
        if int(self.resolution) != self.resolution or self.resolution <= 0:
            raise ConfigError(f"resolution: must be a positive integer, got {self.resolution!r}")
        if not 0.0 < float(self.width) <= 1.0:
            raise ConfigError(f"width: must be in (0, 1], got {self.width!r}")
        object.__setattr__(self, "resolution", int(self.resolution))
        object.__setattr__(self, "width", round(float(self.width), 6))

    def key(self) -> str:
        """Stable string key, e.g. ``'r160_w0.75'`` (used in state dicts and file names)."""
        return f"r{self.resolution}_w{self.width:g}"


@dataclass(frozen=True)
class BNBlend:
    """Which private BN set(s) the active configuration uses.

    ``indices``/``weights``: the statistics and affine parameters used are
    ``sum_k weights[k] * set[indices[k]]`` (one entry for a training resolution or ``nearest``,
    two for RS-Net's linear interpolation, sec. 4.3). ``calibrated``: use the statistics
    recalibrated for exactly this configuration instead of the sets' running statistics.
    """

    indices: tuple[int, ...]
    weights: tuple[float, ...]
    calibrated: bool = False

    @property
    def single(self) -> int | None:
        """The set index when exactly one set is used with weight 1, else ``None``."""
        return self.indices[0] if len(self.indices) == 1 else None


def check_resolutions(resolutions: Sequence[int], field: str = "resolutions") -> tuple[int, ...]:
    """Validate a resolution list: positive integers, unique, sorted from highest to lowest."""
    res = tuple(resolutions)
    if not res:
        raise ConfigError(f"{field}: empty; give at least one resolution, e.g. [224,192,160,128,96]")
    for r in res:
        if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
            raise ConfigError(f"{field}: {r!r} is not a positive integer; use pixel sizes like 224")
    if len(set(res)) != len(res):
        raise ConfigError(f"{field}: duplicate entries in {list(res)}; list each resolution once")
    if list(res) != sorted(res, reverse=True):
        fixed = sorted(res, reverse=True)
        raise ConfigError(
            f"{field}: {list(res)} is not sorted from highest to lowest; use {fixed}"
        )
    return res


class SwitchState:
    """Mutable state shared by all switchable layers of one network.

    Args:
        train_resolutions: the resolutions the network is trained at, highest first. Private BN
            set ``k`` belongs to ``train_resolutions[k]``.
        widths: the width multipliers the network supports (``(1.0,)`` when it is not slimmable).

    Fields (read-only; changed only through the methods named):

    - ``config``: the active :class:`SubnetConfig` (:meth:`activate`); ``blend``: its :class:`BNBlend`.
    - ``bn_mode`` (:data:`STATE_BN_MODES`, default ``nearest``; :meth:`activate`): what an unseen
      resolution uses: the ``nearest`` training set, ``interpolate`` (linear between the two
      neighbouring sets, clamped outside the range) or ``calibrated`` (statistics recalibrated for
      that configuration). Training resolutions always use their own set.
    - ``scale_encoding`` (:data:`SCALE_ENCODINGS`, default ``exact``; :meth:`set_scale_encoding`):
      which encoding SAN's convs use at an unseen resolution: its own (``exact``, ideal inference)
      or the nearest training resolution's (``nearest``, proxy inference).
    - ``calibrating`` (default ``False``; :meth:`collecting_statistics`): BN layers accumulate exact
      statistics instead of normalising with stored ones (:mod:`resnet_switch.layers.calibration`).
    - ``version``: bumped whenever any of the above changes what the layers compute.
    """

    __slots__ = ("_train_resolutions", "_widths", "_bn_mode", "_scale_encoding", "_calibrating", "_config",
                 "_blend", "_version")

    def __init__(self, train_resolutions: Sequence[int], widths: Sequence[float] = (1.0,)):
        self._train_resolutions = check_resolutions(train_resolutions, "train_resolutions")
        self._widths = tuple(sorted({round(float(w), 6) for w in widths}, reverse=True))
        self._bn_mode = "nearest"
        self._scale_encoding = "exact"
        self._calibrating = False
        self._config = SubnetConfig(self._train_resolutions[0], self._widths[0])
        self._blend = self._compute_blend()
        self._version = 0

    @property
    def train_resolutions(self) -> tuple[int, ...]:
        return self._train_resolutions

    @property
    def widths(self) -> tuple[float, ...]:
        return self._widths

    @property
    def config(self) -> SubnetConfig:
        return self._config

    @property
    def blend(self) -> BNBlend:
        return self._blend

    @property
    def bn_mode(self) -> str:
        return self._bn_mode

    @property
    def scale_encoding(self) -> str:
        return self._scale_encoding

    @property
    def calibrating(self) -> bool:
        return self._calibrating

    @property
    def version(self) -> int:
        return self._version

    def activate(self, config: SubnetConfig, bn_mode: str | None = None) -> None:
        """Make ``config`` the active configuration (optionally changing ``bn_mode``)."""
        if bn_mode is not None:
            if bn_mode not in STATE_BN_MODES:
                raise ConfigError(f"bn_mode: unknown {bn_mode!r}; choose one of {list(STATE_BN_MODES)}")
            self._bn_mode = bn_mode
        if config != self._config or bn_mode is not None:
            self._config = config
            self._blend = self._compute_blend()
            self._version += 1

    def set_scale_encoding(self, scale_encoding: str) -> None:
        """Choose SAN's scale encoding for unseen resolutions (one of :data:`SCALE_ENCODINGS`)."""
        if scale_encoding not in SCALE_ENCODINGS:
            raise ConfigError(f"scale_encoding: unknown {scale_encoding!r}; choose one of {list(SCALE_ENCODINGS)}")
        if scale_encoding != self._scale_encoding:
            self._scale_encoding = scale_encoding
            self._version += 1

    @contextmanager
    def collecting_statistics(self) -> Iterator[SwitchState]:
        """Within the block ``calibrating`` is ``True`` (BN layers accumulate exact statistics)."""
        previous = self._calibrating
        self._calibrating = True
        self._version += 1
        try:
            yield self
        finally:
            self._calibrating = previous
            self._version += 1

    def train_index(self, resolution: int) -> int | None:
        """Index of ``resolution`` among the training resolutions, or ``None``."""
        try:
            return self._train_resolutions.index(resolution)
        except ValueError:
            return None

    def nearest_index(self, resolution: int) -> int:
        """Index of the training resolution closest to ``resolution`` (ties: the larger one)."""
        return min(
            range(len(self._train_resolutions)),
            key=lambda k: (abs(self._train_resolutions[k] - resolution), k),
        )

    def _compute_blend(self) -> BNBlend:
        r = self._config.resolution
        own = self.train_index(r)
        if self._bn_mode == "calibrated":
            return BNBlend((own if own is not None else self.nearest_index(r),), (1.0,), True)
        if own is not None:
            return BNBlend((own,), (1.0,))
        if self._bn_mode == "nearest":
            return BNBlend((self.nearest_index(r),), (1.0,))
        return interpolation_blend(self._train_resolutions, r)


def interpolation_blend(train_resolutions: Sequence[int], resolution: int) -> BNBlend:
    """RS-Net sec. 4.3: linear interpolation between the two neighbouring training resolutions.

    With neighbours ``lo < resolution < hi`` the weight of ``hi`` is ``(resolution-lo)/(hi-lo)``.
    Outside the trained range the closest end set is used.
    """
    ascending = sorted(train_resolutions)
    index_of = {r: i for i, r in enumerate(train_resolutions)}
    if resolution <= ascending[0]:
        return BNBlend((index_of[ascending[0]],), (1.0,))
    if resolution >= ascending[-1]:
        return BNBlend((index_of[ascending[-1]],), (1.0,))
    pos = bisect.bisect_left(ascending, resolution)
    lo, hi = ascending[pos - 1], ascending[pos]
    if hi == resolution:
        return BNBlend((index_of[hi],), (1.0,))
    w_hi = (resolution - lo) / (hi - lo)
    return BNBlend((index_of[hi], index_of[lo]), (w_hi, 1.0 - w_hi))
