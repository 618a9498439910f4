"""Export one configuration of a trained switchable network as a plain model, verified.

Command line (:mod:`resnet_switch.export`)::

    python -m resnet_switch.export ckpt=PATH resolution=R [width=W] format=torchscript|onnx|state_dict \
        [fold_bn=true] [out=PATH] [bn_mode=...] [verify_batch=2] [tolerance=1e-4]
    python -m resnet_switch.export ckpt=PATH format=onnx configs=all [out=FILE] [unseen=[R1,R2]] [size_bound=1.10]
    python -m resnet_switch.export ckpt=PATH format=pte configs=all [out=FILE] [unseen=[R1,R2]] \
        [max_batch=16] [max_side=2xR_max]

``configs=all`` writes ONE ONNX file for every resolution (the input's height selects the BN blend in
the graph; weights stored once), checked at every training resolution and two unseen ones and against
the single-configuration file's size: :mod:`.one_file`. ``format=pte configs=all``: the same module as
ONE ExecuTorch program (XNNPACK), checked in ``executorch.runtime``: :mod:`.pte` (optional extra
``resnet_switch[executorch]``).

Steps: rebuild the switchable network from the checkpoint (:mod:`resnet_switch.deploy.runtime`), switch to
``(resolution, width)``, materialise it as a plain ``nn.Module`` (BN chosen / interpolated /
recalibrated, SAN kernels generated, widths sliced), optionally fold every BatchNorm into the conv
before it (``torch.nn.utils.fusion.fuse_conv_bn_eval``), write the file (atomically), then load the
FILE back and compare its logits with the switchable network's on ``verify_batch`` random
``(C, R, R)`` inputs: the max abs difference is printed and must be ``<= tolerance x max(1, |logits|max)``
(absolute for logits up to 1 in magnitude; float32 rounding grows with the magnitude beyond, e.g.
untrained networks with logits in the hundreds).

Formats: ``torchscript`` (``torch.jit.trace``; TorchScript is deprecated in recent torch but still
loads with ``torch.jit.load``), ``onnx`` (``torch.onnx.export(dynamo=True)``, batch dimension
dynamic; needs ``pip install -e '.[export]'``: onnx + onnxscript, and onnxruntime for the check),
``state_dict`` (``torch.save(plain.state_dict())``; for resnet18/50 and mobilenetv2 at width 1.0
with the ImageNet stem and no folding it loads into ``torchvision.models.<name>(num_classes=...)``
strictly, and the check runs on that torchvision model; a converted model (``model=torchvision|timm``,
unfolded) loads strictly into its source architecture, ``get_model(arch)`` / ``timm.create_model(arch)``).

Quantized (``quant=lq``) checkpoints: ``torchscript``/``onnx`` export the fake-quantized float
network (weights replaced by their quantized values, activation quantizers as ``where`` ops);
``state_dict`` writes the integer codes and bases (:mod:`.quantized_state`), checked by rebuilding
the plain model from the file alone (``fold_bn`` is refused there: the codes hold unfolded weights).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..cli.options import check_choice
from ..errors import ConfigError
from ..models import torchvision_name as backbone_torchvision_name
from ..models.surgery import is_converted, source_model
from ..switch import BN_MODES
from ..training.checkpointing import atomic_path
from .onnx_file import VerifyError, export_onnx, onnx_runner
from .quantized_state import PACKED_FORMAT, is_quantized, load_quantized_state, pack_quantized_state
from .runtime import SwitchableClassifier

DEFAULTS: dict[str, Any] = {
    "ckpt": None,  # required: a checkpoint written by resnet_switch.train
    "resolution": None,  # required: input size in pixels
    "width": 1.0,  # width multiplier (slimmable checkpoints)
    "format": "torchscript",  # torchscript | onnx | state_dict | pte (ExecuTorch, configs=all only)
    "fold_bn": False,  # fold BatchNorm into the preceding conv
    "out": None,  # output file; default: beside the checkpoint, <stem>_<model>_r<R>_w<W>[_folded].<ext>
    "bn_mode": None,  # unseen resolutions: nearest | interpolate | proxy | calibrate | ideal (method default)
    "verify_batch": 2,  # random inputs used for the check
    "tolerance": 1e-4,  # max abs logit difference allowed (times the largest |logit| when above 1)
    "seed": 0,  # of the random check inputs
    "configs": None,  # all: ONE file for every resolution (format=onnx: .one_file; format=pte: .pte; no resolution=)
    "size_bound": None,  # configs=all: largest size of the one file / the single-configuration file (1.10; SAN 2.2)
    "unseen": None,  # configs=all: resolutions checked besides the training ones (default: two chosen, see .one_file)
    "max_batch": None,  # format=pte: largest batch the program accepts (16; memory is planned for it, see .pte)
    "max_side": None,  # format=pte: largest input side in px the program accepts (2 x the highest training one)
}
FORMATS = {"torchscript": ".pt", "onnx": ".onnx", "state_dict": ".pth", "pte": ".pte"}
EXIT_VERIFY_FAILED = 1


# ---------------------------------------------------------------------------------- BN folding
def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, int]:
    """A copy of ``model`` (eval) with every ``BatchNorm2d`` whose input is the output of a
    ``Conv2d`` used by nothing else folded into that conv (``fuse_conv_bn_eval``: the conv gets
    ``W * gamma / sqrt(var + eps)`` and a bias); the BN becomes ``nn.Identity``. Which BN follows
    which conv is read from the data flow (``torch.fx`` trace), not from names. Returns
    ``(folded model, number of folded pairs)``."""
    model = copy.deepcopy(model).eval()
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as err:  # noqa: BLE001 - any tracing failure means: cannot fold this model
        raise ConfigError(f"fold_bn: cannot trace this model to find conv+BN pairs ({type(err).__name__}); "
                          "use fold_bn=false") from None
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or type(modules[node.target]) is not nn.BatchNorm2d:
            continue
        source = node.args[0]
        if (isinstance(source, torch.fx.Node) and source.op == "call_module"
                and type(modules[source.target]) is nn.Conv2d and len(source.users) == 1
                and calls[source.target] == 1 and calls[node.target] == 1):
            pairs.append((source.target, node.target))
    for conv_name, bn_name in pairs:
        _set_submodule(model, conv_name, fuse_conv_bn_eval(modules[conv_name], modules[bn_name]))
        _set_submodule(model, bn_name, nn.Identity())
    return model, len(pairs)


# ------------------------------------------------------------------------------------- writers
def write_artifact(plain: nn.Module, fmt: str, out: Path, example: torch.Tensor,
                   state: dict[str, Any] | None = None) -> None:
    """Write ``plain`` (eval, CPU) to ``out`` in ``fmt``, atomically; ``example`` ``(B, C, R, R)`` is
    the tracing input (ONNX: its batch dimension is exported as dynamic). ``state``: what the
    ``state_dict`` format saves instead of ``plain.state_dict()`` (quantized codes and bases)."""
    with atomic_path(out) as tmp:
        if fmt == "state_dict":
            torch.save(plain.state_dict() if state is None else state, tmp)
        elif fmt == "torchscript":
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+` is deprecated.*")
                traced = torch.jit.trace(plain, example)
                torch.jit.save(traced, str(tmp))
        else:
            export_onnx(plain, example, tmp)


def torchvision_name(spec: dict[str, Any], width: float, folded: bool) -> str | None:
    """``torchvision.models`` constructor whose state dict the export matches exactly, or ``None``
    (other backbones, sliced widths, folded BN, CIFAR stem, build-time width multiplier, VGG
    hidden FC size other than 4096)."""
    name = backbone_torchvision_name(spec["name"])
    if (name is None or width != 1.0 or folded or spec.get("small_input") or spec.get("in_channels", 3) != 3
            or float(spec.get("width_mult", 1.0)) != 1.0 or int(spec.get("hidden", 4096)) != 4096):
        return None
    return name


def load_artifact(fmt: str, out: Path, plain: nn.Module, tv_name: str | None, num_classes: int,
                  source: nn.Module | None = None):
    """The written file loaded back as a callable ``x -> logits`` and a label of what runs it.
    ``source``: a fresh source network (converted torchvision/timm models) the state dict must load into."""
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.load(str(out), map_location="cpu").eval()
        return module, "torch.jit.load"
    if fmt == "state_dict":
        state = torch.load(out, map_location="cpu", weights_only=True)
        if state.get("format") == PACKED_FORMAT:
            return load_quantized_state(state), "codes and bases, plain model rebuilt from the file, strict load"
        if tv_name is not None:
            model = getattr(torchvision.models, tv_name)(num_classes=num_classes)
            label = f"torchvision.models.{tv_name}(num_classes={num_classes}), strict load"
        elif source is not None:
            model = source
            label = f"the source architecture {type(source).__name__}, strict load"
        else:  # same structure, every tensor overwritten from the file (strict)
            model = copy.deepcopy(plain)
            label = "the plain architecture, strict load"
        model.load_state_dict(state, strict=True)
        return model.eval(), label
    return onnx_runner(out)


# --------------------------------------------------------------------------------------- export
def default_out(ckpt: Path, model: str, resolution: int, width: float, fmt: str, folded: bool) -> Path:
    suffix = "_folded" if folded else ""
    return ckpt.with_name(f"{ckpt.stem}_{model}_r{resolution}_w{width:g}{suffix}{FORMATS[fmt]}")


def check_options(opts: dict[str, Any]) -> None:
    """One-line errors for bad options, before the checkpoint is read."""
    if opts["configs"] is not None:
        return _check_all_options(opts)
    if opts["ckpt"] is None:
        raise ConfigError("ckpt: required; pass the .ckpt written by resnet_switch.train, e.g. ckpt=outputs/.../last.ckpt")
    if not Path(str(opts["ckpt"])).is_file():
        raise ConfigError(f"ckpt: no file at {opts['ckpt']}; pass the .ckpt written by resnet_switch.train")
    if opts["format"] == "pte":
        from .pte import check_pte_options

        check_pte_options(opts)  # refuses: a .pte holds every resolution (configs=all)
    r = opts["resolution"]
    if r is None:
        raise ConfigError("resolution: required; give the input size in pixels, e.g. resolution=224")
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise ConfigError(f"resolution: must be a positive integer (pixels), got {r!r}")
    if not 0.0 < opts["width"] <= 1.0:
        raise ConfigError(f"width: must be in (0, 1], got {opts['width']!r}")
    _check_shared_options(opts)
    if opts["out"] is not None and Path(str(opts["out"])).is_dir():
        raise ConfigError(f"out: {opts['out']} is a directory; give a file path, e.g. out=model{FORMATS[opts['format']]}")


def _check_shared_options(opts: dict[str, Any]) -> None:
    """The options both exports read: format, bn_mode, the check's batch and tolerance."""
    check_choice("format", opts["format"], list(FORMATS))
    if opts["format"] != "pte":
        for key in ("max_batch", "max_side"):
            if opts[key] is not None:
                raise ConfigError(f"{key}: bounds the inputs of an ExecuTorch program (format=pte configs=all); "
                                  f"drop {key}= for format={opts['format']}")
    if opts["bn_mode"] is not None:
        check_choice("bn_mode", opts["bn_mode"], list(BN_MODES))
    if opts["verify_batch"] < 1:
        raise ConfigError(f"verify_batch: must be >= 1, got {opts['verify_batch']}")
    if not opts["tolerance"] > 0:
        raise ConfigError(f"tolerance: must be positive, got {opts['tolerance']!r}")


