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
PY=${PY:-.venv/bin/python}
HERE=experiments/method_model
OUT=$HERE/runs
SEEDS=${SEEDS:-"0 1 2"}
export WANDB_MODE=${WANDB_MODE:-offline} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PAIRS=${PAIRS:-"individual:resnet20 parallel:resnet20 rsnet:resnet20 san:resnet20 mutualnet:resnet20
  usnet:resnet20 snet:resnet20 rsnet:mobilenetv2 san:mobilenetv2 mutualnet:mobilenetv2 rsnet:mobilenetv1
  rsnet:preresnet20"}

train() {  # train METHOD MODEL SEED
  local method=$1 model=$2 seed=$3 dir=$OUT/$1_$2/s$3 extra=""
  [[ $method == individual ]] && extra="data.resolutions=[32] data.test_resolutions=[32,28,24,20,16]"
  if [[ -f $dir/results.csv ]]; then echo "skip $dir (done)"; return; fi
  mkdir -p "$(dirname "$dir")"
  $PY -m resnet_switch.train method=$method model=$model seed=$seed label=${method}_${model} $extra \
      trainer.enable_progress_bar=false ckpt_path=auto hydra.run.dir=$dir > $dir.log 2>&1
  echo "$(date +%T) $dir done"
}

lane() {  # lane K: every other (pair, seed)
  local i=0
  for s in $SEEDS; do
    for pair in $PAIRS; do
      if (( i % 2 == $1 )); then train ${pair%%:*} ${pair##*:} $s; fi
      i=$((i + 1))
    done
  done
}

lane 0 & lane 1 & wait
$PY -m resnet_switch.report $OUT table=wide out=$HERE/results.md csv=$HERE/summary.csv \
    title="method x backbone at the main job's budget (seeds $SEEDS)"
