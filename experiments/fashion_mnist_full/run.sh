#!/usr/bin/env bash
# Converged Fashion-MNIST: the full 60000 / 10000 split, ResNet-20, resolutions RES, SEEDS, EPOCHS.
# Per seed: the I-Nets at each resolution (each tested at every resolution), parallel training with
# private and with shared BN, RS-Net with vanilla and with full MRED, SAN (tested with proxy and with
# ideal inference at the training resolutions and the ones in between). Then the budget study: the
# I-Nets and RS-Net (full MRED) at BUDGETS epochs (the gap against the budget), and one hypothesis for
# the gap: RS-Net at the I-Nets' learning rate (rsnet_full_lr_one). collect.py gathers
# results.csv (one row per run, seed, method, resolution); the report command makes results.md with
# claims.yaml's verdicts.
#
# Resumable (experiments/lib.sh): a finished run (its results.csv, or its rows in the committed
# results.csv: another clone's run) is skipped, an unfinished one resumes from its own last.ckpt
# (ckpt_path=auto); stop it any time and run it again to go on. results.csv is refreshed after every run.
# Knobs: SEEDS, EPOCHS, BUDGETS, RES, DEVICE, PRECISION, LR_ONE, LANES, OUT (run folders), RESULTS
# (results.csv, results.md, plots), EXTRA (appended to every training) and EVAL_EXTRA (to every
# evaluation), e.g. for a smoke test.
#   DEVICE=cpu  (default) LANES=2 lanes side by side, one thread each, batch 128.
#   DEVICE=cuda LANES=4 lanes on the one GPU, trainer=gpu, batch 512 (lr x4, linear scaling), 3 loader
#               workers per lane; the workers crop uint8 images at 28 px, the GPU normalises and resizes
#               them (data.resize_on=device). Its runs and results go to runs_cuda/ and cuda/ (OUT and
#               RESULTS), apart from the CPU record. Not timed yet (no GPU lent to the sessions that built it).
#   PRECISION=bf16-mixed (default, both devices): 1.8x faster than 32-true on a CPU with AMX (measured:
#   100 steps of the I-Net at 28 px, one thread); on a CPU without bf16 units set PRECISION=32-true.
# Learning rate: LR_ONE for a single-loss run (the I-Nets); the multi-resolution methods sum one loss
# per resolution, so they get LR_ONE / (number of resolutions): the same step per loss (the rule of
# `make train`, experiments/main_job/README.md).
# Warm-up: 1 epoch (pinned; the default is a quarter epoch, for make train's 3-epoch job).
# Budget: EPOCHS=5 epochs of batch 128 with train crops of [0.8, 1] of the image area: the I-Net at
# 28 px, seed 0, reached 92.3 % (90.0 % at 3 epochs with crop [0.5, 1]; 91.2 % at 5 epochs with crop
# [0.5, 1]); BUDGETS="2 3 5" (the default) fit one 3-hour session on 2 cores with the rest; 10 epochs
# (BUDGETS="2 3 5 10": ~4 core-hours more) would say how far from converged 5 epochs are.
# Usage: bash experiments/fashion_mnist_full/run.sh      (SEEDS="0 1 2" EPOCHS=5 BUDGETS="2 3 5")
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=experiments/fashion_mnist_full
DEVICE=${DEVICE:-cpu}
# the GPU profile keeps its own runs and record: the CPU record lists every run of the study, so
# sharing it would skip them all
if [[ $DEVICE == cuda ]]; then OUT=${OUT:-$HERE/runs_cuda} RESULTS=${RESULTS:-$HERE/cuda}; fi
OUT=${OUT:-$HERE/runs}
RESULTS=${RESULTS:-$HERE}
RECORD=$RESULTS/results.csv  # the committed record: its runs are skipped (lib.sh)
SEEDS=${SEEDS:-"0 1 2"}
EPOCHS=${EPOCHS:-5}
BUDGETS=${BUDGETS:-"2 3 5"}
RES=${RES:-"28 20 12"}
PRECISION=${PRECISION:-bf16-mixed}
EXTRA=${EXTRA:-}
EVAL_EXTRA=${EVAL_EXTRA:-}
if [[ $DEVICE == cuda ]]; then
  LANES=${LANES:-4}  # ResNet-20 at 28 px leaves the GPU idle most of a step: lanes share it
  LR_ONE=${LR_ONE:-0.4}
  SPEED="trainer=gpu data.batch_size=512 data.num_workers=3"
else
  LR_ONE=${LR_ONE:-0.1}
  SPEED="trainer=cpu data.batch_size=128 data.num_workers=0"
