#!/usr/bin/env bash
# MutualNet vs US-Net on the embedded synthetic data, over SEEDS: ResNet-20 with 32 base channels,
# widths [0.25, 1.0] x resolutions 32..16 (US-Net trains every sub-network at 32 px only). Per
# (method, seed):
#   train     OUT/<method>_train/s<seed>  label <method>_train: the run's own test at the end (widths
#             {1, 0.625, 0.25} x [32, 28, 24, 20, 16])
#   evaluate  OUT/<method>/s<seed>        label <method>: the final model at widths [0.25, 0.5, 0.75, 1.0]
#             x [32, 28, 24, 20, 16] on the 2000 validation images, BN statistics per configuration
#             (those the checkpoint stores, the others recalibrated on 1024 training images)
#   query     OUT/<method>_query/s<seed>  the query table (accuracy vs MAdds frontier, width step 0.25,
#             budget 20M MAdds, no latency): query_table.md and query_frontier.png of that seed
# Then the report over seeds with claims.yaml's verdicts (on the evaluations' labels, mutualnet/usnet).
#
# Budget (the earlier single-seed record's): 4 epochs of 6400 generated images (100 steps of batch 64 per
# epoch), 2000 validation images, calibration on 1024 images. Recipe: the current defaults (SGD lr 0.02:
# both methods sum one loss per sub-network; crop [0.5, 1]); the record's "optim.lr=0.1
# data.crop_scale=[0.25,1.0]" is dropped. seed=S sets initialisation and data order, method.seed=S the
# width/resolution draws; the images are the same for every seed (data.synthetic.image_seed=0).
# Knobs: SEEDS ("0 1 2"), LANES (2: runs side by side, one thread each), EXTRA (appended to every
# training), EVAL_EXTRA (appended to every evaluation and query table; evaluate takes other keys than
# train, e.g. "limit_batches=2 calibration_samples=32"), OUT (experiments/synthetic_mutualnet/runs),
# RESULTS (where results.md, summary.csv and the plot go: experiments/synthetic_mutualnet), PY.
# Resumable: a finished training (its results.csv), evaluation (its eval_rows.csv) or query table (its
# query_table.csv) is skipped, an unfinished training resumes from its own last.ckpt
# (experiments/lib.sh); one job trains, evaluates and queries, so no lane evaluates a model another lane
# is still training. Stop it any time and run it again to go on.
# Time (measured 2026-12-07): 61 min on a 2-core machine with 2 lanes for 3 seeds (a training 13-22 min,
# its evaluation and query table ~3 min).
# Usage: bash experiments/synthetic_mutualnet/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=experiments/synthetic_mutualnet
OUT=${OUT:-$HERE/runs}
RESULTS=${RESULTS:-$HERE}
SEEDS=${SEEDS:-"0 1 2"}
EXTRA=${EXTRA:-}
EVAL_EXTRA=${EVAL_EXTRA:-}
# shellcheck source=SCRIPTDIR/../lib.sh
source experiments/lib.sh

RES_LIST="[32,28,24,20,16]"
WIDTHS="[0.25,0.5,0.75,1.0]"
# one line: job lines are read line by line
COMMON="task_name=synthetic_mutualnet trainer.max_epochs=4 data.train_samples=6400 data.val_samples=2000 optim.warmup_epochs=1"
COMMON+=" model.base_width=32 method.width_range=[0.25,1.0] data.resolutions=$RES_LIST calibration_samples=1024"

query() {  # query DIR CKPT: the query table of CKPT into DIR, skipped when DIR/query_table.csv exists
  local dir=$1 ckpt=$2
  [[ -f $dir/query_table.csv ]] && return 0
  # shellcheck disable=SC2086  # EVAL_EXTRA: overrides, one word each
  evaluate "$dir" "ckpt=$ckpt" query_table=true width_step=0.25 "test_resolutions=$RES_LIST" \
      latency_runs=0 calibration_samples=1024 budget.madds=20M $EVAL_EXTRA
}

# train_eval DIR NAME OVERRIDES...: train DIR, then evaluate its final model into OUT/NAME/<seed folder>
# and build its query table in OUT/NAME_query/<seed folder>
train_eval() {
  local dir=$1 name=$2
  shift 2
  local seed_dir=${dir##*/} ckpt=$dir/checkpoints/last.ckpt
  train "$dir" "$@" || return 1
  # shellcheck disable=SC2086  # EVAL_EXTRA: overrides, one word each
  evaluate "$OUT/$name/$seed_dir" "ckpt=$ckpt" "widths=$WIDTHS" "test_resolutions=$RES_LIST" \
      calibration_samples=1024 "label=$name" $EVAL_EXTRA \
      || echo "$(date +%T) FAILED $OUT/$name/$seed_dir (see $OUT/$name/$seed_dir.log)"
  query "$OUT/${name}_query/$seed_dir" "$ckpt" \
      || echo "$(date +%T) FAILED $OUT/${name}_query/$seed_dir (see $OUT/${name}_query/$seed_dir.log)"
}

job_list() {  # one line per (method, seed): DIR train_eval NAME OVERRIDES...; seed by seed
  local s m
  for s in $SEEDS; do
    for m in mutualnet usnet; do
      echo "$OUT/${m}_train/s$s train_eval $m $COMMON method=$m method.seed=$s seed=$s label=${m}_train $EXTRA"
    done
  done
}

run_jobs job_list

$PY -m resnet_switch.report "$OUT" table=wide claims=$HERE/claims.yaml "pair=[mutualnet,usnet]" \
    out="$RESULTS/results.md" csv="$RESULTS/summary.csv" plot="$RESULTS/synthetic_mutualnet.png" \
    plot_labels=[mutualnet,usnet] title="Synthetic data, MutualNet vs US-Net, widths 0.25-1.0 (seeds $SEEDS)"  # the plot: the evaluations (not each run's own test)
