#!/usr/bin/env bash
# The study's tables from the committed record (results.csv, selection.csv); run.sh ends with it, and it
# runs alone at any time: bash experiments/fashion_mnist_full/report.sh
#   results.md (+ top1_vs_resolution.png): the primary arm, the papers' protocol (claims.yaml)
#   results_secondary.md (+ top1_vs_resolution_secondary.png): the lr / 3 arm (claims_secondary.yaml)
#   results_budget.md: the budgets, RS-Net's and SAN's lr hypotheses (claims_budget.yaml)
#   selection.md: the held-out selection of lr and crop
# Knobs: RESULTS (the folder of results.csv; default this one), EPOCHS (5), RES ("28 20 12"), PY.
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=experiments/fashion_mnist_full
RESULTS=${RESULTS:-$HERE}
RECORD=$RESULTS/results.csv
EPOCHS=${EPOCHS:-5}
RES=${RES:-"28 20 12"}
PY=${PY:-.venv/bin/python}
INETS=$(for r in $RES; do printf 'inet%s,' "$r"; done)
seeds() {  # the seeds of LABEL in the record, e.g. "0, 1, 2"
  awk -F, -v l="$1" '$2 == l { print $4 }' "$RECORD" | sort -un | paste -sd, | sed 's/,/, /g'
}
present() {  # present LABEL...: "[those of the labels that have rows in the record]" (runs may be pending)
  local label out=()
  for label in "$@"; do
    awk -F, -v l="$label" '$2 == l { found = 1 } END { exit !found }' "$RECORD" && out+=("$label")
  done
  (IFS=,; echo "[${out[*]}]")
}
# shellcheck disable=SC2086  # INETS: words
PRIMARY=$(present ${INETS//,/ } parallel_private_lr_one parallel_shared_lr_one rsnet_vanilla_lr_one rsnet_full_lr_one \
          san_proxy_lr_one san_ideal_lr_one)
# shellcheck disable=SC2086
SECONDARY=$(present ${INETS//,/ } parallel_private parallel_shared rsnet_vanilla rsnet_full san_proxy san_ideal)
$PY -m resnet_switch.report "$RECORD" table=wide labels="$PRIMARY" claims=$HERE/claims.yaml out="$RESULTS/results.md" \
    plot="$RESULTS/top1_vs_resolution.png" \
    title="Fashion-MNIST, full split, $EPOCHS epochs, the papers' protocol: every method at lr 0.1 (seeds $(seeds rsnet_full_lr_one))"
$PY -m resnet_switch.report "$RECORD" table=wide labels="$SECONDARY" claims=$HERE/claims_secondary.yaml \
    out="$RESULTS/results_secondary.md" plot="$RESULTS/top1_vs_resolution_secondary.png" \
    title="Fashion-MNIST, full split, $EPOCHS epochs, secondary arm: multi-resolution methods at lr 0.1 / 3 (seeds $(seeds rsnet_full))"
$PY -m resnet_switch.report "$RECORD" claims=$HERE/claims_budget.yaml out="$RESULTS/results_budget.md" \
    title="Budgets and the lr hypotheses (seeds $(seeds inet28))"
if [[ -f $RESULTS/selection.csv ]]; then
  $PY - "$RESULTS/selection.csv" > "$RESULTS/selection.md" <<'PYEOF'
import csv, sys
rows = sorted(csv.DictReader(open(sys.argv[1])), key=lambda r: (int(r["epochs"]), float(r["lr"]), float(r["crop_min"])))
print("# Selection on the held-out split\n")
print(f"The I-Net at 28 px, seed {rows[0]['seed']}, trained on the other {60000 - int(rows[0]['holdout'])} training images;"
      f" top-1 on the {rows[0]['holdout']} held out (never the test set). One axis at a time around lr 0.1, crop [0.8, 1].\n")
print("| lr | crop scale | epochs | held-out top-1 % |\n|---:|---|---:|---:|")
for r in rows:
    print(f"| {float(r['lr']):g} | [{float(r['crop_min']):g}, 1] | {r['epochs']} | {float(r['val_top1']):.2f} |")
PYEOF
fi
