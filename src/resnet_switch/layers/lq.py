"""LQ-Nets learned quantizers (Zhang et al., ECCV 2018), as RS-Net's quantized networks use them.

A ``K``-bit quantizer has a basis ``v`` in ``R^K`` and ``2^K`` codes ``b``; its levels are
``b . v`` for every code, sorted. A value is quantized to the nearest level: the output starts at the
lowest level and steps up at each threshold (midpoint of two consecutive levels) the value exceeds
(``x > t``; a value equal to a threshold stays below it). Code index ``i`` has bit ``j`` of ``i`` as
its ``j``-th entry.

- Weights (:class:`LQWeightQuantizer`): one basis per output channel, codes in ``{-1,+1}^K``
  (bit 0 -> -1, bit 1 -> +1); gradient straight through (identity).
- Activations (:class:`LQActQuantizer`): one basis per layer, codes in ``{0,1}^K``; the output is 0
  below the first threshold (code 0); gradient identity below the top level, 0 above it.

QEM basis update (training mode, after quantizing, no gradient): with ``B`` the codes of the
quantized values (one row per value) and ``x`` the values,
``v* = (B^T B + delta I)^-1 (B^T x + delta v)`` (``delta = 1e-4`` for weights, 0 for activations),
then ``v <- 0.9 v + 0.1 v*``. ``B^T B`` and ``B^T x`` are summed per level (counts and sums of the
values at each level), so no ``(N, K)`` code matrix is built.
"""

from __future__ import annotations

import math
from functools import cache
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..switch import SwitchState

BITS = (1, 2, 3, 4)  # quantized bit widths; 32 means "not quantized"
FLOAT_BITS = 32
MOMENTUM = 0.9  # v <- MOMENTUM * v + (1 - MOMENTUM) * v*
WEIGHT_RIDGE = 1e-4  # delta of the weights' QEM (activations: none)
NORM_PPF_0_75 = 0.6745  # Phi^-1(0.75): the initial bases' scale
ACT_BASIS_UPDATES = ("all", "highest")


def check_bits(bits, field: str) -> int:
    """``bits`` as an int in 1..4 or 32, else a one-line ``ConfigError`` naming ``field``."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in (*BITS, FLOAT_BITS):
        raise ConfigError(f"{field}: must be 1, 2, 3, 4 or 32 (32 = not quantized), got {bits!r}")
    return bits


# ----------------------------------------------------------------------------------- levels
@cache
def _code_table(bits: int, signed: bool) -> tuple[tuple[float, ...], ...]:
    low = -1.0 if signed else 0.0
    return tuple(tuple(1.0 if (i >> j) & 1 else low for j in range(bits)) for i in range(2 ** bits))


def code_table(bits: int, signed: bool, device=None, dtype=torch.float32) -> Tensor:
    """``(2^K, K)`` codes: row ``i`` has bit ``j`` of ``i`` in column ``j`` (``signed``: 0 -> -1)."""
    return torch.tensor(_code_table(bits, signed), device=device, dtype=dtype)


def sorted_levels(basis: Tensor, codes: Tensor) -> tuple[Tensor, Tensor]:
    """Levels ``codes @ v`` sorted ascending, and the code index of each sorted level.

    ``basis``: ``(..., K)``; ``codes``: ``(L, K)``. Returns ``(levels, order)``, both ``(..., L)``.
    """
    return torch.sort(basis @ codes.T, dim=-1)


def midpoints(levels: Tensor) -> Tensor:
    """Thresholds between consecutive sorted levels: ``(..., L) -> (..., L-1)``."""
    return (levels[..., :-1] + levels[..., 1:]) / 2


class Sweep(NamedTuple):
    """Result of :func:`threshold_sweep`: ``accumulated`` shaped as ``x``; ``counts``/``sums`` the
    number and sum of the values at each sorted level, ``(L,)`` or ``(C, L)`` (``None`` unless asked)."""

    accumulated: Tensor
    counts: Tensor | None
    sums: Tensor | None


def _flat(t: Tensor) -> Tensor:
    """1-D view in memory order (contiguous or channels_last), else a flattened copy."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return t.permute(0, 2, 3, 1).reshape(-1)
    return t.reshape(-1)


