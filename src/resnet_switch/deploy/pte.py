"""ONE ExecuTorch program for every resolution (``export ... format=pte configs=all``).

The module is the ONNX one file's (:func:`.one_file.build_one_file_module`: the plain network of the
largest configuration, private BN layers as blended tables chosen from the input's height, SAN's
kernels generated in the graph) without its per-resolution branches, exported with
``torch.export.export`` with dynamic batch, height and width, lowered to XNNPACK
(``executorch.exir.to_edge_transform_and_lower(..., partitioner=[XnnpackPartitioner()])``: the convs,
ReLUs, pooling and FC run in the delegate; the blend of the BN tables, a few ``mm`` of size K x C per
layer, and the ``BatchNorm`` on the blended parameters run as portable ExecuTorch kernels) and
serialised (``.to_executorch().buffer``) to ONE ``.pte``.

Per-resolution branches (a ``torch.cond`` on the height, one branch per training resolution on
constant BN, which ONNX Runtime folds into the convs), where the module has them, are dropped
(:func:`without_branches`): XNNPACK's partitioner delegates nothing inside a ``torch.cond`` branch
(one trial on the tests' tiny RS-Net: every conv then ran as a portable kernel, and lowering took
10 min instead of 2.5), so every height runs the blended network, which gives a training resolution
exactly its own BN set too.

ExecuTorch plans the memory of every intermediate tensor ahead of time, for the LARGEST input the
program accepts, so the dynamic axes get finite bounds here: ``max_batch`` (default
:data:`MAX_BATCH`) and ``max_side`` (default twice the highest training resolution), both checked and
printed with the planned memory; larger inputs are refused by the runtime.

The file is written to a temporary name, loaded back with ``executorch.runtime`` and run at every
training resolution and the unseen ones of the ONNX export (:func:`.one_file.default_unseen` or
``unseen=``) next to the switchable network (``clf(x)`` after ``clf.switch(r)``), within ``tolerance``
x max(1, largest |logit|); only then it is renamed to ``out`` (:class:`.onnx_file.VerifyError`
otherwise: exit 1, no file). The checkpoint's metadata (resolutions, mean/std, crop ratio, BN blend:
the ONNX file's ``metadata_props`` JSON) is the program's constant method ``resnet_switch``
(``program.load_method("resnet_switch").execute([])[0]``, a JSON string).

ExecuTorch is an optional extra (``pip install 'resnet_switch[executorch]'``: executorch 1.5, built
against torch 2.14); without it ``format=pte`` is a one-line error. Slimmable checkpoints (the width a
second input, :mod:`.one_file_widths`) are refused: export them with ``format=onnx``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..training.checkpointing import atomic_path
from .one_file import BlendedBatchNorm2d, GeneratedConv2d, build_one_file_module, check_all_options, default_unseen
from .onnx_file import MAX_SIDE, MIN_SIDE, VerifyError
from .runtime import SwitchableClassifier

MISSING = ("format: pte needs ExecuTorch: pip install 'resnet_switch[executorch]' "
           "(executorch 1.5, with torch 2.14), or use format=onnx")
MAX_BATCH = 16  # default largest batch the program accepts (its memory is planned for it)
METHOD = "forward"
METADATA_METHOD = "resnet_switch"  # constant method holding the metadata JSON


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ExecuTorch's import-time warnings (experimental API, torchao's pytree registrations) hidden."""
    logger = logging.getLogger("torch.utils._pytree")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def executorch_modules() -> tuple[Any, Any, Any]:
    """``(to_edge_transform_and_lower, XnnpackPartitioner, Runtime)``; a one-line :class:`ConfigError`
    (the extra to install) without ExecuTorch."""
    try:
        with _quiet():
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower
            from executorch.runtime import Runtime
    except ImportError:
        raise ConfigError(MISSING) from None
    return to_edge_transform_and_lower, XnnpackPartitioner, Runtime


