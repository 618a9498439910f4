"""Seed statistics and the ``report`` command against hand computations."""

from __future__ import annotations

import csv
import math
import subprocess
import sys

import pytest
import torch

from resnet_switch.evaluation.runs import default_label, read_results, write_run_info
from resnet_switch.evaluation.seed_stats import (
    Result,
    claim_verdict,
    mean_interval,
    paired_differences,
    summarise,
    t_quantile,
)
from resnet_switch.report import build_report, main


def results(label, values, resolution=32, width=1.0):
    return [Result(label, seed, resolution, width, v) for seed, v in enumerate(values)]


# t_{0.975, df} in closed form where it has one: df = 1 is the Cauchy, tan(pi (p - 1/2)); df = 2 solves
# t / sqrt(2 + t^2) = 2p - 1, i.e. t = (2p - 1) / sqrt(2 p (1 - p))
T1 = math.tan(math.pi * 0.475)  # 12.7062
T2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)  # 4.3027


def test_t_quantile_is_exact_at_every_df():
    """Against scipy.stats.t (an independent implementation) at every df 1..200, including 31-40
    (2.04-2.02, where the normal 1.96 gives intervals 3-4 % too narrow), and the closed forms."""
    stats = pytest.importorskip("scipy.stats")
    for df in range(1, 201):
        assert t_quantile(0.975, df) == pytest.approx(float(stats.t.ppf(0.975, df)), rel=1e-12), df
    for p, df in ((0.9, 3), (0.995, 7), (0.025, 12), (0.6, 150)):
        assert t_quantile(p, df) == pytest.approx(float(stats.t.ppf(p, df)), rel=1e-12, abs=1e-12)
    assert t_quantile(0.975, 1) == pytest.approx(T1, rel=1e-13)
    assert t_quantile(0.975, 2) == pytest.approx(T2, rel=1e-13)
    assert t_quantile(0.975, 35) > 2.03  # the normal quantile 1.96 is no stand-in at 31-40 df
    assert t_quantile(0.5, 9) == 0.0 and t_quantile(0.025, 4) == -t_quantile(0.975, 4)


def test_t_interval_is_the_textbook_one():
    mean, low, high = mean_interval([1.0, 2.0, 3.0])  # sd 1, n 3
    assert mean == 2.0
    assert high - mean == pytest.approx(T2 / math.sqrt(3), rel=1e-12)
    assert mean - low == pytest.approx(T2 / math.sqrt(3), rel=1e-12)
    assert mean_interval([5.0]) == (5.0, 5.0, 5.0)


@pytest.mark.parametrize("n", [3, 5])
def test_t_interval_covers_the_true_mean_95_percent_of_the_time(n):
    """Normal samples of n values: the exact t interval covers the mean in 95 % of them (4000
    samples: +-0.35 % standard error); with the normal 1.96 instead it would cover 81 % (n=3), 88 % (n=5)."""
    gen = torch.Generator().manual_seed(n)
    samples = (3.0 + 2.0 * torch.randn(4000, n, generator=gen, dtype=torch.float64)).tolist()
    covered = sum(low <= 3.0 <= high for _, low, high in map(mean_interval, samples))
    assert 0.935 <= covered / len(samples) <= 0.965


def test_bootstrap_interval_is_the_percentiles_of_the_resampled_means():
    # [0, 0, 0, 4]: a resample's mean is the number of 4s drawn, K ~ Binomial(4, 1/4):
    # P(K <= 0) = 81/256 = 0.32, P(K <= 2) = 243/256 = 0.949, P(K <= 3) = 255/256 = 0.996,
    # so the 2.5 % point is 0 and the 97.5 % point is 3 (not the sample's max, 4)
    assert mean_interval([0.0, 0.0, 0.0, 4.0], "bootstrap") == (1.0, 0.0, 3.0)
    values = [1.0, 4.0, 2.0, 8.0, 3.0]
    assert mean_interval(values, "bootstrap") == mean_interval(values, "bootstrap")  # a fixed generator
    assert mean_interval([2.0, 2.0, 2.0], "bootstrap") == (2.0, 2.0, 2.0)


