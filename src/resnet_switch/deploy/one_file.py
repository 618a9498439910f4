"""ONE ONNX file for every resolution of a switchable network (``export ... format=onnx configs=all``).

Graph design (docs/deployment.md, "One file, every resolution"): the weights are stored once (the
plain network of the largest configuration: convs, FC, LQ fake-quantized weights and activation
quantizers as ``materialize`` makes them); each private BN layer (RS-Net sec. 3.1: one set per
training resolution) becomes :class:`BlendedBatchNorm2d`, holding four tables ``(K, C)``: its K sets'
``weight, bias, running_mean, running_var``. The graph computes the blend weights ``w (K,)``
ONCE from the input's height ``H`` (:class:`ResolutionBlendNet`, tensor ops on the traced shape, no
data-dependent control flow) and every BN runs ``BatchNormalization`` on ``w @ table`` (4 ``MatMul``):

* ``interpolate`` (RS-Net / parallel default, sec. 4.3): hat functions over the training
  resolutions, ``H`` clamped to the trained range, so a training resolution gets exactly its own
  set (weights 1 and 0) and an unseen one the linear blend of its two neighbours (all four
  tensors blended before normalising, as :meth:`PrivateBatchNorm2d.blended` does);
* ``nearest``: a one-hot on the nearest training resolution (ties: the larger, as
  :meth:`SwitchState.nearest_index`).

Which of the two a checkpoint uses is its :class:`InferencePolicy`'s mode (``bn_mode`` option or the
method's default); the check compares against the switchable network run through that policy. Only
the height selects the BN blend (the runtime always feeds square inputs; a non-square input runs at
its height's configuration). Networks with one BN set (``individual``, shared-BN ``parallel``) need
no table: their plain network with dynamic ``H``/``W`` is already the one file.

SAN (:class:`GeneratedConv2d`): each meta-learned conv keeps its meta-learner's tensors and generates
its kernel in the graph from ``eps = one-hot(nearest training resolution) @ eps_table`` (proxy
inference, SAN eq. 6: a training resolution its own encoding), with the BN blend of the policy
(``proxy``: nearest). Size bound 2.2x (``linear``: two tensors per kernel).

Slimmable checkpoints (mutualnet / usnet / snet): every stored (width, resolution) in one file with
the width as a second input, :mod:`.one_file_widths`.

Not yet (one-line ``ConfigError``): SAN's private-conv ablation, statistics calibrated per
configuration for non-slimmable methods (``bn_mode=calibrate|ideal``), converted torchvision/timm
models (their BN layers may carry an activation).
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
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..evaluation.adaptive import AdaptivePolicy, policy_path
from ..layers.contracts import SwitchableLeaf
from ..layers.private_bn import PrivateBatchNorm2d
from ..layers.quant import LQConv2d
from ..layers.scale_conv import LinearMeta, ScaleConv2d
from ..layers.source_bn import SourcePrivateBatchNorm2d
from .onnx_file import (
    MAX_SIDE,
    METADATA_KEY,
    MIN_SIDE,
    SIZE_BOUND,
    VerifyError,
    check_size,
    onnx_runner,
    strip_debug,
)
from .runtime import SwitchableClassifier

BLEND_MODES = ("nearest", "interpolate")  # SwitchState BN modes the one file computes in its graph
SAN_SIZE_BOUND = 2.2  # SAN keeps its meta-learners (linear: two tensors per kernel)


class _Blend:
    """The weights of the current forward, shared by every :class:`BlendedBatchNorm2d` and
    :class:`GeneratedConv2d` (a plain Python holder, not a module: nothing in the graph's
    initializers). ``weights``: the BN sets' blend; ``nearest``: one-hot on the nearest training
    resolution (the scale encoding SAN's kernels use at an unseen resolution, proxy inference)."""

    __slots__ = ("weights", "nearest")

    def __init__(self) -> None:
        self.weights: Tensor | None = None
        self.nearest: Tensor | None = None


class BlendedBatchNorm2d(nn.Module):
    """A private BN layer whose set is chosen in the graph: ``BatchNorm(x, w @ weight_table, w @ bias_table,
    w @ mean_table, w @ var_table)``; each table is ``(K, C)``, row ``k`` = set ``k``'s tensor."""

    TABLES = ("weight", "bias", "running_mean", "running_var")

    def __init__(self, private: PrivateBatchNorm2d, blend: _Blend):
        super().__init__()
        for name in self.TABLES:
            table = torch.stack([getattr(s, name).detach().float() for s in private.sets])
            self.register_buffer(f"{name}_table", table.clone())
        self.num_features = private.num_features
        self.eps = private.eps
        self._blend = blend

    def forward(self, x: Tensor) -> Tensor:
        w = self._blend.weights
        weight, bias, mean, var = (w @ getattr(self, f"{name}_table") for name in self.TABLES)
        return F.batch_norm(x, mean, var, weight, bias, False, 0.0, self.eps)


class GeneratedConv2d(nn.Module):
    """SAN's :class:`ScaleConv2d` with its kernel generated in the graph: ``eps = nearest @ eps_table``
    (the encoding of the nearest training resolution, a training resolution's own), then the
    meta-learner (``linear``: ``eps * W + b``; ``mlpH``: ``W2 relu(W1 eps + b1) + b2``) and the conv.
    The meta-learner's tensors are stored (two per kernel for ``linear``), not the generated kernels."""

    def __init__(self, conv: ScaleConv2d, blend: _Blend):
        super().__init__()
        state = conv.state
        self.register_buffer("eps_table", torch.tensor([conv.eps_of(r) for r in state.train_resolutions],
                                                       dtype=torch.float32))
        self.linear = isinstance(conv.meta, LinearMeta)
        for name, tensor in conv.meta.named_parameters():
            self.register_buffer(f"meta_{name}", tensor.detach().clone())
        self.register_buffer("conv_bias", None if conv.bias is None else conv.bias.detach().clone())
        self.kernel_shape = tuple(conv.kernel_shape)
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self._blend = blend

    def kernel(self, eps: Tensor) -> Tensor:
        if self.linear:
            return eps * self.meta_weight + self.meta_bias
        hidden = F.relu(eps * self.meta_hidden_weight.view(-1) + self.meta_hidden_bias)
        return (self.meta_out_weight @ hidden + self.meta_out_bias).view(self.kernel_shape)

    def forward(self, x: Tensor) -> Tensor:
        eps = self._blend.nearest @ self.eps_table
        return F.conv2d(x, self.kernel(eps), self.conv_bias, self.stride, self.padding, self.dilation, self.groups)


class ResolutionBlendNet(nn.Module):
    """``body`` (a plain network whose private BN layers are :class:`BlendedBatchNorm2d`) with the
    blend weights computed from the input height: see the module docstring.

    Args:
        train_resolutions: the training resolutions, highest first (BN set ``k`` <-> entry ``k``).
        mode: ``interpolate`` or ``nearest``.
    """

    def __init__(self, body: nn.Module, blend: _Blend, train_resolutions: Sequence[int], mode: str):
        super().__init__()
        if mode not in BLEND_MODES:
            raise ValueError(mode)
        self.body = body
        self._blend = blend
        self.mode = mode
        res = [float(r) for r in train_resolutions]
        # neighbour gaps of each training resolution (below / above; the ends' outer gap is unused
        # because H is clamped to the trained range: any positive value)
        ordered = sorted(res)
        below = {r: (r - ordered[i - 1]) if i > 0 else 1.0 for i, r in enumerate(ordered)}
        above = {r: (ordered[i + 1] - r) if i + 1 < len(ordered) else 1.0 for i, r in enumerate(ordered)}
        self.register_buffer("res", torch.tensor(res))
        self.register_buffer("gap", torch.tensor([[below[r] for r in res], [above[r] for r in res]]))
        self.lo, self.hi = ordered[0], ordered[-1]

    def _height(self, height: Any) -> Tensor:
        return torch.zeros_like(self.res[:1]) + height  # a (1,) float tensor holding H (a Shape op in the graph)

    def nearest_weights(self, height: Any) -> Tensor:
        """One-hot ``(K,)`` on the training resolution nearest to ``height`` (ties: the larger)."""
        index = (self.res - self._height(height)).abs().argmin()  # the first of equals: the larger resolution
        return (torch.arange(self.res.shape[0], device=self.res.device) == index).to(self.res.dtype)

    def blend_weights(self, height: Any) -> Tensor:
        """``w (K,)``: the weight of each BN set at input height ``height`` (an int or a traced size)."""
        if self.mode == "nearest":
            return self.nearest_weights(height)
        d = self._height(height).clamp(self.lo, self.hi) - self.res
        width = torch.where(d < 0, self.gap[0], self.gap[1])
        return (1.0 - d.abs() / width).clamp_min(0.0)

    def forward(self, x: Tensor) -> Tensor:
        self._blend.weights = self.blend_weights(x.shape[-2])
        self._blend.nearest = self.nearest_weights(x.shape[-2]) if self.mode != "nearest" else self._blend.weights
        try:
            return self.body(x)
        finally:
            self._blend.weights = self._blend.nearest = None


# ------------------------------------------------------------------------------------ building
def unsupported(clf: SwitchableClassifier) -> str | None:
    """Why ``clf``'s network cannot be exported as one file yet (``None``: it can)."""
    if clf.slimmable:  # export_all hands slimmable checkpoints to .one_file_widths
        return f"{clf.method_name} is slimmable: its one file is .one_file_widths.build_width_module's"
    if clf.needs_calibration:
        return (f"{clf.method_name} runs on statistics calibrated per configuration without widths: not "
                "supported yet; export one configuration per file (resolution=R)")
    if clf.policy.mode.bn_mode not in BLEND_MODES or clf.policy.scale_encoding != "nearest":
        return (f"bn_mode={clf.policy.mode.name} uses statistics calibrated per configuration: not supported "
                "yet; use bn_mode=interpolate or nearest, or export one configuration per file")
    for module in clf.net.modules():
        if isinstance(module, SourcePrivateBatchNorm2d):
            return ("converted torchvision/timm models are not supported yet; export one configuration "
                    "per file (resolution=R)")
        if isinstance(module, SwitchableLeaf) and not isinstance(module, (PrivateBatchNorm2d, LQConv2d, ScaleConv2d)):
            return (f"{clf.method_name} ({type(module).__name__}: kernels per resolution) is not supported yet; "
                    "export one configuration per file (resolution=R)")
    return None


@torch.no_grad()
def build_one_file_module(clf: SwitchableClassifier) -> nn.Module:
    """The torch module exported as the one file: the plain network of the largest configuration
    with every private BN replaced by :class:`BlendedBatchNorm2d` (see the module docstring)."""
    reason = unsupported(clf)
    if reason is not None:
        raise ConfigError(f"configs: all: {reason}")
    state = clf.net.state
    blend = _Blend()
    body = copy.deepcopy(clf.net.net).cpu().eval()
    private = 0

    def replace(module: nn.Module) -> None:
        nonlocal private
        for name, child in list(module.named_children()):
            if isinstance(child, PrivateBatchNorm2d) and len(child.sets) > 1:
                setattr(module, name, BlendedBatchNorm2d(child, blend))
                private += 1
            elif isinstance(child, ScaleConv2d) and len(state.train_resolutions) > 1:
                setattr(module, name, GeneratedConv2d(child, blend))
                private += 1
            elif isinstance(child, SwitchableLeaf):  # one BN set or LQ conv: the same at every resolution
                setattr(module, name, child.to_plain())
            else:
                replace(child)

    with clf.policy.switch(clf.policy.check_config(state.train_resolutions[0])):
        replace(body)
    body.eval()
    if private == 0:  # one BN set, one encoding: the plain network is every resolution already
        return body
    return ResolutionBlendNet(body, blend, state.train_resolutions, clf.policy.mode.bn_mode).eval()


def export_one_file_onnx(module: nn.Module, example: Tensor, path: Path, metadata: dict[str, Any]) -> None:
    """``torch.onnx.export`` (dynamo) of ``module`` with dynamic batch, height and width; ``metadata``
    is stored as JSON under ``metadata_props['resnet_switch']``."""
    import onnx

    dims = {0: torch.export.Dim("batch", min=1, max=4096), 2: torch.export.Dim("height", min=MIN_SIDE, max=MAX_SIDE),
            3: torch.export.Dim("width", min=MIN_SIDE, max=MAX_SIDE)}
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (example,), dynamo=True, verbose=False, input_names=["images"],
                                    output_names=["logits"], dynamic_shapes=(dims,))
    model = strip_debug(program.model_proto)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata, sort_keys=True)
    onnx.save_model(model, str(path))


