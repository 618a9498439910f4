"""``python -m resnet_switch.bench adaptive ckpt=PATH [key=value ...]``: real latency of the cascade.

For each fitted budget of the checkpoint's adaptive policy (``<ckpt>.adaptive.json`` written by
``evaluate ckpt=... adaptive=true``, or ``policy=``; ``budget=`` keeps the one fit for that budget),
on ``images`` validation images of the checkpoint's data set (the centre crops of its validation
transform at the top stage's resolution, as uint8):

- ``adaptive``: :meth:`SwitchableClassifier.predict_adaptive` over the images in batches of
  ``batch_size`` (every stage on the undecided images only; the resizes, the switches and the
  confidence scores are timed with the forwards);
- ``static``: :meth:`SwitchableClassifier.predict` at the static configuration of EQUAL ACCURACY:
  the cheapest stage whose top-1 on the same images is at least the cascade's (the top stage when
  none is), same batches.

The two alternate ``rounds`` times (warm-up pass first); figures are medians of ms per image over the
rounds. Clock: with ``threads=1`` on the CPU, this thread's CPU time (other processes do not count),
else wall time (CUDA synchronised). JSON keys (besides the header): ``stages``, ``rows``: one per
(budget, batch size) ``{budget_madds, batch_size, adaptive: {top1, mean_madds, ms_per_image, shares},
static: {config, top1, madds, ms_per_image}, speedup (static / adaptive ms)}``.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate

from ..counts import parse_count
from ..data.datamodule import validation_reference
from ..data.multires import resize_uint8
from ..deploy.runtime import SwitchableClassifier
from ..errors import ConfigError
from ..evaluation.adaptive import AdaptivePolicy, paid_madds, policy_path
from ..evaluation.reporting import human_count
from ..switch import SubnetConfig
from ..training.checkpointing import load_checkpoint
from .infer import _sync, latency_clock

DEFAULTS: dict[str, Any] = {
    "ckpt": "",  # a resnet_switch checkpoint with an adaptive policy beside it
    "policy": "",  # the policy JSON (default: <ckpt>.adaptive.json)
    "budget": "",  # one fitted budget (e.g. 2M); default: every fitted budget
    "images": 512,  # validation images
    "batch_sizes": [1, 64],
    "rounds": 3,
    "threads": 1,
    "device": "cpu",
}


def check_options(opts: dict[str, Any]) -> None:
    if not opts["ckpt"]:
        raise ConfigError("ckpt: missing; python -m resnet_switch.bench adaptive ckpt=PATH (after evaluate ckpt=PATH "
                         "adaptive=true)")
    if not Path(opts["ckpt"]).is_file():
        raise ConfigError(f"ckpt: no file at {opts['ckpt']}")
    if opts["budget"]:
        parse_count(opts["budget"], "budget")
    if not opts["batch_sizes"] or any(isinstance(b, bool) or not isinstance(b, int) or b < 1
                                      for b in opts["batch_sizes"]):
        raise ConfigError(f"batch_sizes: need a list of integers >= 1, got {opts['batch_sizes']!r}")
    for key in ("images", "rounds", "threads"):
        if opts[key] < 1:
            raise ConfigError(f"{key}: must be >= 1, got {opts[key]}")
    if opts["device"] not in ("cpu", "cuda") or (opts["device"] == "cuda" and not torch.cuda.is_available()):
        raise ConfigError(f"device: {opts['device']!r} is not available; use device=cpu"
                         + (" or device=cuda" if torch.cuda.is_available() else ""))


def validation_images(ckpt: str, resolution: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(uint8 (N, C, r, r) images, labels (N,))``: the checkpoint's validation split at ``resolution``
    (the centre crop at the run's validation reference, resized to r with the uint8 kernel)."""
    meta = load_checkpoint(ckpt)["resnet_switch"]
    data = dict(meta["run"]["data"])
    data.pop("resolutions", None)
    data.update(train_resolutions=meta["net"]["resolutions"], test_resolutions=[resolution], val_samples=count,
                num_workers=0, val_reference=validation_reference(meta["run"]["data"], meta["net"]["resolutions"]))
    datamodule = instantiate(data, _convert_="all")
    images, labels = [], []
    for x, y in datamodule.val_dataloader():  # the centre crop at the run's reference, resized as evaluate does
        images.append(resize_uint8(x, resolution))
        labels.append(y)
    return torch.cat(images)[:count], torch.cat(labels)[:count]


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * float((logits.argmax(-1).cpu() == labels).float().mean())