def threshold_sweep(x: Tensor, thresholds: Tensor, steps: Tensor | None = None, stats: bool = False) -> Sweep:
    """One pass over ``x`` per threshold ``t_i`` (at most 15): ``accumulated = sum_i steps_i [x > t_i]``
    (``steps=None``: 1, i.e. the sorted-level index of every value, as float), and with ``stats`` the
    per-level counts and sums of ``x`` (from the counts/sums above each threshold, differenced).

    ``thresholds``/``steps``: ``(L-1,)`` (one set for all of ``x``) or ``(C, L-1)`` (one set per row
    of a 2-D ``x``). Float masks throughout: on CPU a comparison writing floats is ~3x faster than
    one writing bools, and this sweep is 3-10x faster than ``torch.bucketize`` + ``torch.bincount``
    for 1-4 bits (measured on 1M activations).
    """
    rowwise = thresholds.dim() == 2
    thresholds = thresholds.to(x.dtype)
    steps = None if steps is None else steps.to(x.dtype)

    def column(t: Tensor, i: int) -> Tensor:
        return t[:, i:i + 1] if rowwise else t[i]

    accumulated = torch.zeros_like(x)
    above = torch.empty_like(x)
    counts_above, sums_above = [], []
    for i in range(thresholds.shape[-1]):
        torch.gt(x, column(thresholds, i), out=above)
        if steps is None:
            accumulated += above
        else:
            accumulated.addcmul_(above, column(steps, i))
        if stats:
            if rowwise:
                counts_above.append(above.sum(1))
                sums_above.append(torch.linalg.vecdot(x, above, dim=1))
            elif x.dtype == torch.float32:
                counts_above.append(above.sum())
                sums_above.append(torch.dot(_flat(x), _flat(above)))
            else:  # half/bfloat16 (autocast): the statistics are summed in float32
                counts_above.append(above.sum(dtype=torch.float32))
                sums_above.append((x * above).sum(dtype=torch.float32))
    if not stats:
        return Sweep(accumulated, None, None)
    total_count = torch.full_like(counts_above[0], x.shape[1] if rowwise else x.numel())
    total_sum = x.sum(1) if rowwise else x.sum(dtype=counts_above[0].dtype)
    zero = torch.zeros_like(total_sum)
    counts = torch.stack([total_count, *counts_above, zero], -1)
    sums = torch.stack([total_sum, *sums_above, zero], -1)
    return Sweep(accumulated, counts[..., :-1] - counts[..., 1:], sums[..., :-1] - sums[..., 1:])


def initial_weight_basis(out_channels: int, bits: int, kernel_numel: int) -> Tensor:
    """``(C, K)``: ``v[j] = 2^j * 0.6745 * sqrt(2 / n) / 2^(K-1)`` with ``n = k*k*out_channels``."""
    n = kernel_numel * out_channels
    base = NORM_PPF_0_75 * math.sqrt(2.0 / n) / 2 ** (bits - 1)
    row = torch.tensor([2.0 ** j * base for j in range(bits)])
    return row.repeat(out_channels, 1)


def initial_act_basis(bits: int) -> Tensor:
    """``(K,)``: ``v[j] = 2^j * 0.6745 * 2 / (2^K - 1)``."""
    return torch.tensor([2.0 ** j * NORM_PPF_0_75 * 2 / (2 ** bits - 1) for j in range(bits)])


# --------------------------------------------------------------------------------------- QEM
def qem_solve(counts: Tensor, sums: Tensor, level_codes: Tensor, basis: Tensor, ridge: float) -> Tensor:
    """The QEM target ``(B^T B + ridge I)^-1 (B^T x + ridge v)`` from per-level statistics.

    ``counts``/``sums``: ``(C, L)`` number and sum of the values quantized to each level;
    ``level_codes``: ``(C, L, K)`` the code of each level; ``basis``: ``(C, K)``. Returns ``(C, K)``
    (a batched ``torch.linalg.solve``; singular systems give non-finite rows, see callers).
    """
    codes = level_codes.to(counts.dtype)
    btb = torch.einsum("cl,clj,clk->cjk", counts, codes, codes)
    btx = torch.einsum("cl,clj->cj", sums, codes)
    if ridge:
        btb = btb + ridge * torch.eye(codes.shape[-1], dtype=btb.dtype, device=btb.device)
        btx = btx + ridge * basis.to(btx.dtype)
    solution, info = torch.linalg.solve_ex(btb, btx)
    return torch.where((info == 0).unsqueeze(-1), solution, torch.full_like(solution, float("nan")))


def moving_average_(basis: Tensor, target: Tensor) -> None:
    """``basis <- 0.9 basis + 0.1 target`` in place, rows whose target is not finite kept as they are
    (activation QEM without ridge is singular when a bit is never set)."""
    ok = torch.isfinite(target).all(-1, keepdim=True)
    updated = MOMENTUM * basis + (1 - MOMENTUM) * target.to(basis.dtype)
    basis.copy_(torch.where(ok, updated, basis))


# ------------------------------------------------------------------------------------ weights
class QuantizedWeight(NamedTuple):
    """``values`` ``(C, M)`` the quantized weights; ``level_index`` ``(C, M)`` the sorted-level index
    of each (number of thresholds it exceeds); ``order`` ``(C, L)`` the code index of each sorted
    level (a weight's code is ``order[c, level_index[c, m]]``); ``target`` ``(C, K)`` the QEM
    target (``None`` unless asked)."""

    values: Tensor
    level_index: Tensor
    order: Tensor
    target: Tensor | None


