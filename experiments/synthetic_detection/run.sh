#!/usr/bin/env bash
# MutualNet-style vs US-Net-style training of a switchable Mask R-CNN on the embedded synthetic
# detection set: ResNet-20 backbone (ImageNet stem), widths [0.25, 1.0] x input sizes 128/96/64,
# the CPU-sized detector (detector=mask_rcnn_small). The two trainings run in parallel, one thread
# each; then AP per (width, size) of both and one AP-vs-backbone-MAdds plot.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=experiments/synthetic_detection/runs
EPOCHS=${EPOCHS:-6}
rm -rf "$OUT"
mkdir -p "$OUT"
export WANDB_MODE=${WANDB_MODE:-offline} OMP_NUM_THREADS=1
COMMON="task=detection trainer.max_epochs=$EPOCHS trainer.check_val_every_n_epoch=$EPOCHS data.num_workers=1 trainer.enable_progress_bar=false"

for m in mutualnet usnet; do
  $PY -m resnet_switch.train task_name=synthetic_detection method=detection_$m $COMMON \
      hydra.run.dir=$OUT/$m > $OUT/$m.log 2>&1 &
done
wait %1 && wait %2
$PY experiments/synthetic_detection/compare.py $OUT/mutualnet/results.csv $OUT/usnet/results.csv \
    experiments/synthetic_detection
