#!/usr/bin/env bash
# make gpu-check: every CUDA path of resnet_switch (tests, training per method/precision/format,
# DDP with NCCL, loader with GPU JPEG decode, CUDA memory, train-step speed) in ~8 minutes on one GPU.
# One JSON line per check, then a summary table (docs/benchmarks.md). Without a CUDA device it prints
# "gpu-check: no CUDA device, skipped" and exits 0. Options: key=value, e.g. parts=[tests,train] budget_s=600.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
export WANDB_MODE="${WANDB_MODE:-offline}"
exec "$PY" -m resnet_switch.gpu_check "$@"
