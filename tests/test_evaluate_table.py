"""evaluate's checkpoint x test-resolution table: one row per checkpoint, even when two checkpoints
share a label (same method, backbone and resolutions: two seeds, or a private/shared-BN ablation)."""

import csv

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from resnet_switch import evaluate as evaluate_module
from resnet_switch.cli.overrides import CONF_DIR
from resnet_switch.data.datamodule import SYNTHETIC_VAL_SAMPLES


def test_unique_labels_append_the_path_only_to_repeated_labels():
    labels = ["parallel resnet20 @28-12", "rsnet resnet20 @28-12", "parallel resnet20 @28-12"]
    paths = ["a/last.ckpt", "b/last.ckpt", "c/last.ckpt"]
    assert evaluate_module.unique_labels(labels, paths) == [
        "parallel resnet20 @28-12 (a/last.ckpt)", "rsnet resnet20 @28-12", "parallel resnet20 @28-12 (c/last.ckpt)"]


def test_checkpoints_with_the_same_label_keep_their_own_rows(tmp_path, monkeypatch):
    top1 = {"private.ckpt": 90.0, "shared.ckpt": 80.0}

    def fake_evaluate_checkpoint(path, cfg, test_resolutions, device, extra=None):
        if extra is not None:  # an ensemble accuracy (RS-Net's), reported under the checkpoint's own label
            extra["parallel resnet20 @16-12"] = {"top1": top1[path] + 1.0, "top5": 99.0}
        return [{"model": "parallel resnet20 @16-12", "resolution": r, "width": 1.0, "top1": top1[path] - r,
                 "top5": 99.0, "bn": "own", "madds": r * 1000, "params": 10} for r in test_resolutions]

    monkeypatch.setattr(evaluate_module, "evaluate_checkpoint", fake_evaluate_checkpoint)
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("evaluate", overrides=["ckpt=[private.ckpt,shared.ckpt]", "test_resolutions=[16,12]",
                                             f"run_dir={tmp_path}", "device=cpu"])
    evaluate_module.evaluate(cfg)
    with open(tmp_path / "eval_table.csv") as f:
        table = list(csv.DictReader(f))
    assert [(r["model"], float(r["16"]), float(r["12"]), float(r["ensemble"])) for r in table] == [
        ("parallel resnet20 @16-12 (private.ckpt)", 74.0, 78.0, 91.0),
        ("parallel resnet20 @16-12 (shared.ckpt)", 64.0, 68.0, 81.0),
    ]


def _eval_cfg(*overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("evaluate", overrides=["ckpt=x.ckpt", "device=cpu", *overrides])


def test_data_settings_are_spelled_as_in_train_and_null_keeps_the_training_runs():
    meta = {"run": {"data": {"_target_": "resnet_switch.data.datamodule.MultiResDataModule", "name": "synthetic",
                             "resolutions": [16, 12], "batch_size": 64, "num_workers": 0, "val_samples": 8}},
            "net": {"resolutions": [16, 12]}}
    kept = evaluate_module.build_eval_datamodule(meta, _eval_cfg(), [16, 12])
    assert (kept.batch_size, kept.num_workers) == (64, 0)
    changed = evaluate_module.build_eval_datamodule(meta, _eval_cfg("data.batch_size=8", "data.num_workers=1"), [16])
    assert (changed.batch_size, changed.num_workers, list(changed.test_resolutions)) == (8, 1, [16])
    assert kept.val_samples == 8
    whole = evaluate_module.build_eval_datamodule(meta, _eval_cfg("+data.val_samples=null"), [16])
    assert whole.val_samples == SYNTHETIC_VAL_SAMPLES  # null given with +: the data set's default, not the run's 8


def _fake_rows(top1):
    def fake_evaluate_checkpoint(path, cfg, test_resolutions, device, extra=None):
        return [{"model": "san resnet20 @16-12", "resolution": r, "width": 1.0, "top1": top1 - r, "top5": 99.0,
                 "bn": "proxy", "madds": r * 1000, "params": 10} for r in test_resolutions]
    return fake_evaluate_checkpoint


def test_one_checkpoint_is_written_as_a_run_the_report_reads(tmp_path, monkeypatch):
    from resnet_switch.evaluation.runs import read_results, write_run_info

    trained = tmp_path / "san_s3"
    (trained / "checkpoints").mkdir(parents=True)
    write_run_info(trained, {"label": "san", "seed": 3, "method": "san", "resolutions": [16, 12]})
    monkeypatch.setattr(evaluate_module, "evaluate_checkpoint", _fake_rows(90.0))
    ckpt = trained / "checkpoints" / "last.ckpt"
    for mode, label, out in (("proxy", None, "eval_proxy"), ("ideal", "san_exact", "eval_ideal")):
        overrides = [f"ckpt={ckpt}", "test_resolutions=[16,14,12]", f"bn_mode={mode}", f"run_dir={tmp_path / out}",
                     "device=cpu"] + ([f"label={label}"] if label else [])
        GlobalHydra.instance().clear()
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            evaluate_module.evaluate(compose("evaluate", overrides=overrides))
    got = sorted((r.label, r.seed, r.resolution, r.value) for r in read_results([tmp_path / "eval_proxy",
                                                                                 tmp_path / "eval_ideal"]))
    assert got == [("san_exact", 3, 12, 78.0), ("san_exact", 3, 14, 76.0), ("san_exact", 3, 16, 74.0),
                   ("san_proxy", 3, 12, 78.0), ("san_proxy", 3, 14, 76.0), ("san_proxy", 3, 16, 74.0)]


def test_several_checkpoints_are_not_written_as_one_run(tmp_path, monkeypatch):
    monkeypatch.setattr(evaluate_module, "evaluate_checkpoint", _fake_rows(90.0))
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        evaluate_module.evaluate(compose("evaluate", overrides=["ckpt=[a.ckpt,b.ckpt]", "test_resolutions=[16]",
                                                                f"run_dir={tmp_path}", "device=cpu"]))
    assert (tmp_path / "eval_rows.csv").is_file()
    assert not (tmp_path / "run.json").exists() and not (tmp_path / "results.csv").exists()
