"""Adaptive (cascade) inference: decisions and honest cost on hand-made logits, threshold fitting
within a budget, the policy file, ``evaluate adaptive=true`` on tiny checkpoints of every method
family, and ``SwitchableClassifier.predict_adaptive`` against the cascade."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from resnet_switch import evaluate as evaluate_module
from resnet_switch.cli.overrides import CONF_DIR
from resnet_switch.data.multires import resize_images
from resnet_switch.deploy.runtime import SwitchableClassifier
from resnet_switch.evaluation.adaptive import (
    NEVER,
    AdaptivePolicy,
    Fit,
    cascade,
    cascade_stages,
    fit_thresholds,
    paid_madds,
    policy_path,
)
from resnet_switch.evaluation.adaptive_eval import budget_sweep, heldout_images
from resnet_switch.switch import SubnetConfig

from . import tiny_eval
from .helpers import run_cli


def logits_with_confidence(p: list[float], labels: list[int] | None = None) -> torch.Tensor:
    """Two-class logits whose max softmax is exactly ``p`` (on class ``labels[i]``, default 0)."""
    z = torch.zeros(len(p), 2, dtype=torch.float64)
    for i, q in enumerate(p):
        z[i, (labels or [0] * len(p))[i]] = math.log(q / (1 - q))
    return z


# ------------------------------------------------------------------------- hand-made cascade
# 4 images, 3 stages of 10, 20, 40 MAdds, thresholds 0.8 (stage 0) and 0.7 (stage 1):
#   image 0: 0.9 at stage 0 -> stops at 0, pays 10;  image 3: 0.85 -> stops at 0, pays 10
#   image 1: 0.6, then 0.75 -> stops at 1, pays 30;  image 2: 0.6, 0.6 -> stage 2, pays 70
STAGE_P = [[0.9, 0.6, 0.6, 0.85], [0.95, 0.75, 0.6, 0.99], [0.9, 0.9, 0.55, 0.9]]
MADDS = [10.0, 20.0, 40.0]


def test_cascade_decisions_and_cost_match_a_hand_computation():
    stage_logits = [logits_with_confidence(p) for p in STAGE_P]
    calls = []

    def run(stage, index):
        calls.append((stage, index.tolist()))
        return stage_logits[stage][index]

    for source in (stage_logits, run):
        result = cascade(source, [0.8, 0.7], MADDS, num_images=4)
        assert result.stops.tolist() == [0, 1, 2, 0]
        assert result.madds.tolist() == [10.0, 30.0, 70.0, 10.0]
        assert result.mean_madds == pytest.approx(30.0)
        assert result.shares == [0.5, 0.25, 0.25]
        for i, stop in enumerate([0, 1, 2, 0]):
            assert torch.equal(result.logits[i], stage_logits[stop][i])
    # batched: each stage ran once, on the images still undecided only
    assert calls == [(0, [0, 1, 2, 3]), (1, [1, 2]), (2, [2])]


def test_skipped_stage_is_not_paid_and_margin_score_is_top1_minus_top2():
    stage_logits = [logits_with_confidence(p) for p in STAGE_P]
    skipped = cascade(stage_logits, [None, 0.7], MADDS)
    assert skipped.stops.tolist() == [1, 1, 2, 1]  # stage 1 confidences 0.95, 0.75, 0.6, 0.99
    assert skipped.madds.tolist() == [20.0, 20.0, 60.0, 20.0]
    # margin = 2p - 1 for two classes: 0.8, 0.2, 0.2, 0.7 at stage 0; 0.9, 0.5, 0.2, 0.98 at stage 1
    by_margin = cascade(stage_logits, [0.75, 0.45], MADDS, score="margin")
    assert by_margin.stops.tolist() == [0, 1, 2, 1]
    assert by_margin.mean_madds == pytest.approx((10 + 30 + 70 + 30) / 4)


def test_running_ensemble_scores_the_weighted_mean_of_the_stages_run():
    z0 = torch.tensor([[2.0, 0.0], [0.0, 0.1]])
    z1 = torch.tensor([[0.0, 0.0], [0.0, 3.0]])
    # stage 1's ensemble with log-weights (0, log 3): (z0 + 3 z1) / 4
    result = cascade([z0, z1], [0.99], [1.0, 2.0], ensemble=True, log_weights=[0.0, math.log(3.0)])
    assert result.stops.tolist() == [1, 1]
    assert torch.allclose(result.logits, (z0 + 3 * z1) / 4)
    result = cascade([z0, z1], [0.8], [1.0, 2.0], ensemble=True)  # softmax(2, 0) max = 0.88: image 0 stops
    assert result.stops.tolist() == [0, 1]
    assert torch.allclose(result.logits[0], z0[0]) and torch.allclose(result.logits[1], (z0[1] + z1[1]) / 2)


def test_threshold_zero_stops_everything_first_and_above_one_gives_the_top_stage():
    torch.manual_seed(0)
    stage_logits = [torch.randn(50, 7) * 3 for _ in range(3)]
    first = cascade(stage_logits, [0.0, 0.0], MADDS)
    assert first.stops.eq(0).all() and first.mean_madds == 10.0 and torch.equal(first.logits, stage_logits[0])
    top = cascade(stage_logits, [1.01, NEVER], MADDS)
    assert top.stops.eq(2).all() and top.mean_madds == 70.0 and torch.equal(top.logits, stage_logits[2])
    assert top.shares == [0.0, 0.0, 1.0]


def test_paid_madds_counts_only_the_stages_that_ran():
    """Stages of 10, 20, 40 MAdds. Stage 0 skipped (None): stopping at 1 pays 20, at 2 pays 20 + 40;
    stage 1 skipped: stopping at 0 pays 10, at 2 pays 10 + 40 (nothing for the stage nobody ran)."""
    assert paid_madds(MADDS, [None, 0.7])[1:] == [20.0, 60.0]
    assert [paid_madds(MADDS, [0.8, None])[s] for s in (0, 2)] == [10.0, 50.0]
    assert paid_madds(MADDS, [0.8, 0.7]) == [10.0, 30.0, 70.0]
    assert paid_madds(MADDS, [None, None])[2] == 40.0  # only the last stage runs
    # the cascade charges every image what paid_madds says for the stage it stopped at
    stage_logits = [logits_with_confidence(p) for p in STAGE_P]
    for thresholds in ([None, 0.7], [0.8, None], [0.8, 0.7], [None, None], [0.0, NEVER], [NEVER, 0.9]):
        result = cascade(stage_logits, thresholds, MADDS)
        paid = paid_madds(MADDS, thresholds)
        assert result.madds.tolist() == [paid[s] for s in result.stops.tolist()], thresholds


def test_cascade_stages_are_the_pareto_frontier_of_the_measured_rows():
    rows = [{"name": "A", "madds": 10, "top1": 50.0}, {"name": "B", "madds": 20, "top1": 45.0},  # B: A beats it
            {"name": "C", "madds": 30, "top1": 70.0}, {"name": "D", "madds": 30, "top1": 65.0},  # D: C, same cost
            {"name": "E", "madds": 40, "top1": 70.0}, {"name": "F", "madds": 50, "top1": 80.0}]  # E: C, cheaper
    assert [r["name"] for r in cascade_stages(rows)] == ["A", "C", "F"]
    # one width (the resolutions): every row by cost, the more accurate first on equal cost
    assert [r["name"] for r in cascade_stages(rows, frontier=False)] == ["A", "B", "C", "D", "E", "F"]
    assert [r["name"] for r in cascade_stages(list(reversed(rows)))] == ["A", "C", "F"]


@pytest.mark.parametrize("bad", [[0.5], [0.5, -0.1], [0.5, float("nan")], [True, 0.5]])
def test_bad_thresholds_are_refused(bad):
    with pytest.raises(ValueError, match="^thresholds:"):
        cascade([torch.zeros(2, 3)] * 3, bad, MADDS)


# --------------------------------------------------------------------------------- fitting
def test_fit_finds_the_known_optimum_of_a_two_stage_example():
    # stage 0 is right exactly on its 5 most confident images, stage 1 always right; sending 5 of
    # 10 images on costs 1 + 0.5 * 4 = 3 MAdds: the optimum sends the 5 least confident ones: 100 %
    p = [0.55, 0.6, 0.62, 0.65, 0.7, 0.8, 0.82, 0.85, 0.9, 0.95]
    targets = torch.tensor([1] * 5 + [0] * 5)
    stage0 = logits_with_confidence(p)  # predicts class 0 everywhere
    stage1 = logits_with_confidence([0.9] * 10, labels=targets.tolist())
    fit = fit_thresholds([stage0, stage1], targets, [1.0, 4.0], budget_madds=3.0)
    assert fit.top1 == 100.0 and fit.mean_madds == pytest.approx(3.0)
    replay = cascade([stage0, stage1], fit.thresholds, [1.0, 4.0])
    assert replay.stops.tolist() == [1] * 5 + [0] * 5
    # one image fewer fits under 2.6 MAdds: 90 %
    assert fit_thresholds([stage0, stage1], targets, [1.0, 4.0], budget_madds=2.6).top1 == 90.0
    with pytest.raises(ValueError, match="^budget.madds: .* below the cheapest stage"):
        fit_thresholds([stage0, stage1], targets, [1.0, 4.0], budget_madds=0.5)


def noisy_stages(n=400, classes=5, seed=0):
    """Stage logits that get better (and surer) with the stage index, as resolutions do."""
    gen = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, classes, (n,), generator=gen)
    out = []
    for strength in (0.8, 1.6, 3.0):
        z = torch.randn(n, classes, generator=gen)
        z[torch.arange(n), targets] += strength * torch.rand(n, generator=gen) * 2
        out.append(z)
    return out, targets


@pytest.mark.parametrize("ensemble", [False, True])
@pytest.mark.parametrize("budget", [10.0, 17.0, 25.0, 40.0, 70.0])
def test_fitted_thresholds_meet_the_budget_and_beat_every_static_stage_within_it(budget, ensemble):
    stage_logits, targets = noisy_stages()
    fit = fit_thresholds(stage_logits, targets, MADDS, budget, ensemble=ensemble)
    replay = cascade(stage_logits, fit.thresholds, MADDS, ensemble=ensemble)
    assert replay.mean_madds <= budget + 1e-9
    assert replay.mean_madds == pytest.approx(fit.mean_madds)
    assert 100.0 * float((replay.logits.argmax(-1) == targets).float().mean()) == pytest.approx(fit.top1)
    static = [100.0 * float((z.argmax(-1) == targets).float().mean()) for z in stage_logits]
    assert fit.top1 >= max(acc for acc, m in zip(static, MADDS) if m <= budget)


def test_budget_sweep_has_every_stage_and_the_midpoints():
    assert budget_sweep([10.0, 40.0]) == [10.0, 20.0, 40.0]
    assert budget_sweep([10.0, 40.0], extra=30.0) == [10.0, 20.0, 30.0, 40.0]


def test_policy_round_trips_through_json(tmp_path):
    policy = AdaptivePolicy(stages=[SubnetConfig(12), SubnetConfig(16)], stage_madds=[5.0, 9.0], score="margin",
                            fits=[Fit(9.0, [NEVER], 80.0, 9.0), Fit(6.0, [0.4], 75.0, 6.0)])
    loaded = AdaptivePolicy.load(policy.save(tmp_path / "p.json"))
    assert loaded.stages == policy.stages and loaded.score == "margin"
    assert [f.budget_madds for f in loaded.fits] == [6.0, 9.0]
    assert loaded.thresholds_for(7.0).thresholds == [0.4] and loaded.thresholds_for(100).thresholds == [NEVER]
    with pytest.raises(ValueError, match="^budget: no thresholds fitted"):
        loaded.thresholds_for(5.0)
    assert policy_path(tmp_path / "last.ckpt").name == "last.ckpt.adaptive.json"


# ------------------------------------------------------------------ tiny checkpoints, evaluate
DATA = {"_target_": "resnet_switch.data.datamodule.MultiResDataModule", "name": "synthetic", "batch_size": 16,
        "num_workers": 0, "train_samples": 64, "val_samples": 32, "resolutions": [16, 12]}
METHODS = {"rsnet": {}, "parallel": {}, "san": {}, "mutualnet": {"width_range": [0.5, 1.0]},
           "usnet": {"width_range": [0.5, 1.0]}, "snet": {"widths": [1.0, 0.5]}}


def write_tiny(path, method):
    """A checkpoint of a fresh resnet20 (random BN) whose run data is a tiny synthetic set."""
    return tiny_eval.write_tiny(path, method, method_kwargs=METHODS[method], data=DATA)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("adaptive_ckpts")
    return {name: write_tiny(folder / f"{name}.ckpt", name) for name in METHODS}


def eval_cfg(*overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("evaluate", overrides=["device=cpu", "adaptive=true", "cascade.calibration_images=32",
                                              "calibration_samples=16", *overrides])


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


FAST = ("rsnet", "mutualnet")  # one resolution-only and one slimmable family by default; the rest: slow


@pytest.mark.parametrize("method", [m if m in FAST else pytest.param(m, marks=pytest.mark.slow) for m in METHODS])
def test_evaluate_adaptive_works_for_every_method_family(tiny, method, tmp_path):
    score = "margin" if method == "san" else "max_softmax"
    rows = evaluate_module.evaluate(eval_cfg(f"ckpt={tiny[method]}", f"run_dir={tmp_path}", "cascade.store=false",
                                             f"cascade.score={score}"))
    static = [r for r in rows if r["kind"] == "static"]
    adaptive = [r for r in rows if r["kind"] == "adaptive"]
    # slimmable: the method's evaluation widths (0.75 has 1.0's channels in this tiny net: merged)
    widths = {1.0, 0.5} if method in ("mutualnet", "usnet", "snet") else {1.0}
    assert {r["width"] for r in static} == widths and {r["resolution"] for r in static} == {16, 12}
    assert adaptive and all(0.0 <= r["top1"] <= 100.0 for r in rows)
    share_cols = [k for k in rows[0] if k.startswith("share_")]
    for r in adaptive:
        assert sum(r[k] for k in share_cols) == pytest.approx(1.0)
        assert r["calibration_mean_madds"] <= r["budget_madds"] * (1 + 1e-9)  # the budget holds on calibration
    # the cheapest budget is the cheapest stage alone: the cascade equals that static configuration
    cheapest = min(static, key=lambda r: r["mean_madds"])
    assert adaptive[0]["mean_madds"] == pytest.approx(cheapest["mean_madds"])
    assert adaptive[0]["top1"] == pytest.approx(cheapest["top1"])
    assert (tmp_path / "adaptive.png").is_file()
    assert not policy_path(tiny[method]).exists()  # cascade.store=false
    policy = json.loads((tmp_path / "adaptive.json").read_text())  # one fit per budget of the csv
    assert policy["score"] == score
    # the stages: for a slimmable net the MAdds / calibration top-1 Pareto frontier of the static rows
    # (each costlier stage strictly more accurate), otherwise every resolution by cost
    stages = [(s["resolution"], s["width"]) for s in policy["stages"]]
    by_cost = sorted(static, key=lambda r: (r["mean_madds"], -r["calibration_top1"]))
    if widths == {1.0}:
        assert stages == [(r["resolution"], r["width"]) for r in by_cost]
    else:
        frontier, best = [], -1.0
        for r in by_cost:
            if r["calibration_top1"] > best:
                frontier.append((r["resolution"], r["width"]))
                best = r["calibration_top1"]
        assert stages == frontier
    assert [f["budget_madds"] for f in policy["fits"]] == [r["budget_madds"] for r in adaptive]
    assert read_rows(tmp_path / "adaptive.csv")[0].keys() == rows[0].keys()


def test_calibration_images_are_held_out_training_images():
    from resnet_switch.data.datamodule import MultiResDataModule
    from resnet_switch.data.synthetic import SyntheticScaleDataset

    dm = MultiResDataModule(name="synthetic", train_resolutions=[16, 12], batch_size=8, num_workers=0,
                            train_samples=64, val_samples=16)
    dataset, note = heldout_images(dm, 10)
    assert len(dataset) == 10 and "held-out" in note
    reference = SyntheticScaleDataset(74, split="train")
    centre = dm.val_transform()
    for i in (0, 9):  # index 64 + i of the train split: after the 64 the run trained on
        image, label = dataset[i]
        expected, expected_label = reference[64 + i]
        assert label == expected_label and torch.equal(image, centre(expected))


def test_evaluate_cli_writes_adaptive_csv_and_the_policy_predict_adaptive_reads(tiny, tmp_path):
    ckpt = tiny["rsnet"]
    result = run_cli("resnet_switch.evaluate", f"ckpt={ckpt}", "adaptive=true", "cascade.calibration_images=32",
                     "budget.madds=0.5M", "cascade.ensemble=true", "device=cpu", f"run_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = read_rows(tmp_path / "adaptive.csv")
    assert {"kind", "mean_madds", "top1", "share_r12_w1", "share_r16_w1"} <= set(rows[0])
    assert {r["kind"] for r in rows} == {"static", "adaptive"}
    assert any(r["kind"] == "adaptive" and float(r["budget_madds"]) == 5e5 for r in rows)
    assert "adaptive under budget.madds=500K" in result.stdout
    policy = AdaptivePolicy.load(policy_path(ckpt))
    alpha = {16: 0.5, 12: -0.5}  # the checkpoint's alpha per training resolution
    assert policy.ensemble and policy.log_weights == pytest.approx([alpha[c.resolution] for c in policy.stages])
    assert policy.calibration["images"] == 32 and "held-out" in policy.calibration["source"]

    clf = SwitchableClassifier.from_checkpoint(ckpt, device="cpu")
    images = torch.randint(0, 256, (6, 3, 24, 20), dtype=torch.uint8)
    before = clf.config
    logits, configs = clf.predict_adaptive(images, budget="0.5M")
    assert clf.config == before and logits.shape == (6, 10) and len(configs) == 6
    # the same decisions by hand: one crop at the top stage's resolution, each stage resized from it
    x = clf.preprocess(images, max(c.resolution for c in policy.stages))
    stage_logits = []
    for c in policy.stages:
        with torch.no_grad(), clf.net.switch(c, "nearest"):
            stage_logits.append(clf.net(resize_images(x, c.resolution)))
    expected = policy.run(stage_logits, policy.thresholds_for(5e5).thresholds)
    assert configs == [policy.stages[s] for s in expected.stops.tolist()]
    assert torch.allclose(logits, expected.logits, atol=1e-5)


def test_predict_adaptive_with_explicit_thresholds_and_slimmable_stages(tiny, tmp_path):
    clf = SwitchableClassifier.from_checkpoint(tiny["mutualnet"], device="cpu")
    stages = [SubnetConfig(12, 0.5), SubnetConfig(16, 1.0)]
    policy = AdaptivePolicy(stages=stages, stage_madds=[1.0, 4.0])
    images = torch.randint(0, 256, (5, 3, 20, 20), dtype=torch.uint8)
    _, first = clf.predict_adaptive(images, thresholds=[0.0], policy=policy)
    logits, top = clf.predict_adaptive(images, thresholds=[NEVER], policy=policy)
    assert first == [stages[0]] * 5 and top == [stages[1]] * 5
    assert torch.allclose(logits, clf.predict(images, resolution=16, width=1.0), atol=1e-5)
    with pytest.raises(ValueError, match="^budget / thresholds"):
        clf.predict_adaptive(images, policy=policy)


def test_a_bad_budget_fails_in_one_line_with_exit_code_2(tiny):
    result = run_cli("resnet_switch.evaluate", f"ckpt={tiny['rsnet']}", "adaptive=true", "device=cpu",
                     "budget.madds=lots", "hydra.run.dir=/tmp/rs_bad_adaptive")
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: budget.madds:") and "Traceback" not in result.stderr


@pytest.mark.parametrize("args, message", [
    (["budget.madds=1k"], "^budget.madds: 1K is below the cheapest configuration"),
    (["cascade.score=entropy"], "^cascade.score: unknown confidence score 'entropy'"),
    (["cascade.calibration_images=0"], "^cascade.calibration_images: must be an integer >= 1"),
    (["cascade.ensemble=maybe"], "^cascade.ensemble: must be true or false"),
    (["budget.latency_ms=5"], "^budget.latency_ms: adaptive=true fits thresholds to a MAdds budget"),
    (["query_table=true"], "^adaptive: query_table=true and adaptive=true are two jobs"),
])
def test_bad_adaptive_options_are_refused_with_the_field_named(tiny, tmp_path, args, message):
    with pytest.raises(ValueError, match=message):
        evaluate_module.evaluate(eval_cfg(f"ckpt={tiny['rsnet']}", f"run_dir={tmp_path}", "cascade.store=false",
                                          *args))


def test_bench_adaptive_reports_the_cascade_against_the_static_stage_of_equal_accuracy(tiny, tmp_path, capsys):
    from resnet_switch.bench import main as bench_main

    policy = AdaptivePolicy(stages=[SubnetConfig(12), SubnetConfig(16)], stage_madds=[370528.0, 658592.0],
                            fits=[Fit(5e5, [0.11], 0.0, 0.0)])
    policy.save(tmp_path / "policy.json")
    bench_main(["adaptive", f"ckpt={tiny['rsnet']}", f"policy={tmp_path / 'policy.json'}", "images=16",
                "batch_sizes=[1,8]", "rounds=1"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["task"] == "adaptive" and result["stages"] == ["w1@12", "w1@16"] and result["num_images"] == 16
    assert [row["batch_size"] for row in result["rows"]] == [1, 8]
    for row in result["rows"]:
        shares = row["adaptive"]["shares"]
        assert sum(shares) == pytest.approx(1.0)
        # honest cost: the images that went on paid both passes
        assert row["adaptive"]["mean_madds"] == pytest.approx(370528.0 + shares[1] * 658592.0)
        assert row["static"]["config"] in result["stages"] and row["adaptive"]["ms_per_image"] > 0
        assert row["static"]["top1"] >= row["adaptive"]["top1"] or row["static"]["config"] == "w1@16"
