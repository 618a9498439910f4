"""``python -m resnet_switch.bench onnx ckpt=PATH [threads=1] [batches=[1,32]] [runs=N]``: the one ONNX file
(``export ... format=onnx configs=all``) against the per-configuration folded exports, in ONNX Runtime.

Writes (into ``out_dir``, default a temporary folder) the one file and, per training resolution ``R``,
today's single-configuration export ``export format=onnx resolution=R fold_bn=true`` (each verified by
the export itself). Then, per training resolution and batch size:

- ``one_ms`` / ``per_config_ms``: median (and min, max) milliseconds of one ``InferenceSession.run``
  over ``runs`` calls after ``warmup`` untimed ones, the two sessions interleaved (order alternating);
  one session for the one file (every resolution), one per per-configuration file; both with
  ``intra_op_num_threads=threads``, sequential execution, no spinning; ``ratio``: one / per-config medians.
- ``switch_ms`` (batch 1 and every batch): a call at this resolution right after a call at ANOTHER
  training resolution on the one file's session, minus the steady call (median over ``runs`` pairs).

Sizes: the one file against the sum of the per-configuration files. Memory: resident-set growth
(``VmRSS``) of a fresh Python process (numpy and onnxruntime imported first) creating the session(s)
and running each resolution once: the one file's one session against every per-configuration session.

Clock: ``threads=1`` -> this thread's CPU time (ONNX Runtime runs the graph on the calling thread, so
other processes on the machine do not count); else wall time. JSON keys (besides the options):
``method``, ``model``, ``train_resolutions``, ``rows`` (one per resolution x batch), ``sizes``, ``memory``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError

DEFAULTS: dict[str, Any] = {
    "ckpt": "",  # a resnet_switch checkpoint the one-file export supports
    "threads": 1,  # ONNX Runtime intra-op threads
    "batches": [1, 32],
    "runs": 50,  # timed calls per (resolution, batch, variant)
    "warmup": 5,
    "out_dir": "",  # where the files go (default: a temporary folder, removed after)
    "size_bound": 0.0,  # passed to the one-file export (0: its default; tiny test networks need more)
    "seed": 0,
}
SLOW = 1.10  # the bound on one-file / per-config latency

MEMORY_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import onnxruntime as ort

    def rss():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))

    paths, sizes, channels, threads = json.loads(sys.argv[1])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    before = rss()
    sessions = [ort.InferenceSession(p, options, providers=["CPUExecutionProvider"]) for p in paths]
    for k, r in enumerate(sizes):
        s = sessions[k if len(sessions) > 1 else 0]
        s.run(None, {s.get_inputs()[0].name: np.zeros((1, channels, r, r), np.float32)})
    print(json.dumps({"rss_growth_bytes": rss() - before}))
""")


def check_options(opts: dict[str, Any]) -> None:
    if not opts["ckpt"]:
        raise ConfigError("ckpt: missing; python -m resnet_switch.bench onnx ckpt=PATH threads=1")
    if not Path(opts["ckpt"]).is_file():
        raise ConfigError(f"ckpt: no file at {opts['ckpt']}")
    if not opts["batches"] or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in opts["batches"]):
        raise ConfigError(f"batches: need a list of integers >= 1, got {opts['batches']!r}")
    for key in ("threads", "runs"):
        if isinstance(opts[key], bool) or not isinstance(opts[key], int) or opts[key] < 1:
            raise ConfigError(f"{key}: must be an integer >= 1, got {opts[key]!r}")
    if opts["warmup"] < 0:
        raise ConfigError(f"warmup: must be >= 0, got {opts['warmup']}")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ConfigError("onnxruntime: not installed; pip install onnxruntime onnxscript") from None


def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    s = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return lambda x: s.run(None, {name: x})[0]


def spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 4), "min": round(min(values), 4), "max": round(max(values), 4)}


def write_files(opts: dict[str, Any], folder: Path) -> tuple[dict[str, Any], dict[int, Path]]:
    from ..deploy.export import DEFAULTS as EXPORT_DEFAULTS
    from ..deploy.export import export

    common = {**EXPORT_DEFAULTS, "ckpt": opts["ckpt"], "format": "onnx", "seed": opts["seed"]}
    one = export({**common, "configs": "all", "out": str(folder / "all.onnx"),
                  "size_bound": opts["size_bound"] or None})
    per_config = {}
    for r in one["train_resolutions"]:
        export({**common, "resolution": r, "fold_bn": True, "out": str(folder / f"r{r}_folded.onnx")})
        per_config[r] = folder / f"r{r}_folded.onnx"
    return one, per_config


def rss_growth(paths: list[Path], sizes: list[int], channels: int, threads: int) -> int:
    arg = json.dumps([[str(p) for p in paths], sizes, channels, threads])
    done = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, arg], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe failed: {done.stderr.strip().splitlines()[-1:]}")
    return int(json.loads(done.stdout.strip().splitlines()[-1])["rss_growth_bytes"])


