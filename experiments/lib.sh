# The runner machinery every experiment shares. Source it from an experiment's run.sh after `cd` to
# the repository root and after setting OUT (the run folders) and, optionally, RECORD (a committed CSV
# whose first column names finished run folders relative to OUT: runs recorded on another clone).
#
#   train DIR OVERRIDES...      `python -m resnet_switch.train` into DIR (log: DIR.log), skipped when DIR
#                               is finished (DIR/results.csv, or listed in RECORD); an unfinished DIR
#                               resumes from its own last.ckpt (ckpt_path=auto), so a killed run goes on
#   evaluate DIR OVERRIDES...   `python -m resnet_switch.evaluate` into DIR, skipped when DIR/eval_rows.csv
#                               exists or RECORD lists DIR
#   run_jobs LIST_FUNCTION      LANES lanes side by side (one thread each): every lane reads the lines
#                               "DIR COMMAND ARGS..." that LIST_FUNCTION prints, takes the next one no
#                               lane has taken (a DIR.claim folder, kept until every lane ends) and
#                               runs COMMAND ARGS; a failed job is reported and the lane goes on; the
#                               next run_jobs tries it again
# Environment: PY (.venv/bin/python), LANES (2), WANDB_MODE (offline), OMP_NUM_THREADS (1).
PY=${PY:-.venv/bin/python}
LANES=${LANES:-2}
export WANDB_MODE=${WANDB_MODE:-offline}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

finished() {  # finished DIR MARKER: DIR/MARKER exists, or the committed RECORD lists DIR
  [[ -f $1/$2 ]] && return 0
  [[ -n ${RECORD:-} && -f $RECORD ]] && cut -d, -f1 "$RECORD" | grep -qxF "${1#"$OUT"/}"
}

train() {
  local dir=$1 start=$SECONDS
  shift
  finished "$dir" results.csv && return 0
  mkdir -p "$(dirname "$dir")"
  $PY -m resnet_switch.train "$@" trainer.enable_progress_bar=false ckpt_path=auto hydra.run.dir="$dir" \
      > "$dir.log" 2>&1 || return 1
  echo "$(date +%T) done $dir ($((SECONDS - start)) s)"
}

evaluate() {
  local dir=$1
  shift
  finished "$dir" eval_rows.csv && return 0
  mkdir -p "$(dirname "$dir")"
  $PY -m resnet_switch.evaluate "$@" hydra.run.dir="$dir" > "$dir.log" 2>&1 || return 1
}

run_jobs() {
  local lane
  _clear_claims  # claims left by a stopped runner
  for lane in $(seq 1 "$LANES"); do _lane "$1" & done
  wait
  _clear_claims
}

_clear_claims() {  # every DIR.claim under OUT (a subshell: the glob options stay there)
  (shopt -s globstar nullglob; rm -rf "$OUT"/**/*.claim)
}

_lane() {  # one lane of run_jobs (a subshell); set -f: a job's words such as data.resolutions=[32] are not globs
  local dir cmd args
  set -f
  while read -r dir cmd args; do
    mkdir -p "$(dirname "$dir")"
    mkdir "$dir.claim" 2> /dev/null || continue
    # shellcheck disable=SC2086  # args: the job's words
    $cmd "$dir" $args || echo "$(date +%T) FAILED $dir (see $dir.log)"
  done < <("$1")
}
