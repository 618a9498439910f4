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
# Resumable: a finished run (its results.csv, or its rows in the committed results.csv: another
# machine's run) is skipped, an unfinished one resumes from its own last.ckpt (ckpt_path=auto); stop
# it any time and run it again to go on. results.csv is refreshed after every run.
#   DEVICE=cpu  (default) LANES=2 lanes side by side, one thread each, batch 128.
#   DEVICE=cuda one lane, trainer=gpu, batch 512 (lr x4, linear scaling), 8 loader workers.
#   PRECISION=bf16-mixed (default, both devices): 1.8x faster than 32-true on a CPU with AMX (measured:
#   100 steps of the I-Net at 28 px, one thread); on a CPU without bf16 units set PRECISION=32-true.
# Learning rate: LR_ONE for a single-loss run (the I-Nets); the multi-resolution methods sum one loss
# per resolution, so they get LR_ONE / (number of resolutions): the same step per loss (the rule of
# `make train`, experiments/main_job/README.md).
# Budget: EPOCHS=5 epochs of batch 128 with train crops of [0.8, 1] of the image area: the I-Net at
# 28 px, seed 0, reached 92.3 % (90.0 % at 3 epochs with crop [0.5, 1]; 91.2 % at 5 epochs with crop
# [0.5, 1]); the I-Nets at BUDGETS show how far from converged 5 epochs are.
# Usage: bash experiments/fashion_mnist_full/run.sh      (SEEDS="0 1 2" EPOCHS=5 BUDGETS="2 5 10")
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
HERE=experiments/fashion_mnist_full
OUT=$HERE/runs
SEEDS=${SEEDS:-"0 1 2"}
EPOCHS=${EPOCHS:-5}
BUDGETS=${BUDGETS:-"2 5 10"}
RES=${RES:-"28 20 12"}
DEVICE=${DEVICE:-cpu}
PRECISION=${PRECISION:-bf16-mixed}
export WANDB_MODE=${WANDB_MODE:-offline}
list() { echo "[$(echo $* | tr ' ' ',')]"; }
RES_LIST=$(list $RES)
TEST_SAN=[28,24,20,16,12]
if [[ $DEVICE == cuda ]]; then
  LANES=1
  LR_ONE=${LR_ONE:-0.4}
  SPEED="trainer=gpu data.batch_size=512 data.num_workers=8"
else
  LANES=${LANES:-2}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  LR_ONE=${LR_ONE:-0.1}
  SPEED="trainer=cpu data.batch_size=128 data.num_workers=0"
fi
LR_MULTI=$($PY -c "print(round($LR_ONE / $(wc -w <<< "$RES"), 4))")
ONE="optim.lr=$LR_ONE"
MULTI="optim.lr=$LR_MULTI"
# every run: the whole training set, the whole test set at the end, validation only at the end
COMMON="data=fashion_mnist model=resnet20 data.crop_scale=[0.8,1.0] data.resolutions=$RES_LIST data.test_resolutions=$RES_LIST
        trainer.enable_progress_bar=false trainer.num_sanity_val_steps=0 trainer.precision=$PRECISION $SPEED"

recorded() {  # recorded DIR: DIR's rows are in the committed results.csv
  [[ -f $HERE/results.csv ]] && cut -d, -f1 "$HERE/results.csv" | grep -qxF "${1#"$OUT"/}"
}

train() {  # train DIR EPOCHS OVERRIDES...
  local dir=$1 epochs=$2; shift 2
  if [[ -f $dir/results.csv ]] || recorded "$dir"; then return; fi
  mkdir -p "$(dirname "$dir")"
  echo "$(date +%T) train $dir"
  $PY -m resnet_switch.train task_name=fashion_mnist_full $COMMON trainer.max_epochs=$epochs \
      trainer.check_val_every_n_epoch=$epochs "$@" ckpt_path=auto hydra.run.dir=$dir > $dir.log 2>&1
  $PY $HERE/collect.py --epochs "$EPOCHS" > /dev/null
}

san_eval() {  # san_eval DIR MODE
  local dir=$1/eval_$2
  if [[ -f $dir/eval_rows.csv ]] || recorded "$dir"; then return; fi
  $PY -m resnet_switch.evaluate ckpt=$1/checkpoints/last.ckpt test_resolutions=$TEST_SAN bn_mode=$2 \
      hydra.run.dir=$dir > $dir.log 2>&1
  $PY $HERE/collect.py --epochs "$EPOCHS" > /dev/null
}

study() {  # study SEED: every run of one seed at EPOCHS, one job per line (KIND DIR EPOCHS OVERRIDES...)
  local s=$1 d=$OUT/e$EPOCHS/s$1
  for r in $RES; do echo "train $d/inet$r $EPOCHS seed=$s method=individual data.resolutions=[$r] $ONE label=inet$r"; done
  echo "train $d/parallel_private $EPOCHS seed=$s method=parallel method.private_bn=true $MULTI label=parallel_private"
  echo "train $d/parallel_shared $EPOCHS seed=$s method=parallel method.private_bn=false $MULTI label=parallel_shared"
  echo "train $d/rsnet_vanilla $EPOCHS seed=$s method=rsnet method.distill=vanilla $MULTI label=rsnet_vanilla"
  echo "train $d/rsnet_full $EPOCHS seed=$s method=rsnet method.distill=full $MULTI label=rsnet_full"
  echo "san $d/san $EPOCHS seed=$s method=san $MULTI label=san"
}

budget() {  # budget SEED EPOCHS: the I-Nets and RS-Net (full MRED) at another budget than EPOCHS
  local s=$1 e=$2 r
  for r in $RES; do echo "train $OUT/e$e/s$s/inet$r $e seed=$s method=individual data.resolutions=[$r] $ONE label=inet$r"; done
  echo "train $OUT/e$e/s$s/rsnet_full $e seed=$s method=rsnet method.distill=full $MULTI label=rsnet_full"
}

hypothesis() {  # hypothesis SEED: RS-Net trains at the I-Nets' lr (LR_ONE, not divided by the number of resolutions)
  echo "train $OUT/e$EPOCHS/s$1/rsnet_full_lr_one $EPOCHS seed=$1 method=rsnet method.distill=full $ONE label=rsnet_full_lr_one"
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

lane() {  # lane: take the next job no other lane holds (a DIR.claim folder) until none is left
  local kind dir epochs rest
  while read -r kind dir epochs rest; do
    mkdir -p "$(dirname "$dir")"
    mkdir "$dir.claim" 2> /dev/null || continue
    # shellcheck disable=SC2086  # rest: the job's overrides, one word each
    if train "$dir" "$epochs" $rest && { [[ $kind != san ]] || { san_eval "$dir" proxy && san_eval "$dir" ideal; }; }
    then :; else echo "$(date +%T) FAILED $dir (see $dir.log)"; fi
    rmdir "$dir.claim"
  done < <(job_list)
}

rm -rf "$OUT"/e*/s*/*.claim  # claims of a run that was stopped
for k in $(seq 1 "$LANES"); do lane & done
wait
$PY $HERE/collect.py
$PY -m resnet_switch.report $HERE/results.csv table=wide claims=$HERE/claims.yaml out=$HERE/results.md \
    plot=$HERE/top1_vs_resolution.png title="Fashion-MNIST, full split, $EPOCHS epochs (seeds $SEEDS)"
