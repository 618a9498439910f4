"""``make gpu-check`` (``python -m resnet_switch.gpu_check``): every CUDA path in one go, in about 8 minutes on one GPU.

On a machine without CUDA it prints ``gpu-check: no CUDA device, skipped`` and exits 0. With a GPU
it runs the parts below in this order (``parts=[...]`` picks some), prints ONE JSON line per check
as it finishes (``{"check", "name", "status": pass|fail|skip, "seconds", "summary", ...figures}``)
and ends with a summary table; exit code 1 when a check failed. Each part is bounded (steps,
subprocess time limits) and the whole run stops starting new checks at ``budget_s``.

- ``tests``: ``pytest -m cuda`` (AMP step, channels_last, the asynchronous NaN check, pinned memory,
  device JPEG decode against CPU decode, CUDA peak memory).
- ``train``: ``resnet_switch.train`` for a few steps (ResNet-18, synthetic data at 64 and 32 px,
  batch 32, 3 steps) per method (rsnet, san, mutualnet) x precision (32, bf16-mixed, 16-mixed) x
  memory format (contiguous, channels_last), plus rsnet with ``compile=true`` (bf16, channels_last):
  every loss finite and within ``rtol`` of the CPU fp32 run of the same method (same seed, same
  batches). Tolerances (relative, per step): ``32``: 5e-3 - cuDNN convolutions run in TF32 by default
  (10-bit mantissa, ~5e-4 relative per product), the summed CE of two resolutions after three SGD
  steps stays well inside; ``bf16-mixed``: 5e-2 - bf16 keeps 8 bits of mantissa (~4e-3 relative per
  rounding, over ~20 layers), the loss itself is computed in float32 under autocast; ``16-mixed``
  (the papers' ImageNet recipes: fp16 autocast with Lightning's ``GradScaler``, one backward per
  configuration for SAN and MutualNet): 5e-2 - fp16 keeps 11 bits (finer than bf16); its record
  also has the scaler's scale after each step (``scales``: a halving is a step the scaler skipped on
  an inf/NaN gradient, which moves the later losses off the fp32 run's).
- ``ddp``: ``trainer=ddp`` (NCCL, our synchronised private BN) for 5 steps on 1 GPU, and on all of
  them when there are more: exit code, process-group backend, world size, losses finite.
- ``loader``: ``bench loader``: training-loader img/s from 512 generated ImageNet-like JPEGs with
  ``workers`` workers, ``data.decode=worker`` vs ``device`` (nvJPEG through TorchCodec). Without a
  loadable TorchCodec (not installed, or built for another torch) the worker rate is measured and the
  check is ``skip``, its summary naming why.
- ``memory``: ``bench memory`` on CUDA, SAN vs RS-Net (ResNet-18, batch 64, 224-96 px, bf16,
  channels_last): peak MiB one step adds (``torch.cuda.max_memory_allocated``).
- ``adaptive``: the cascade of issue #23 on the device: a short RS-Net run (ResNet-20, synthetic data
  at 32/24/16 px), its thresholds (``evaluate adaptive=true``), then ``bench adaptive`` at batch 1 and
  256: ms per image of the cascade against the static configuration of equal accuracy, per budget.
- ``bench``: ``bench train_step`` at 224 px (resolutions 224-96), batch 64, bf16-mixed,
  channels_last, for resnet18 / resnet50 / mobilenetv2 x rsnet / san: our step vs plain torchvision
  doing the same work under the same autocast and layout, img/s and the time ratio.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .cli.options import check_choice, parse_options, run_tool

PARTS = ("tests", "train", "ddp", "loader", "memory", "adaptive", "bench")
DEFAULTS: dict[str, Any] = {
    "parts": list(PARTS),
    "budget_s": 480,  # no new check starts after this many seconds
    "device": "cuda",  # cpu: run the parts on the CPU (tests of this driver; no GPU figures)
    "workers": 0,  # loader workers (0: min(8, CPU count))
    "out": "",  # also write the JSON lines to this file
    "summary": "",  # also write the summary table to this file
    "child": False,  # internal: run the parts in this process, JSON lines only
}
SKIPPED_LINE = "gpu-check: no CUDA device, skipped"
STATUSES = ("pass", "fail", "skip")

# ----------------------------------------------------------------------------- train: the comparison
RTOL = {"32": 5e-3, "bf16-mixed": 5e-2, "16-mixed": 5e-2}  # see the module docstring
TRAIN_METHODS = {"rsnet": [], "san": [], "mutualnet": ["method.width_range=[0.5,1.0]"]}
TRAIN_STEPS = 3
TRAIN_BASE = [
    "model=resnet18", "data=synthetic", "data.resolutions=[64,32]", "data.batch_size=32",
    "data.num_workers=0", f"data.train_samples={32 * TRAIN_STEPS}", "data.val_samples=32",
    "trainer.max_epochs=1", f"trainer.limit_train_batches={TRAIN_STEPS}", "trainer.limit_val_batches=1",
    "trainer.enable_progress_bar=false", "callbacks.progress_bar=null", "logger=none", "calibration_samples=32",
]
DDP_MODEL = {"cuda": ["model=resnet18", "data.resolutions=[64,32]"],
             "cpu": ["model=resnet20", "model.base_width=8", "data.resolutions=[16,12]"]}  # cpu: the driver's test
PROBE = "+callbacks.gpu_check_probe._target_=resnet_switch.training.run_probe.RunProbe"
BENCH_RESOLUTIONS = "[224,192,160,128,96]"
BENCH_MODELS = ("resnet18", "resnet50", "mobilenetv2")
LOADER_ARGS = ["images=512", "batch_size=64", "epochs=2", "warmup=2"]
BENCH_METHODS = ("rsnet", "san")
# adaptive: the RS-Net run whose cascade is timed (cuda: a real one; cpu: the driver's test, tiny)
ADAPTIVE_TRAIN = ["method=rsnet", "model=resnet20", "data=synthetic", "data.resolutions=[32,24,16]",
                  "data.batch_size=64", "data.num_workers=0", "trainer.max_epochs=1",
                  "trainer.enable_progress_bar=false", "callbacks.progress_bar=null", "logger=none"]
ADAPTIVE_SIZE = {"cuda": {"train": ["data.train_samples=2048", "data.val_samples=512"], "calibration": 512,
                          "images": 1024, "batch_sizes": "[1,256]"},
                 "cpu": {"train": ["data.train_samples=128", "data.val_samples=64", "model.base_width=8"],
                         "calibration": 64, "images": 64, "batch_sizes": "[1,32]"}}
BENCH_SPEED = ["precision=bf16-mixed", "memory_format=channels_last", "batch_size=64",
               f"resolutions={BENCH_RESOLUTIONS}"]


@dataclass(frozen=True)
class TrainCase:
    """One training run of the ``train`` part."""

    method: str
    precision: str = "32"
    memory_format: str = "contiguous"
    compile: bool = False
    device: str = "cuda"
    extra: tuple[str, ...] = ()  # more overrides (the driver's CPU tests: a smaller network)

    @property
    def name(self) -> str:
        parts = [self.method, self.precision, self.memory_format] + (["compile"] if self.compile else [])
        return "/".join(parts) + ("" if self.device == "cuda" else f"@{self.device}")

    def overrides(self) -> list[str]:
        precision = "32-true" if self.precision == "32" else self.precision
        accelerator = ["trainer.accelerator=gpu", "trainer.devices=1"] if self.device == "cuda" else [
            "trainer.accelerator=cpu"]
        return [*TRAIN_BASE, f"method={self.method}", *TRAIN_METHODS[self.method], *accelerator,
                f"trainer.precision={precision}", f"memory_format={self.memory_format}",
                f"compile={str(self.compile).lower()}", *self.extra]


def train_cases(device: str = "cuda") -> list[TrainCase]:
    """Every method x precision x memory format, then rsnet compiled (bf16, channels_last)."""
    cases = [TrainCase(m, p, f, device=device) for m in TRAIN_METHODS for p in RTOL
             for f in ("contiguous", "channels_last")]
    return cases + [TrainCase("rsnet", "bf16-mixed", "channels_last", compile=True, device=device)]


def compare_losses(reference: Sequence[float], losses: Sequence[float], rtol: float) -> dict[str, Any]:
    """``{"status", "max_rel_diff", "reason"}``: pass when both runs made the same number of steps,
    every loss is finite and ``|loss - ref| <= rtol * |ref|`` at every step."""
    if len(losses) != len(reference) or not losses:
        return {"status": "fail", "max_rel_diff": None,
                "reason": f"{len(losses)} steps, the CPU fp32 run made {len(reference)}"}
    if not all(math.isfinite(v) for v in losses):
        return {"status": "fail", "max_rel_diff": None, "reason": f"non-finite loss {list(losses)}"}
    rel = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(losses, reference))
    ok = rel <= rtol
    return {"status": "pass" if ok else "fail", "max_rel_diff": rel,
            "reason": "" if ok else f"max relative difference {rel:.2e} > {rtol:g}"}


def run_training(case: TrainCase, workdir: Path) -> dict[str, Any]:
    """``resnet_switch.train`` for ``case`` in this process (its printout goes to stderr); the probe's record."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from .cli.overrides import CONF_DIR
    from .pipeline import train

    run_dir = workdir / case.name.replace("/", "_").replace("@", "_")
    probe = run_dir / "probe.json"
    overrides = [*case.overrides(), f"run_dir={run_dir}",
                 PROBE,
                 f"+callbacks.gpu_check_probe.path={probe}"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    GlobalHydra.instance().clear()
    with contextlib.redirect_stdout(sys.stderr):
        train(cfg)
    return json.loads(probe.read_text())


def train_checks(device: str, workdir: Path, deadline: float,
                 cases: Sequence[TrainCase] | None = None) -> Iterable[dict[str, Any]]:
    """The ``train`` part, in this process: a CPU fp32 reference per method, then each case."""
    references: dict[str, list[float] | None] = {}
    for case in cases if cases is not None else train_cases(device):
        if time.monotonic() > deadline:
            yield result("train", case.name, "skip", 0.0, "time budget used up")
            continue
        if case.method not in references:
            try:
                reference_case = TrainCase(case.method, device="cpu", extra=case.extra)
                references[case.method] = run_training(reference_case, workdir)["losses"]
            except Exception as err:  # reported, and the method's cases fail with it
                references[case.method] = None
                yield result("train", f"{case.method}/32/contiguous@cpu", "fail", 0.0, first_line(err))
        start = time.monotonic()
        reference = references[case.method]
        try:
            record = run_training(case, workdir)
        except Exception as err:
            yield result("train", case.name, "fail", time.monotonic() - start, first_line(err))
            continue
        seconds = time.monotonic() - start
        if reference is None:
            yield result("train", case.name, "fail", seconds, "no CPU fp32 reference", losses=record["losses"])
            continue
        rtol = RTOL[case.precision]
        verdict = compare_losses(reference, record["losses"], rtol)
        rel = verdict["max_rel_diff"]
        summary = verdict["reason"] or f"losses within {rel:.1e} of CPU fp32 (rtol {rtol:g})"
        scales = record.get("scales") or []
        if scales:  # 16-mixed: the GradScaler's scale after each step (a halving: a skipped step)
            summary += f"; scale {' -> '.join(f'{s:g}' for s in scales)}"
        yield result("train", case.name, verdict["status"], seconds, summary, losses=record["losses"],
                     reference=reference, max_rel_diff=rel, rtol=rtol, device=record["device"],
                     **({"scales": scales} if scales else {}))


# ----------------------------------------------------------------------------- results and report
def result(check: str, name: str, status: str, seconds: float, summary: str, **figures: Any) -> dict[str, Any]:
    """One check's record: the JSON line and a row of the summary table."""
    check_choice("status", status, STATUSES)
    return {"check": check, "name": name, "status": status, "seconds": round(float(seconds), 1),
            "summary": summary, **figures}


def first_line(err: BaseException | str) -> str:
    text = str(err).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[0] if lines else type(err).__name__)[:300]