def test_bootstrap_interval_has_the_width_and_coverage_of_the_mean():
    """Normal samples of 20: the resampled means spread with the plug-in standard error
    ``sd_pop / sqrt(n)``, so the interval is ``2 * 1.96`` of it wide (each within 6 %, on average
    within 2 %), and it covers the true mean in about 93 % of samples (the percentile bootstrap's
    known shortfall at n = 20; 300 samples: +-1.5 % standard error)."""
    gen = torch.Generator().manual_seed(1)
    samples = 5.0 + 2.0 * torch.randn(300, 20, generator=gen, dtype=torch.float64)
    ratios, covered = [], 0
    for x in samples:
        _, low, high = mean_interval(x.tolist(), "bootstrap")
        plug_in_se = float(x.std(unbiased=False)) / math.sqrt(len(x))
        ratios.append((high - low) / (2 * 1.959964 * plug_in_se))
        covered += low <= 5.0 <= high
    assert all(0.94 <= r <= 1.06 for r in ratios), (min(ratios), max(ratios))
    assert sum(ratios) / len(ratios) == pytest.approx(1.0, abs=0.02)
    assert 0.88 <= covered / len(samples) <= 0.98


def test_summary_per_group():
    rows = results("rsnet", [90.0, 92.0, 94.0]) + results("rsnet", [60.0, 70.0, 80.0], resolution=16)
    by_res = {s.resolution: s for s in summarise(rows)}
    assert [s.resolution for s in summarise(rows)] == [32, 16]  # high -> low
    s = by_res[16]
    assert (s.n, s.mean, s.min, s.max) == (3, 70.0, 60.0, 80.0) and s.std == pytest.approx(10.0)


def test_paired_difference_cancels_what_the_seeds_share():
    # seed effects of +-10 shared by both: unpaired these overlap; paired, the gaps are 1.0, 1.2, 0.8
    a = results("a", [80.0, 91.5, 100.0])
    b = results("b", [79.0, 90.3, 99.2])
    (d,) = paired_differences(a + b, "a", "b")
    assert (d.n, d.mean) == (3, pytest.approx(1.0))
    half = T2 * 0.2 / math.sqrt(3)
    assert (d.low, d.high) == (pytest.approx(1.0 - half), pytest.approx(1.0 + half))
    assert d.verdict == ">" and claim_verdict([d]) == "holds"
    (r,) = paired_differences(a + b, "b", "a")
    assert r.verdict == "<" and claim_verdict([r]) == "does not hold"
    (u,) = paired_differences(a + results("c", [81.0, 90.5, 100.0]), "a", "c")  # diffs -1, +1, 0
    assert u.verdict == "~" and claim_verdict([u]) == "not shown"


def test_pairs_use_only_shared_seeds():
    a = results("a", [1.0, 2.0, 3.0])
    b = [Result("b", 1, 32, 1.0, 0.0), Result("b", 2, 32, 1.0, 0.0)]
    (d,) = paired_differences(a + b, "a", "b")
    assert d.n == 2 and d.mean == 2.5


def test_a_run_given_twice_is_refused():
    with pytest.raises(ValueError, match="two results for a seed 0"):
        summarise(results("a", [1.0]) + results("a", [2.0]))


def write_run(path, label, seed, top1_by_res):
    path.mkdir(parents=True)
    lines = ["resolution,width,top1,top5,madds,params"] + [f"{r},1.0,{v},99.0,1000,10" for r, v in top1_by_res.items()]
    (path / "results.csv").write_text("\n".join(lines) + "\n")
    write_run_info(path, {"label": label, "seed": seed})


