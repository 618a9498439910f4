#!/usr/bin/env bash
# RS-Net on two library models converted by surgery (docs/switchify.md) beside our ResNet-20 and the
# I-Net of the same architecture (issue #22): torchvision mobilenet_v3_small and timm regnetx_002
# (RegNetX-200MF), both with the small-input stem (stride-1 first conv, no stem max-pool), on
# data=synthetic (32..16 px) and data=fashion_mnist (28..12 px), seeds 0 1 2.
# Per (data, model, seed): RS-Net (full MRED, label <model>_rsnet) and the I-Net trained at the top
# resolution and tested at every one (label <model>_inet@<top>), as `make train` pairs them.
# Then `python -m resnet_switch.report` per data set: mean +- std over seeds per resolution and the
# paired RS-Net - I-Net difference with its 95 % t interval.
#
# Budgets (one per data set, the same for every model):
#   synthetic      make train's: 3 epochs of 5120 images, batch 64, RS-Net lr 0.02, I-Net lr 0.1
#                  (one loss at 0.1 = five summed losses at 0.02 per loss); validation on 1000 images.
#                  ResNet-20 on synthetic IS make train: its runs are taken from experiments/main_job/runs
#                  when that runner has finished them (same command), else trained here.
#   fashion_mnist  3 epochs of a fixed 6000-image subset, batch 64 (282 steps), same lrs; validation on
#                  2000 test images.
# Resumable: a run whose directory holds results.csv is skipped; an interrupted one continues from its
# own last.ckpt (ckpt_path=auto). `rm -rf experiments/switchify/runs` starts from scratch.
# Knobs (environment): SEEDS="0 1 2", DATASETS="synthetic fashion_mnist", MODELS="tv_mnv3s timm_regx002
# resnet20", LANES=2 (runs side by side, one thread each), EXTRA="..." (overrides for every run).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
HERE=experiments/switchify
OUT=${OUT:-$HERE/runs}
MAIN_JOB=experiments/main_job/runs
export WANDB_MODE=${WANDB_MODE:-offline}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
SEEDS=${SEEDS:-"0 1 2"}
DATASETS=${DATASETS:-"synthetic fashion_mnist"}
MODELS=${MODELS:-"tv_mnv3s timm_regx002 resnet20"}
LANES=${LANES:-2}
EXTRA=${EXTRA:-}
COMMON="trainer.enable_progress_bar=false data.num_workers=0 optim.warmup_epochs=1"
INET_LR=0.1

model_args() {  # the model overrides of a short model name
  case $1 in
    tv_mnv3s) echo "model=torchvision model.arch=mobilenet_v3_small model.small_input=true model.bn_momentum=0.1" ;;
    timm_regx002) echo "model=timm model.arch=regnetx_002 model.small_input=true" ;;
    resnet20) echo "model=resnet20" ;;
    *) echo "unknown model $1" >&2; exit 2 ;;
  esac
}

data_args() {  # the data set's budget and resolutions
  case $1 in
    synthetic) echo "data=synthetic" ;;
    fashion_mnist) echo "data=fashion_mnist data.train_samples=6000 data.val_samples=2000 data.batch_size=64
                         trainer.max_epochs=3" ;;
  esac
}

resolutions() {  # training resolutions of a data set, "[a,b,...]" and the top one
  case $1 in
    synthetic) echo "[32,28,24,20,16] 32" ;;
    fashion_mnist) echo "[28,24,20,16,12] 28" ;;
  esac
}

train() {  # train DIR OVERRIDES...: skipped when DIR/results.csv exists; resumes from DIR's last.ckpt
  local dir=$1
  shift
  if [[ -f $dir/results.csv ]]; then return; fi
  mkdir -p "$(dirname "$dir")"
  local start=$SECONDS
  # shellcheck disable=SC2086
  $PY -m resnet_switch.train task_name=switchify $COMMON "$@" $EXTRA ckpt_path=auto hydra.run.dir="$dir" \
      > "$dir.log" 2>&1 || { echo "$(date +%T) FAILED $dir (see $dir.log)"; return; }
  echo "$(date +%T) done $dir ($((SECONDS - start)) s)"
}

from_main_job() {  # from_main_job SRC DIR LABEL: make train's finished run, relabelled, as DIR
  local src=$1 dir=$2 label=$3
  [[ -f $src/results.csv && -f $src/run.json ]] || return 1
  [[ -f $dir/results.csv ]] && return 0
  mkdir -p "$dir"
  cp "$src/results.csv" "$dir/"
  $PY - "$src/run.json" "$dir/run.json" "$label" <<'EOF'
import json, sys
info = json.load(open(sys.argv[1]))
info.update(label=sys.argv[3], copied_from=sys.argv[1])
json.dump(info, open(sys.argv[2], "w"), indent=1)
EOF
  echo "$(date +%T) $dir: make train's run $src"
}

jobs_of_lane() {  # jobs_of_lane K: every run at positions K, K+LANES, ... of the full list
  local i=0
  for data in $DATASETS; do
    read -r res top <<<"$(resolutions "$data")"
    for seed in $SEEDS; do
      for model in $MODELS; do
        if (( i % LANES == $1 )); then
          local d=$OUT/$data/$model margs dargs
          margs=$(model_args "$model")
          dargs=$(data_args "$data")
          if [[ $data == synthetic && $model == resnet20 ]] \
              && from_main_job $MAIN_JOB/rsnet/s$seed $d/rsnet/s$seed ${model}_rsnet \
              && from_main_job $MAIN_JOB/inet32/s$seed $d/inet$top/s$seed ${model}_inet@$top; then
            :
          else
            # shellcheck disable=SC2086
            train $d/rsnet/s$seed $dargs $margs method=rsnet seed=$seed label=${model}_rsnet
            # shellcheck disable=SC2086
            train $d/inet$top/s$seed $dargs $margs method=individual "data.resolutions=[$top]" \
                "data.test_resolutions=$res" optim.lr=$INET_LR seed=$seed label=${model}_inet@$top
          fi
        fi
        i=$((i + 1))
      done
    done
  done
}

for k in $(seq 0 $((LANES - 1))); do jobs_of_lane "$k" & done
wait

for data in $DATASETS; do
  read -r res top <<<"$(resolutions "$data")"
  pairs=$(for m in $MODELS; do printf "[%s_rsnet,%s_inet@%s]," "$m" "$m" "$top"; done)
  $PY -m resnet_switch.report "$OUT/$data" table=wide "pair=[${pairs%,}]" out="$HERE/results_$data.md" \
      csv="$HERE/summary_$data.csv" plot="$HERE/top1_$data.png" \
      title="switchify on $data, RS-Net vs the I-Net at $top px, top-1 over seeds ($SEEDS)" \
      || echo "report for $data failed (see above)"
done
