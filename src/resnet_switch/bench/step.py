"""``train_step`` and ``memory`` tasks of :mod:`resnet_switch.bench`: one optimisation step of a method
against plain torchvision doing the same work (see the package docstring for the protocol)."""

from __future__ import annotations

import gc
import inspect
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from ..cli.options import check_choice, renamed_option, spell_value, unknown_option
from ..data.multires import MultiResBatch
from ..errors import ConfigError
from ..layers.quant import QUANTIZERS, quant_spec_from_config
from ..methods import METHODS, build_method
from ..models import BACKBONES, create_model, torchvision_name
from ..switch import check_resolutions
from ..training.allocator import keep_freed_memory
from ..training.speed import MEMORY_FORMATS, use_channels_last

DEFAULTS: dict[str, Any] = {
    "method": "rsnet",
    "model": "resnet18",
    "batch_size": 8,
    "resolutions": [64, 56, 48, 40, 32],
    "num_classes": 1000,
    "threads": 1,
    "steps": 20,  # timed steps per contender (train_step)
    "warmup": 3,  # untimed steps per contender before timing (train_step)
    "rounds": 2,  # fresh processes per contender (train_step); each times ``steps`` steps
    "compare_method": None,
    "device": "auto",  # auto = cuda when available, else cpu
    "precision": "32",  # 32 | bf16-mixed | 16-mixed: autocast around every contender's forwards (16: + grad scaler)
    "memory_format": "contiguous",  # channels_last: every contender's weights and input images NHWC
    "baseline_tuned": True,  # train_step: also time the plain model with the framework's process settings
    "quant": "none",  # lq: ``method`` runs LQ-quantized, and a ``float`` contender (same method, float) is timed too
    "quant.weight_bits": 2,  # quant=lq: 1..4, 32 = float weights
    "quant.act_bits": 2,  # quant=lq: 1..4, 32 = float activations
}
METHOD_PREFIX = "method."  # ``method.<argument>=value``: an argument of ``method``, as train spells it
# trainer.precision names -> autocast dtype (None: no autocast)
PRECISIONS: dict[str, torch.dtype | None] = {"32": None, "32-true": None, "bf16-mixed": torch.bfloat16,
                                             "16-mixed": torch.float16}
SEED = 0  # data and initialisation (not an option: ``seed=`` goes to methods that take one)
LR, MOMENTUM = 0.01, 0.9


# ----------------------------------------------------------------------------- one training step
def autocast(opts: dict, device: torch.device) -> AbstractContextManager:
    """``opts["precision"]``'s autocast on ``device`` (a null context for 32)."""
    dtype = PRECISIONS[opts["precision"]]
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


class TrainStep:
    """A callable running one optimisation step of one contender (``run(backward)`` does the
    forwards and calls ``backward(loss)``).

    ``set_to_none``: ``zero_grad(set_to_none=...)`` after the step; the memory task sets it False so
    gradients stay allocated and a measured step adds only activations and temporaries.
    ``scaler``: a gradient scaler (``16-mixed``): losses are scaled, the step unscales and skips
    non-finite gradients, as Lightning's fp16 precision does. ``network``: the model it trains.
    """

    def __init__(self, label: str, run: Callable[[Callable[[torch.Tensor], None]], None], params: list[nn.Parameter],
                 scaler: torch.amp.GradScaler | None = None, network: nn.Module | None = None):
        self.label = label
        self.network = network
        self.run = run
        self.params = params
        self.optimizer = torch.optim.SGD(params, lr=LR, momentum=MOMENTUM)
        self.scaler = scaler
        self.set_to_none = True

    def backward(self, loss: torch.Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def __call__(self) -> None:
        self.run(self.backward)
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=self.set_to_none)

    @torch.no_grad()
    def allocate_state(self) -> None:
        """Create zero gradients and momentum buffers without running a step (parameters do not move)."""
        for p in self.params:
            p.grad = torch.zeros_like(p)
        self.optimizer.step()


def unique_params(*modules: nn.Module) -> list[nn.Parameter]:
    seen: dict[int, nn.Parameter] = {}
    for module in modules:
        for p in module.parameters():
            if p.requires_grad:
                seen.setdefault(id(p), p)
    return list(seen.values())