def test_reads_run_directories_and_long_csv(tmp_path):
    write_run(tmp_path / "runs" / "a0", "rsnet", 0, {32: 90.0, 16: 60.0})
    write_run(tmp_path / "runs" / "deeper" / "a1", "rsnet", 1, {32: 92.0, 16: 64.0})
    (tmp_path / "long.csv").write_text("run,seed,resolution,width,top1\ninet,0,32,1.0,91.0\ninet,1,32,1.0,91.0\n")
    got = read_results([tmp_path / "runs", tmp_path / "long.csv"])
    assert sorted((r.label, r.seed, r.resolution, r.value) for r in got) == [
        ("inet", 0, 32, 91.0), ("inet", 1, 32, 91.0), ("rsnet", 0, 16, 60.0), ("rsnet", 0, 32, 90.0),
        ("rsnet", 1, 16, 64.0), ("rsnet", 1, 32, 92.0)]
    text, _, _ = build_report([str(tmp_path / "runs"), str(tmp_path / "long.csv")],
                              {"metric": "top1", "table": "wide", "pair": ["rsnet", "inet"], "interval": "t",
                               "claims": "", "title": ""})
    assert "| rsnet | 1 | 91.00 ± 1.41 | 62.00 ± 2.83 | 2 |" in text
    assert "| rsnet - inet | 32 | 1 | 2 | +0.00 | [-12.71, +12.71] | no |" in text


def test_claims_file(tmp_path):
    (tmp_path / "long.csv").write_text("run,seed,resolution,top1\n" + "".join(
        f"{run},{s},{r},{v + s}\n" for run, base in (("rs", 80), ("i16", 70), ("i32", 85))
        for r, v in ((32, base + 5), (16, base)) for s in range(3)))
    (tmp_path / "claims.yaml").write_text(
        "- {claim: rs beats i16, better: rs, worse: i16}\n"
        "- {claim: rs beats both at 16, better: rs, worse: [i16, i32], at: [16]}\n")
    text, _, _ = build_report([str(tmp_path / "long.csv")], {"metric": "top1", "table": "long", "pair": [],
                                                           "interval": "t", "claims": str(tmp_path / "claims.yaml"),
                                                           "title": ""})
    assert "| rs beats i16 | holds |" in text
    assert "| rs beats both at 16 | does not hold |" in text  # i32 (85) > rs (80) at 16 px
    assert "vs i16 @32: +10.00 [+10.00, +10.00] (n=3)" in text


def test_a_refuted_claim_names_the_pair_that_refutes_it(tmp_path):
    # 32 px: differences +1, +15, -10 (the lowest interval bound); 16 px: -10 on every seed (shown worse)
    values = {("rs", 32): [80, 90, 85], ("i", 32): [79, 75, 95], ("rs", 16): [60, 61, 62], ("i", 16): [70, 71, 72]}
    (tmp_path / "long.csv").write_text("run,seed,resolution,top1\n" + "".join(
        f"{run},{s},{r},{v}\n" for (run, r), vs in values.items() for s, v in enumerate(vs)))
    (tmp_path / "claims.yaml").write_text("- {claim: rs beats i, better: rs, worse: i}\n")
    text, _, _ = build_report([str(tmp_path / "long.csv")], {"metric": "top1", "table": "long", "pair": [],
                                                           "interval": "t", "claims": str(tmp_path / "claims.yaml"),
                                                           "title": ""})
    assert "| rs beats i | does not hold | vs i @16: -10.00 [-10.00, -10.00] (n=3) |" in text


def test_a_claim_without_its_runs_reads_no_results(tmp_path):
    (tmp_path / "long.csv").write_text("run,seed,resolution,top1\n" + "".join(
        f"{run},{s},32,{v + s}\n" for run, v in (("rs", 80), ("i32", 70)) for s in range(3)))
    (tmp_path / "claims.yaml").write_text(
        "- {claim: rs beats i32, better: rs, worse: i32}\n"
        "- {claim: rs beats i32 and i64 (not run yet), better: rs, worse: [i32, i64]}\n"
        "- {claim: rs beats i32 at 16 px (not tested there), better: rs, worse: i32, at: [16]}\n")
    text, _, _ = build_report([str(tmp_path / "long.csv")], {"metric": "top1", "table": "long", "pair": [],
                                                           "interval": "t", "claims": str(tmp_path / "claims.yaml"),
                                                           "title": ""})
    assert "| rs beats i32 | holds |" in text
    assert "| rs beats i32 and i64 (not run yet) | no results | vs i32 @32: +10.00" in text
    assert "vs i64: no results for i64 |" in text
    assert "| rs beats i32 at 16 px (not tested there) | no results | vs i32: no shared seeds at [16] |" in text


