#!/usr/bin/env bash
# Fashion-MNIST, the full 60000 / 10000 split, ResNet-20, resolutions RES, SEEDS, EPOCHS.
# 1. Selection on a held-out split (never the test set): the I-Net at 28 px, seed 0, trained on all but
#    HOLDOUT training images and scored on those (data.holdout), one axis at a time around (LR_ONE,
#    CROP_MIN): lr x0.5 / x1 / x2 (SELECT_LRS), crop [0.5, 1]; selection.csv. The runner stops when the
#    held-out split picks another lr or crop than LR_ONE / CROP_MIN and says how to rerun.
# 2. Per seed, the I-Nets at each resolution (each tested at every resolution) and, for the PRIMARY arm
#    (the papers' protocol: every method with the I-Nets' lr LR_ONE, schedule, batch and epochs),
#    parallel training with private / shared BN, RS-Net with vanilla / full MRED and SAN (tested with
#    proxy and ideal inference at the training resolutions and between): labels *_lr_one. The SECONDARY
#    arm gives the multi-resolution methods LR_ONE / (number of resolutions): the "same step per loss"
#    rule of `make train` (labels without _lr_one).
# 3. Budgets: the I-Nets and RS-Net (lr / 3) at the BUDGETS below EPOCHS; the I-Nets and RS-Net (lr
#    LR_ONE) at the BUDGETS above it (10: is EPOCHS near convergence?), the I-Net at 28 px first.
# collect.py gathers results.csv (one row per run, seed, method, resolution) and selection.csv;
# report.sh makes results.md (primary), results_secondary.md, results_budget.md and selection.md.
#
# Resumable (experiments/lib.sh): a finished run (its results.csv, or its rows in the committed
# results.csv / selection.csv: another clone's run) is skipped, an unfinished one resumes from its own
# last.ckpt (ckpt_path=auto); stop it any time and run it again to go on. The records are refreshed
# after every run.
# Knobs: SEEDS, EPOCHS, BUDGETS, RES, LR_ONE, CROP_MIN, HOLDOUT, SELECT_LRS, DEVICE, PRECISION, LANES,
# OUT (run folders), RESULTS (records, tables, plots), EXTRA (appended to every training) and
# EVAL_EXTRA (to every evaluation), e.g. for a smoke test.
#   DEVICE=cpu  (default) LANES=2 lanes side by side, one thread each, batch 128.
#   DEVICE=cuda LANES=4 lanes on the one GPU, trainer=gpu, batch 512 (lr x4, linear scaling), 3 loader
#               workers per lane; the workers crop uint8 images at 28 px, the GPU normalises and resizes
#               them (data.resize_on=device). Its runs and results go to runs_cuda/ and cuda/ (OUT and
#               RESULTS), apart from the CPU record. Not timed yet (no GPU lent to the sessions that built it).
#   PRECISION=bf16-mixed (default, both devices): 1.8x faster than 32-true on a CPU with AMX (measured:
#   100 steps of the I-Net at 28 px, one thread); on a CPU without bf16 units set PRECISION=32-true.
# Warm-up: 1 epoch (pinned; the default is a quarter epoch, for make train's 3-epoch job).
# Usage: bash experiments/fashion_mnist_full/run.sh      (SEEDS="0 1 2" EPOCHS=5 BUDGETS="2 3 5 10")
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
BUDGETS=${BUDGETS:-"2 3 5 10"}
CROP_MIN=${CROP_MIN:-0.8}
HOLDOUT=${HOLDOUT:-5000}
SELECTION=$RESULTS/selection.csv  # the selection runs' validation figures (never the test set)
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
SELECT_LRS=${SELECT_LRS:-"$LR_ONE / 2, $LR_ONE, $LR_ONE * 2"}  # python expressions, comma-separated
# shellcheck source=../lib.sh
source experiments/lib.sh
RES_LIST="[$(tr ' ' ',' <<< "$RES")]"
TEST_SAN=[28,24,20,16,12]
LR_MULTI=$($PY -c "print(round($LR_ONE / $(wc -w <<< "$RES"), 4))")
ONE="optim.lr=$LR_ONE"
MULTI="optim.lr=$LR_MULTI"
# every run: the whole training set, the whole test set at the end, validation only at the end
COMMON="task_name=fashion_mnist_full data=fashion_mnist model=resnet20 data.crop_scale=[$CROP_MIN,1.0]
        data.resolutions=$RES_LIST data.test_resolutions=$RES_LIST trainer.num_sanity_val_steps=0
        trainer.precision=$PRECISION optim.warmup_epochs=1 $SPEED"

