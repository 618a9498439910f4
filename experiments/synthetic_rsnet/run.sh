#!/usr/bin/env bash
# RS-Net vs the individual networks (I-Nets) on the embedded synthetic data, over SEEDS. Per seed:
#   OUT/inet<R>/s<seed>  label inet<R>: the I-Net trained at R px (method=individual, R in 32 28 24 20 16)
#   OUT/rsnet/s<seed>    label rsnet:   one RS-Net trained at 32..16 px (MRED distill=full, private BN)
# every run tested at the end at 32, 28, 24, 20 and 16 px on the 2000 validation images (results.csv:
# one row per resolution). Then the report over seeds with claims.yaml's verdicts.
#
# Budget (the earlier record's): ResNet-20 (16 base channels), 5 epochs of 6400 generated images,
# batch 64 (500 steps), 2000 validation images. Recipe: the current defaults (crop [0.5, 1], SGD
# cosine, 1 warm-up epoch); RS-Net at the default lr 0.02 (it sums one loss per resolution), the
# I-Nets at lr 0.1 (one loss: the per-loss rule of `make train`, the Makefile's INET32).
# Knobs: SEEDS ("0 1 2"), LANES (2: runs side by side, one thread each), EXTRA (appended to every
# training, e.g. a smoke test's "trainer.max_epochs=1 trainer.limit_train_batches=2 ..."), OUT
# (experiments/synthetic_rsnet/runs: one folder per run and seed), RESULTS (where results.md,
# summary.csv and the plot go: experiments/synthetic_rsnet), PY.
# Resumable: a finished run (its results.csv) is skipped, an unfinished one resumes from its own
# last.ckpt (experiments/lib.sh); stop it any time and run it again to go on.
# Time: 59 min for 3 seeds with 2 lanes on a 2-core machine with other trainings beside it (README).
# Usage: bash experiments/synthetic_rsnet/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=experiments/synthetic_rsnet
OUT=${OUT:-$HERE/runs}
RESULTS=${RESULTS:-$HERE}
SEEDS=${SEEDS:-"0 1 2"}
# shellcheck source=../lib.sh
source experiments/lib.sh

# Job lines carry only plain words (the kind, R, the seed); the overrides are built here, quoted.
# EXTRA is split into words without globbing (an override such as data.resolutions=[32] stays as is).
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"
COMMON=(task_name=synthetic_rsnet trainer.max_epochs=5 data.train_samples=6400 data.val_samples=2000 optim.warmup_epochs=1
        "data.test_resolutions=[32,28,24,20,16]")
RES="32 28 24 20 16"

inet() {  # inet DIR R SEED: the I-Net trained at R px
  train "$1" "${COMMON[@]}" method=individual "data.resolutions=[$2]" optim.lr=0.1 seed="$3" label="inet$2" \
      "${EXTRA_ARGS[@]}"
}

rsnet() {  # rsnet DIR SEED: RS-Net at the default resolutions 32..16 and lr 0.02
  train "$1" "${COMMON[@]}" method=rsnet seed="$2" label=rsnet "${EXTRA_ARGS[@]}"
}

jobs_list() {  # "DIR COMMAND ARGS" per run, the longest (RS-Net) first in each seed
  local s r
  for s in $SEEDS; do
    echo "$OUT/rsnet/s$s rsnet $s"
    for r in $RES; do echo "$OUT/inet$r/s$s inet $r $s"; done
  done
}

run_jobs jobs_list
$PY -m resnet_switch.report "$OUT" table=wide claims=$HERE/claims.yaml "pair=[rsnet,inet32]" \
    out="$RESULTS/results.md" csv="$RESULTS/summary.csv" plot="$RESULTS/synthetic_rsnet.png" \
    title="RS-Net vs I-Nets, synthetic data, 5 epochs (seeds $SEEDS)"
