#!/usr/bin/env bash
# Every method x backbone pair the README lists, at the main job's budget (`make train`'s defaults:
# the embedded data at 32..16 px, 3 epochs of 80 steps of batch 64): top-1 at the highest and the
# lowest resolution and the training wall time, over SEEDS (default 0 1 2), then the report.
# Two lanes side by side with one thread each (wall times are per run, one thread, on a 2-core
# machine shared by the two lanes). Resumable: a finished run (results.csv) is skipped, an unfinished
# one resumes from its own last.ckpt (ckpt_path=auto).
# Usage: bash experiments/method_model/run.sh        (PAIRS="rsnet:resnet20 san:mobilenetv2" for a subset)
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=experiments/method_model
OUT=${OUT:-$HERE/runs}
RESULTS=${RESULTS:-$HERE}
SEEDS=${SEEDS:-"0 1 2"}
EXTRA=${EXTRA:-}
PAIRS=${PAIRS:-"individual:resnet20 parallel:resnet20 rsnet:resnet20 san:resnet20 mutualnet:resnet20
  usnet:resnet20 snet:resnet20 rsnet:mobilenetv2 san:mobilenetv2 mutualnet:mobilenetv2 rsnet:mobilenetv1
  rsnet:preresnet20"}
# shellcheck source=../lib.sh
source experiments/lib.sh

job_list() {  # one line per (pair, seed): DIR train OVERRIDES...; seed by seed
  local s pair method model extra
  for s in $SEEDS; do
    for pair in $PAIRS; do
      method=${pair%%:*} model=${pair##*:} extra=""
      [[ $method == individual ]] && extra="data.resolutions=[32] data.test_resolutions=[32,28,24,20,16] optim.lr=0.1"
      echo "$OUT/${method}_$model/s$s train method=$method model=$model seed=$s label=${method}_$model $extra $EXTRA"
    done
  done
}

run_jobs job_list
$PY -m resnet_switch.report "$OUT" table=wide out="$RESULTS/results.md" csv="$RESULTS/summary.csv" \
    title="method x backbone at the main job's budget (seeds $SEEDS)"