def quantize_weight(w2d: Tensor, basis: Tensor, qem: bool = False, ridge: float = WEIGHT_RIDGE) -> QuantizedWeight:
    """Quantize each row ``c`` of ``w2d`` ``(C, M)`` with its basis ``basis[c]`` ``(C, K)``; ``qem``:
    also the QEM target for the codes found (ridge ``delta`` = ``ridge``)."""
    codes = code_table(basis.shape[-1], signed=True, device=basis.device, dtype=basis.dtype)
    levels, order = sorted_levels(basis, codes)
    sweep = threshold_sweep(w2d, midpoints(levels), stats=qem)
    level_index = sweep.accumulated.long()
    values = levels.to(w2d.dtype).gather(1, level_index)
    target = qem_solve(sweep.counts, sweep.sums, codes[order], basis, ridge) if qem else None
    return QuantizedWeight(values, level_index, order, target)


class _StraightThrough(torch.autograd.Function):
    """Forward: ``q`` (a detached alias: no copy, the cached tensor keeps no graph); backward: the
    gradient goes to ``w`` unchanged (identity STE)."""

    @staticmethod
    def forward(ctx, w: Tensor, q: Tensor) -> Tensor:
        return q.detach()

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


class LQWeightQuantizer(nn.Module):
    """Per-output-channel LQ quantizer of a conv weight ``(C_out, C_in/g, k, k)``.

    Buffer ``basis`` ``(C_out, K)``. In training mode the basis takes one QEM step per weight
    version: the S forwards of one training step (one per resolution) see the same weights, so the
    quantized weights are computed and the basis updated at the first, and reused by the others;
    an optimizer step (a new weight version) triggers the next quantization and update. In eval mode
    the quantized weights are cached until the weights or the basis change.
    """

    def __init__(self, out_channels: int, bits: int, kernel_numel: int):
        super().__init__()
        self.bits = check_bits(bits, "quant.weight_bits")
        if bits == FLOAT_BITS:
            raise ConfigError("quant.weight_bits: 32 means no quantizer; do not build one")
        self.register_buffer("basis", initial_weight_basis(out_channels, bits, kernel_numel))
        self._cache: tuple | None = None  # (key, quantized weight)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, channels={self.basis.shape[0]}"

    def _key(self, w: Tensor) -> tuple:
        return (self.training, w.data_ptr(), w._version, self.basis.data_ptr(), self.basis._version)

    @torch.no_grad()
    def quantized(self, w: Tensor, update: bool = False) -> Tensor:
        """Quantized copy of ``w`` with the current basis; ``update``: one QEM step after it."""
        quantized = quantize_weight(w.detach().reshape(w.shape[0], -1), self.basis, qem=update)
        if update:
            moving_average_(self.basis, quantized.target)
        return quantized.values.reshape(w.shape)

    def forward(self, w: Tensor) -> Tensor:
        compiling = torch.compiler.is_compiling()
        if compiling or self._cache is None or self._cache[0] != self._key(w):
            q = self.quantized(w, update=self.training)
            if not compiling:
                self._cache = (self._key(w), q)
        else:
            q = self._cache[1]
        return _StraightThrough.apply(w, q) if torch.is_grad_enabled() and w.requires_grad else q

    def _apply(self, fn, recurse=True):  # .to(device) etc.: cached tensors would stay behind
        self._cache = None
        return super()._apply(fn, recurse)

    def codes(self, w: Tensor) -> Tensor:
        """Code index (``uint8``, bit ``j`` = sign of basis ``j``) of every weight, shaped as ``w``."""
        quantized = quantize_weight(w.detach().reshape(w.shape[0], -1), self.basis)
        return quantized.order.gather(1, quantized.level_index).to(torch.uint8).reshape(w.shape)


def dequantize_codes(codes: Tensor, basis: Tensor) -> Tensor:
    """Weights from code indices ``(C, ...)`` (``uint8``) and bases ``(C, K)``: ``sum_j b_j v_cj``."""
    table = code_table(basis.shape[-1], signed=True, device=basis.device, dtype=basis.dtype)
    values = basis @ table.T  # (C, L): value of every code index
    flat = codes.reshape(codes.shape[0], -1).long()
    return values.gather(1, flat).reshape(codes.shape)