# -------------------------------------------------------------------------------------- export
def check_all_options(opts: dict[str, Any]) -> None:
    """One-line errors for ``configs=all`` options (after the common ones)."""
    if opts["configs"] != "all":
        raise ConfigError(f"configs: unknown {opts['configs']!r}; use configs=all (one file, every resolution) "
                          "or leave it out and give resolution=R")
    if opts["format"] != "onnx":
        raise ConfigError(f"format: configs=all writes one ONNX file; use format=onnx (got {opts['format']})")
    if opts["resolution"] is not None:
        raise ConfigError("resolution: configs=all exports every resolution in one file; drop resolution=")
    if opts["width"] != 1.0:
        raise ConfigError("width: configs=all exports every width with stored BN statistics in one file; drop width=")
    if opts["fold_bn"]:
        raise ConfigError("fold_bn: configs=all keeps the BN sets as tables chosen in the graph; use fold_bn=false")
    if opts["size_bound"] is not None and (isinstance(opts["size_bound"], bool)
                                           or not isinstance(opts["size_bound"], (int, float))
                                           or not opts["size_bound"] > 0):
        raise ConfigError(f"size_bound: must be positive, got {opts['size_bound']!r}")
    unseen = opts["unseen"]
    if unseen is not None:
        if (not isinstance(unseen, (list, tuple)) or not unseen
                or any(isinstance(r, bool) or not isinstance(r, int) or not MIN_SIDE <= r <= MAX_SIDE for r in unseen)):
            raise ConfigError(f"unseen: a list of resolutions in [{MIN_SIDE}, {MAX_SIDE}] px to check besides "
                              f"the training ones, e.g. unseen=[14,20]; got {unseen!r}")


