#!/usr/bin/env bash
# One recipe of the main job's diagnosis over seeds: `make train`'s RS-Net with extra overrides, two
# lanes of one thread; prints "NAME sS top1@32 top1@16 wall_s" per seed into diagnose/NAME.txt.
# Resumable: a seed whose run directory holds results.csv is only reported.
# Usage: bash experiments/main_job/diagnose.sh NAME "SEEDS" [overrides...]
#   e.g. bash experiments/main_job/diagnose.sh lr0.1_nokd "0 2" optim.lr=0.1 data.crop_scale=[0.25,1.0] method.distill=none
set -u
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
NAME=$1; SEEDS=$2; shift 2
OUT=experiments/main_job/diagnose  # git-ignored; outside runs/, which the report reads whole
export WANDB_MODE=${WANDB_MODE:-offline} OMP_NUM_THREADS=1
one() {
  local s=$1; shift; local d=$OUT/$NAME/s$s
  [[ -f $d/results.csv ]] || $PY -m resnet_switch.train seed=$s "$@" trainer.enable_progress_bar=false \
      ckpt_path=auto hydra.run.dir=$d > $d.log 2>&1
  echo "$NAME s$s $(awk -F, 'NR>1 && ($1==32||$1==16){printf "%.1f@%s ", $3, $1}' $d/results.csv)" \
       "$(grep -o '"wall_s": [0-9.]*' $d/run.json)"
}
mkdir -p $OUT/$NAME
lane() { local i=0; for s in $SEEDS; do (( i % 2 == $1 )) && one $s "${@:2}" >> $OUT/$NAME.txt; i=$((i + 1)); done; }
lane 0 "$@" & lane 1 "$@" &
wait
cat $OUT/$NAME.txt
