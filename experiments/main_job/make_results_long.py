"""``results_long.csv``: the per-seed rows of the main job that survive in committed files (issue #37).

RS-Net (label ``rsnet``, seeds 0..4): its runs are the ``warmup0.25`` runs of the warm-up diagnosis
(README, "Results"), whose per-seed rows are in ``diagnose.csv``. The I-Net rows (``individual@32``,
``individual@32_lr0.02``) were not kept (``runs/`` is not committed): summary only, ``run.sh``
re-creates them. Check: ``python -m resnet_switch.report experiments/main_job/results_long.csv
table=wide`` gives results.md's ``rsnet`` row.

    python experiments/main_job/make_results_long.py
"""

import csv
from pathlib import Path

HERE = Path(__file__).parent
SEEDS = range(5)


def main() -> None:
    with (HERE / "diagnose.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["label"] == "warmup0.25" and int(r["seed"]) in SEEDS]
    with (HERE / "results_long.csv").open("w", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(["label", "seed", "resolution", "width", "top1"])
        for r in rows:
            out.writerow(["rsnet", r["seed"], r["resolution"], "1.0", r["top1"]])


if __name__ == "__main__":
    main()
