#!/usr/bin/env bash
# The main job over seeds: `make train`'s two trainings (RS-Net at 32..16 px, and at the same budget
# the I-Net trained at 32 px, both tested at 32..16 px; and the I-Net at lr 0.02 as a control) for SEEDS (default 0 1 2 3 4), then the
# report over seeds (mean, std, min, n; RS-Net - I-Net paired over seeds with its 95 % t interval).
# Two lanes (even / odd seeds) run side by side with one thread each (LANES=1: one lane, all threads).
# Resumable: a run whose directory holds results.csv is skipped, an unfinished one resumes from its
# own last.ckpt (ckpt_path=auto); `rm -rf experiments/main_job/runs` starts from scratch.
# Usage: bash experiments/main_job/run.sh [extra train overrides...]
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
HERE=experiments/main_job
OUT=$HERE/runs
SEEDS=${SEEDS:-"0 1 2 3 4"}
LANES=${LANES:-2}
export WANDB_MODE=${WANDB_MODE:-offline}
INET="method=individual data.resolutions=[32] data.test_resolutions=[32,28,24,20,16]"
INET_LR=0.1  # make train's I-Net lr (one loss; RS-Net's five summed losses at 0.02 take the same step per loss)

train() {  # train DIR OVERRIDES...
  local dir=$1; shift
  if [[ -f $dir/results.csv ]]; then echo "skip $dir (done)"; return; fi
  mkdir -p "$(dirname "$dir")"
  local start=$SECONDS
  $PY -m resnet_switch.train "$@" trainer.enable_progress_bar=false ckpt_path=auto hydra.run.dir=$dir > $dir.log 2>&1
  echo "$(date +%T) $dir done in $((SECONDS - start)) s"
}

lane() {  # lane K: the seeds at positions K, K+LANES, ...
  local i=0
  for s in $SEEDS; do
    if (( i % LANES == $1 )); then
      train $OUT/rsnet/s$s seed=$s "${@:2}"
      train $OUT/inet32/s$s seed=$s "${@:2}" $INET optim.lr=$INET_LR
      # control: the I-Net at RS-Net's lr 0.02 (make train's I-Net before; five times less step per loss)
      train $OUT/inet32_lr002/s$s seed=$s "${@:2}" $INET optim.lr=0.02 label=individual@32_lr0.02
    fi
    i=$((i + 1))
  done
}

if (( LANES > 1 )); then
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  for k in $(seq 0 $((LANES - 1))); do lane $k "$@" & done
  wait
else
  lane 0 "$@"
fi
$PY -m resnet_switch.report $OUT table=wide pair=[rsnet,individual@32] claims=$HERE/claims.yaml out=$HERE/results.md \
    csv=$HERE/summary.csv plot=$HERE/top1_vs_resolution.png title="make train over seeds ($SEEDS)"
