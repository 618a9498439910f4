#!/usr/bin/env bash
# Fashion-MNIST at [28,24,20,16,12], one budget for every method, seeds 0 and 1:
# RS-Net (MRED, private BN), parallel training with private and with shared BN, one I-Net per
# resolution, SAN, MutualNet and US-Net; then every checkpoint on the full 10k test set (I-Nets at
# every resolution, SAN with proxy and ideal inference, MutualNet/US-Net query tables), and
# report.py -> results.md + plots. The two seeds run as two lanes in parallel (one thread each), each
# lane sequentially (~3 h on a 2-core machine shared with other jobs).
# A training whose run directory already holds results.csv is skipped: re-running resumes after an
# interruption; `rm -rf experiments/fashion_mnist/runs` starts from scratch.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=experiments/fashion_mnist/runs
export WANDB_MODE=${WANDB_MODE:-offline}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
RES=[28,24,20,16,12]
TEST_SAN=[28,26,24,22,20,18,16,14,12]      # training resolutions and the ones in between
# ONE budget for all: ResNet-20 with 8 base channels (8/16/32), the same 6000 training images (a
# fixed subset), 4 epochs of 93 steps of batch 64 (372 steps), SGD lr 0.1 nesterov, wd 5e-4, 1
# warm-up epoch, cosine; validation during training on 1000 test images (the tables use all 10000).
# the recipe these results were recorded with (before the main job's fix: experiments/main_job/README.md)
BUDGET="optim.lr=0.1 data=fashion_mnist model=resnet20 model.base_width=8 data.train_samples=6000 data.val_samples=1000
        data.batch_size=64 data.num_workers=0 trainer.max_epochs=4 trainer.enable_progress_bar=false"
# MutualNet / US-Net: widths [0.25, 1.0]; channel rounding to multiples of 2 (the default 8 would
# make every width of an 8-channel stage 8 channels)
SLIM="method.width_range=[0.25,1.0] method.divisor=2"
FULL_TEST="+data.val_samples=null"          # evaluate: the full 10k test set

train() {  # train NAME SEED OVERRIDES...
  local name=$1 seed=$2 dir=$OUT/s$2/$1
  shift 2
  if [[ -f $dir/results.csv ]]; then echo "skip $dir (done)"; return; fi
  echo "$(date +%T) train $dir"
  $PY -m resnet_switch.train task_name=fashion_mnist seed=$seed $BUDGET "$@" hydra.run.dir=$dir > $dir.log 2>&1
}

lane() {  # lane SEED: every training of one seed, then its evaluations
  local s=$1 d=$OUT/s$1
  mkdir -p $d
  train rsnet $s method=rsnet
  train parallel_private $s method=parallel method.private_bn=true
  train parallel_shared $s method=parallel method.private_bn=false
  for r in 28 24 20 16 12; do train inet$r $s method=individual data.resolutions=[$r]; done
  train san $s method=san
  train mutualnet $s method=mutualnet method.seed=$s $SLIM
  train usnet $s method=usnet method.seed=$s $SLIM

  echo "$(date +%T) evaluate seed $s"
  local ck=checkpoints/last.ckpt
  $PY -m resnet_switch.evaluate "ckpt=[$d/rsnet/$ck,$d/parallel_private/$ck,$d/parallel_shared/$ck,$d/inet28/$ck,$d/inet24/$ck,$d/inet20/$ck,$d/inet16/$ck,$d/inet12/$ck]" \
      test_resolutions=$RES $FULL_TEST hydra.run.dir=$d/eval_main > $d/eval_main.log 2>&1
  for mode in proxy ideal; do
    $PY -m resnet_switch.evaluate ckpt=$d/san/$ck test_resolutions=$TEST_SAN bn_mode=$mode $FULL_TEST \
        hydra.run.dir=$d/eval_san_$mode > $d/eval_san_$mode.log 2>&1
  done
  for m in mutualnet usnet; do
    $PY -m resnet_switch.evaluate ckpt=$d/$m/$ck query_table=true width_step=0.25 test_resolutions=$RES \
        latency_runs=0 $FULL_TEST hydra.run.dir=$d/query_$m > $d/query_$m.log 2>&1
  done
  echo "$(date +%T) lane $s done"
}

mkdir -p $OUT
lane 0 > $OUT/lane0.log 2>&1 &
lane 1 > $OUT/lane1.log 2>&1 &
wait %1 && wait %2
$PY experiments/fashion_mnist/report.py