def default_unseen(train_resolutions: Sequence[int]) -> list[int]:
    """Two resolutions the network was not trained at, checked besides the training ones: the
    middle of the highest gap between neighbouring training resolutions (RS-Net's interpolation) when
    there is one, and one above the trained range (clamped to the highest set); else one below it."""
    trained = sorted(train_resolutions, reverse=True)
    picks = [(hi + lo) // 2 for hi, lo in zip(trained, trained[1:]) if hi - lo > 1][:1]
    picks.append(trained[0] + max(2, trained[0] // 8))
    below = max(MIN_SIDE, trained[-1] - max(2, trained[-1] // 8))
    if len(picks) < 2 and below not in trained:
        picks.append(below)
    return picks


def export_all(opts: dict[str, Any]) -> dict[str, Any]:
    """``configs=all``: write the one ONNX file, check it in ONNX Runtime at every training
    resolution and the unseen ones, and check its size; returns the result dict (see ``report_all``).
    ``VerifyError`` (nothing left at ``out``) when a check fails."""

    from ..training.checkpointing import atomic_path

    check_all_options(opts)
    ckpt = Path(str(opts["ckpt"]))
    clf = SwitchableClassifier.from_checkpoint(ckpt, device="cpu", bn_mode=opts["bn_mode"])
    if clf.slimmable:  # widths as a second input (.one_file_widths)
        from .one_file_widths import export_widths

        return export_widths(opts, clf, ckpt)
    module = build_one_file_module(clf)
    generated = sum(isinstance(m, GeneratedConv2d) for m in module.modules())
    size_bound = float(opts["size_bound"] if opts["size_bound"] is not None
                       else SAN_SIZE_BOUND if generated else SIZE_BOUND)
    spec, state = clf.net.spec, clf.net.state
    trained = list(state.train_resolutions)
    unseen = [r for r in (opts["unseen"] or default_unseen(trained)) if r not in trained]
    out = Path(str(opts["out"])) if opts["out"] else ckpt.with_name(f"{ckpt.stem}_{spec['name']}_all.onnx")
    metadata = {
        "format_version": 1, "method": clf.method_name, "model": spec["name"], "num_classes": clf.num_classes,
        "in_channels": clf.in_channels, "train_resolutions": trained, "bn_mode": clf.policy.mode.name,
        "blend": clf.policy.mode.bn_mode, "selects": "input height", "min_side": MIN_SIDE, "max_side": MAX_SIDE,
        "mean": None if clf.mean is None else clf.mean.flatten().tolist(),
        "std": None if clf.std is None else clf.std.flatten().tolist(),
        "crop_ratio": clf.crop_ratio, "resize": "bilinear, antialias, align_corners=False (float)",
        "input": "images", "output": "logits",
    }
    policy_file = policy_path(ckpt)  # evaluate adaptive=true's thresholds: SwitchableSession.predict_adaptive
    if policy_file.is_file():
        metadata["adaptive"] = AdaptivePolicy.load(policy_file).as_dict()
    gen = torch.Generator().manual_seed(int(opts["seed"]))
    top = trained[0]
    example = torch.randn(opts["verify_batch"] + 1, clf.in_channels, top, top, generator=gen)
    checks = []
    with atomic_path(out) as tmp, torch.no_grad():
        export_one_file_onnx(module, example, tmp, metadata)
        runner, runner_label = onnx_runner(tmp)
        for r in trained + unseen:
            x = torch.randn(opts["verify_batch"], clf.in_channels, r, r, generator=gen)
            config = clf.switch(r)
            reference = clf(x)  # the switchable network through its inference policy
            got = runner(x)
            diff = float((got.float() - reference).abs().max()) if got.shape == reference.shape else float("inf")
            scale = float(reference.abs().max())
            allowed = float(opts["tolerance"]) * max(1.0, scale)
            checks.append({"resolution": r, "trained": r in trained, "bn": clf.policy.plan(config).source.value,
                           "max_abs_diff": diff, "max_abs_logit": scale, "allowed": allowed})
            if not diff <= allowed:
                raise VerifyError(f"verify: at {r}px max abs difference {diff:.3g} > allowed {allowed:.3g} (tolerance "
                                  f"{opts['tolerance']:g} x max(1, largest |logit| {scale:.3g})) between {out.name} "
                                  f"({runner_label}) and the switchable network; no file written")
        # size: against today's single-configuration export of the largest configuration (unfolded)
        clf.switch(top)
        one_bytes, single_bytes, single_stripped, weights, single_weights, ratio = check_size(
            clf.materialize().cpu().eval(), example, tmp, size_bound, f"{top}px")
    return {"configs": "all", "out": str(out), "format": "onnx", "model": spec["name"], "method": clf.method_name,
            "train_resolutions": trained, "unseen": unseen, "bn_mode": clf.policy.mode.name, "checks": checks,
            "checked_with": runner_label, "tolerance": float(opts["tolerance"]), "bytes": one_bytes,
            "single_bytes": single_bytes, "single_bytes_stripped": single_stripped, "size_ratio": ratio,
            "size_bound": size_bound, "weight_bytes": weights, "single_weight_bytes": single_weights,
            "blended_bn": sum(isinstance(m, BlendedBatchNorm2d) for m in module.modules()),
            "generated_convs": generated}


def report_all(result: dict[str, Any]) -> str:
    """The printed lines of a ``configs=all`` export."""
    worst = max(result["checks"], key=lambda c: c["max_abs_diff"] / c["allowed"])
    if "widths" in result:
        return _report_widths(result, worst)
    lines = [
        f"export: {result['method']} {result['model']}, every resolution in one file (trained "
        f"{result['train_resolutions']}, unseen resolutions: BN {result['bn_mode']}; "
        f"{result['blended_bn']} BN layers blended, {result['generated_convs']} kernels generated in the graph)",
        f"wrote {result['out']} (onnx, {result['bytes'] / 2**10:.1f} KiB)",
    ]
    for c in result["checks"]:
        kind = "trained" if c["trained"] else "unseen"
        lines.append(f"verify {c['resolution']}px ({kind}, BN {c['bn']}): max abs difference {c['max_abs_diff']:.3g} "
                     f"(allowed {c['allowed']:.3g})")
    lines.append(f"verify: {len(result['checks'])} resolutions checked with {result['checked_with']} (worst "
                 f"{worst['resolution']}px, tolerance {result['tolerance']:g} x max(1, largest |logit|)): OK")
    lines.append(
        f"size: one file {result['bytes'] / 2**10:.1f} KiB; single-configuration export of "
        f"{result['train_resolutions'][0]}px {result['single_bytes'] / 2**10:.1f} KiB as written, "
        f"{result['single_bytes_stripped'] / 2**10:.1f} KiB without debug metadata: {result['size_ratio']:.3f}x "
        f"(bound {result['size_bound']:g}); weights {result['weight_bytes'] / 2**10:.1f} KiB vs "
        f"{result['single_weight_bytes'] / 2**10:.1f} KiB ({result['weight_bytes'] / result['single_weight_bytes']:.3f}x)")
    return "\n".join(lines)


def _report_widths(result: dict[str, Any], worst: dict[str, Any]) -> str:
    """The printed lines of a slimmable ``configs=all`` export (:mod:`.one_file_widths`)."""
    lines = [
        f"export: {result['method']} {result['model']}, every stored width and resolution in one file (widths "
        f"{result['widths']} as input width_index, resolutions {result['train_resolutions']} from the input's "
        f"height; {result['branches']} branches by channel counts, {result['stored_bn']} BN layers on stored "
        "statistics)",
        f"wrote {result['out']} (onnx, {result['bytes'] / 2**10:.1f} KiB)",
    ]
    for c in result["checks"]:
        lines.append(f"verify width {c['width']:g} {c['resolution']}px (BN stored): max abs difference "
                     f"{c['max_abs_diff']:.3g} (allowed {c['allowed']:.3g})")
    lines.append(f"verify: {len(result['checks'])} configurations checked with {result['checked_with']} (worst "
                 f"width {worst['width']:g} {worst['resolution']}px, tolerance {result['tolerance']:g} x max(1, "
                 "largest |logit|)): OK")
    lines.append(
        f"size: one file {result['bytes'] / 2**10:.1f} KiB; single-configuration export of width "
        f"{result['widths'][0]:g} {result['train_resolutions'][0]}px {result['single_bytes'] / 2**10:.1f} KiB as "
        f"written, {result['single_bytes_stripped'] / 2**10:.1f} KiB without debug metadata: "
        f"{result['size_ratio']:.3f}x (bound {result['size_bound']:g}); weights {result['weight_bytes'] / 2**10:.1f} "
        f"KiB vs {result['single_weight_bytes'] / 2**10:.1f} KiB "
        f"({result['weight_bytes'] / result['single_weight_bytes']:.3f}x)")
    return "\n".join(lines)
