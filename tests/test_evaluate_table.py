"""evaluate's checkpoint x test-resolution table on real tiny checkpoints: the numbers are the
checkpoint's network run by hand on the same validation images; one row per checkpoint, even when two
checkpoints share a label (same method, backbone and resolutions: two seeds, or a private/shared-BN
ablation); one checkpoint is also written as a run the report reads."""

import csv

import pytest
import torch

from resnet_switch.data.datamodule import SYNTHETIC_VAL_SAMPLES
from resnet_switch.evaluate import evaluate
from resnet_switch.evaluation.checkpoint_eval import build_eval_datamodule
from resnet_switch.evaluation.runs import read_results, write_run_info
from resnet_switch.evaluation.table_job import unique_labels
from resnet_switch.switch import SubnetConfig

from .tiny_eval import (
    calibrate_by_hand,
    eval_cfg,
    logits_by_hand,
    plain_logits,
    rebuilt,
    top1_top5,
    validation_batches,
    write_tiny,
)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_unique_labels_append_the_path_only_to_repeated_labels():
    labels = ["parallel resnet20 @28-12", "rsnet resnet20 @28-12", "parallel resnet20 @28-12"]
    paths = ["a/last.ckpt", "b/last.ckpt", "c/last.ckpt"]
    assert unique_labels(labels, paths) == [
        "parallel resnet20 @28-12 (a/last.ckpt)", "rsnet resnet20 @28-12", "parallel resnet20 @28-12 (c/last.ckpt)"]


def test_checkpoints_with_the_same_label_keep_their_own_rows_of_hand_computed_accuracy(tmp_path):
    """Two RS-Net checkpoints (seeds 0 and 1: other weights, same label): each row holds its own
    network's top-1 at 16 and 12 px (own BN sets) and its ensemble (softmax(alpha)-weighted logits of
    the two, RS-Net eq. 4); several checkpoints are not written as one run."""
    paths = [write_tiny(tmp_path / f"seed{seed}.ckpt", "rsnet", seed=seed) for seed in (0, 1)]
    out = tmp_path / "eval"
    rows = evaluate(eval_cfg(f"ckpt=[{paths[0]},{paths[1]}]", "test_resolutions=[16,12]", f"run_dir={out}"))

    val = validation_batches([16, 12])
    expected = {}
    for path in paths:
        method, net = rebuilt(path)
        logits = {r: logits_by_hand(net, val, SubnetConfig(r)) for r in (16, 12)}
        targets = logits[16][1]
        weights = torch.softmax(method.alpha.detach(), 0)  # [0.5, -0.5] -> 0.73, 0.27
        ensemble = weights[0] * logits[16][0] + weights[1] * logits[12][0]
        expected[f"rsnet resnet20 @16-12 ({path})"] = {
            **{r: top1_top5(*logits[r]) for r in (16, 12)}, "ensemble": top1_top5(ensemble, targets)}
    assert expected[f"rsnet resnet20 @16-12 ({paths[0]})"] != expected[f"rsnet resnet20 @16-12 ({paths[1]})"]

    assert sorted((r["model"], r["resolution"]) for r in rows) == sorted((m, r) for m in expected for r in (16, 12))
    for row in rows:
        assert (row["top1"], row["top5"]) == pytest.approx(expected[row["model"]][row["resolution"]], abs=1e-4)
        assert row["bn"] == "own"
    table = read_csv(out / "eval_table.csv")
    assert [r["model"] for r in table] == list(expected)
    for row in table:
        want = expected[row["model"]]
        assert float(row["16"]) == pytest.approx(want[16][0], abs=1e-4)
        assert float(row["12"]) == pytest.approx(want[12][0], abs=1e-4)
        assert float(row["ensemble"]) == pytest.approx(want["ensemble"][0], abs=1e-4)
    assert (out / "eval_rows.csv").is_file()
    assert not (out / "run.json").exists() and not (out / "results.csv").exists()


def test_accuracy_at_a_resolution_does_not_depend_on_the_other_test_resolutions(tmp_path):
    """Issue 37: a checkpoint trained at 16 and 12 px evaluated at [16, 12] and at [20, 16, 14, 12, 8]
    gives the same top-1 and top-5 at 16 and 12 px (every resolution up to 16 is resized from the one
    centre crop at 16; 20 gets its own), and that accuracy is the network run by hand."""
    ckpt = write_tiny(tmp_path / "rsnet.ckpt", "rsnet")
    short, long = ([(r["resolution"], r["top1"], r["top5"]) for r in evaluate(eval_cfg(
        f"ckpt={ckpt}", f"test_resolutions={res}", f"run_dir={tmp_path / name}")) if r["resolution"] in (16, 12)]
        for name, res in (("short", "[16,12]"), ("long", "[20,16,14,12,8]")))
    assert sorted(short) == sorted(long)
    _, net = rebuilt(ckpt)
    val = validation_batches([16, 12])
    for resolution, top1, top5 in short:
        assert (top1, top5) == pytest.approx(top1_top5(*logits_by_hand(net, val, SubnetConfig(resolution))), abs=1e-4)