collect() {  # results.csv and selection.csv from every finished run (and the records' other rows)
  $PY $HERE/collect.py --epochs "$EPOCHS" --runs "$OUT" --out "$RECORD" --selection "$SELECTION" > /dev/null
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

pick() {  # pick DIR EPOCHS LR CROP_MIN: the I-Net at 28 px, seed 0, trained on all but HOLDOUT training
  # images and scored on those (selection.csv, never the test set)
  local dir=$1 epochs=$2 lr=$3 crop=$4
  # shellcheck disable=SC2086
  RECORD=$SELECTION train "$dir" $COMMON seed=0 method=individual data.resolutions=[28] data.test_resolutions=[28] \
      data.holdout="$HOLDOUT" data.crop_scale="[$crop,1.0]" optim.lr="$lr" trainer.max_epochs="$epochs" \
      trainer.check_val_every_n_epoch="$epochs" label=select $EXTRA || return 1
  collect
}

select_jobs() {  # the selection on the held-out split, one axis at a time around (LR_ONE, CROP_MIN, EPOCHS)
  local lr crop
  for lr in $($PY -c "print(*[round(x, 4) for x in ($SELECT_LRS)])"); do
    echo "$OUT/select/lr${lr}_crop${CROP_MIN}_e$EPOCHS pick $EPOCHS $lr $CROP_MIN"
  done
  for crop in 0.5 0.8; do
    [[ $crop == "$CROP_MIN" ]] || echo "$OUT/select/lr${LR_ONE}_crop${crop}_e$EPOCHS pick $EPOCHS $LR_ONE $crop"
  done
}

check_selection() {  # the study's LR_ONE and CROP_MIN must be what the held-out split picks at EPOCHS
  $PY - "$SELECTION" "$EPOCHS" "$LR_ONE" "$CROP_MIN" <<'PYEOF'
import csv, sys
path, epochs, lr, crop = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
rows = [r for r in csv.DictReader(open(path)) if int(r["epochs"]) == epochs]
best = max(rows, key=lambda r: float(r["val_top1"]))
print(f"selection at {epochs} epochs, held-out split: " + ", ".join(
    f"lr {r['lr']} crop {r['crop_min']}: {float(r['val_top1']):.2f}" for r in rows))
if (float(best["lr"]), float(best["crop_min"])) != (lr, crop):
    sys.exit(f"the held-out split picks lr {best['lr']} crop {best['crop_min']}, not LR_ONE={lr} CROP_MIN={crop}: "
             f"run again with LR_ONE={best['lr']} CROP_MIN={best['crop_min']} OUT=<new folder> RESULTS=<new folder>")
PYEOF
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

paper() {  # paper LABEL OVERRIDES...: LABEL_lr_one at the I-Nets' hyperparameters (LR_ONE), for every seed
  local label=$1 kind=run s
  shift
  [[ $label == san ]] && kind=san
  for s in $SEEDS; do
    echo "$OUT/e$EPOCHS/s$s/${label}_lr_one $kind $EPOCHS seed=$s $* $ONE label=${label}_lr_one"
  done
}

long_budget() {  # long_budget EPOCHS: the I-Nets and RS-Net (full MRED, the papers' protocol) at a longer
  # budget, every seed: the I-Net at 28 px first (is the budget near convergence?), then RS-Net, then the others
  local e=$1 r s
  for r in ${RES%% *} rsnet ${RES#* }; do
    for s in $SEEDS; do
      if [[ $r == rsnet ]]; then
        echo "$OUT/e$e/s$s/rsnet_full_lr_one run $e seed=$s method=rsnet method.distill=full $ONE label=rsnet_full_lr_one"
      else
        echo "$OUT/e$e/s$s/inet$r run $e seed=$s method=individual data.resolutions=[$r] $ONE label=inet$r"
      fi
    done
  done
}

hypothesis() {  # hypothesis SEED: RS-Net trains at the I-Nets' lr (LR_ONE, not divided by the number of resolutions)
  echo "$OUT/e$EPOCHS/s$1/rsnet_full_lr_one run $EPOCHS seed=$1 method=rsnet method.distill=full $ONE label=rsnet_full_lr_one"
}

job_list() {  # the whole study, most needed first: the secondary arm (lr / number of resolutions), the
  # smaller budgets, the lr test, the primary arm (the papers' protocol), the longer budgets, the
  # selection's longer budget
  local s e
  for s in $SEEDS; do study "$s"; done
  for e in $BUDGETS; do
    (( e < EPOCHS )) && for s in $SEEDS; do budget "$s" "$e"; done
  done
  for s in $SEEDS; do hypothesis "$s"; done
  paper san method=san
  paper parallel_private method=parallel method.private_bn=true
  paper rsnet_vanilla method=rsnet method.distill=vanilla
  paper parallel_shared method=parallel method.private_bn=false
  for e in $BUDGETS; do
    (( e > EPOCHS )) && long_budget "$e"
  done
  for e in $BUDGETS; do
    (( e > EPOCHS )) && echo "$OUT/select/lr${LR_ONE}_crop${CROP_MIN}_e$e pick $e $LR_ONE $CROP_MIN"
  done
  return 0
}

run_jobs select_jobs
collect
check_selection
run_jobs job_list
collect
RESULTS=$RESULTS EPOCHS=$EPOCHS RES="$RES" PY=$PY bash $HERE/report.sh
