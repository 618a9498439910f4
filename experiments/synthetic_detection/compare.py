"""Compare two detection runs' ``results.csv`` (MutualNet style vs US-Net style): one Markdown table
of AP per (width, size) and one AP-vs-backbone-MAdds plot. Usage: compare.py A.csv B.csv OUT_DIR."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from resnet_switch.evaluation.reporting import human_count, markdown_table, plot_accuracy_vs_madds


def read(path: str) -> dict[tuple[float, int], dict]:
    rows = {}
    for r in csv.DictReader(open(path)):
        rows[(float(r["width"]), int(r["resolution"]))] = {k: float(v) for k, v in r.items()}
    return rows


def main(mutualnet_csv: str, usnet_csv: str, out_dir: str) -> None:
    mut, us = read(mutualnet_csv), read(usnet_csv)
    keys = sorted(mut, key=lambda k: (-k[0], -k[1]))
    table = [{"width @ size": f"{w:g} @ {s}", "backbone MAdds": human_count(mut[(w, s)]["madds"]),
              "MutualNet bbox AP": mut[(w, s)]["bbox_ap"], "US-Net bbox AP": us[(w, s)]["bbox_ap"],
              "MutualNet segm AP": mut[(w, s)]["segm_ap"], "US-Net segm AP": us[(w, s)]["segm_ap"],
              "MutualNet bbox AP50": mut[(w, s)]["bbox_ap50"], "US-Net bbox AP50": us[(w, s)]["bbox_ap50"]}
             for w, s in keys]
    mean = {name: sum(r[f"{kind}_ap"] for r in rows.values()) / len(rows)
            for name, rows in (("MutualNet", mut), ("US-Net", us)) for kind in ("bbox",)}
    out = Path(out_dir)
    (out / "results.md").write_text(
        "AP (%) per (backbone width, input size) on the synthetic detection val split (128 images), "
        "torchmetrics MeanAveragePrecision (COCO AP@[.5:.95]; AP50 at IoU 0.5); BN statistics recalibrated "
        "per configuration on 128 training images; backbone MAdds at a square image of the size.\n\n"
        + markdown_table(table) + "\n\n"
        + f"mean bbox AP over the 9 configurations: MutualNet {mean['MutualNet']:.2f}, US-Net {mean['US-Net']:.2f}\n")
    series: dict[str, list] = {}
    for name, rows in (("MutualNet", mut), ("US-Net", us)):
        for (w, s), r in rows.items():
            series.setdefault(f"{name}, width {w:g}", []).append((r["madds"], r["bbox_ap"], str(s)))
    plot_accuracy_vs_madds(series, out / "plot.png", title="synthetic detection: bbox AP vs backbone MAdds",
                           ylabel="bbox AP (%)", xlabel="backbone MAdds (M)")
    print((out / "results.md").read_text())


if __name__ == "__main__":
    main(*sys.argv[1:4])
