"""Writing a module as an ONNX file and running one back (ONNX Runtime, else onnx's reference
evaluator): shared by the single-configuration export and the one-file export (:mod:`.one_file`)."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError


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
