#!/usr/bin/env bash
# Transfer from a switchable checkpoint vs training from scratch, on the embedded synthetic data, over
# SEEDS. Every run: MutualNet, ResNet-20 (16 base channels), widths [0.25, 1.0] x resolutions 32..16,
# BN recalibrated per configuration on 512 images. Per seed S (each seed has its own source, so the
# seeds are independent):
#   source    OUT/source/s<S>    label source: the 10-class set (5 shapes x vertical/horizontal stripes,
#             images data.synthetic.image_seed=0), 3 epochs of 6400 images, 2000 validation images
#   finetune  OUT/finetune/s<S>  label finetune: the 15-class set (the 5 checker classes added; the
#             classifier 10 -> 15 is replaced) drawn from other images (data.synthetic.image_seed=1: no
#             image is shared with the source's), started from OUT/source/s<S>/checkpoints/last.ckpt
#             (model.init.ckpt); 5 epochs of 1280 images (100 steps of 64), 2000 validation images,
#             validated at the end only
#   scratch   OUT/scratch/s<S>   label scratch: the same target run from the default initialisation
# Both target runs of a seed share seed, data order and recipe; only the initialisation differs. Each
# run's own test at the end (widths {1, 0.625, 0.25} x [32, 28, 24, 20, 16]) feeds the report, which
# gives claims.yaml's verdict on finetune vs scratch (the source rows are its own 10-class task).
#
# Budget (the earlier record's): as above. Recipe: the current defaults (SGD lr 0.02, MutualNet sums one
# loss per sub-network; crop [0.5, 1]); the record's "optim.lr=0.1 data.crop_scale=[0.25,1.0]" is
# dropped. seed=S sets initialisation and data order, method.seed=S the width/resolution draws.
# Knobs: SEEDS ("0 1 2"), LANES (2: runs side by side, one thread each), EXTRA (appended to every
# training), OUT (experiments/transfer/runs), RESULTS (where results.md, summary.csv and the plot go:
# experiments/transfer), PY.
# Resumable: a finished run (its results.csv) is skipped, an unfinished one resumes from its own
# last.ckpt (experiments/lib.sh); one job trains a seed's source and then fine-tunes from it, so no
# lane starts from a source another lane is still training. Stop it any time and run it again to go on.
# Time (measured 2026-12-07): 11 min on a 2-core machine with 2 lanes for 3 seeds (a source ~3.2 min,
# a target run ~1.1 min).
# Usage: bash experiments/transfer/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=experiments/transfer
OUT=${OUT:-$HERE/runs}
RESULTS=${RESULTS:-$HERE}
SEEDS=${SEEDS:-"0 1 2"}
EXTRA=${EXTRA:-}
# shellcheck source=SCRIPTDIR/../lib.sh
source experiments/lib.sh

# one line each: job lines are read line by line
COMMON="task_name=transfer method=mutualnet method.width_range=[0.25,1.0] data.resolutions=[32,28,24,20,16]"
COMMON+=" calibration_samples=512 optim.warmup_epochs=1"
SOURCE="data.synthetic.num_classes=10 data.synthetic.image_seed=0 trainer.max_epochs=3 data.train_samples=6400"
SOURCE+=" data.val_samples=2000"
TARGET="data.synthetic.num_classes=15 data.synthetic.image_seed=1 trainer.max_epochs=5 data.train_samples=1280"
TARGET+=" data.val_samples=2000 trainer.check_val_every_n_epoch=5"

finetune() {  # finetune DIR SEED: the seed's source (OUT/source/s<SEED>), then DIR fine-tuned from it
  local dir=$1 s=$2 src=$OUT/source/s$2
  # shellcheck disable=SC2086  # COMMON, SOURCE, TARGET, EXTRA: overrides, one word each
  if ! train "$src" $COMMON $SOURCE method.seed=$s seed=$s label=source $EXTRA; then
    echo "$(date +%T) FAILED $src (see $src.log)"
    return 1
  fi
  # shellcheck disable=SC2086
  train "$dir" $COMMON $TARGET method.seed=$s seed=$s label=finetune "model.init.ckpt=$src/checkpoints/last.ckpt" $EXTRA
}

job_list() {  # one line per target run, seed by seed: DIR finetune SEED | DIR train OVERRIDES...
  local s
  for s in $SEEDS; do
    echo "$OUT/finetune/s$s finetune $s"
    echo "$OUT/scratch/s$s train $COMMON $TARGET method.seed=$s seed=$s label=scratch $EXTRA"
  done
}

run_jobs job_list

$PY -m resnet_switch.report "$OUT" table=wide claims=$HERE/claims.yaml "pair=[finetune,scratch]" \
    out="$RESULTS/results.md" csv="$RESULTS/summary.csv" plot="$RESULTS/transfer.png" plot_labels=[finetune,scratch] \
    title="15-class target, fine-tuned from the 10-class MutualNet vs scratch (seeds $SEEDS)"  # plot: the target runs
