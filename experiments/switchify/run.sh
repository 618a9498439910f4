#!/usr/bin/env bash
# RS-Net and the I-Nets on two converted library models (docs/switchify.md) beside our resnet20:
# torchvision mobilenet_v3_small and timm resnet18 (small-input stem: stride-1 first conv, no stem
# max-pool), on data=synthetic and data=fashion_mnist, seeds 0 1 2. One I-Net per training resolution
# (label <model>_inet: together they form the I-Net row), one RS-Net (label <model>_rsnet).
# Then `python -m resnet_switch.report` per data set: mean +- std over seeds per resolution.
#
# Resumable: a run whose directory holds results.csv is skipped; an interrupted one continues from its
# own last.ckpt (ckpt_path=auto). `rm -rf experiments/switchify/runs` starts from scratch.
# Knobs (environment): SEEDS="0 1 2", DATASETS="synthetic fashion_mnist", MODELS="tv_mnv3s timm_r18 resnet20",
# EXTRA="..." (extra overrides for every run, e.g. the smoke: EXTRA="trainer.max_epochs=1 data.train_samples=640").
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-experiments/switchify/runs}
export WANDB_MODE=${WANDB_MODE:-offline}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
SEEDS=${SEEDS:-"0 1 2"}
DATASETS=${DATASETS:-"synthetic fashion_mnist"}
MODELS=${MODELS:-"tv_mnv3s timm_r18 resnet20"}
EXTRA=${EXTRA:-}
# one budget for every model: 5 epochs of 6400 training images, validation on 2000
BUDGET="trainer.max_epochs=5 data.train_samples=6400 data.val_samples=2000 data.num_workers=0
        trainer.enable_progress_bar=false"

model_args() {  # the model overrides of a short model name
  case $1 in
    tv_mnv3s) echo "model=torchvision model.arch=mobilenet_v3_small model.small_input=true" ;;
    timm_r18) echo "model=timm model.arch=resnet18 model.small_input=true" ;;
    resnet20) echo "model=resnet20" ;;
    *) echo "unknown model $1" >&2; exit 2 ;;
  esac
}

resolutions() {  # the data set's training resolutions, as a space-separated list
  case $1 in
    synthetic) echo "32 28 24 20 16" ;;
    fashion_mnist) echo "28 24 20 16 12" ;;
  esac
}

train() {  # train DIR OVERRIDES...: skipped when DIR/results.csv exists; resumes from DIR's last.ckpt
  local dir=$1
  shift
  if [[ -f $dir/results.csv ]]; then echo "skip $dir (done)"; return; fi
  mkdir -p "$(dirname "$dir")"
  local start=$SECONDS
  # shellcheck disable=SC2086
  $PY -m resnet_switch.train task_name=switchify $BUDGET "$@" $EXTRA ckpt_path=auto hydra.run.dir="$dir" \
      > "$dir.log" 2>&1
  echo "$(date +%T) done $dir ($((SECONDS - start)) s)"
}

for data in $DATASETS; do
  res=$(resolutions "$data")
  for model in $MODELS; do
    margs=$(model_args "$model")
    for seed in $SEEDS; do
      # shellcheck disable=SC2086
      train "$OUT/$data/$model/rsnet/s$seed" data=$data $margs method=rsnet seed=$seed label=${model}_rsnet
      for r in $res; do
        # shellcheck disable=SC2086
        train "$OUT/$data/$model/inet$r/s$seed" data=$data $margs method=individual "data.resolutions=[$r]" \
            seed=$seed label=${model}_inet
      done
    done
  done
  $PY -m resnet_switch.report "$OUT/$data" table=wide out="experiments/switchify/results_$data.md" \
      title="switchify on $data, top-1 over seeds" || echo "report for $data failed (see above)"
done