# -------------------------------------------------------------------------------- activations
def act_levels(basis: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(levels, thresholds, level_codes)`` of an activation basis ``(K,)``: sorted levels with
    level 0 forced to 0 (the output below the first threshold, code 0), ``(L,)``; thresholds
    ``(L-1,)``; the ``{0,1}`` code of each output level ``(L, K)``."""
    codes = code_table(basis.shape[-1], signed=False, device=basis.device, dtype=basis.dtype)
    levels, order = sorted_levels(basis, codes)
    thresholds = midpoints(levels)
    level_codes = codes[order]
    level_codes[0] = 0.0
    levels = torch.cat([levels.new_zeros(1), levels[1:]])
    return levels, thresholds, level_codes


def quantize_act(x: Tensor, levels: Tensor, thresholds: Tensor, stats: bool = False) -> Sweep:
    """``accumulated``: ``levels[i]`` for every value of ``x``, ``i`` the number of thresholds it
    exceeds (``levels[0]`` is 0), summed as ``sum_i (levels[i+1] - levels[i]) [x > t_i]`` (equal to
    the level up to float rounding); ``stats``: per-level counts and sums ``(L,)`` for QEM."""
    return threshold_sweep(x, thresholds, levels[1:] - levels[:-1], stats)


class _ActQuantize(torch.autograd.Function):
    """Forward: :func:`quantize_act` (returns the quantized tensor and the per-level counts and sums);
    backward: identity where ``x <= top`` (the top level), 0 above (the clipped straight-through
    estimator). Saves ``x`` itself (the ReLU before keeps it alive anyway) rather than a mask."""

    @staticmethod
    def forward(ctx, x: Tensor, levels: Tensor, thresholds: Tensor, stats: bool):
        sweep = quantize_act(x, levels, thresholds, stats)
        ctx.save_for_backward(x, levels[-1])
        if stats:
            ctx.mark_non_differentiable(sweep.counts, sweep.sums)
        return sweep.accumulated, sweep.counts, sweep.sums

    @staticmethod
    def backward(ctx, grad: Tensor, _counts, _sums):
        x, top = ctx.saved_tensors
        keep = torch.le(x, top.to(x.dtype), out=torch.empty_like(grad))
        return keep.mul_(grad), None, None, None


def act_qem_target(counts: Tensor, sums: Tensor, level_codes: Tensor, basis: Tensor) -> Tensor:
    """``(K,)`` QEM target of an activation basis (no ridge) from per-level counts and sums ``(L,)``."""
    return qem_solve(counts[None], sums[None], level_codes[None], basis[None], 0.0)[0]


class LQActQuantizer(nn.Module):
    """One LQ activation quantizer (basis ``(K,)``, a buffer) on a conv's input ``(B, C, H, W)``.

    Shared by every resolution (RS-Net: only BN is private). ``update``: ``all`` takes a QEM step
    after every training-mode forward; ``highest`` only while the active configuration is the
    highest training resolution (the official ``--fixed_qa``).
    """

    def __init__(self, bits: int, state: SwitchState | None = None, update: str = "all"):
        super().__init__()
        self.bits = check_bits(bits, "quant.act_bits")
        if bits == FLOAT_BITS:
            raise ConfigError("quant.act_bits: 32 means no quantizer; do not build one")
        if update not in ACT_BASIS_UPDATES:
            raise ConfigError(f"quant.act_basis_update: unknown {update!r}; choose one of {list(ACT_BASIS_UPDATES)}")
        if update == "highest" and state is None:
            raise ConfigError("quant.act_basis_update: 'highest' needs the network's switch state")
        self.state = state
        self.update = update
        self.register_buffer("basis", initial_act_basis(bits))

    def extra_repr(self) -> str:
        return f"bits={self.bits}, update={self.update}"

    def updates_now(self) -> bool:
        if not self.training:
            return False
        return self.update == "all" or self.state.config.resolution == self.state.train_resolutions[0]

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            levels, thresholds, level_codes = act_levels(self.basis)
        update = self.updates_now()
        if torch.is_grad_enabled() and x.requires_grad:
            y, counts, sums = _ActQuantize.apply(x, levels, thresholds, update)
        else:
            y, counts, sums = quantize_act(x, levels, thresholds, update)
        if update:
            with torch.no_grad():
                moving_average_(self.basis, act_qem_target(counts.float(), sums.float(), level_codes, self.basis))
        return y

    @torch.no_grad()
    def to_plain(self) -> LQActivation:
        levels, thresholds, _ = act_levels(self.basis)
        return LQActivation(levels, thresholds)


class LQActivation(nn.Module):
    """Fixed activation quantizer for export: ``y = levels[#{t : x > t}]`` as a chain of
    ``torch.where`` (ops every exporter knows). Buffers ``levels`` ``(L,)``, ``thresholds`` ``(L-1,)``."""

    def __init__(self, levels: Tensor, thresholds: Tensor):
        super().__init__()
        self.register_buffer("levels", levels.detach().clone())
        self.register_buffer("thresholds", thresholds.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        y = torch.zeros_like(x) + self.levels[0]
        for i in range(self.thresholds.shape[0]):
            y = torch.where(x > self.thresholds[i], self.levels[i + 1], y)
        return y