def test_one_checkpoint_is_written_as_a_run_the_report_reads(tmp_path):
    """A SAN run folder evaluated with bn_mode=proxy and bn_mode=ideal at 16, 13 and 12 px: the
    report reads both evaluations as runs (label, seed, one value per resolution), and each value is
    the network run by hand. Proxy (SAN eq. 6) at 13 px is the 12-px network materialised (nearest BN
    set, nearest scale encoding) on 13-px images; ideal (eq. 5) encodes 13 px itself on BN statistics recalibrated
    on the first 16 training crops; training resolutions use their own BN set and encoding."""
    trained = tmp_path / "san_s3"
    (trained / "checkpoints").mkdir(parents=True)
    write_run_info(trained, {"label": "san", "seed": 3, "method": "san", "resolutions": [16, 12]})
    ckpt = write_tiny(trained / "checkpoints" / "last.ckpt", "san")
    rows = {}
    for mode, label, out in (("proxy", None, "eval_proxy"), ("ideal", "san_exact", "eval_ideal")):
        rows[mode] = evaluate(eval_cfg(f"ckpt={ckpt}", "test_resolutions=[16,13,12]", f"bn_mode={mode}",
                                       f"run_dir={tmp_path / out}", "calibration_samples=16",
                                       *([f"label={label}"] if label else [])))

    val = validation_batches([16, 13, 12])
    _, net = rebuilt(ckpt)
    own = {r: top1_top5(*logits_by_hand(net, val, SubnetConfig(r))) for r in (16, 12)}
    proxy = top1_top5(*plain_logits(net.materialize(SubnetConfig(12)), val, 13))
    _, exact = rebuilt(ckpt)
    exact.state.set_scale_encoding("exact")
    calibrate_by_hand(exact, SubnetConfig(13), num_samples=16)
    ideal = top1_top5(*logits_by_hand(exact, val, SubnetConfig(13), bn_mode="calibrated"))
    assert proxy != ideal  # the two modes are told apart on these images
    expected = {"proxy": {16: own[16], 13: proxy, 12: own[12]}, "ideal": {16: own[16], 13: ideal, 12: own[12]}}
    for mode, mode_rows in rows.items():
        got = {(r["resolution"], k): r[k] for r in mode_rows for k in ("top1", "top5")}
        want = {(r, k): v for r, pair in expected[mode].items() for k, v in zip(("top1", "top5"), pair)}
        assert got == pytest.approx(want, abs=1e-4), mode

    got = {(r.label, r.seed, r.resolution): r.value for r in read_results([tmp_path / "eval_proxy",
                                                                            tmp_path / "eval_ideal"])}
    assert got == pytest.approx({(label, 3, r): expected[mode][r][0] for label, mode in
                                 (("san_proxy", "proxy"), ("san_exact", "ideal")) for r in (16, 13, 12)}, abs=1e-4)


def test_data_settings_are_spelled_as_in_train_and_null_keeps_the_training_runs():
    meta = {"run": {"data": {"_target_": "resnet_switch.data.datamodule.MultiResDataModule", "name": "synthetic",
                             "resolutions": [16, 12], "batch_size": 64, "num_workers": 0, "val_samples": 8}},
            "net": {"resolutions": [16, 12]}}
    kept = build_eval_datamodule(meta, eval_cfg("ckpt=x.ckpt"), [16, 12])
    assert (kept.batch_size, kept.num_workers) == (64, 0)
    changed = build_eval_datamodule(meta, eval_cfg("ckpt=x.ckpt", "data.batch_size=8", "data.num_workers=1"), [16])
    assert (changed.batch_size, changed.num_workers, list(changed.test_resolutions)) == (8, 1, [16])
    assert kept.val_samples == 8
    whole = build_eval_datamodule(meta, eval_cfg("ckpt=x.ckpt", "+data.val_samples=null"), [16])
    assert whole.val_samples == SYNTHETIC_VAL_SAMPLES  # null given with +: the data set's default, not the run's 8
