#!/usr/bin/env bash
# Adaptive (cascade) inference against the static frontier, mean +- std over seeds (issue #23).
#
# usage: experiments/adaptive/run.sh CKPT_OR_RUN_DIR [CKPT_OR_RUN_DIR ...]
#   each argument: a checkpoint, or a training run directory (its checkpoints/last.ckpt); globs are
#   expanded by the shell, e.g. experiments/adaptive/run.sh outputs/rsnet_s*  outputs/mutualnet_s*
#   Give >= 3 seeds per method; checkpoints of several methods are summarised per method.
# For each checkpoint: `evaluate adaptive=true` (thresholds fitted on held-out training images for the
# sweep of budgets: every stage's MAdds and the midpoints), then summarize.py writes results.csv and
# results.md (adaptive top-1 vs the static frontier interpolated at equal mean MAdds; MAdds saved at
# the full configuration's accuracy). BENCH=1 also runs the latency bench on the first checkpoint.
# Settings (environment): SCORE=max_softmax|margin, ENSEMBLE=false|true, CAL=2048 (calibration
# images), EVAL="..." (more evaluate overrides, e.g. +data.val_samples=2000), OUT (runs folder).
set -euo pipefail
[[ $# -ge 1 ]] || { echo "usage: $0 CKPT_OR_RUN_DIR [...] (>= 3 seeds per method)" >&2; exit 2; }
ckpts=()
for arg in "$@"; do
  if [[ -d $arg ]]; then arg=$arg/checkpoints/last.ckpt; fi
  [[ -f $arg ]] || { echo "error: no checkpoint at $arg" >&2; exit 2; }
  ckpts+=("$(cd "$(dirname "$arg")" && pwd)/$(basename "$arg")")
done
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE/../.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-experiments/adaptive/runs}
SCORE=${SCORE:-max_softmax}
ENSEMBLE=${ENSEMBLE:-false}
CAL=${CAL:-2048}
EVAL=${EVAL:-}
export WANDB_MODE=${WANDB_MODE:-offline}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
rm -rf "$OUT"; mkdir -p "$OUT"

i=0
for ckpt in "${ckpts[@]}"; do
  name=$(printf "%02d" $i)_$(basename "$(dirname "$(dirname "$ckpt")")")
  echo "[$name] $ckpt"
  # shellcheck disable=SC2086
  $PY -m resnet_switch.evaluate "ckpt=$ckpt" adaptive=true cascade.score=$SCORE cascade.ensemble=$ENSEMBLE \
      cascade.calibration_images=$CAL cascade.store=false $EVAL hydra.run.dir=$OUT/$name > $OUT/$name.log 2>&1 \
      || { echo "error: evaluate failed for $ckpt; see $OUT/$name.log" >&2; tail -3 $OUT/$name.log >&2; exit 1; }
  i=$((i + 1))
done
$PY "$HERE/summarize.py" "$OUT" "$OUT"
if [[ $OUT == experiments/adaptive/runs ]]; then cp "$OUT/results.md" "$OUT/results.csv" "$HERE/"; fi  # the record

if [[ ${BENCH:-0} == 1 ]]; then
  first=$(ls -d $OUT/00_*/ | head -1)
  $PY -m resnet_switch.bench adaptive "ckpt=${ckpts[0]}" "policy=${first}adaptive.json" images=1000 \
      "batch_sizes=[1,64]" rounds=3 threads=1 | tee "$OUT/bench.log"
  tail -1 "$OUT/bench.log" > "$OUT/bench.json"
  if [[ $OUT == experiments/adaptive/runs ]]; then cp "$OUT/bench.json" "$HERE/"; fi
fi
