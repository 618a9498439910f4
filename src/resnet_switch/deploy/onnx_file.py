"""Writing a module as an ONNX file and running one back (ONNX Runtime, else onnx's reference
evaluator): shared by the single-configuration export and the one-file export (:mod:`.one_file`)."""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

METADATA_KEY = "resnet_switch"  # metadata_props key holding the JSON read by resnet_switch.deploy.onnx
MIN_SIDE = 8  # smallest input side the exported graph accepts (dynamic H/W axes, min)
MAX_SIDE = 4096
SIZE_BOUND = 1.10  # default size bound: one file / single-configuration file (weights stored once)


class VerifyError(RuntimeError):
    """The written artifact does not reproduce the switchable network's outputs."""


def export_onnx(plain: nn.Module, example: torch.Tensor, path: Path) -> None:
    """``plain`` to ``path`` with ``torch.onnx.export(dynamo=True)``, the batch axis dynamic."""
    for package in ("onnx", "onnxscript"):
        try:
            __import__(package)
        except ImportError:
            raise ConfigError(f"format: onnx needs the {package} package; pip install -e '.[export]' "
                              "(onnx, onnxscript, onnxruntime) or use format=torchscript") from None
    batch = torch.export.Dim("batch", min=1, max=4096)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # the exporter's progress lines
        warnings.simplefilter("ignore")
        torch.onnx.export(plain, (example,), str(path), dynamo=True, external_data=False, verbose=False,
                          input_names=["images"], output_names=["logits"], dynamic_shapes=({0: batch},))


# -------------------------------------------------------------------------------------- loaders


def onnx_runner(out: Path):
    """``(run, label)``: ``run(images) -> logits`` on the file at ``out``, and what runs it."""
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    if ort is not None:
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return (lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])), "onnxruntime"
    try:  # slow pure-Python reference evaluator shipped with onnx
        from onnx.reference import ReferenceEvaluator
    except ImportError:
        raise ConfigError("format: checking an ONNX file needs onnxruntime (or onnx); "
                          "pip install -e '.[export]'") from None
    evaluator = ReferenceEvaluator(str(out))
    name = evaluator.input_names[0]
    return (lambda x: torch.from_numpy(evaluator.run(None, {name: x.numpy()})[0])), "onnx.reference (no onnxruntime)"


def strip_debug(model: Any) -> Any:
    """Drop what ONNX Runtime never reads (in place): the exporter's per-node provenance
    (``metadata_props``: stack traces, FX node names, scopes) and the intermediate ``value_info``
    shape annotations. Applied to the one file, and to the single-configuration file it is measured
    against, so the size check compares like with like."""
    _strip_graph(model.graph)
    return model


def _strip_graph(graph: Any) -> None:
    """``strip_debug`` of one graph and the sub-graphs of its nodes (the ``If`` branches of widths)."""
    for node in graph.node:
        del node.metadata_props[:]
        for attribute in node.attribute:
            if attribute.HasField("g"):
                _strip_graph(attribute.g)
            for sub in attribute.graphs:
                _strip_graph(sub)
    del graph.value_info[:]


def check_size(plain: nn.Module, example: torch.Tensor, one_file: Path, size_bound: float,
               label: str) -> tuple[int, int, int, int, int, float]:
    """The one file's size against today's single-configuration export of ``plain`` (the largest
    configuration, materialised, unfolded), debug annotations stripped from both: ``(one file bytes, single file bytes,
    single stripped, one file's weights, single file's weights, ratio)``; :class:`VerifyError` over
    ``size_bound`` (``label`` names that configuration)."""
    import onnx

    with tempfile.TemporaryDirectory() as folder:
        single_path = Path(folder) / "single.onnx"
        export_onnx(plain, example, single_path)
        single_bytes = single_path.stat().st_size
        single = strip_debug(onnx.load(str(single_path)))
    one_bytes = one_file.stat().st_size
    single_stripped = single.ByteSize()
    weights = sum(t.ByteSize() for t in onnx.load(str(one_file)).graph.initializer)
    single_weights = sum(t.ByteSize() for t in single.graph.initializer)
    ratio = one_bytes / single_stripped
    if not ratio <= size_bound:
        raise VerifyError(f"size: the one file ({one_bytes} bytes) is {ratio:.3f}x the single-configuration "
                          f"export of {label} ({single_stripped} bytes without debug metadata), over the bound "
                          f"{size_bound:g}; no file written")
    return one_bytes, single_bytes, single_stripped, weights, single_weights, ratio
