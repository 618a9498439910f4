#!/usr/bin/env bash
# MutualNet vs US-Net on Fashion-MNIST (the small-budget study), over SEEDS. RS-Net, parallel training,
# the I-Nets and SAN moved to experiments/fashion_mnist_full (the full split, converged budget, 3 seeds);
# this runner keeps what that study lacks: the slimmable methods. Per seed and method:
#   train     OUT/<method>_train/s<seed>  label <method>_train: the run's own test at the end (widths
#             {1, 0.625, 0.25} x [28, 24, 20, 16, 12] on the 1000 validation images of training)
#   evaluate  OUT/<method>/s<seed>        label <method>: the final model at widths [0.25, 0.5, 0.75, 1.0]
#             x [28, 24, 20, 16, 12] on the full 10000-image test set, BN statistics per configuration
#             (those the checkpoint stores, the others recalibrated on 2048 training images)
# Then the report over seeds with claims.yaml's verdicts (on the evaluations' labels, mutualnet/usnet).
#
# Budget (the earlier record's): ResNet-20 with 8 base channels (8/16/32), a fixed subset of 6000
# training images, 4 epochs of batch 64 (372 steps), widths [0.25, 1.0] with channels rounded to
# multiples of 2 (method.divisor=2: the default 8 would make every width of an 8-channel stage 8
# channels), trained at [28, 24, 20, 16, 12] (US-Net: all its sub-networks at 28). Recipe: the current
# defaults (SGD lr 0.02: both methods sum one loss per sub-network; crop [0.5, 1]); seed=S sets the
# data order, method.seed=S the width/resolution draws.
# Knobs: SEEDS ("0 1 2"), LANES (2: runs side by side, one thread each), EXTRA (appended to every
# training), EVAL_EXTRA (appended to every evaluation; evaluate takes other keys than train, e.g.
# "limit_batches=2 calibration_samples=32"), OUT (experiments/fashion_mnist/runs), RESULTS (where
# results.md, summary.csv and the plot go: experiments/fashion_mnist), PY.
# Resumable: a finished training (its results.csv) or evaluation (its eval_rows.csv) is skipped, an
# unfinished training resumes from its own last.ckpt (experiments/lib.sh); one job trains and then
# evaluates, so no lane evaluates a model another lane is still training. Stop it any time and run it
# again to go on.
# Time (an estimate, not measured): the earlier record's 2 lanes of 11 trainings and their evaluations
# took ~2.5 h on a busy 2-core machine, MutualNet and US-Net roughly a fifth of each lane; 3 seeds x 2
# methods on 2 lanes: ~1 h.
# Data: Debian's dataset-fashion-mnist (sudo apt-get install dataset-fashion-mnist).
# Usage: bash experiments/fashion_mnist/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=experiments/fashion_mnist
OUT=${OUT:-$HERE/runs}
RESULTS=${RESULTS:-$HERE}
SEEDS=${SEEDS:-"0 1 2"}
EXTRA=${EXTRA:-}
EVAL_EXTRA=${EVAL_EXTRA:-}
# shellcheck source=../lib.sh
source experiments/lib.sh

RES_LIST=[28,24,20,16,12]
WIDTHS=[0.25,0.5,0.75,1.0]
# one line: job lines are read line by line
COMMON="task_name=fashion_mnist data=fashion_mnist model=resnet20 model.base_width=8 data.train_samples=6000 optim.warmup_epochs=1"
COMMON+=" data.val_samples=1000 data.batch_size=64 data.num_workers=0 trainer.max_epochs=4"
COMMON+=" data.resolutions=$RES_LIST method.width_range=[0.25,1.0] method.divisor=2"

train_eval() {  # train_eval DIR NAME OVERRIDES...: train DIR, then evaluate its final model into OUT/NAME/<seed folder>
  local dir=$1 name=$2
  shift 2
  local eval_dir=$OUT/$name/${dir##*/}
  train "$dir" "$@" || return 1
  # the full test set: +data.val_samples=10000 (evaluate keeps the run's own 1000 for a null value)
  # shellcheck disable=SC2086  # EVAL_EXTRA: overrides, one word each
  evaluate "$eval_dir" "ckpt=$dir/checkpoints/last.ckpt" "widths=$WIDTHS" "test_resolutions=$RES_LIST" \
      +data.val_samples=10000 "label=$name" $EVAL_EXTRA \
      || echo "$(date +%T) FAILED $eval_dir (see $eval_dir.log)"
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
    out="$RESULTS/results.md" csv="$RESULTS/summary.csv" plot="$RESULTS/fashion_mnist.png" \
    plot_labels=[mutualnet,usnet] title="Fashion-MNIST, 6000 images, MutualNet vs US-Net (seeds $SEEDS)"  # the plot: the evaluations (not each run's own test)
