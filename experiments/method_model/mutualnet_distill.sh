#!/usr/bin/env bash
# Why MutualNet stalls at make train's budget: ResNet-20, the default recipe (240 steps, lr 0.02), with
# inplace distillation (the default: sub-networks learn the full network's soft predictions, label
# mutualnet_inplace_kd) against sub-networks learning from the labels (method.inplace_distill=false,
# label mutualnet_ce) and against inplace distillation after one epoch of the sub-networks on the labels
# (method.distill_warmup_epochs=1: the first of the three epochs, label mutualnet_kd_warmup), seeds 0..4;
# then the paired report into mutualnet_distill.md.
# Resumable (experiments/lib.sh); ~4 min a run, two side by side on a 2-core machine (seed 0 alone: 3:53).
# Knobs: SEEDS, VARIANTS (inplace_kd ce kd_warmup), OUT (run folders), RESULTS (where the report goes),
# LANES, PY.
# Usage: bash experiments/method_model/mutualnet_distill.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=experiments/method_model
OUT=${OUT:-$HERE/diagnose/mutualnet_distill}
RESULTS=${RESULTS:-$HERE}  # where mutualnet_distill.md goes
SEEDS=${SEEDS:-"0 1 2 3 4"}
VARIANTS=${VARIANTS:-"inplace_kd ce kd_warmup"}
# shellcheck source=../lib.sh
source experiments/lib.sh

declare -A OVERRIDES=([inplace_kd]="" [ce]="method.inplace_distill=false" [kd_warmup]="method.distill_warmup_epochs=1")

job_list() {
  local s v
  for s in $SEEDS; do
    for v in $VARIANTS; do
      echo "$OUT/mutualnet_$v/s$s train method=mutualnet ${OVERRIDES[$v]} seed=$s label=mutualnet_$v"
    done
  done
}

pairs() {  # the report's pairs among VARIANTS: ce - inplace_kd, kd_warmup - inplace_kd, kd_warmup - ce
  local pair out=()
  for pair in ce:inplace_kd kd_warmup:inplace_kd kd_warmup:ce; do
    [[ " $VARIANTS " == *" ${pair%:*} "* && " $VARIANTS " == *" ${pair#*:} "* ]] \
        && out+=("[mutualnet_${pair%:*},mutualnet_${pair#*:}]")
  done
  local IFS=,
  echo "[${out[*]}]"
}

run_jobs job_list
$PY -m resnet_switch.report "$OUT" table=wide "pair=$(pairs)" out="$RESULTS/mutualnet_distill.md" \
    title="MutualNet ResNet-20 at make train's budget: sub-networks on labels, inplace distillation, and distillation after a 1-epoch label warm-up (seeds $SEEDS)"