def summary_table(results: Sequence[dict[str, Any]], header: str = "") -> str:
    """The final report: one Markdown row per check, then the totals."""
    rows = [("check", "name", "status", "result", "s")]
    rows += [(r["check"], r["name"], r["status"], r["summary"], f"{r['seconds']:.1f}") for r in results]
    lines = [header] if header else []
    lines += ["| " + " | ".join(row) + " |" for row in rows[:1]]
    lines.append("|" + "|".join("---" for _ in rows[0]) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    counts = {s: sum(r["status"] == s for r in results) for s in STATUSES}
    lines.append(f"gpu-check: {counts['pass']} pass, {counts['fail']} fail, {counts['skip']} skip")
    return "\n".join(lines)


def exit_code(results: Sequence[dict[str, Any]]) -> int:
    return 1 if any(r["status"] == "fail" for r in results) else 0


def parse_pytest_counts(text: str) -> dict[str, int]:
    """``{"passed": n, "failed": n, ...}`` from pytest's closing line."""
    counts: dict[str, int] = {}
    for number, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)", text):
        counts["error" if word.startswith("error") else word] = int(number)
    return counts


def last_json(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


# ----------------------------------------------------------------------------- running the parts
@dataclass
class Context:
    """What every part needs: the device, the deadline, a scratch folder, where output goes."""

    device: str
    deadline: float
    workdir: Path
    workers: int
    emit: Callable[[dict[str, Any]], None]
    child: bool = False  # this process is the train part's child: run it here
    results: list[dict[str, Any]] = field(default_factory=list)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def add(self, record: dict[str, Any]) -> None:
        self.results.append(record)
        self.emit(record)


def package_env() -> dict[str, str]:
    """The environment for child processes: this package first on ``PYTHONPATH``, W&B offline."""
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.setdefault("WANDB_MODE", "offline")
    return env


def run_command(ctx: Context, argv: Sequence[str], limit: float, cwd: Path | None = None) -> tuple[int, str, str, float]:
    """``(returncode, stdout, stderr, seconds)`` of a child process in its own process group, which
    is killed whole (DDP ranks, loader workers) at ``limit`` seconds or at the deadline (returncode
    -1, stderr says so)."""
    timeout = max(1.0, min(limit, ctx.remaining()))
    start = time.monotonic()
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=package_env(), cwd=cwd, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return -1, out, f"timeout after {timeout:.0f} s", time.monotonic() - start
    return proc.returncode, out, err, time.monotonic() - start


def failure(stderr: str) -> str:
    """The line of a child's stderr that says what went wrong."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    for line in reversed(lines):
        if line.startswith(("error:", "RuntimeError", "torch.OutOfMemoryError", "ValueError", "AssertionError")) or (
                "Error" in line.split(":")[0]):
            return line[:300]
    return (lines[-1] if lines else "no output")[:300]


def bench_command(task: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "resnet_switch.bench", task, *args]


def part_tests(ctx: Context) -> None:
    repo = Path(__file__).resolve().parents[2]
    if not (repo / "tests").is_dir():
        ctx.add(result("tests", "pytest -m cuda", "skip", 0.0, f"no tests/ folder at {repo}"))
        return
    rc, out, err, seconds = run_command(ctx, [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-m", "cuda",
                                              "tests"], 150, cwd=repo)
    counts = parse_pytest_counts(out.strip().splitlines()[-1] if out.strip() else "")
    ok = rc == 0 and counts.get("passed", 0) > 0 and not counts.get("failed") and not counts.get("error")
    summary = ", ".join(f"{n} {k}" for k, n in counts.items()) or failure(err or out)
    if rc == -1:
        summary = err
    ctx.add(result("tests", "pytest -m cuda", "pass" if ok else "fail", seconds, summary, **counts))


def part_train(ctx: Context) -> None:
    """In a child process (a CUDA error there cannot poison the other parts); its JSON lines relayed."""
    if ctx.child or ctx.device == "cpu":  # the child itself, or the driver's own test: in this process
        for record in train_checks(ctx.device, ctx.workdir, ctx.deadline):
            ctx.add(record)
        return
    argv = [sys.executable, "-m", "resnet_switch.gpu_check", "parts=[train]", "child=true",
            f"device={ctx.device}", f"budget_s={max(1, int(ctx.remaining()) - 5)}"]
    rc, out, err, seconds = run_command(ctx, argv, 330)
    seen = 0
    for line in out.splitlines():
        if line.startswith('{"check"'):
            ctx.add(json.loads(line))
            seen += 1
    expected = len(train_cases(ctx.device))
    if rc != 0 or seen < expected:
        why = err if rc == -1 else failure(err)
        ctx.add(result("train", "(child process)", "fail", seconds, f"exit {rc} after {seen}/{expected} runs: {why}"))


def part_ddp(ctx: Context) -> None:
    counts = [1] + ([torch.cuda.device_count()] if ctx.device == "cuda" and torch.cuda.device_count() > 1 else [])
    for devices in counts:
        run_dir = ctx.workdir / f"ddp_{devices}"
        probe = run_dir / "probe.json"
        accelerator = "gpu" if ctx.device == "cuda" else "cpu"
        argv = [sys.executable, "-m", "resnet_switch.train", "trainer=ddp", f"trainer.devices={devices}",
                f"trainer.accelerator={accelerator}", *DDP_MODEL[ctx.device],
                "data.batch_size=32", "data.num_workers=2", f"data.train_samples={32 * 5 * devices}",
                "data.val_samples=64",
                "trainer.max_epochs=1", "trainer.limit_train_batches=5", "trainer.limit_val_batches=1",
                "trainer.enable_progress_bar=false", "callbacks.progress_bar=null", "logger=none",
                f"hydra.run.dir={run_dir}",
                PROBE,
                f"+callbacks.gpu_check_probe.path={probe}"]
        name = f"trainer=ddp devices={devices}"
        rc, _, err, seconds = run_command(ctx, argv, 150)
        if rc != 0 or not probe.is_file():
            ctx.add(result("ddp", name, "fail", seconds, err if rc == -1 else failure(err)))
            continue
        record = json.loads(probe.read_text())
        losses = record["losses"]
        expected_backend = "nccl" if ctx.device == "cuda" else "gloo"
        ok = (record["backend"] == expected_backend and record["world_size"] == devices and len(losses) == 5
              and all(math.isfinite(v) for v in losses))
        summary = (f"backend {record['backend']}, world {record['world_size']}, {len(losses)} steps, "
                   f"loss {losses[0]:.3f} -> {losses[-1]:.3f}, {record['synced_bn_layers']} synced BN layers"
                   if losses else f"backend {record['backend']}, no steps")
        ctx.add(result("ddp", name, "pass" if ok else "fail", seconds, summary, **record))


def codec_problem() -> str:
    """Why TorchCodec's image decoders cannot be used here (``""`` when they can): not installed, or
    its libraries do not load with this torch."""
    try:
        from torchcodec.decoders import decode_jpeg  # noqa: F401
    except Exception as err:  # ImportError, OSError, RuntimeError: a build for another torch
        return f"TorchCodec not loadable ({type(err).__name__}: {first_line(err)[:160]})"
    return ""


def part_loader(ctx: Context) -> None:
    workers = ctx.workers or min(8, os.cpu_count() or 1)
    no_codec = codec_problem() if ctx.device == "cuda" else ""
    decodes = ["decodes=[worker]"] if no_codec else []
    argv = bench_command("loader", f"workers={workers}", f"device={ctx.device}", *LOADER_ARGS, *decodes)
    rc, out, err, seconds = run_command(ctx, argv, 150)
    data = last_json(out) if rc == 0 else None
    if data is None:
        ctx.add(result("loader", f"{workers} workers", "fail", seconds, err if rc == -1 else failure(err)))
        return
    if no_codec:  # the worker figure only; the device decode cannot run
        ctx.add(result("loader", f"{workers} workers", "skip", seconds,
                       f"worker decode {data['worker_img_s']:.0f} img/s; device decode skipped: {no_codec}",
                       worker_img_s=data["worker_img_s"], device_skipped=no_codec))
        return
    summary = f"worker decode {data['worker_img_s']:.0f} img/s, device decode {data['device_img_s']:.0f} img/s"
    if "device_vs_worker" in data:
        summary += f" (x{data['device_vs_worker']:.2f})"
    if data["device_fallback"]:
        summary += " [device decode fell back to the workers]"
    figures = {k: data[k] for k in data if k.endswith(("img_s", "per_batch")) or k in ("device_vs_worker",
                                                                                        "device_fallback")}
    ctx.add(result("loader", f"{workers} workers", "fail" if ctx.device == "cuda" and data["device_fallback"]
                   else "pass", seconds, summary, **figures))


def part_memory(ctx: Context) -> None:
    argv = bench_command("memory", "method=san", "compare_method=rsnet", f"model={BENCH_MODELS[0]}",
                         f"device={ctx.device}", *BENCH_SPEED)
    rc, out, err, seconds = run_command(ctx, argv, 120)
    data = last_json(out) if rc == 0 else None
    if data is None:
        ctx.add(result("memory", f"{BENCH_MODELS[0]} san vs rsnet", "fail", seconds, err if rc == -1 else failure(err)))
        return
    ok = data["ours_mb"] > 0 and data["compare_mb"] > 0
    summary = (f"san {data['ours_mb']:.0f} MiB, rsnet {data['compare_mb']:.0f} MiB (san/rsnet "
               f"{data['compare_ratio']}), plain {data['baseline_mb']:.0f} MiB")
    ctx.add(result("memory", f"{BENCH_MODELS[0]} san vs rsnet", "pass" if ok else "fail", seconds, summary,
                   san_mb=data["ours_mb"], rsnet_mb=data["compare_mb"], plain_mb=data["baseline_mb"]))


def part_adaptive(ctx: Context) -> None:
    """Train a short RS-Net, fit its cascade thresholds, time the cascade against the static
    configuration of equal accuracy (``bench adaptive``) on the device."""
    name, size, run = "rsnet resnet20 cascade", ADAPTIVE_SIZE[ctx.device], ctx.workdir / "adaptive"
    ckpt = run / "checkpoints" / "last.ckpt"
    accelerator = ["trainer.accelerator=gpu", "trainer.devices=1"] if ctx.device == "cuda" else [
        "trainer.accelerator=cpu"]
    steps = [
        ("train", [sys.executable, "-m", "resnet_switch.train", *ADAPTIVE_TRAIN, *size["train"], *accelerator,
                   f"hydra.run.dir={run}"], 150),
        ("evaluate", [sys.executable, "-m", "resnet_switch.evaluate", f"ckpt={ckpt}", "adaptive=true",
                      f"cascade.calibration_images={size['calibration']}", f"device={ctx.device}",
                      f"hydra.run.dir={run / 'evaluate'}"], 120),
        ("bench", bench_command("adaptive", f"ckpt={ckpt}", f"device={ctx.device}", f"images={size['images']}",
                                f"batch_sizes={size['batch_sizes']}", "rounds=3", "threads=1"), 120),
    ]
    total = 0.0
    for step, argv, limit in steps:
        rc, out, err, seconds = run_command(ctx, argv, limit)
        total += seconds
        if rc != 0:
            ctx.add(result("adaptive", name, "fail", total, f"{step}: " + (err if rc == -1 else failure(err))))
            return
    data = last_json(out)
    rows = (data or {}).get("rows") or []
    if not rows:
        ctx.add(result("adaptive", name, "fail", total, "bench adaptive: no rows in its JSON line"))
        return
    parts = []
    for batch in sorted({r["batch_size"] for r in rows}):
        mine = [r for r in rows if r["batch_size"] == batch]
        best = max(mine, key=lambda r: r["speedup"])
        parts.append(f"batch {batch}: static/adaptive time {min(r['speedup'] for r in mine):.2f}-"
                     f"{best['speedup']:.2f}x over {len(mine)} budgets (best: {best['adaptive']['ms_per_image']:.3f} "
                     f"vs {best['static']['ms_per_image']:.3f} ms/img, {best['static']['config']})")
    ctx.add(result("adaptive", name, "pass", total, "; ".join(parts), rows=rows))


def part_bench(ctx: Context) -> None:
    for model in BENCH_MODELS:
        for method in BENCH_METHODS:
            name = f"{model} {method}"
            if ctx.remaining() <= 0:
                ctx.add(result("bench", name, "skip", 0.0, "time budget used up"))
                continue
            argv = bench_command("train_step", f"model={model}", f"method={method}", f"device={ctx.device}",
                                 *BENCH_SPEED, "steps=4", "warmup=2", "rounds=1", "baseline_tuned=false", "threads=4")
            rc, out, err, seconds = run_command(ctx, argv, 90)
            data = last_json(out) if rc == 0 else None
            if data is None:
                ctx.add(result("bench", name, "fail", seconds, err if rc == -1 else failure(err)))
                continue
            summary = (f"ours {data['ours_img_s']:.0f} img/s, plain torchvision {data['baseline_img_s']:.0f} img/s, "
                       f"time ours/plain {data['ratio']:.2f}")
            ctx.add(result("bench", name, "pass", seconds, summary, ours_img_s=data["ours_img_s"],
                           baseline_img_s=data["baseline_img_s"], ratio=data["ratio"]))


PART_RUNNERS: dict[str, Callable[[Context], None]] = {
    "tests": part_tests, "train": part_train, "ddp": part_ddp, "loader": part_loader, "memory": part_memory,
    "adaptive": part_adaptive, "bench": part_bench,
}


def device_header() -> dict[str, Any]:
    """The GPU(s) and versions, for the first JSON line and the table's title."""
    try:
        import torchcodec

        codec = torchcodec.__version__ if not codec_problem() else f"{torchcodec.__version__} (not loadable)"
    except Exception:  # not installed or not loadable: the loader check says why
        codec = None
    props = torch.cuda.get_device_properties(0)
    return {"check": "device", "name": props.name, "count": torch.cuda.device_count(),
            "memory_gb": round(props.total_memory / 2**30, 1), "capability": f"{props.major}.{props.minor}",
            "torch": torch.__version__, "cuda": torch.version.cuda, "torchcodec": codec}


def main(argv: list[str]) -> int:
    opts, _ = parse_options(DEFAULTS, argv)
    for part in opts["parts"]:
        check_choice("parts", part, list(PARTS))
    check_choice("device", opts["device"], ["cuda", "cpu"])
    if opts["device"] == "cuda" and not torch.cuda.is_available():
        print(SKIPPED_LINE, flush=True)
        return 0
    start = time.monotonic()
    out_file = open(opts["out"], "w") if opts["out"] else None  # noqa: SIM115 - closed below

    def emit(record: dict[str, Any]) -> None:
        line = json.dumps(record)
        print(line, flush=True)
        if out_file is not None:
            out_file.write(line + "\n")
            out_file.flush()

    header = device_header() if opts["device"] == "cuda" else {"check": "device", "name": "cpu"}
    if not opts["child"]:
        emit(header)
    try:
        with tempfile.TemporaryDirectory(prefix="gpu_check_") as folder:
            ctx = Context(opts["device"], start + opts["budget_s"], Path(folder), opts["workers"], emit,
                          child=opts["child"])
            for part in [p for p in PARTS if p in opts["parts"]]:
                if ctx.remaining() <= 0:
                    ctx.add(result(part, "(all)", "skip", 0.0, "time budget used up"))
                    continue
                PART_RUNNERS[part](ctx)
    finally:
        if out_file is not None:
            out_file.close()
    if not opts["child"]:
        title = (f"\ngpu-check summary: {header['name']} x{header.get('count', 1)}, torch {torch.__version__}, "
                 f"{time.monotonic() - start:.0f} s")
        table = summary_table(ctx.results, title)
        print(table, flush=True)
        if opts["summary"]:
            Path(opts["summary"]).write_text(table.lstrip("\n") + "\n")
    return exit_code(ctx.results)


def cli(argv: list[str]) -> None:
    """The command: ``main``'s result as the exit code (bad options: one ``error:`` line, exit 2)."""
    raise SystemExit(main(argv))


if __name__ == "__main__":
    run_tool(cli, sys.argv[1:])
