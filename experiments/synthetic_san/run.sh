#!/usr/bin/env bash
# SAN vs the individual networks (I-Nets) on the embedded synthetic data, at the training resolutions
# AND the ones in between (the pattern of SAN Table 1), SAN with proxy and with ideal inference, over
# SEEDS. Per seed:
#   OUT/san/s<seed>        label san:       SAN trained at 32..16 px (linear meta-learners, private BN,
#                                           top-down scale distillation), its own test at 32..16 px
#   OUT/san_proxy/s<seed>  label san_proxy: that SAN evaluated at TEST with bn_mode=proxy
#   OUT/san_ideal/s<seed>  label san_ideal: the same with bn_mode=ideal (BN recalibrated on 2048 images)
#   OUT/inet<R>/s<seed>    label inet<R>:   the I-Net trained at R px (R in 32 28 24 20 16), tested at TEST
# TEST = 32, 30, 28, 26, 24, 22, 20, 18, 16 px, on the 2000 validation images. Then the report over
# seeds with claims.yaml's verdicts.
# The I-Nets are trained here (not taken from experiments/synthetic_rsnet): they must be tested at the
# in-between resolutions too, which train's data.test_resolutions does at the end of training; taking
# synthetic_rsnet's checkpoints would make this runner wait for that one, for the same SEEDS, on the
# same clone (checkpoints are not committed). The price: the five I-Nets again, ~1.2x one RS-Net a seed.
#
# Budget (the earlier record's): ResNet-20 (16 base channels), 5 epochs of 6400 generated images,
# batch 64 (500 steps), 2000 validation images. Recipe: the current defaults (crop [0.5, 1], SGD
# cosine, 1 warm-up epoch); SAN at the default lr 0.02 (it sums one loss per resolution), the I-Nets
# at lr 0.1 (one loss: the per-loss rule of `make train`, the Makefile's INET32).
# Knobs: SEEDS ("0 1 2"), LANES (2: runs side by side, one thread each), EXTRA (appended to every
# training; its words that evaluate also takes, calibration_samples= and limit_batches=, to every
# evaluation too: evaluate refuses train's keys such as trainer.max_epochs), EVAL_EXTRA (appended to
# every evaluation), OUT (experiments/synthetic_san/runs: one folder per run and seed), RESULTS (where
# results.md, summary.csv and the plot go: experiments/synthetic_san), PY.
# Resumable: a finished training (its results.csv) or evaluation (its eval_rows.csv) is skipped, an
# unfinished training resumes from its own last.ckpt (experiments/lib.sh); one job trains SAN and then
# evaluates it, so no lane evaluates a model another lane is still training. Stop it any time and run
# it again to go on.
# Time (measured 2026-12-07): 56 min on a 2-core machine with 2 lanes for 3 seeds (a third training
# beside it most of the time): SAN ~13 min a seed plus ~1 min of evaluations, the five I-Nets ~24 min.
# Usage: bash experiments/synthetic_san/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=experiments/synthetic_san
OUT=${OUT:-$HERE/runs}
RESULTS=${RESULTS:-$HERE}
SEEDS=${SEEDS:-"0 1 2"}
# shellcheck source=../lib.sh
source experiments/lib.sh

# Job lines carry only plain words (the kind, R, the seed); the overrides are built here, quoted.
# EXTRA is split into words without globbing (an override such as data.resolutions=[32] stays as is).
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"
read -r -a EVAL_ARGS <<< "${EVAL_EXTRA:-}"
for word in "${EXTRA_ARGS[@]}"; do
  case $word in calibration_samples=* | limit_batches=*) EVAL_ARGS=("$word" "${EVAL_ARGS[@]}") ;; esac
done
TEST="[32,30,28,26,24,22,20,18,16]"
COMMON=(task_name=synthetic_san trainer.max_epochs=5 data.train_samples=6400 data.val_samples=2000 optim.warmup_epochs=1)
RES="32 28 24 20 16"

inet() {  # inet DIR R SEED: the I-Net trained at R px, tested at TEST
  train "$1" "${COMMON[@]}" method=individual "data.resolutions=[$2]" "data.test_resolutions=$TEST" \
      optim.lr=0.1 seed="$3" label="inet$2" "${EXTRA_ARGS[@]}"
}

san() {  # san DIR SEED: SAN at the default resolutions 32..16 and lr 0.02, then its proxy and ideal evaluations
  local mode
  train "$1" "${COMMON[@]}" method=san seed="$2" label=san "${EXTRA_ARGS[@]}" || return 1
  for mode in proxy ideal; do  # label: the run's, with _<bn_mode> (san_proxy, san_ideal)
    evaluate "$OUT/san_$mode/s$2" ckpt="$1/checkpoints/last.ckpt" "test_resolutions=$TEST" bn_mode=$mode \
        calibration_samples=2048 "${EVAL_ARGS[@]}" || return 1
  done
}

jobs_list() {  # "DIR COMMAND ARGS" per job, the longest (SAN and its evaluations) first in each seed
  local s r
  for s in $SEEDS; do
    echo "$OUT/san/s$s san $s"
    for r in $RES; do echo "$OUT/inet$r/s$s inet $r $s"; done
  done
}

run_jobs jobs_list
$PY -m resnet_switch.report "$OUT" table=wide claims=$HERE/claims.yaml "pair=[san_ideal,san_proxy]" \
    out="$RESULTS/results.md" csv="$RESULTS/summary.csv" plot="$RESULTS/synthetic_san.png" \
    title="SAN vs I-Nets, synthetic data, 5 epochs (seeds $SEEDS)"
