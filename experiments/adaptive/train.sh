#!/usr/bin/env bash
# The checkpoints of the adaptive-inference study (issue #23), seeds 0 1 2 (SEEDS=...):
#   RS-Net, synthetic      make train's own runs: experiments/main_job/runs/rsnet/s<seed> (make train-seeds)
#   RS-Net, Fashion-MNIST  experiments/switchify/runs/fashion_mnist/resnet20/rsnet/s<seed> (its run.sh)
#   MutualNet, both sets   trained here, ResNet-20 (16/32/64 channels), widths [0.25, 1] with channels
#                          rounded to multiples of 4 (method.divisor=4: 0.25 x 16 = 4 channels), at the
#                          same budgets as those RS-Nets (synthetic: make train's; Fashion-MNIST: 3 epochs
#                          of a fixed 6000-image subset, batch 64, validation on 2000 test images).
# This script trains the MutualNets (two lanes of one thread) and names the RS-Net runs still missing;
# run.sh then evaluates them all. Resumable like every runner here: finished runs
# are skipped, unfinished ones resume from their own last.ckpt (ckpt_path=auto).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=experiments/adaptive/runs_train
SEEDS=${SEEDS:-"0 1 2"}
export WANDB_MODE=${WANDB_MODE:-offline}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

for seed in $SEEDS; do  # the RS-Net checkpoints come from two other runners
  for need in experiments/main_job/runs/rsnet/s$seed:"bash experiments/main_job/run.sh" \
              experiments/switchify/runs/fashion_mnist/resnet20/rsnet/s$seed:"bash experiments/switchify/run.sh"; do
    [[ -f ${need%%:*}/checkpoints/last.ckpt ]] || echo "note: ${need%%:*} is missing; ${need#*:} trains it"
  done
done

MUTUALNET="method=mutualnet method.width_range=[0.25,1.0] method.divisor=4 model=resnet20
           trainer.enable_progress_bar=false data.num_workers=0"
declare -A DATA=(
  [synthetic]="data=synthetic"
  [fashion_mnist]="data=fashion_mnist data.train_samples=6000 data.val_samples=2000 data.batch_size=64 trainer.max_epochs=3"
)

train() {  # train DIR OVERRIDES...
  local dir=$1; shift
  if [[ -f $dir/results.csv ]]; then return; fi
  mkdir -p "$(dirname "$dir")"
  local start=$SECONDS
  # shellcheck disable=SC2086
  $PY -m resnet_switch.train task_name=adaptive optim.warmup_epochs=1 "$@" ckpt_path=auto hydra.run.dir="$dir" > "$dir.log" 2>&1 \
      || { echo "$(date +%T) FAILED $dir (see $dir.log)"; return; }
  echo "$(date +%T) done $dir ($((SECONDS - start)) s)"
}

lane() {  # lane K: every other (data set, seed)
  local i=0
  for data in synthetic fashion_mnist; do
    for seed in $SEEDS; do
      # shellcheck disable=SC2086
      (( i % 2 == $1 )) && train $OUT/$data/mutualnet/s$seed ${DATA[$data]} $MUTUALNET seed=$seed method.seed=$seed
      i=$((i + 1))
    done
  done
}
lane 0 & lane 1 &
wait
