"""``python -m resnet_switch.bench infer [key=value ...]``: inference latency and switch latency.

Part 1, per model of ``models`` and resolution of ``resolutions``: the materialised plain model of
a switchable network (RS-Net layers, ``SwitchableNet.materialize``) against ``torchvision.models.<name>``
holding the SAME weights (loaded strictly from the materialised state dict, outputs compared), on
``(batch_size, 3, r, r)`` inputs, under ``torch.inference_mode``. The two run interleaved (order
alternating per step), ``warmup`` untimed then ``steps`` timed forwards each; figures are medians, and
``ratio`` is the median of the per-step ratios. Clock: with ``threads=1`` on the CPU, this thread's CPU
time (every kernel runs on it; other processes do not count), else wall time.

Part 2, per method of ``switch_methods`` on ``switch_model``: a checkpoint is written and loaded with
:class:`~resnet_switch.deploy.SwitchableClassifier`, then ``switch`` is timed between the method's
evaluation configurations (MutualNet: widths {lo, mid, hi} x resolutions, BN statistics stored in the
checkpoint; SAN: kernels generated on the first visit, cached after).

JSON keys (besides the header): ``latency``: ``{model: [{resolution, ours_ms, torchvision_ms,
ratio (median of per-step ours / torchvision), madds, madds_ratio, latency_ratio (both vs. the largest resolution),
max_abs_diff}]}``; ``max_ratio`` (worst ours / torchvision over all rows); ``switch``: ``{method:
{configs, cold_ms (median first visit), switch_ms (median warm switch), switch_p99_ms, switch_max_ms,
forward_after_switch_ms, forward_steady_ms (median forward at the smallest configuration right
after a switch / without one: equal when the switch leaves no work behind)}}``.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torchvision

from ..cli.options import check_choice
from ..deploy.runtime import SwitchableClassifier
from ..errors import ConfigError
from ..evaluation.costs import count_costs
from ..layers.calibration import calibrate_bn
from ..methods import METHODS, build_method
from ..models import create_model, list_backbones, torchvision_name
from ..switch import SubnetConfig, check_resolutions
from ..training.checkpointing import make_checkpoint

DEFAULTS: dict[str, Any] = {
    "models": ["resnet18", "resnet50", "mobilenetv2"],
    "resolutions": [224, 192, 160, 128, 96],
    "batch_size": 1,
    "num_classes": 1000,
    "threads": 1,
    "steps": 40,  # timed forwards per contender, model and resolution
    "warmup": 5,  # untimed forwards before
    "switch_methods": ["rsnet", "mutualnet", "san"],
    "switch_model": "resnet18",
    "switches": 200,  # timed warm switches per method
    "device": "cpu",
}


def check_options(opts: dict[str, Any]) -> None:
    opts["resolutions"] = list(check_resolutions(opts["resolutions"], "resolutions"))
    for name in opts["models"]:
        check_choice("models", name, list_backbones(torchvision=True))
    for name in opts["switch_methods"]:
        check_choice("switch_methods", name, METHODS.list())
    check_choice("switch_model", opts["switch_model"], list_backbones(torchvision=True) + ["resnet20", "mobilenetv1"])
    for key, low in (("batch_size", 1), ("num_classes", 1), ("threads", 1), ("steps", 1), ("warmup", 0),
                     ("switches", 1)):
        if opts[key] < low:
            raise ConfigError(f"{key}: must be >= {low}, got {opts[key]}")
    check_choice("device", opts["device"], ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def latency_clock(device: torch.device):
    """CPU time of this thread on the CPU with one intra-op thread (every kernel runs on it, and
    other processes or preemption then do not count); wall time otherwise (CUDA is synchronised)."""
    return time.thread_time if device.type == "cpu" and torch.get_num_threads() == 1 else time.perf_counter


@torch.inference_mode()
def time_pair(a, b, x: torch.Tensor, steps: int, warmup: int) -> tuple[float, float, float]:
    """``(median ms of a(x), median ms of b(x), median of the per-step ratios a/b)``, timed
    interleaved (order alternating per step): the paired ratio cancels drift between steps."""
    clock = latency_clock(x.device)
    for _ in range(warmup):
        a(x)
        b(x)
    times: tuple[list[float], list[float]] = ([], [])
    for step in range(steps):
        order = ((0, a), (1, b)) if step % 2 == 0 else ((1, b), (0, a))
        for k, model in order:
            _sync(x.device)
            t0 = clock()
            model(x)
            _sync(x.device)
            times[k].append((clock() - t0) * 1e3)
    ratios = [ta / tb for ta, tb in zip(*times, strict=True)]
    return statistics.median(times[0]), statistics.median(times[1]), statistics.median(ratios)


def latency_rows(name: str, opts: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per resolution: materialised plain model vs torchvision with the same weights."""
    device = torch.device(opts["device"])
    torch.manual_seed(0)
    net = create_model(name, opts["resolutions"], layers="private_bn", num_classes=opts["num_classes"])
    reference = getattr(torchvision.models, torchvision_name(name))(num_classes=opts["num_classes"])
    rows = []
    for r in opts["resolutions"]:
        config = SubnetConfig(r)
        plain = net.materialize(config).to(device).eval()
        reference.load_state_dict(plain.state_dict(), strict=True)
        reference.to(device).eval()
        madds, _ = count_costs(plain, config)
        x = torch.randn(opts["batch_size"], 3, r, r, device=device)
        with torch.inference_mode():
            diff = float((plain(x) - reference(x)).abs().max())
        ours, theirs, ratio = time_pair(plain, reference, x, opts["steps"], opts["warmup"])
        rows.append({"resolution": r, "ours_ms": round(ours, 3), "torchvision_ms": round(theirs, 3),
                     "ratio": round(ratio, 4), "madds": madds, "max_abs_diff": diff})
    top_madds, top_ms = rows[0]["madds"], rows[0]["ours_ms"]
    for row in rows:
        row["madds_ratio"] = round(row["madds"] / top_madds, 4)
        row["latency_ratio"] = round(row["ours_ms"] / top_ms, 4)
    return rows


