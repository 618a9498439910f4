"""Benchmarks of one training step: ``python -m resnet_switch.bench TASK [key=value ...]``.

The LAST line of stdout is one JSON object; human lines come before it. Tasks (``TASKS``):

- ``train_step``: median milliseconds per optimisation step of ``method`` (``Method.training_step``
  on a fresh :class:`MultiResBatch` each step, so the device resize is timed, then SGD step and
  ``zero_grad``), against a plain baseline doing the same work: S forwards (one per resolution of the
  same batch), ONE backward of the summed CE, one SGD step. Every contender runs in its own fresh
  process, ``rounds`` times with a rotating order, ``warmup`` untimed steps then ``steps`` timed ones.
  ``ours`` (and ``compare``) run with the framework's process settings, as ``resnet_switch.train``
  does (glibc allocator thresholds, :mod:`resnet_switch.training.allocator`); ``baseline`` is torchvision in an
  untouched process, as a plain PyTorch script runs; ``baseline_tuned`` is the same torchvision step
  with the framework's settings, so ``ratio_tuned`` isolates the model code from the process setup.
- ``memory``: peak memory of one such step over the state before it (net, data, gradients, optimizer
  state), i.e. its activations and temporaries. CPU: each contender runs in a fresh subprocess; one
  unmeasured step of the same setting, then the peak RSS is reset (``/proc/self/clear_refs``) and the
  next step's peak RSS increase is read (fallback: ``ru_maxrss`` before/after the first step).
  CUDA: ``torch.cuda.max_memory_allocated`` over ``memory_allocated`` before the step.
- ``infer``: latency per resolution of the materialised plain model vs torchvision with the same
  weights (resnet18/50, mobilenetv2; MAdds ratio beside latency ratio), and switch latency of a
  loaded switchable model (rsnet, mutualnet, san). Options and keys: :mod:`resnet_switch.bench.infer`.
- ``data``: CPU ms per multi-resolution training sample from a JPEG: ours (one crop in the worker,
  draft decoding, device-side resizes counted), the official protocol (PIL resize per resolution),
  single-resolution RandomResizedCrop. Options and keys: :mod:`resnet_switch.bench.data`.
- ``loader``: training-loader throughput (img/s) from generated JPEGs with N workers, ``data.decode``
  worker vs device (the GPU decodes). Options and keys: :mod:`resnet_switch.bench.loader`.
- ``adaptive``: ms per image of the cascade (``predict_adaptive``, thresholds fitted by ``evaluate
  adaptive=true``) against the static configuration of equal accuracy, per batch size. Options and
  keys: :mod:`resnet_switch.bench.adaptive`.
- ``onnx``: the one ONNX file (``export ... configs=all``) against the per-configuration folded
  exports in ONNX Runtime: latency per resolution and batch (ratio), switching cost, file sizes,
  resident memory. Options and keys: :mod:`resnet_switch.bench.onnx`.

``train_step`` and ``memory`` run every contender with the same ``precision`` (32 | bf16-mixed |
16-mixed: autocast, fp16 with a gradient scaler) and ``memory_format`` (contiguous | channels_last).

``infer``, ``data``, ``loader`` and ``adaptive`` take their own options (``DEFAULTS`` of their modules). ``train_step`` and
``memory`` spell the settings they share with ``train`` as ``train`` does: ``quant=lq quant.weight_bits=2
quant.act_bits=2``, and ``method.<argument>=value`` for an argument of ``method`` (e.g. MutualNet's
``method.width_range=[0.7,1.0]``); ``compare_method`` is built with its defaults.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import torch

from ..cli.options import QUANT_RENAMED, check_choice, parse_options
from ..errors import ConfigError
from . import adaptive as bench_adaptive
from . import data as bench_data
from . import infer as bench_infer
from . import loader as bench_loader
from . import onnx as bench_onnx
from .step import DEFAULTS, check_options, memory_task, train_step_task

TASKS: dict[str, Callable[[dict, dict], dict]] = {
    "train_step": train_step_task,
    "memory": memory_task,
    "infer": bench_infer.infer_task,
    "data": bench_data.data_task,
    "loader": bench_loader.loader_task,
    "adaptive": bench_adaptive.adaptive_task,
    "onnx": bench_onnx.onnx_task,
}
OWN_OPTIONS = {"infer": bench_infer, "data": bench_data, "loader": bench_loader, "adaptive": bench_adaptive,
               "onnx": bench_onnx}  # tasks with their own DEFAULTS / check_options


def main(argv: list[str]) -> None:
    if not argv or "=" in argv[0]:
        raise ConfigError(f"task: missing; usage: python -m resnet_switch.bench TASK [key=value ...], "
                         f"TASK one of {sorted(TASKS)}")
    task = check_choice("task", argv[0], list(TASKS))
    if task in OWN_OPTIONS:
        return run_own_options_task(task, argv[1:])
    opts, extra = parse_options(DEFAULTS, argv[1:], allow_extra=True, renamed=QUANT_RENAMED)
    try:
        method_kwargs = check_options(opts, extra)
    except RuntimeError as err:  # torch.device("nonsense")
        raise ConfigError(f"device: {str(err).splitlines()[0]}; use device=cpu or device=cuda") from None
    torch.set_num_threads(opts["threads"])  # contenders run in child processes with their own settings
    result = {"task": task, "method": opts["method"], "model": opts["model"], "batch_size": opts["batch_size"],
              "resolutions": opts["resolutions"], "threads": opts["threads"], "device": opts["device"],
              "precision": opts["precision"], "memory_format": opts["memory_format"]}
    if method_kwargs:
        result["method_kwargs"] = method_kwargs
    if opts["compare_method"]:
        result["compare_method"] = opts["compare_method"]
    result.update(TASKS[task](opts, method_kwargs))
    print(json.dumps(result), flush=True)


def run_own_options_task(task: str, argv: list[str]) -> None:
    """``infer`` / ``data`` / ``loader``: options from the task module; JSON header = task + those options."""
    module = OWN_OPTIONS[task]
    opts, _ = parse_options(module.DEFAULTS, argv)
    module.check_options(opts)
    torch.set_num_threads(opts["threads"])
    result = {"task": task, **opts}
    result.update(TASKS[task](opts, {}))
    print(json.dumps(result), flush=True)