def test_main_writes_files(tmp_path, capsys):
    write_run(tmp_path / "r0", "x", 0, {32: 50.0})
    write_run(tmp_path / "r1", "x", 1, {32: 70.0})
    main([str(tmp_path), f"out={tmp_path / 'r.md'}", f"csv={tmp_path / 'r.csv'}", f"plot={tmp_path / 'r.png'}"])
    assert "| x | 32 | 1 | 2 | 60.00 | 14.14 | 50.00 | 70.00 |" in capsys.readouterr().out
    (row,) = csv.DictReader((tmp_path / "r.csv").open())
    assert (row["label"], int(row["resolution"]), int(row["n"])) == ("x", 32, 2)
    assert [float(row[k]) for k in ("mean", "std", "min", "max")] == pytest.approx([60.0, 10 * math.sqrt(2), 50.0, 70.0])
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "r.md").read_text().startswith("top1 over seeds")


def test_labels_keep_only_the_named_runs(tmp_path, capsys):
    write_run(tmp_path / "a0", "x", 0, {32: 50.0})
    write_run(tmp_path / "b0", "y", 0, {32: 70.0})
    main([str(tmp_path), "labels=[y]", f"csv={tmp_path / 'r.csv'}"])
    out = capsys.readouterr().out
    assert "| y | 32 | 1 | 1 | 70.00 |" in out and "| x |" not in out
    assert "50.0" not in (tmp_path / "r.csv").read_text()


def test_plot_labels_limit_the_plot_not_the_tables(tmp_path, capsys, monkeypatch):
    import resnet_switch.report as report

    plotted = []
    monkeypatch.setattr(report, "plot_summaries", lambda summaries, path, *a: plotted.extend(summaries) or path)
    write_run(tmp_path / "a0", "x", 0, {32: 50.0})
    write_run(tmp_path / "b0", "y", 0, {32: 70.0})
    main([str(tmp_path), "plot_labels=[y]", f"plot={tmp_path / 'r.png'}"])
    out = capsys.readouterr().out
    assert "| x | 32 |" in out and "| y | 32 |" in out
    assert [s.label for s in plotted] == ["y"]


@pytest.mark.parametrize("args, message", [
    (["nowhere"], "report: no file or directory nowhere"),
    ([], "report: give run directories"),
    (["{d}", "interval=normal"], "interval: unknown 'normal'"),
    (["{d}", "pair=[x,y]"], "pair: no results labelled 'y'"),
    (["{d}", "metric=top9"], "metric: "),
    (["{d}", "pair=[x]"], "pair: expected pair=[A,B]"),
    (["{d}", "labels=[z]"], "labels: no results labelled 'z'"),
    (["{d}", "plot=/tmp/rs_never.png", "plot_labels=[z]"], "plot_labels: no results labelled 'z'"),
])
def test_bad_input_names_the_field(tmp_path, args, message):
    write_run(tmp_path / "r0", "x", 0, {32: 50.0})
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        main([a.format(d=tmp_path) for a in args])


def test_bad_input_is_one_line_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "resnet_switch.report", str(tmp_path / "nowhere")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no file or directory" in proc.stderr


def test_default_labels():
    assert default_label("individual", [32]) == "individual@32" and default_label("rsnet", [32, 16]) == "rsnet"
    assert default_label("san", [32]) == "san"  # only a one-resolution I-Net carries its resolution