def timed_pass(predict, images: torch.Tensor, batch_size: int, device: torch.device) -> tuple[float, torch.Tensor]:
    """``(ms per image, logits)`` of ``predict(batch)`` over ``images`` in batches."""
    clock = latency_clock(device)
    outputs = []
    _sync(device)
    start = clock()
    for i in range(0, len(images), batch_size):
        outputs.append(predict(images[i:i + batch_size]))
    _sync(device)
    return (clock() - start) * 1e3 / len(images), torch.cat(outputs)


def adaptive_task(opts: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    clf = SwitchableClassifier.from_checkpoint(opts["ckpt"], device=opts["device"])
    policy = AdaptivePolicy.load(opts["policy"] or policy_path(opts["ckpt"]))
    fits = [policy.thresholds_for(parse_count(opts["budget"], "budget"))] if opts["budget"] else policy.fits
    top = max(c.resolution for c in policy.stages)
    images, labels = validation_images(opts["ckpt"], top, opts["images"])
    device = clf.device
    static_logits = {c: torch.cat([clf.predict(images[i:i + 256], c.resolution, c.width, crop_ratio=1.0).cpu()
                                   for i in range(0, len(images), 256)]) for c in policy.stages}
    static_top1 = {c: top1(z, labels) for c, z in static_logits.items()}
    print(f"adaptive bench: {len(images)} validation images, stages "
          + ", ".join(f"w{c.width:g}@{c.resolution} ({human_count(m)} MAdds, top-1 {static_top1[c]:.2f}%)"
                      for c, m in zip(policy.stages, policy.stage_madds)), flush=True)
    rows = []
    for fit in fits:
        for batch_size in opts["batch_sizes"]:
            def adaptive(batch, thresholds=fit.thresholds):
                return clf.predict_adaptive(batch, thresholds=thresholds, policy=policy, crop_ratio=1.0)[0]

            logits, configs = clf.predict_adaptive(images, thresholds=fit.thresholds, policy=policy, crop_ratio=1.0)
            acc = top1(logits, labels)
            index = {c: k for k, c in enumerate(policy.stages)}
            stops = torch.tensor([index[c] for c in configs])
            mean_madds = float(torch.tensor(paid_madds(policy.stage_madds, fit.thresholds), dtype=torch.float64)[stops].mean())
            equal = next((c for c in policy.stages if static_top1[c] >= acc), policy.stages[-1])

            def static(batch, config: SubnetConfig = equal):
                return clf.predict(batch, config.resolution, config.width, crop_ratio=1.0)

            timed_pass(adaptive, images[:batch_size], batch_size, device)  # warm-up (SAN kernels, allocator)
            timed_pass(static, images[:batch_size], batch_size, device)
            times: dict[str, list[float]] = {"adaptive": [], "static": []}
            for r in range(opts["rounds"]):
                order = (("adaptive", adaptive), ("static", static)) if r % 2 == 0 else (("static", static),
                                                                                        ("adaptive", adaptive))
                for name, fn in order:
                    times[name].append(timed_pass(fn, images, batch_size, device)[0])
            a_ms, s_ms = statistics.median(times["adaptive"]), statistics.median(times["static"])
            row = {"budget_madds": fit.budget_madds, "batch_size": batch_size,
                   "adaptive": {"top1": acc, "mean_madds": mean_madds, "ms_per_image": round(a_ms, 4),
                                "shares": [float((stops == k).float().mean()) for k in range(len(policy.stages))]},
                   "static": {"config": f"w{equal.width:g}@{equal.resolution}", "top1": static_top1[equal],
                              "madds": policy.stage_madds[index[equal]], "ms_per_image": round(s_ms, 4)},
                   "speedup": round(s_ms / a_ms, 4)}
            rows.append(row)
            print(f"budget {human_count(fit.budget_madds):>6} batch {batch_size:>4}: adaptive top-1 {acc:6.2f}% "
                  f"{human_count(mean_madds)} MAdds {a_ms:8.3f} ms/img | static {row['static']['config']} top-1 "
                  f"{static_top1[equal]:6.2f}% {human_count(row['static']['madds'])} MAdds {s_ms:8.3f} ms/img | "
                  f"static/adaptive {row['speedup']:.2f}x", flush=True)
    return {"stages": [f"w{c.width:g}@{c.resolution}" for c in policy.stages], "num_images": len(images),
            "rows": rows}