fi
# shellcheck source=../lib.sh
source experiments/lib.sh
RES_LIST="[$(tr ' ' ',' <<< "$RES")]"
TEST_SAN=[28,24,20,16,12]
LR_MULTI=$($PY -c "print(round($LR_ONE / $(wc -w <<< "$RES"), 4))")
ONE="optim.lr=$LR_ONE"
MULTI="optim.lr=$LR_MULTI"
# every run: the whole training set, the whole test set at the end, validation only at the end
COMMON="task_name=fashion_mnist_full data=fashion_mnist model=resnet20 data.crop_scale=[0.8,1.0]
        data.resolutions=$RES_LIST data.test_resolutions=$RES_LIST trainer.num_sanity_val_steps=0
        trainer.precision=$PRECISION optim.warmup_epochs=1 $SPEED"

collect() {  # results.csv from every finished run (and the record's other rows)
  $PY $HERE/collect.py --epochs "$EPOCHS" --runs "$OUT" --out "$RECORD" > /dev/null
}

run() {  # run DIR EPOCHS OVERRIDES...: one training of the study, then results.csv
  local dir=$1 epochs=$2
  shift 2
  # shellcheck disable=SC2086  # COMMON, EXTRA: overrides, one word each
  train "$dir" $COMMON trainer.max_epochs="$epochs" trainer.check_val_every_n_epoch="$epochs" "$@" $EXTRA || return 1
  collect
}

san() {  # san DIR EPOCHS OVERRIDES...: SAN, then its proxy and ideal evaluations (labels san_proxy, san_ideal)
  local mode
  finished "$1/eval_proxy" eval_rows.csv && finished "$1/eval_ideal" eval_rows.csv && return 0  # (lib.sh)
  run "$@" || return 1
  for mode in proxy ideal; do
    # shellcheck disable=SC2086
    evaluate "$1/eval_$mode" ckpt="$1/checkpoints/last.ckpt" test_resolutions=$TEST_SAN bn_mode=$mode $EVAL_EXTRA \
        || return 1
  done
  collect
}

study() {  # study SEED: every run of one seed at EPOCHS, one job per line (DIR COMMAND EPOCHS OVERRIDES...)
  local s=$1 d=$OUT/e$EPOCHS/s$1 r
  for r in $RES; do echo "$d/inet$r run $EPOCHS seed=$s method=individual data.resolutions=[$r] $ONE label=inet$r"; done
  echo "$d/parallel_private run $EPOCHS seed=$s method=parallel method.private_bn=true $MULTI label=parallel_private"
  echo "$d/parallel_shared run $EPOCHS seed=$s method=parallel method.private_bn=false $MULTI label=parallel_shared"
  echo "$d/rsnet_vanilla run $EPOCHS seed=$s method=rsnet method.distill=vanilla $MULTI label=rsnet_vanilla"
  echo "$d/rsnet_full run $EPOCHS seed=$s method=rsnet method.distill=full $MULTI label=rsnet_full"
  echo "$d/san san $EPOCHS seed=$s method=san $MULTI label=san"
}

budget() {  # budget SEED EPOCHS: the I-Nets and RS-Net (full MRED) at another budget than EPOCHS
  local s=$1 e=$2 r
  for r in $RES; do echo "$OUT/e$e/s$s/inet$r run $e seed=$s method=individual data.resolutions=[$r] $ONE label=inet$r"; done
  echo "$OUT/e$e/s$s/rsnet_full run $e seed=$s method=rsnet method.distill=full $MULTI label=rsnet_full"
}

hypothesis() {  # hypothesis SEED: RS-Net trains at the I-Nets' lr (LR_ONE, not divided by the number of resolutions)
  echo "$OUT/e$EPOCHS/s$1/rsnet_full_lr_one run $EPOCHS seed=$1 method=rsnet method.distill=full $ONE label=rsnet_full_lr_one"
}

job_list() {  # the whole study, most needed first: main runs, the smaller budgets, the lr test, the larger budgets
  local s e
  for s in $SEEDS; do study "$s"; done
  for e in $BUDGETS; do
    (( e < EPOCHS )) && for s in $SEEDS; do budget "$s" "$e"; done
  done
  for s in $SEEDS; do hypothesis "$s"; done
  for e in $BUDGETS; do
    (( e > EPOCHS )) && for s in $SEEDS; do budget "$s" "$e"; done
  done
  return 0
}

run_jobs job_list
collect
# results.md and the plot: the study's runs at EPOCHS; results_budget.md: every run, the budget claims
MAIN="[$(for r in $RES; do printf 'inet%s,' "$r"; done)parallel_private,parallel_shared,rsnet_vanilla,rsnet_full,san_proxy,san_ideal]"
$PY -m resnet_switch.report "$RECORD" table=wide labels="$MAIN" claims=$HERE/claims.yaml out="$RESULTS/results.md" \
    plot="$RESULTS/top1_vs_resolution.png" title="Fashion-MNIST, full split, $EPOCHS epochs (seeds $SEEDS)"
$PY -m resnet_switch.report "$RECORD" claims=$HERE/claims_budget.yaml out="$RESULTS/results_budget.md" \
    title="RS-Net - I-Net at the I-Net's resolution, by budget (seeds $SEEDS)"