def _check_all_options(opts: dict[str, Any]) -> None:
    from .one_file import check_all_options

    if opts["ckpt"] is None:
        raise ConfigError("ckpt: required; pass the .ckpt written by resnet_switch.train, e.g. ckpt=outputs/.../last.ckpt")
    if not Path(str(opts["ckpt"])).is_file():
        raise ConfigError(f"ckpt: no file at {opts['ckpt']}; pass the .ckpt written by resnet_switch.train")
    _check_shared_options(opts)
    if opts["out"] is not None and Path(str(opts["out"])).is_dir():
        raise ConfigError(f"out: {opts['out']} is a directory; give a file path, "
                          f"e.g. out=model{FORMATS[opts['format']]}")
    if opts["format"] == "pte":
        from .pte import check_pte_options

        return check_pte_options(opts)
    check_all_options(opts)


def export(opts: dict[str, Any]) -> dict[str, Any]:
    """Write and verify one configuration; returns ``{out, format, max_abs_diff, ...}``.

    Raises ``ConfigError`` for bad options and :class:`VerifyError` when the check fails (the file
    is then removed). ``configs=all``: :func:`.one_file.export_all` (one ONNX file, every resolution);
    with ``format=pte``: :func:`.pte.export_pte` (one ExecuTorch program)."""
    check_options(opts)
    if opts["configs"] is not None and opts["format"] == "pte":
        from .pte import export_pte

        return export_pte(opts)
    if opts["configs"] is not None:
        from .one_file import export_all

        return export_all(opts)
    ckpt = Path(str(opts["ckpt"]))
    clf = SwitchableClassifier.from_checkpoint(ckpt, device="cpu", bn_mode=opts["bn_mode"])
    config = clf.switch(opts["resolution"], opts["width"])
    spec = clf.net.spec
    plain = clf.materialize().cpu().eval()
    fmt = opts["format"]
    packed = None
    if fmt == "state_dict" and is_quantized(clf.net):
        if opts["fold_bn"]:
            raise ConfigError("fold_bn: a quantized state_dict holds codes of the unfolded weights; "
                              "use fold_bn=false (or format=torchscript|onnx)")
        packed = pack_quantized_state(clf.net, plain, config)
    folded = 0
    if opts["fold_bn"]:
        plain, folded = fold_batchnorm(plain)
    out = Path(str(opts["out"])) if opts["out"] else default_out(ckpt, spec["name"], config.resolution,
                                                                   config.width, fmt, bool(opts["fold_bn"]))
    gen = torch.Generator().manual_seed(int(opts["seed"]))
    shape = (clf.in_channels, config.resolution, config.resolution)
    x = torch.randn(opts["verify_batch"], *shape, generator=gen)
    example = torch.randn(opts["verify_batch"] + 1, *shape, generator=gen)  # another batch size: ONNX's is dynamic
    with torch.no_grad():
        write_artifact(plain, fmt, out, example, packed)
        tv_name = (torchvision_name(spec, config.width, bool(opts["fold_bn"]))
                   if fmt == "state_dict" and packed is None else None)
        source = (source_model(spec) if fmt == "state_dict" and packed is None and not opts["fold_bn"]
                  and is_converted(spec["name"]) else None)
        runner, runner_label = load_artifact(fmt, out, plain, tv_name, clf.num_classes, source)
        reference = clf(x)  # the switchable network itself at this configuration
        got = runner(x)
    diff = float((got.float() - reference.float()).abs().max()) if got.shape == reference.shape else float("inf")
    scale = float(reference.float().abs().max())
    allowed = float(opts["tolerance"]) * max(1.0, scale)
    result = {"out": str(out), "format": fmt, "model": spec["name"], "method": clf.method_name,
              "resolution": config.resolution, "width": config.width, "bn": clf.state_bn_mode(config),
              "folded_pairs": folded, "checked_with": runner_label, "max_abs_diff": diff,
              "tolerance": float(opts["tolerance"]), "max_abs_logit": scale, "allowed": allowed,
              "bytes": out.stat().st_size}
    if not diff <= allowed:
        out.unlink(missing_ok=True)
        raise VerifyError(f"verify: max abs difference {diff:.3g} > allowed {allowed:.3g} (tolerance "
                          f"{opts['tolerance']:g} x max(1, largest |logit| {scale:.3g})) between "
                          f"{out.name} ({runner_label}) and the switchable network; file removed")
    return result


def report(result: dict[str, Any]) -> str:
    if result.get("configs") == "all" and result["format"] == "pte":
        from .pte import report_pte

        return report_pte(result)
    if result.get("configs") == "all":
        from .one_file import report_all

        return report_all(result)
    fold = f", BN folded into {result['folded_pairs']} convs" if result["folded_pairs"] else ""
    lines = [
        f"export: {result['method']} {result['model']} @ {result['resolution']}px, width {result['width']:g} "
        f"(BN {result['bn']}{fold})",
        f"wrote {result['out']} ({result['format']}, {result['bytes'] / 2**20:.1f} MiB)",
        f"verify: max abs difference {result['max_abs_diff']:.3g} (allowed {result['allowed']:.3g}: tolerance "
        f"{result['tolerance']:g} x max(1, largest |logit| {result['max_abs_logit']:.3g})) "
        f"checked with {result['checked_with']}: OK",
    ]
    return "\n".join(lines)
