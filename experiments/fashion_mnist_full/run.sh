#!/usr/bin/env bash
# Converged Fashion-MNIST: the full 60000 / 10000 split, ResNet-20, resolutions RES, SEEDS, EPOCHS.
# Per seed: the I-Nets at each resolution (each tested at every resolution), parallel training with
# private and with shared BN, RS-Net with vanilla and with full MRED, SAN (tested with proxy and with
# ideal inference at the training resolutions and the ones in between). Then the budget study: the
# I-Nets and RS-Net (full MRED) at BUDGETS epochs (the gap against the budget). collect.py gathers
# results.csv (one row per run, seed, method, resolution); the report command makes results.md with
# claims.yaml's verdicts.
#
# Resumable: a finished run (its results.csv) is skipped, an unfinished one resumes from its own
# last.ckpt (ckpt_path=auto); stop it any time and run it again to go on.
#   DEVICE=cpu  (default) LANES=2 lanes side by side, one thread each, batch 128.
#   DEVICE=cuda one lane, trainer=gpu, batch 512 (lr x4, linear scaling), bf16, 8 loader workers.
# Usage: bash experiments/fashion_mnist_full/run.sh      (SEEDS="0 1 2" EPOCHS=3 BUDGETS="1 3 9")
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
HERE=experiments/fashion_mnist_full
OUT=$HERE/runs
SEEDS=${SEEDS:-"0 1 2"}
EPOCHS=${EPOCHS:-3}
BUDGETS=${BUDGETS:-"1 3 9"}
RES=${RES:-"28 20 12"}
DEVICE=${DEVICE:-cpu}
export WANDB_MODE=${WANDB_MODE:-offline}
list() { echo "[$(echo $* | tr ' ' ',')]"; }
RES_LIST=$(list $RES)
TEST_SAN=[28,24,20,16,12]
if [[ $DEVICE == cuda ]]; then
  LANES=1
  SPEED="trainer=gpu trainer.precision=bf16-mixed data.batch_size=512 optim.lr=0.2 data.num_workers=8"
else
  LANES=${LANES:-2}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  SPEED="trainer=cpu data.batch_size=128 optim.lr=0.05 data.num_workers=0"
fi
# every run: the whole training set, the whole test set at the end, validation only at the end
COMMON="data=fashion_mnist model=resnet20 data.resolutions=$RES_LIST data.test_resolutions=$RES_LIST
        trainer.enable_progress_bar=false trainer.num_sanity_val_steps=0 $SPEED"

train() {  # train DIR EPOCHS OVERRIDES...
  local dir=$1 epochs=$2; shift 2
  if [[ -f $dir/results.csv ]]; then return; fi
  mkdir -p "$(dirname "$dir")"
  echo "$(date +%T) train $dir"
  $PY -m resnet_switch.train task_name=fashion_mnist_full $COMMON trainer.max_epochs=$epochs \
      trainer.check_val_every_n_epoch=$epochs "$@" ckpt_path=auto hydra.run.dir=$dir > $dir.log 2>&1
}

san_eval() {  # san_eval DIR SEED MODE
  local dir=$1/eval_$3
  if [[ -f $dir/eval_rows.csv ]]; then return; fi
  $PY -m resnet_switch.evaluate ckpt=$1/checkpoints/last.ckpt test_resolutions=$TEST_SAN bn_mode=$3 \
      hydra.run.dir=$dir > $dir.log 2>&1
}

study() {  # study SEED: every run of one seed at EPOCHS
  local s=$1 d=$OUT/e$EPOCHS/s$1
  for r in $RES; do train $d/inet$r $EPOCHS seed=$s method=individual data.resolutions=[$r] label=inet$r; done
  train $d/parallel_private $EPOCHS seed=$s method=parallel method.private_bn=true label=parallel_private
  train $d/parallel_shared $EPOCHS seed=$s method=parallel method.private_bn=false label=parallel_shared
  train $d/rsnet_vanilla $EPOCHS seed=$s method=rsnet method.distill=vanilla label=rsnet_vanilla
  train $d/rsnet_full $EPOCHS seed=$s method=rsnet method.distill=full label=rsnet_full
  train $d/san $EPOCHS seed=$s method=san label=san
  san_eval $d/san $s proxy
  san_eval $d/san $s ideal
}

budgets() {  # budgets SEED: the I-Nets and RS-Net at every budget but EPOCHS (done by study)
  local s=$1
  for e in $BUDGETS; do
    [[ $e == "$EPOCHS" ]] && continue
    for r in $RES; do train $OUT/e$e/s$s/inet$r $e seed=$s method=individual data.resolutions=[$r] label=inet$r; done
    train $OUT/e$e/s$s/rsnet_full $e seed=$s method=rsnet method.distill=full label=rsnet_full
  done
}

lane() {  # lane K: the seeds at positions K, K+LANES, ...
  local i=0
  for s in $SEEDS; do (( i % LANES == $1 )) && study $s; i=$((i + 1)); done
  i=0
  for s in $SEEDS; do (( i % LANES == $1 )) && budgets $s; i=$((i + 1)); done
  return 0
}

for k in $(seq 0 $((LANES - 1))); do lane $k & done
wait
$PY $HERE/collect.py
$PY -m resnet_switch.report $HERE/results.csv table=wide claims=$HERE/claims.yaml out=$HERE/results.md \
    plot=$HERE/top1_vs_resolution.png title="Fashion-MNIST, full split, $EPOCHS epochs (seeds $SEEDS)"
