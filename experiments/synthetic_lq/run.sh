#!/usr/bin/env bash
# Low-bit RS-Net vs low-bit I-Nets (RS-Net paper Table 3 protocol, LQ-Nets quantizers) on the embedded
# synthetic data, over SEEDS. Two bit settings, each with one I-Net per training resolution (32, 24, 16;
# each tested at every one of them) and one RS-Net trained at all three:
#   w2a32: ResNet-20 (standard), 2-bit weights, float activations
#   w2a2:  pre-activation ResNet-20, 2-bit weights and 2-bit activations (the official 2/2 networks are
#          pre-activation ResNets)
# Labels: inet32_w2a32, inet24_w2a32, inet16_w2a32, rsnet_w2a32 and the same with _w2a2; one folder per
# (label, seed): OUT/<label>/s<seed>. Then the report over seeds with claims.yaml's verdicts.
#
# Budget (the earlier single-seed record's): quant=lq, 4 epochs of 6400 generated images (100 steps of
# batch 64), 2000 validation images, tested at [32, 24, 16]. Recipe: the current defaults (crop
# [0.5, 1]); the lr rule of `make train`: the RS-Net sums one loss per resolution and keeps the default
# lr 0.02, the I-Nets (one loss) run at optim.lr=0.1.
# Knobs: SEEDS ("0 1 2"), LANES (2: runs side by side, one thread each), EXTRA (appended to every
# training: smoke tests), OUT (experiments/synthetic_lq/runs), RESULTS (where results.md, summary.csv
# and the plot go: experiments/synthetic_lq), PY.
# Resumable: a finished run (its results.csv) is skipped, an unfinished one resumes from its own
# last.ckpt (experiments/lib.sh); stop it any time and run it again to go on.
# Then the lr hypothesis for RS-Net's deficit at 32 px: rsnet_<bits>_lr_one, the RS-Net at the I-Nets'
# lr 0.1 (README.md).
# Time (measured, 2-core machine): the 24 trainings of the claims 27 min on 2 lanes; the 6 of the
# hypothesis 22 min on one lane beside two other trainings.
# Usage: bash experiments/synthetic_lq/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=experiments/synthetic_lq
OUT=${OUT:-$HERE/runs}
RESULTS=${RESULTS:-$HERE}
SEEDS=${SEEDS:-"0 1 2"}
EXTRA=${EXTRA:-}
# shellcheck source=../lib.sh
source experiments/lib.sh

RES="32 24 16"
RES_LIST=[32,24,16]
# one line: job lines are read line by line
COMMON="task_name=synthetic_lq quant=lq trainer.max_epochs=4 data.train_samples=6400 data.val_samples=2000 optim.warmup_epochs=1"
COMMON+=" data.test_resolutions=$RES_LIST"

bits() {  # bits SETTING: the model and quantizer overrides of one bit setting
  case $1 in
    w2a32) echo "model=resnet20 quant.weight_bits=2 quant.act_bits=32" ;;
    w2a2) echo "model=preresnet20 quant.weight_bits=2 quant.act_bits=2" ;;
  esac
}

job_list() {  # one line per run: DIR train OVERRIDES...; seed by seed, so early seeds finish first
  local s b r
  for s in $SEEDS; do
    for b in w2a32 w2a2; do
      for r in $RES; do
        echo "$OUT/inet${r}_$b/s$s train $COMMON $(bits "$b") method=individual data.resolutions=[$r]" \
             "optim.lr=0.1 seed=$s label=inet${r}_$b $EXTRA"
      done
      echo "$OUT/rsnet_$b/s$s train $COMMON $(bits "$b") method=rsnet data.resolutions=$RES_LIST" \
           "seed=$s label=rsnet_$b $EXTRA"
    done
  done
  for s in $SEEDS; do  # the hypothesis for RS-Net's deficit at 32 px: its lr (the I-Nets' 0.1, not 0.02)
    for b in w2a32 w2a2; do
      echo "$OUT/rsnet_${b}_lr_one/s$s train $COMMON $(bits "$b") method=rsnet data.resolutions=$RES_LIST" \
           "optim.lr=0.1 seed=$s label=rsnet_${b}_lr_one $EXTRA"
    done
  done
}

run_jobs job_list

pairs=""
for b in w2a32 w2a2; do
  for r in $RES; do pairs="$pairs,[rsnet_$b,inet${r}_$b]"; done
  pairs="$pairs,[rsnet_${b}_lr_one,rsnet_$b]"
  for r in $RES; do pairs="$pairs,[rsnet_${b}_lr_one,inet${r}_$b]"; done
done
$PY -m resnet_switch.report "$OUT" table=wide claims=$HERE/claims.yaml "pair=[${pairs#,}]" \
    out="$RESULTS/results.md" csv="$RESULTS/summary.csv" plot="$RESULTS/synthetic_lq.png" \
    title="Low-bit RS-Net vs I-Nets, synthetic data (seeds $SEEDS)"