def onnx_task(opts: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(opts["out_dir"]) if opts["out_dir"] else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        return measure(opts, folder)


def measure(opts: dict[str, Any], folder: Path) -> dict[str, Any]:
    one, per_config = write_files(opts, folder)
    trained = list(one["train_resolutions"])
    channels = int(json.loads(_metadata(Path(one["out"])))["in_channels"])
    threads, runs, warmup = opts["threads"], opts["runs"], opts["warmup"]
    clock = time.thread_time if threads == 1 else time.perf_counter
    one_run = session(Path(one["out"]), threads)
    per_run = {r: session(p, threads) for r, p in per_config.items()}
    rng = np.random.default_rng(opts["seed"])
    rows = []
    for batch in opts["batches"]:
        inputs = {r: rng.standard_normal((batch, channels, r, r), dtype=np.float32) for r in trained}
        for r in trained:
            x = inputs[r]
            other = inputs[next(o for o in trained if o != r)] if len(trained) > 1 else None
            for _ in range(warmup):
                one_run(x)
                per_run[r](x)
            times: dict[str, list[float]] = {"one": [], "per_config": [], "switch": [], "steady": []}
            for i in range(runs):
                pair = (("one", one_run), ("per_config", per_run[r])) if i % 2 == 0 else \
                    (("per_config", per_run[r]), ("one", one_run))
                for name, fn in pair:
                    start = clock()
                    fn(x)
                    times[name].append((clock() - start) * 1e3)
                if other is not None:  # a call at another size, then this one (switch), then again (steady)
                    one_run(other)
                    for name in ("switch", "steady"):
                        start = clock()
                        one_run(x)
                        times[name].append((clock() - start) * 1e3)
            one_ms, per_ms = spread(times["one"]), spread(times["per_config"])
            row = {"resolution": r, "batch": batch, "one_ms": one_ms, "per_config_ms": per_ms,
                   "ratio": round(one_ms["median"] / per_ms["median"], 4)}
            if other is not None:
                row["switch_ms"] = round(statistics.median(times["switch"]) - statistics.median(times["steady"]), 4)
            rows.append(row)
    sizes = {"one_file_bytes": Path(one["out"]).stat().st_size,
             "per_config_bytes": {str(r): p.stat().st_size for r, p in per_config.items()}}
    sizes["per_config_total_bytes"] = sum(sizes["per_config_bytes"].values())
    sizes["ratio"] = round(sizes["one_file_bytes"] / sizes["per_config_total_bytes"], 4)
    memory = {"one_file_bytes": rss_growth([Path(one["out"])], trained, channels, threads),
              "per_config_bytes": rss_growth([per_config[r] for r in trained], trained, channels, threads)}
    memory["ratio"] = round(memory["one_file_bytes"] / max(1, memory["per_config_bytes"]), 4)
    result = {"method": one["method"], "model": one["model"], "train_resolutions": trained,
              "blended_bn": one["blended_bn"], "generated_convs": one["generated_convs"], "rows": rows,
              "sizes": sizes, "memory": memory}
    print(table(result), flush=True)
    return result


def _metadata(path: Path) -> str:
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.get_modelmeta().custom_metadata_map["resnet_switch"]


def why_slower(result: dict[str, Any]) -> str:
    """Why the one file is slower than the folded per-configuration file (the table's note)."""
    bn = result["blended_bn"]
    why = (f"BN is not folded: each of the {bn} blended BN layers runs `w @ table` (4 MatMul of K x C) and a "
           "BatchNormalization whose parameters are computed per call, between its Conv and the Relu, so "
           "ONNX Runtime cannot fuse Conv+BN(+Relu) as it does in the folded file (constant BN)")
    if result["generated_convs"]:
        why += (f"; SAN: {result['generated_convs']} kernels are generated in the graph per call, so their convs "
                "also run on non-constant weights")
    return why + (". Measured alternatives (docs/deployment.md): BN as Mul+Add of the blended scale/shift and "
                  "folding the blended BN into the conv weights in the graph are both slower")
def table(result: dict[str, Any]) -> str:
    mib = 2 ** 20
    lines = [f"onnx bench: {result['method']} {result['model']}, trained {result['train_resolutions']}",
             "",
             "| resolution | batch | one file ms (min-max) | per-config folded ms (min-max) | one / per-config "
             "| switch ms |",
             "|---:|---:|---|---|---:|---:|"]
    for row in result["rows"]:
        a, b = row["one_ms"], row["per_config_ms"]
        ratio = f"{row['ratio']:.3f}"
        if row["ratio"] > SLOW:
            ratio += f" (+{100 * (row['ratio'] - 1):.0f}% *)"
        switch = f"{row['switch_ms']:+.3f}" if "switch_ms" in row else "-"
        lines.append(f"| {row['resolution']} | {row['batch']} | {a['median']:.3f} ({a['min']:.3f}-{a['max']:.3f}) | "
                     f"{b['median']:.3f} ({b['min']:.3f}-{b['max']:.3f}) | {ratio} | {switch} |")
    s, m = result["sizes"], result["memory"]
    if any(row["ratio"] > SLOW for row in result["rows"]):
        lines += ["", f"* over {SLOW:.2f}x: {why_slower(result)}."]
    lines += ["",
              f"size: one file {s['one_file_bytes'] / mib:.2f} MiB vs {len(s['per_config_bytes'])} per-configuration "
              f"files {s['per_config_total_bytes'] / mib:.2f} MiB ({s['ratio']:.3f}x)",
              f"resident memory (RSS growth, fresh process): one session {m['one_file_bytes'] / mib:.1f} MiB vs "
              f"{len(s['per_config_bytes'])} per-configuration sessions {m['per_config_bytes'] / mib:.1f} MiB "
              f"({m['ratio']:.3f}x)"]
    return "\n".join(lines)
