#!/usr/bin/env bash
# Why MutualNet stalls at make train's budget: ResNet-20, the default recipe (240 steps, lr 0.02), with
# inplace distillation (the default: sub-networks learn the full network's soft predictions, label
# mutualnet_inplace_kd) against sub-networks learning from the labels (method.inplace_distill=false,
# label mutualnet_ce), seeds 0..4; then the paired report into mutualnet_distill.md.
# Resumable (experiments/lib.sh); ~4 min a run, two side by side on a 2-core machine (seed 0 alone: 3:53).
# Knobs: SEEDS, OUT (run folders), RESULTS (where the report goes), LANES, PY.
# Usage: bash experiments/method_model/mutualnet_distill.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=experiments/method_model
OUT=${OUT:-$HERE/diagnose/mutualnet_distill}
RESULTS=${RESULTS:-$HERE}  # where mutualnet_distill.md goes
SEEDS=${SEEDS:-"0 1 2 3 4"}
# shellcheck source=../lib.sh
source experiments/lib.sh

job_list() {
  local s
  for s in $SEEDS; do
    echo "$OUT/mutualnet_inplace_kd/s$s train method=mutualnet seed=$s label=mutualnet_inplace_kd"
    echo "$OUT/mutualnet_ce/s$s train method=mutualnet method.inplace_distill=false seed=$s label=mutualnet_ce"
  done
}

run_jobs job_list
$PY -m resnet_switch.report "$OUT" table=wide "pair=[mutualnet_ce,mutualnet_inplace_kd]" out="$RESULTS/mutualnet_distill.md" \
    title="MutualNet ResNet-20 at make train's budget: sub-networks on labels vs inplace distillation (seeds $SEEDS)"
