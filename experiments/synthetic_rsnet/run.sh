#!/usr/bin/env bash
# RS-Net vs individual networks on the embedded synthetic data (CPU, ~15 min on 2 cores).
# Trains I-Nets at each resolution (Hydra multirun) and one RS-Net, then evaluates every
# checkpoint at every resolution into one table (rows: models, columns: test resolutions).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=experiments/synthetic_rsnet/runs
rm -rf "$OUT"
export WANDB_MODE=${WANDB_MODE:-offline}

$PY -m resnet_switch.train -m task_name=synthetic_rsnet method=individual \
    data.resolutions=[32],[28],[24],[20],[16] \
    hydra.sweep.dir=$OUT/individual hydra.sweep.subdir='${data.resolutions.0}'
$PY -m resnet_switch.train task_name=synthetic_rsnet method=rsnet hydra.run.dir=$OUT/rsnet

CKPTS="$OUT/individual/32/checkpoints/last.ckpt,$OUT/individual/28/checkpoints/last.ckpt,$OUT/individual/24/checkpoints/last.ckpt,$OUT/individual/20/checkpoints/last.ckpt,$OUT/individual/16/checkpoints/last.ckpt,$OUT/rsnet/checkpoints/last.ckpt"
$PY -m resnet_switch.evaluate "ckpt=[$CKPTS]" test_resolutions=[32,28,24,20,16] hydra.run.dir=$OUT/eval
cp $OUT/eval/eval_table.md $OUT/eval/eval_table.csv $OUT/eval/acc_vs_madds.png experiments/synthetic_rsnet/