# ------------------------------------------------------------------------------------- switching
def loaded_classifier(method_name: str, opts: dict[str, Any], folder: Path) -> tuple[SwitchableClassifier, list]:
    """A checkpoint of ``method_name`` on ``switch_model`` written to ``folder`` and loaded back,
    and the method's evaluation configurations (slimmable methods: BN statistics calibrated on 2
    random images each and stored in the checkpoint, as training does on real images)."""
    torch.manual_seed(0)
    method = build_method(method_name, opts["resolutions"])
    net = create_model(opts["switch_model"], method=method, num_classes=opts["num_classes"])
    net.eval()
    configs = method.eval_configs()
    if method.needs_calibration:
        for config in configs:
            r = config.resolution
            calibrate_bn(net, [torch.randn(2, 3, r, r)], config, num_samples=2)
    path = folder / f"{method_name}.ckpt"
    torch.save(make_checkpoint(method, net, {"name": method_name, "kwargs": {}}), path)
    return SwitchableClassifier.from_checkpoint(path, device=opts["device"]), configs


def switch_figures(clf: SwitchableClassifier, configs: list[SubnetConfig], switches: int) -> dict[str, Any]:
    def timed_switch(config: SubnetConfig) -> float:
        _sync(clf.device)
        t0 = time.perf_counter()
        clf.switch(config.resolution, config.width)
        _sync(clf.device)
        return (time.perf_counter() - t0) * 1e3

    first = sorted(configs, key=lambda c: (c.resolution, c.width))  # the loaded net starts at the largest
    cold = [timed_switch(c) for c in first]
    rng = random.Random(0)
    warm = []
    previous = clf.config
    while len(warm) < switches:
        config = rng.choice(configs)
        if config != previous:
            warm.append(timed_switch(config))
            previous = config
    warm.sort()
    small, other = min(configs), sorted(configs)[-1]
    x = torch.randn(1, clf.in_channels, small.resolution, small.resolution, device=clf.device)
    after, steady = [], []
    with torch.inference_mode():
        for _ in range(10):
            clf.switch(other.resolution, other.width)
            clf.switch(small.resolution, small.width)
            for bucket in (after, steady):
                _sync(clf.device)
                t0 = time.perf_counter()
                clf(x)
                _sync(clf.device)
                bucket.append((time.perf_counter() - t0) * 1e3)
    return {"configs": len(configs), "cold_ms": round(statistics.median(cold), 4),
            "switch_ms": round(statistics.median(warm), 4),
            "switch_p99_ms": round(warm[min(len(warm) - 1, int(0.99 * len(warm)))], 4),
            "switch_max_ms": round(warm[-1], 4),
            "forward_after_switch_ms": round(statistics.median(after), 3),
            "forward_steady_ms": round(statistics.median(steady), 3)}


def infer_task(opts: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    latency = {}
    for name in opts["models"]:
        latency[name] = latency_rows(name, opts)
        for row in latency[name]:
            print(f"{name:>12} @{row['resolution']:>4}: materialised {row['ours_ms']:8.2f} ms, torchvision "
                  f"{row['torchvision_ms']:8.2f} ms (ratio {row['ratio']:.3f}); MAdds ratio {row['madds_ratio']:.3f}, "
                  f"latency ratio {row['latency_ratio']:.3f}", flush=True)
    switch = {}
    with tempfile.TemporaryDirectory(prefix="bench_infer_") as folder:
        for method_name in opts["switch_methods"]:
            clf, configs = loaded_classifier(method_name, opts, Path(folder))
            switch[method_name] = switch_figures(clf, configs, opts["switches"])
            s = switch[method_name]
            print(f"{method_name:>12} switch over {s['configs']} configs: cold {s['cold_ms']:.3f} ms, warm median "
                  f"{s['switch_ms']:.4f} ms (p99 {s['switch_p99_ms']:.3f}, max {s['switch_max_ms']:.3f}); forward at "
                  f"the smallest config after a switch {s['forward_after_switch_ms']:.2f} ms vs steady "
                  f"{s['forward_steady_ms']:.2f} ms", flush=True)
    worst = max(row["ratio"] for rows in latency.values() for row in rows) if latency else None
    return {"latency": latency, "max_ratio": worst, "switch": switch}
