"""ONE ONNX file for every stored (width, resolution) of a slimmable checkpoint (MutualNet, US-Net,
S-Net): ``export ... format=onnx configs=all`` on such a checkpoint (:func:`.one_file.export_all`
hands it here).

Graph design (docs/deployment.md, "Slimmable widths in the one file"): two inputs, ``images``
``(B, C, H, W)`` and ``width_index`` (int64 scalar: the position of the width in the file's
``widths`` metadata, highest first).

* Weights stored once: the full-width tensors of every slimmable conv / linear / shared BN are the
  file's initializers; a width runs their leading ``(out, in)`` slice (``Slice`` nodes with constant
  ends, :func:`~resnet_switch.layers.slimmable.slim_channels`' rounding).
* One branch per *channel signature* (:func:`~resnet_switch.models.inference_policy.channel_signature`):
  widths that slice every layer to the same channel counts share one sub-graph. The branches are an
  ``If`` chain (``torch.cond``) on the branch index gathered from ``width_index``: only the selected
  width's convs run, at its own cost.
* BN statistics: the checkpoint's exact statistics per stored configuration (the policy of
  ``needs_calibration`` methods: every configuration on its own calibrated statistics), folded with the
  BN's affine parameters (the shared BN's leading slice, or S-Net's private set of the width) into
  ``(N_g, C_g)`` scale / shift tables per BN of a branch, one row per stored configuration of the
  branch's widths. The graph picks the row once per call as a one-hot over all stored configurations
  (``|resolution - H|`` among the rows of the chosen width, ties: the larger resolution) and each BN
  runs ``x * (onehot @ scale) + onehot @ shift`` on its slice of that one-hot.
* Resolutions: the stored ones only (the policy refuses the others until they are calibrated);
  :class:`~resnet_switch.deploy.onnx.SwitchableSession` refuses them too. The bare graph, fed another
  height, runs the nearest stored resolution's statistics (documented, not checked).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..layers.contracts import SwitchableLeaf
from ..layers.slimmable import SlimmableBatchNorm2d, SlimmableConv2d, SlimmableLinear, WidthPrivateBatchNorm2d
from ..models.inference_policy import channel_signature
from ..switch import SubnetConfig
from .runtime import SwitchableClassifier

WIDTH_INPUT = "width_index"
SLIMMABLE_LEAVES = (SlimmableConv2d, SlimmableLinear, SlimmableBatchNorm2d, WidthPrivateBatchNorm2d)


class _Rows:
    """The one-hot over the stored configurations of the current forward (a plain holder set outside
    the ``If`` branches and read inside them: branches may not have side effects)."""

    __slots__ = ("onehot",)

    def __init__(self) -> None:
        self.onehot: Tensor | None = None


class StoredStatsBatchNorm2d(nn.Module):
    """A slimmable BN of one branch in eval mode, folded per stored configuration: ``x * (onehot[rows] @
    scale_table) + onehot[rows] @ shift_table`` with ``scale = weight / sqrt(var + eps)`` and ``shift =
    bias - mean * scale`` (the configuration's stored statistics, the shared BN's leading ``C_g``
    affine parameters or S-Net's private set of the branch's width). The tables are ``(N_g, C_g)``,
    row ``i``: stored configuration ``rows[i]``; two floats per channel and configuration, the affine
    parameters folded in (not stored besides)."""

    def __init__(self, bn: SlimmableBatchNorm2d | WidthPrivateBatchNorm2d, configs: Sequence[SubnetConfig],
                 start: int, rows: _Rows):
        super().__init__()
        if isinstance(bn, WidthPrivateBatchNorm2d):
            active = bn.sets[bn.index_of_width[configs[0].width]]
            weight, bias = active.weight, active.bias
        else:
            weight, bias = bn.weight, bn.bias
        scales, shifts = [], []
        for config in configs:
            mean, var = (t.detach().double() for t in bn.calibrated_stats(config))
            c = mean.shape[0]
            scale = weight[:c].detach().double() / torch.sqrt(var + bn.eps)
            scales.append(scale)
            shifts.append(bias[:c].detach().double() - mean * scale)
        self.register_buffer("scale_table", torch.stack(scales).float())
        self.register_buffer("shift_table", torch.stack(shifts).float())
        self.start, self.stop = start, start + len(configs)
        self._rows = rows

    def forward(self, x: Tensor) -> Tensor:
        onehot = self._rows.onehot[self.start:self.stop]
        scale, shift = onehot @ self.scale_table, onehot @ self.shift_table
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)


class WidthSwitchNet(nn.Module):
    """``(images, width_index) -> logits``: the branch of ``width_index``'s channel signature run on the
    stored statistics of the nearest stored resolution of that width (module docstring).

    Args:
        branches: one body per channel signature (slimmable layers fixed at the branch's width,
            BN layers :class:`StoredStatsBatchNorm2d`).
        widths: the file's widths, highest first (``width_index`` positions).
        configs: every stored configuration, grouped by branch (branch ``g``'s rows contiguous).
        branch_of_width: branch index of each width.
    """

    def __init__(self, branches: Sequence[nn.Module], widths: Sequence[float], configs: Sequence[SubnetConfig],
                 branch_of_width: Sequence[int], rows: _Rows):
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.widths = list(widths)
        self._rows = rows
        index = {w: k for k, w in enumerate(widths)}
        self.register_buffer("row_width", torch.tensor([index[c.width] for c in configs], dtype=torch.int64))
        self.register_buffer("row_resolution", torch.tensor([float(c.resolution) for c in configs]))
        self.register_buffer("branch_of_width", torch.tensor(list(branch_of_width), dtype=torch.int64))

    def row_onehot(self, width_index: Tensor, height: Any) -> Tensor:
        """One-hot ``(N,)`` on the stored configuration of width ``width_index`` nearest in
        resolution to ``height`` (ties: the larger resolution, the first of equal rows)."""
        h = torch.zeros_like(self.row_resolution[:1]) + height
        other = (self.row_width != width_index).to(self.row_resolution.dtype) * 1e9
        row = ((self.row_resolution - h).abs() + other).argmin()
        return (torch.arange(self.row_width.shape[0], device=self.row_width.device) == row).to(h.dtype)

    def _select(self, g: int, x: Tensor, branch: Tensor) -> Tensor:
        if g == len(self.branches) - 1:
            return self.branches[g](x)
        return torch.cond(branch == g, lambda x: self.branches[g](x), lambda x: self._select(g + 1, x, branch), (x,))

    def forward(self, x: Tensor, width_index: Tensor) -> Tensor:
        width_index = width_index.reshape(())
        self._rows.onehot = self.row_onehot(width_index, x.shape[-2])
        try:
            # index_select, not [width_index]: a 0-d index tensor would be read as a Python int (.item())
            return self._select(0, x, self.branch_of_width.index_select(0, width_index.reshape(1)).reshape(()))
        finally:
            self._rows.onehot = None


# ------------------------------------------------------------------------------------ building
def unsupported(clf: SwitchableClassifier) -> str | None:
    """Why ``clf``'s slimmable network cannot be exported as one file (``None``: it can)."""
    for module in clf.net.modules():
        if isinstance(module, SwitchableLeaf) and not isinstance(module, SLIMMABLE_LEAVES):
            return (f"{clf.method_name} with {type(module).__name__} layers is not supported in one file yet; "
                    "export one configuration per file (resolution=R width=W)")
    if not clf.stored_configs():
        return (f"this {clf.method_name} checkpoint stores no BN statistics; calibrate its configurations "
                "and store them in the checkpoint, or export one configuration per file")
    return None


def stored_grid(clf: SwitchableClassifier) -> tuple[list[float], list[SubnetConfig]]:
    """``(widths, configs)``: the widths with stored statistics (highest first) and every stored
    configuration (width descending, then resolution descending)."""
    stored = clf.stored_configs()
    widths = sorted({c.width for c in stored}, reverse=True)
    configs = sorted(stored, key=lambda c: (-c.width, -c.resolution))
    return widths, configs


@torch.no_grad()
def build_width_module(clf: SwitchableClassifier) -> WidthSwitchNet:
    """The torch module exported as the slimmable one file (module docstring)."""
    net = clf.net
    widths, stored = stored_grid(clf)
    groups: dict[tuple, list[float]] = {}
    for w in widths:
        groups.setdefault(channel_signature(net, w), []).append(w)
    ordered = list(groups.values())  # highest width first
    branch_of_width = [next(g for g, ws in enumerate(ordered) if w in ws) for w in widths]
    configs = [c for ws in ordered for c in stored if c.width in ws]
    rows = _Rows()
    source = net.net
    shared = {id(t): t for t in [*source.parameters(), *source.buffers()]}  # weights shared by every branch
    branches, start = [], 0
    for ws in ordered:
        mine = [c for c in configs if c.width in ws]
        body = copy.deepcopy(source, memo=dict(shared)).cpu().eval()
        state = next(m.state for m in body.modules() if isinstance(m, SLIMMABLE_LEAVES))
        state.activate(SubnetConfig(mine[0].resolution, ws[0]), "calibrated")  # fixed width: no switch at run time

        def replace(module: nn.Module, mine=mine, start=start) -> None:
            for name, child in list(module.named_children()):
                if isinstance(child, (SlimmableBatchNorm2d, WidthPrivateBatchNorm2d)):
                    setattr(module, name, StoredStatsBatchNorm2d(child, mine, start, rows))
                else:
                    replace(child)

        replace(body)
        branches.append(body)
        start += len(mine)
    return WidthSwitchNet(branches, widths, configs, branch_of_width, rows).eval()


def export_width_onnx(module: WidthSwitchNet, example: Tensor, path: Path, metadata: dict[str, Any],
                      min_side: int, max_side: int, strip) -> None:
    """``torch.onnx.export`` (dynamo) with inputs ``images`` (dynamic batch, height, width) and
    ``width_index`` (int64 scalar); ``metadata`` stored as JSON under ``metadata_props``."""
    import onnx

    from .onnx_file import METADATA_KEY

    dims = {0: torch.export.Dim("batch", min=1, max=4096), 2: torch.export.Dim("height", min=min_side, max=max_side),
            3: torch.export.Dim("width", min=min_side, max=max_side)}
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (example, torch.tensor(0, dtype=torch.int64)), dynamo=True, verbose=False,
                                    input_names=["images", WIDTH_INPUT], output_names=["logits"],
                                    dynamic_shapes=(dims, None), optimize=False)
        optimize_keeping_weights(program.model)
    model = strip(program.model_proto)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata, sort_keys=True)
    onnx.save_model(model, str(path))