def make_data(opts: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images ``(B, 3, R, R)`` at the largest resolution and targets ``(B,)``."""
    gen = torch.Generator().manual_seed(SEED)
    size = max(opts["resolutions"])
    images = torch.randn(opts["batch_size"], 3, size, size, generator=gen)
    targets = torch.randint(0, opts["num_classes"], (opts["batch_size"],), generator=gen)
    return images.to(device), targets.to(device)


def quant_spec(opts: dict) -> dict | None:
    """The net spec's ``quant`` from the bench options (``None`` for ``quant=none``)."""
    return quant_spec_from_config({"name": opts["quant"], "weight_bits": opts["quant.weight_bits"],
                                   "act_bits": opts["quant.act_bits"]})


def grad_scaler(opts: dict, device: torch.device) -> torch.amp.GradScaler | None:
    return torch.amp.GradScaler(device.type) if opts["precision"] == "16-mixed" else None


def method_step(method_name: str, method_kwargs: dict, opts: dict, images, targets, device,
                quant: dict | None = None) -> TrainStep:
    """One step of ``method_name`` as ``SwitchModule`` runs it: the method's step under autocast,
    channels_last through :func:`~resnet_switch.training.speed.use_channels_last`; ``quant``: the
    net spec's quantization (LQ-Nets)."""
    torch.manual_seed(SEED)
    method = build_method(method_name, opts["resolutions"], **method_kwargs)
    net = create_model(opts["model"], method=method, num_classes=opts["num_classes"], quant=quant)
    method.to(device).train()
    net.to(device).train()
    if opts["memory_format"] == "channels_last":
        use_channels_last(net)

    def run(backward) -> None:
        with autocast(opts, device):
            method.training_step(net, MultiResBatch(images, targets), backward)

    return TrainStep(method_name, run, unique_params(net, method), grad_scaler(opts, device), net)


def baseline_model(opts: dict) -> nn.Module:
    """``torchvision.models.<name>`` when the backbone has one, else our backbone with plain layers."""
    name = opts["model"]
    if torchvision_name(name) is not None:
        return getattr(torchvision.models, torchvision_name(name))(num_classes=opts["num_classes"])
    return create_model(name, opts["resolutions"], layers="plain", num_classes=opts["num_classes"]).net


def baseline_step(opts: dict, images, targets, device) -> TrainStep:
    """S forwards of one plain model (same batch, resized the same way), one backward of the CE sum;
    the same autocast and memory format as ours."""
    torch.manual_seed(SEED)
    model = baseline_model(opts).to(device).train()
    resolutions = opts["resolutions"]
    layout = torch.channels_last if opts["memory_format"] == "channels_last" else torch.contiguous_format
    model.to(memory_format=layout)

    def run(backward) -> None:
        batch = MultiResBatch(images, targets)
        with autocast(opts, device):
            loss = sum(F.cross_entropy(model(batch.at(r).contiguous(memory_format=layout)), batch.targets)
                       for r in resolutions)
        backward(loss)

    return TrainStep("baseline", run, unique_params(model), grad_scaler(opts, device), model)


def build_step(role: str, opts: dict, method_kwargs: dict, images, targets, device) -> TrainStep:
    """``role``: ``ours`` (``method`` with the extra kwargs, quantized with ``quant=lq``), ``float``
    (the same, not quantized), ``compare`` (``compare_method``, defaults) or ``baseline``."""
    if role == "ours":
        return method_step(opts["method"], method_kwargs, opts, images, targets, device, quant_spec(opts))
    if role == "float":
        return method_step(opts["method"], method_kwargs, opts, images, targets, device)
    if role == "compare":
        return method_step(opts["compare_method"], {}, opts, images, targets, device)
    return baseline_step(opts, images, targets, device)


def roles(opts: dict) -> list[str]:
    return (["ours", "baseline"] + (["compare"] if opts["compare_method"] else [])
            + (["float"] if opts["quant"] != "none" else []))


# ----------------------------------------------------------------------------- child processes
def run_child(entry: str, job: dict, env_overrides: dict[str, str] | None = None) -> dict:
    """Run ``resnet_switch.bench.step.<entry>(json)`` in a fresh interpreter; return its last stdout line
    parsed as JSON. A fresh process per contender keeps one contender's allocator state, thread pools
    and caches from leaking into another's figure."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env.update(env_overrides or {})
    code = f"import sys; from resnet_switch.bench.step import {entry}; {entry}(sys.argv[1])"
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(job)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{entry} of {job['role']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- task: train_step
# Which process runtime each timed contender gets. ``framework``: what ``resnet_switch.train`` runs
# with (``allocator.keep_freed_memory``); ``vanilla``: a plain PyTorch script's process, untouched.
TIMED_CONTENDERS = {  # name -> (role, runtime)
    "ours": ("ours", "framework"),
    "compare": ("compare", "framework"),
    "baseline": ("baseline", "vanilla"),
    "baseline_tuned": ("baseline", "framework"),
    "float": ("float", "framework"),
}


def time_steps(step: TrainStep, count: int, warmup: int, device: torch.device) -> list[float]:
    """Milliseconds of ``count`` steps after ``warmup`` untimed ones. CUDA: events, one synchronize."""
    for _ in range(warmup):
        step()
    if device.type != "cuda":
        times = []
        for _ in range(count):
            t0 = time.perf_counter()
            step()
            times.append((time.perf_counter() - t0) * 1000.0)
        return times
    torch.cuda.synchronize(device)
    events = []
    for _ in range(count):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        events.append((start, end))
    torch.cuda.synchronize(device)
    return [s.elapsed_time(e) for s, e in events]


def time_child(payload: str) -> None:
    """Subprocess entry: build one contender in the requested runtime, print ``{"ms": [...]}``."""
    job = json.loads(payload)
    opts, device = job["opts"], torch.device(job["opts"]["device"])
    torch.set_num_threads(opts["threads"])
    if job["runtime"] == "framework":
        keep_freed_memory()
    images, targets = make_data(opts, device)
    step = build_step(job["role"], opts, job["method_kwargs"], images, targets, device)
    print(json.dumps({"ms": time_steps(step, opts["steps"], opts["warmup"], device)}), flush=True)


def timed_contenders(opts: dict) -> list[str]:
    skip = {"compare"} if not opts["compare_method"] else set()
    skip |= {"baseline_tuned"} if not opts["baseline_tuned"] else set()
    skip |= {"float"} if opts["quant"] == "none" else set()
    return [name for name in TIMED_CONTENDERS if name not in skip]


def train_step_task(opts: dict, method_kwargs: dict) -> dict:
    """Each contender runs ``rounds`` times in a fresh process (the order rotating per round, so a
    drift in machine load is shared); the figure is the median over all its timed steps."""
    names = timed_contenders(opts)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(opts["rounds"]):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            role, runtime = TIMED_CONTENDERS[name]
            job = {"role": role, "runtime": runtime, "opts": opts, "method_kwargs": method_kwargs}
            times[name] += run_child("time_child", job)["ms"]
    median = {name: statistics.median(ms) for name, ms in times.items()}
    quantized = f"{opts['method']}, LQ w{opts['quant.weight_bits']}a{opts['quant.act_bits']}"
    labels = {"ours": quantized if opts["quant"] != "none" else opts["method"], "compare": opts["compare_method"],
              "baseline": "plain model, plain process", "baseline_tuned": "plain model, framework allocator",
              "float": f"{opts['method']}, float"}
    for name, ms in times.items():
        print(f"{name:>14} ({labels[name]}): median {median[name]:.2f} ms/step over {len(ms)} steps "
              f"(min {min(ms):.2f}, max {max(ms):.2f})", flush=True)
    images_per_s = {name: opts["batch_size"] * 1000.0 / ms for name, ms in median.items()}
    out = {"ours_ms": round(median["ours"], 3), "baseline_ms": round(median["baseline"], 3),
           "ratio": round(median["ours"] / median["baseline"], 4),
           "ours_img_s": round(images_per_s["ours"], 1), "baseline_img_s": round(images_per_s["baseline"], 1)}
    if "baseline_tuned" in median:
        out.update(baseline_tuned_ms=round(median["baseline_tuned"], 3),
                   ratio_tuned=round(median["ours"] / median["baseline_tuned"], 4))
    if "compare" in median:
        out.update(compare_ms=round(median["compare"], 3), compare_ratio=round(median["ours"] / median["compare"], 4))
    if "float" in median:
        out.update(float_ms=round(median["float"], 3), quant_ratio=round(median["ours"] / median["float"], 4))
    return out


# ----------------------------------------------------------------------------- task: memory
def _proc_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Linux: reset the peak RSS (VmHWM) to the current RSS. False when not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _proc_status_kb("VmHWM") is not None


def _maxrss_kb() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss // 1024 if sys.platform == "darwin" else rss  # macOS reports bytes


def measure_step_mb(step: TrainStep, device: torch.device) -> float:
    """Peak memory (MiB) one call of ``step`` adds over the state before it (net, data, gradients,
    optimizer state): its activations and temporaries.

    When the peak can be reset (CUDA; Linux ``clear_refs``) a first step of the SAME setting runs
    unmeasured, so lazy library initialisation is not counted; otherwise gradients and momentum are
    allocated directly and ``ru_maxrss`` is read before and after the first step.
    """
    step.set_to_none = False
    if device.type == "cuda":
        step()
        torch.cuda.synchronize(device)
        gc.collect()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    if _reset_peak_rss():
        step()
        gc.collect()
        _reset_peak_rss()
        before = _proc_status_kb("VmRSS")
        step()
        return (_proc_status_kb("VmHWM") - before) / 1024
    step.allocate_state()
    gc.collect()
    before = _maxrss_kb()
    step()
    return (_maxrss_kb() - before) / 1024


def memory_child(payload: str) -> None:
    """Subprocess entry: build one contender, measure one step, print ``{"mb": ...}``."""
    job = json.loads(payload)
    opts, device = job["opts"], torch.device(job["opts"]["device"])
    torch.set_num_threads(opts["threads"])
    images, targets = make_data(opts, device)
    step = build_step(job["role"], opts, job["method_kwargs"], images, targets, device)
    print(json.dumps({"mb": measure_step_mb(step, device)}), flush=True)


def run_memory_child(role: str, opts: dict, method_kwargs: dict) -> float:
    # glibc: fixed mmap threshold, so freed large blocks go back to the OS and RSS tracks live memory
    env = {key: os.environ.get(key, str(64 * 1024)) for key in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}
    return run_child("memory_child", {"role": role, "opts": opts, "method_kwargs": method_kwargs}, env)["mb"]


def memory_task(opts: dict, method_kwargs: dict) -> dict:
    mb = {}
    for role in roles(opts):
        mb[role] = run_memory_child(role, opts, method_kwargs)
        label = {"ours": opts["method"], "compare": opts["compare_method"], "float": "float"}.get(role, "baseline")
        print(f"{role:>8} ({label}): peak step memory {mb[role]:.1f} MiB", flush=True)
    out = {"ours_mb": round(mb["ours"], 2), "baseline_mb": round(mb["baseline"], 2),
           "ratio": round(mb["ours"] / mb["baseline"], 4) if mb["baseline"] > 0 else None}
    if "compare" in mb:
        out.update(compare_mb=round(mb["compare"], 2),
                   compare_ratio=round(mb["ours"] / mb["compare"], 4) if mb["compare"] > 0 else None)
    if "float" in mb:
        out.update(float_mb=round(mb["float"], 2), quant_ratio=round(mb["ours"] / mb["float"], 4) if mb["float"] > 0 else None)
    return out


# ----------------------------------------------------------------------------- command line
def method_options(name: str) -> list[str] | None:
    """Keyword arguments method ``name`` accepts besides ``resolutions`` (``None``: any)."""
    params = list(inspect.signature(METHODS.get(name).__init__).parameters.values())[1:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.name != "resolutions"
            and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]


def method_arguments(opts: dict, extra: dict) -> dict:
    """The ``method.<argument>=value`` options as ``method``'s keyword arguments; a bare argument name
    (the retired spelling) is refused with train's spelling, any other key as unknown."""
    valid = method_options(opts["method"])
    kwargs = {}
    for key, value in extra.items():
        argument = key[len(METHOD_PREFIX):] if key.startswith(METHOD_PREFIX) else None
        if argument is None and (valid is None or key in valid):
            raise renamed_option(key, METHOD_PREFIX + key, spell_value(value))
        if argument is None or (valid is not None and argument not in valid):
            takes = ", ".join(METHOD_PREFIX + v for v in valid) or "nothing"
            raise ConfigError(f"{unknown_option(key, list(DEFAULTS))}; method={opts['method']} also takes: {takes}")
        kwargs[argument] = value
    return kwargs


def check_options(opts: dict, extra: dict) -> dict:
    """One-line errors for bad options; returns ``method``'s keyword arguments (from ``method.*`` keys)."""
    check_choice("method", opts["method"], METHODS.list())
    if opts["compare_method"] is not None:
        check_choice("compare_method", opts["compare_method"], METHODS.list())
    check_choice("model", opts["model"], BACKBONES.list())
    check_choice("quant", opts["quant"], QUANTIZERS.list())
    check_choice("precision", opts["precision"], list(PRECISIONS))
    check_choice("memory_format", opts["memory_format"], list(MEMORY_FORMATS))
    opts["resolutions"] = list(check_resolutions(opts["resolutions"], "resolutions"))
    for key, low in (("batch_size", 2), ("num_classes", 1), ("threads", 1), ("steps", 1), ("warmup", 0), ("rounds", 1)):
        if opts[key] < low:
            hint = " (BatchNorm needs more than one sample)" if key == "batch_size" else ""
            raise ConfigError(f"{key}: must be >= {low}{hint}, got {opts[key]}")
    method_kwargs = method_arguments(opts, extra)
    quant = quant_spec(opts)  # bits in range
    if quant is not None:  # methods whose layers cannot be quantized: refused before any child starts
        build_method(opts["method"], opts["resolutions"], **method_kwargs).check_backbone(opts["model"], quant)
    if opts["device"] == "auto":
        opts["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(opts["device"])  # raises a one-line RuntimeError for nonsense; wrap below
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda is not available on this machine; use device=cpu")
    return method_kwargs