@contextlib.contextmanager
def _native_stderr_captured() -> Iterator[None]:
    """The runtime's C++ log lines (cpuinfo probing on first load) kept off stderr; shown again when
    the block raises, so a failure keeps its context."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (captured by a test runner)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), fd)
        try:
            yield
        except BaseException:
            os.dup2(saved, fd)
            sink.seek(0)
            os.write(fd, sink.read())
            raise
        finally:
            os.dup2(saved, fd)
            os.close(saved)


def pte_runner(path: Path):
    """``(run, label)``: ``run(images) -> logits`` of the ``.pte`` at ``path`` in ``executorch.runtime``."""
    *_, runtime_cls = executorch_modules()
    with _native_stderr_captured(), _quiet():
        program = runtime_cls.get().load_program(Path(path))
        method = program.load_method(METHOD)

    def run(x: torch.Tensor) -> torch.Tensor:
        with _native_stderr_captured():
            return method.execute([x.contiguous()])[0]

    run.program = program  # kept alive with the method

    return run, "executorch.runtime (XNNPACK)"


def pte_metadata(path: Path) -> dict[str, Any]:
    """The metadata JSON stored in the ``.pte`` at ``path`` (its ``resnet_switch`` constant method)."""
    *_, runtime_cls = executorch_modules()
    with _native_stderr_captured(), _quiet():
        value = runtime_cls.get().load_program(Path(path)).load_method(METADATA_METHOD).execute([])[0]
    return json.loads(value)


# -------------------------------------------------------------------------------------- options
def check_pte_options(opts: dict[str, Any]) -> None:
    """One-line errors for ``format=pte`` (``configs=all`` only), before the checkpoint is read; the
    ExecuTorch import is checked here too."""
    if opts["configs"] is None:
        raise ConfigError("format: pte writes one program for every resolution; add configs=all (and drop "
                          "resolution=), or export one configuration with format=onnx|torchscript")
    check_all_options({**opts, "format": "onnx"})  # the options the ONNX one file shares
    for key in ("max_batch", "max_side"):
        value = opts[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{key}: must be a positive integer, got {value!r}")
    if opts["max_side"] is not None and not MIN_SIDE <= opts["max_side"] <= MAX_SIDE:
        raise ConfigError(f"max_side: must be in [{MIN_SIDE}, {MAX_SIDE}] px, got {opts['max_side']}")
    if opts["size_bound"] is not None:
        raise ConfigError("size_bound: the .pte has no size bound (its size is printed against the network's "
                          "tensors); drop size_bound=")
    executorch_modules()


# --------------------------------------------------------------------------------------- export
def without_branches(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` (just built, changed in place) running its blended network at every height: the
    per-resolution ``torch.cond`` branches of :class:`.one_file.ResolutionBlendNet` dropped."""
    if getattr(module, "fixed", None) is not None:
        module.fixed = None
    return module


def graph_ops(graph_module: torch.fx.GraphModule) -> dict[str, int]:
    """Calls per operator in ``graph_module`` and its control-flow subgraphs (``getitem`` and size
    reads left out); XNNPACK's subgraphs count as ``executorch_call_delegate``."""
    from executorch.exir.graph_module import get_control_flow_submodules

    counts: dict[str, int] = {}
    for node in graph_module.graph.nodes:
        if node.op == "call_function":
            name = getattr(node.target, "__name__", str(node.target))
            if name not in ("getitem", "sym_size.int"):
                counts[name] = counts.get(name, 0) + 1
    for _, sub, _ in get_control_flow_submodules(graph_module):
        for name, n in graph_ops(sub).items():
            counts[name] = counts.get(name, 0) + n
    return counts


def lower_to_pte(module: torch.nn.Module, example: torch.Tensor, max_batch: int, max_side: int,
                 metadata: dict[str, Any]) -> tuple[bytes, int, dict[str, int]]:
    """``module`` exported with dynamic batch ``[1, max_batch]`` (``max_batch = 1``: a fixed batch of
    one, as ``example``'s) and height/width ``[MIN_SIDE, max_side]``, lowered to XNNPACK; returns
    ``(the .pte bytes, planned memory in bytes for the largest input, graph_ops of the lowered
    program: the delegate calls and the operators left outside them)``."""
    lower, partitioner_cls, _ = executorch_modules()
    dims = {2: torch.export.Dim("height", min=MIN_SIDE, max=max_side),
            3: torch.export.Dim("width", min=MIN_SIDE, max=max_side)}
    if max_batch > 1:
        dims[0] = torch.export.Dim("batch", min=1, max=max_batch)
    with _quiet(), torch.no_grad():
        program = torch.export.export(module, (example,), dynamic_shapes=(dims,))
        edge = lower(program, partitioner=[partitioner_cls()],
                     constant_methods={METADATA_METHOD: json.dumps(metadata, sort_keys=True)})
        ops = graph_ops(edge.exported_program(METHOD).graph_module)
        manager = edge.to_executorch()
    plan = next(p for p in manager.executorch_program.execution_plan if p.name == METHOD)
    return bytes(manager.buffer), int(sum(plan.non_const_buffer_sizes)), ops


