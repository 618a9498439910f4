"""Long-format CSV of the main job's diagnosis runs (diagnose/NAME/sS, from diagnose.sh): one row per (recipe, seed,
resolution), for the report command, e.g.
    python experiments/main_job/collect_diagnose.py default warmup0.25 > experiments/main_job/diagnose.csv
    python -m resnet_switch.report experiments/main_job/diagnose.csv table=wide pair=[warmup0.25,default]
"""

import csv
import sys
from pathlib import Path

RUNS = Path(__file__).parent / "diagnose"


def main(names: list[str]) -> None:
    out = csv.writer(sys.stdout)
    out.writerow(["label", "seed", "resolution", "top1"])
    for name in names:
        for run in sorted((RUNS / name).glob("s*/results.csv")):
            seed = int(run.parent.name[1:])
            for row in csv.DictReader(run.open()):
                out.writerow([name, seed, row["resolution"], row["top1"]])


if __name__ == "__main__":
    main(sys.argv[1:])
