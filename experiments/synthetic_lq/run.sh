#!/usr/bin/env bash
# Low-bit RS-Net vs low-bit individual networks (RS-Net Table 3 protocol, LQ-Nets quantizers) on the
# embedded synthetic data. Two bit settings, each with I-Nets at every training resolution (a Hydra
# multirun) and one RS-Net, all four trainings at the same time (one thread each):
#   2/32: ResNet-20 (standard), 2-bit weights, float activations
#   2/2:  pre-activation ResNet-20, 2-bit weights and 2-bit activations (the official 2/2 networks
#         are pre-activation ResNets)
# then every checkpoint is evaluated at every test resolution into one table. Budget: 3 training
# resolutions and 4 epochs (400 steps) so the whole script fits ~1.5 h on a busy 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=experiments/synthetic_lq/runs
rm -rf "$OUT"
mkdir -p "$OUT"
export WANDB_MODE=${WANDB_MODE:-offline}
export OMP_NUM_THREADS=1

RES=[32,24,16]
# the recipe these results were recorded with (before the main job's fix: experiments/main_job/README.md)
COMMON="optim.lr=0.1 data.crop_scale=[0.25,1.0] task_name=synthetic_lq quant=lq trainer.max_epochs=4 data.train_samples=6400 data.val_samples=2000 data.num_workers=1 trainer.enable_progress_bar=false"
W2A32="model=resnet20 quant.weight_bits=2 quant.act_bits=32"
W2A2="model=preresnet20 quant.weight_bits=2 quant.act_bits=2"

$PY -m resnet_switch.train -m $COMMON $W2A32 method=individual data.resolutions=[32],[24],[16] \
    hydra.sweep.dir=$OUT/w2a32_individual hydra.sweep.subdir='${data.resolutions.0}' > $OUT/w2a32_individual.log 2>&1 &
$PY -m resnet_switch.train $COMMON $W2A32 method=rsnet data.resolutions=$RES \
    hydra.run.dir=$OUT/w2a32_rsnet > $OUT/w2a32_rsnet.log 2>&1 &
$PY -m resnet_switch.train -m $COMMON $W2A2 method=individual data.resolutions=[32],[24],[16] \
    hydra.sweep.dir=$OUT/w2a2_individual hydra.sweep.subdir='${data.resolutions.0}' > $OUT/w2a2_individual.log 2>&1 &
$PY -m resnet_switch.train $COMMON $W2A2 method=rsnet data.resolutions=$RES \
    hydra.run.dir=$OUT/w2a2_rsnet > $OUT/w2a2_rsnet.log 2>&1 &
wait %1 && wait %2 && wait %3 && wait %4

CKPTS=""
for bits in w2a32 w2a2; do
  for r in 32 24 16; do CKPTS="$CKPTS,$OUT/${bits}_individual/$r/checkpoints/last.ckpt"; done
  CKPTS="$CKPTS,$OUT/${bits}_rsnet/checkpoints/last.ckpt"
done
$PY -m resnet_switch.evaluate "ckpt=[${CKPTS#,}]" test_resolutions=[32,28,24,20,16] hydra.run.dir=$OUT/eval
cp $OUT/eval/eval_table.md $OUT/eval/eval_table.csv $OUT/eval/acc_vs_madds.png experiments/synthetic_lq/