def tensor_bytes(module: torch.nn.Module) -> int:
    """Bytes of ``module``'s parameters and buffers, each storage counted once (what any file of it must
    hold): the size the ``.pte`` is reported against."""
    seen: dict[int, int] = {}
    for tensor in [*module.parameters(), *module.buffers()]:
        seen[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
    return sum(seen.values())


def _count(module: torch.nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in module.modules())


def export_pte(opts: dict[str, Any]) -> dict[str, Any]:
    """``format=pte configs=all``: write the ONE ``.pte``, check it in ``executorch.runtime`` at every
    training resolution and the unseen ones; returns the result dict (see :func:`report_pte`).
    :class:`VerifyError` (nothing left at ``out``) when a check fails."""
    check_pte_options(opts)
    ckpt = Path(str(opts["ckpt"]))
    clf = SwitchableClassifier.from_checkpoint(ckpt, device="cpu", bn_mode=opts["bn_mode"])
    if clf.slimmable:
        raise ConfigError(f"format: pte does not take slimmable checkpoints yet ({clf.method_name}: the width is a "
                          "second input); use format=onnx configs=all")
    start = time.perf_counter()
    module = without_branches(build_one_file_module(clf))
    spec, state = clf.net.spec, clf.net.state
    trained = list(state.train_resolutions)
    top = trained[0]
    max_side = int(opts["max_side"] or min(MAX_SIDE, 2 * top))
    max_batch = int(opts["max_batch"] or MAX_BATCH)
    unseen = [r for r in (opts["unseen"] or default_unseen(trained)) if r not in trained]
    too_big = [r for r in trained + unseen if r > max_side]
    if too_big:
        raise ConfigError(f"max_side: {max_side} px is below the checked resolution(s) {too_big}; "
                          f"use max_side>={max(too_big)}")
    out = Path(str(opts["out"])) if opts["out"] else ckpt.with_name(f"{ckpt.stem}_{spec['name']}_all.pte")
    metadata = {
        "format_version": 1, "method": clf.method_name, "model": spec["name"], "num_classes": clf.num_classes,
        "in_channels": clf.in_channels, "train_resolutions": trained, "bn_mode": clf.policy.mode.name,
        "selects": "input height", "min_side": MIN_SIDE, "max_side": max_side, "max_batch": max_batch,
        "mean": None if clf.mean is None else clf.mean.flatten().tolist(),
        "std": None if clf.std is None else clf.std.flatten().tolist(),
        "crop_ratio": clf.crop_ratio, "resize": "bilinear, antialias, align_corners=False (float)",
    }
    gen = torch.Generator().manual_seed(int(opts["seed"]))
    # traced at another batch size than the check's (the batch is dynamic) where the bound allows
    batch = min(int(opts["verify_batch"]), max_batch)
    example = torch.randn(min(batch + 1, max_batch), clf.in_channels, top, top, generator=gen)
    checks = []
    with atomic_path(out) as tmp, torch.no_grad():
        buffer, planned, ops = lower_to_pte(module, example, max_batch, max_side, metadata)
        tmp.write_bytes(buffer)
        seconds = time.perf_counter() - start
        runner, runner_label = pte_runner(tmp)
        for r in trained + unseen:
            x = torch.randn(batch, clf.in_channels, r, r, generator=gen)
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
        del runner
    return {"configs": "all", "out": str(out), "format": "pte", "model": spec["name"], "method": clf.method_name,
            "train_resolutions": trained, "unseen": unseen, "bn_mode": clf.policy.mode.name, "checks": checks,
            "checked_with": runner_label, "tolerance": float(opts["tolerance"]), "bytes": len(buffer),
            "weight_bytes": tensor_bytes(module), "planned_bytes": planned, "max_batch": max_batch,
            "max_side": max_side,
            "blended_bn": _count(module, BlendedBatchNorm2d), "generated_convs": _count(module, GeneratedConv2d),
            "export_seconds": seconds, "delegate_calls": ops.pop("executorch_call_delegate", 0),
            "portable_ops": ops}


def report_pte(result: dict[str, Any]) -> str:
    """The printed lines of a ``format=pte configs=all`` export."""
    worst = max(result["checks"], key=lambda c: c["max_abs_diff"] / c["allowed"])
    lines = [
        f"export: {result['method']} {result['model']}, every resolution in one ExecuTorch program (trained "
        f"{result['train_resolutions']}, unseen resolutions: BN {result['bn_mode']}; {result['blended_bn']} BN "
        f"layers blended, {result['generated_convs']} kernels generated in the graph; XNNPACK; inputs: batch "
        f"up to {result['max_batch']}, sides {MIN_SIDE}-{result['max_side']} px, planned memory "
        f"{result['planned_bytes'] / 2**20:.1f} MiB for the largest)",
        f"lowered: {result['delegate_calls']} XNNPACK subgraphs; outside them (portable kernels): "
        + (", ".join(f"{n} x {name}" for name, n in sorted(result["portable_ops"].items())) or "nothing"),
        f"wrote {result['out']} (pte, {result['bytes'] / 2**10:.1f} KiB; exported and lowered in "
        f"{result['export_seconds']:.1f} s)",
    ]
    for c in result["checks"]:
        kind = "trained" if c["trained"] else "unseen"
        lines.append(f"verify {c['resolution']}px ({kind}, BN {c['bn']}): max abs difference {c['max_abs_diff']:.3g} "
                     f"(allowed {c['allowed']:.3g})")
    lines.append(f"verify: {len(result['checks'])} resolutions checked with {result['checked_with']} (worst "
                 f"{worst['resolution']}px, tolerance {result['tolerance']:g} x max(1, largest |logit|)): OK")
    lines.append(f"size: {result['bytes'] / 2**10:.1f} KiB, the network's tensors (each stored once) "
                 f"{result['weight_bytes'] / 2**10:.1f} KiB ({result['bytes'] / result['weight_bytes']:.3f}x); "
                 "the ONNX one file of the same checkpoint: docs/deployment.md, ExecuTorch")
    return "\n".join(lines)
