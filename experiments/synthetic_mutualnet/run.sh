#!/usr/bin/env bash
# MutualNet vs US-Net on the synthetic data: widths [0.25, 1.0] x resolutions 32..16, then the
# query table (accuracy vs MAdds frontier) of each. ResNet-20 with 32 base channels. The two
# trainings run in parallel, one thread each (~30 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=experiments/synthetic_mutualnet/runs
rm -rf "$OUT"
export WANDB_MODE=${WANDB_MODE:-offline}
# the recipe these results were recorded with (before the main job's fix: experiments/main_job/README.md)
COMMON="optim.lr=0.1 data.crop_scale=[0.25,1.0] trainer.max_epochs=4 data.train_samples=6400 data.val_samples=2000 data.num_workers=2 model.base_width=32 method.width_range=[0.25,1.0] data.resolutions=[32,28,24,20,16] calibration_samples=1024"

mkdir -p $OUT
export OMP_NUM_THREADS=1
for m in mutualnet usnet; do
  $PY -m resnet_switch.train task_name=synthetic_mutualnet method=$m $COMMON trainer.enable_progress_bar=false \
      hydra.run.dir=$OUT/$m > $OUT/$m.log 2>&1 &
done
wait %1 && wait %2
for m in mutualnet usnet; do
  $PY -m resnet_switch.evaluate ckpt=$OUT/$m/checkpoints/last.ckpt query_table=true width_step=0.25 \
      latency_runs=0 calibration_samples=1024 budget.madds=20M hydra.run.dir=$OUT/query_$m
done
{
  for m in mutualnet usnet; do echo "## $m"; cat $OUT/query_$m/query_table.md; echo; done
} > experiments/synthetic_mutualnet/results.md
cp $OUT/query_mutualnet/query_frontier.png experiments/synthetic_mutualnet/mutualnet_frontier.png
cp $OUT/query_usnet/query_frontier.png experiments/synthetic_mutualnet/usnet_frontier.png