def optimize_keeping_weights(model: Any) -> None:
    """The exporter's ONNX optimisation (onnxscript: constant folding, dead code) of the ``onnx_ir``
    ``model`` in place, except that no node reading one of the exported tensors (weights, BN tables)
    is folded: folding ``Slice(weight)`` would store each width's slice as a new initializer (a
    second copy of the weights), and an identity slice the full tensor again."""
    from onnxscript import optimizer

    weights = set(model.graph.initializers)

    def should_fold(node: Any) -> bool | None:
        return False if any(v is not None and v.name in weights for v in node.inputs) else None

    optimizer.optimize_ir(model, should_fold=should_fold)


def width_runner(path: Path):
    """``run(images, width_index) -> logits`` on the file at ``path`` (ONNX Runtime)."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(x: Tensor, k: int) -> Tensor:
        feeds = {"images": x.numpy(), WIDTH_INPUT: np.array(k, dtype=np.int64)}
        return torch.from_numpy(session.run(None, feeds)[0])

    return run, "onnxruntime"


# -------------------------------------------------------------------------------------- export
def export_widths(opts: dict[str, Any], clf: SwitchableClassifier, ckpt: Path) -> dict[str, Any]:
    """``configs=all`` on a slimmable checkpoint: write the one file, check it in ONNX Runtime at every
    stored (width, resolution) and check its size; the result dict of :func:`.one_file.export_all`
    (``widths``, ``configs`` and ``branches`` added). ``VerifyError``, nothing at ``out``, on failure."""


    from ..errors import ConfigError
    from ..training.checkpointing import atomic_path
    from .onnx_file import MAX_SIDE, MIN_SIDE, SIZE_BOUND, VerifyError, check_size, strip_debug

    reason = unsupported(clf)
    if reason is not None:
        raise ConfigError(f"configs: all: {reason}")
    if opts["unseen"]:
        raise ConfigError(f"unseen: {clf.method_name} runs stored (width, resolution) configurations only (exact "
                          "statistics per configuration); drop unseen=")
    module = build_width_module(clf)
    widths, _ = stored_grid(clf)
    configs = [SubnetConfig(r, w) for r, w in _rows_of(module)]  # grouped by branch, the largest first
    size_bound = float(opts["size_bound"] if opts["size_bound"] is not None else SIZE_BOUND)
    spec = clf.net.spec
    trained = sorted({c.resolution for c in configs}, reverse=True)
    out = Path(str(opts["out"])) if opts["out"] else ckpt.with_name(f"{ckpt.stem}_{spec['name']}_all.onnx")
    metadata = {
        "format_version": 1, "method": clf.method_name, "model": spec["name"], "num_classes": clf.num_classes,
        "in_channels": clf.in_channels, "train_resolutions": trained, "bn_mode": "stored",
        "blend": "stored", "selects": "input height (a stored resolution) and width_index",
        "widths": widths, "width_input": WIDTH_INPUT,
        "configs": [[c.resolution, c.width] for c in sorted(configs, reverse=True)],
        "min_side": MIN_SIDE, "max_side": MAX_SIDE,
        "mean": None if clf.mean is None else clf.mean.flatten().tolist(),
        "std": None if clf.std is None else clf.std.flatten().tolist(),
        "crop_ratio": clf.crop_ratio, "resize": "bilinear, antialias, align_corners=False (float)",
        "input": "images", "output": "logits",
    }
    gen = torch.Generator().manual_seed(int(opts["seed"]))
    top = configs[0]  # the highest width's highest resolution: the largest configuration
    example = torch.randn(opts["verify_batch"] + 1, clf.in_channels, top.resolution, top.resolution, generator=gen)
    checks = []
    with atomic_path(out) as tmp, torch.no_grad():
        export_width_onnx(module, example, tmp, metadata, MIN_SIDE, MAX_SIDE, strip_debug)
        runner, runner_label = width_runner(tmp)
        for c in sorted(configs, reverse=True):
            x = torch.randn(opts["verify_batch"], clf.in_channels, c.resolution, c.resolution, generator=gen)
            clf.switch(c.resolution, c.width)
            reference = clf(x)  # the switchable network on the configuration's stored statistics
            got = runner(x, widths.index(c.width))
            diff = float((got.float() - reference).abs().max()) if got.shape == reference.shape else float("inf")
            scale = float(reference.abs().max())
            allowed = float(opts["tolerance"]) * max(1.0, scale)
            checks.append({"resolution": c.resolution, "width": c.width, "trained": True, "bn": "stored",
                           "max_abs_diff": diff, "max_abs_logit": scale, "allowed": allowed})
            if not diff <= allowed:
                raise VerifyError(f"verify: at width {c.width:g} {c.resolution}px max abs difference {diff:.3g} > "
                                  f"allowed {allowed:.3g} (tolerance {opts['tolerance']:g} x max(1, largest |logit| "
                                  f"{scale:.3g})) between {out.name} ({runner_label}) and the switchable network; "
                                  "no file written")
        clf.switch(top.resolution, top.width)
        one_bytes, single_bytes, single_stripped, weights, single_weights, ratio = check_size(
            clf.materialize().cpu().eval(), example, tmp, size_bound, f"width {top.width:g} {top.resolution}px")
    return {"configs": "all", "out": str(out), "format": "onnx", "model": spec["name"], "method": clf.method_name,
            "train_resolutions": trained, "unseen": [], "bn_mode": "stored", "checks": checks,
            "checked_with": runner_label, "tolerance": float(opts["tolerance"]), "bytes": one_bytes,
            "single_bytes": single_bytes, "single_bytes_stripped": single_stripped, "size_ratio": ratio,
            "size_bound": size_bound, "weight_bytes": weights, "single_weight_bytes": single_weights,
            "blended_bn": 0, "generated_convs": 0, "widths": widths, "branches": len(module.branches),
            "stored_bn": sum(isinstance(m, StoredStatsBatchNorm2d) for m in module.modules())}


def _rows_of(module: WidthSwitchNet) -> list[tuple[int, float]]:
    """``(resolution, width)`` of each stored-configuration row of ``module``."""
    return [(int(r), module.widths[int(k)]) for r, k in zip(module.row_resolution.tolist(), module.row_width.tolist())]
