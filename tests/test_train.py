"""The training job end to end on tiny settings: outputs, checkpoint contents, resume, evaluate."""

import csv

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from resnet_switch.switch import SubnetConfig
from resnet_switch.train import train
from resnet_switch.training.checkpointing import (
    CheckpointError,
    check_compatible,
    load_checkpoint,
    rebuild_from_checkpoint,
)

from .helpers import tiny_cfg


class KeepTrainedModule(Callback):
    """Keeps the LightningModule of each fit as it is in memory after training."""

    modules: list = []

    def on_train_end(self, trainer, pl_module):
        KeepTrainedModule.modules.append(pl_module)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    metrics = train(tiny_cfg(run_dir, "trainer.max_epochs=2", "+callbacks.keep._target_=tests.test_train.KeepTrainedModule"))
    return run_dir, metrics


def test_training_writes_results_checkpoint_and_plot(trained):
    run_dir, metrics = trained
    assert set(metrics) == {"acc1@16", "acc1@12"}
    for name in ("results.md", "results.csv", "acc_vs_madds.png", "checkpoints/last.ckpt"):
        assert (run_dir / name).is_file(), name
    rows = list(csv.DictReader((run_dir / "results.csv").open()))
    assert [int(r["resolution"]) for r in rows] == [16, 12]
    assert int(rows[0]["madds"]) > int(rows[1]["madds"]) > 0
    logged = (run_dir / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    for key in ("train/loss", "val/acc1@16", "val/acc1@12", "val/acc5@16", "val/acc1_mean",
                "train/alpha@16", "train/alpha@12", "val/acc1_ensemble"):
        assert key in logged, key


def test_validation_logs_the_rsnet_ensemble_accuracy(trained):
    """``val/acc1_ensemble``: top-1 of ``softmax(alpha)``-weighted logits of every training
    resolution (the official RS-Nets validation), recomputed by hand from the final checkpoint."""
    from resnet_switch.switch import SubnetConfig
    from resnet_switch.train import build_datamodule

    run_dir, _ = trained
    rows = list(csv.DictReader((run_dir / "csv" / "version_0" / "metrics.csv").open()))
    logged = [float(r["val/acc1_ensemble"]) for r in rows if r.get("val/acc1_ensemble")][-1]
    method, net, _ = rebuild_from_checkpoint(load_checkpoint(run_dir / "checkpoints" / "last.ckpt"))
    dm = build_datamodule(tiny_cfg(run_dir), [16, 12])
    dm.setup("validate")
    weights = torch.softmax(method.alpha.detach(), 0)
    correct = total = 0
    with torch.no_grad():
        for images, targets in dm.val_dataloader():
            batch = dm.on_after_batch_transfer((images, targets))
            combined = 0
            for w, r in zip(weights, (16, 12)):
                with net.switch(SubnetConfig(r)):
                    combined = combined + w * net(batch.at(r))
            correct += int((combined.argmax(1) == targets).sum())
            total += len(targets)
    assert logged == pytest.approx(100 * correct / total, abs=1e-3)


def test_checkpoint_carries_everything_to_rebuild(trained):
    run_dir, metrics = trained
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")  # weights_only=True inside
    meta = ckpt["resnet_switch"]
    assert meta["method"]["name"] == "rsnet" and meta["method"]["kwargs"]["distill"] == "full"
    assert meta["net"]["name"] == "resnet20" and meta["net"]["resolutions"] == [16, 12]
    assert meta["net"]["widths"] == [1.0] and meta["net"]["base_width"] == 4
    method, net, _ = rebuild_from_checkpoint(ckpt)  # from the file alone
    module = KeepTrainedModule.modules[-1]  # the network that trained, as it is in memory
    torch.testing.assert_close(method.alpha, module.method.alpha.detach())
    # alpha moved away from uniform (it trained) and has no weight decay group of its own to fight
    assert not torch.equal(method.alpha, torch.zeros(2))
    module.net.eval()
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    for r in (16, 12):
        x = torch.nn.functional.interpolate(images, size=(r, r), mode="bilinear", antialias=True)
        with torch.no_grad(), net.switch(SubnetConfig(r)), module.net.switch(SubnetConfig(r)):
            rebuilt, trained_logits = net(x), module.net(x)
        assert rebuilt.shape == (4, 10)
        torch.testing.assert_close(rebuilt, trained_logits)  # same function, not only the same alpha


def test_resume_continues_to_the_same_weights(tmp_path):
    straight = tmp_path / "straight"
    train(tiny_cfg(straight, "trainer.max_epochs=2"))
    first = tmp_path / "first"
    train(tiny_cfg(first, "trainer.max_epochs=2", "+callbacks.stop._target_=tests.helpers.StopAfterEpochs",
                   "+callbacks.stop.epochs=1"))
    assert load_checkpoint(first / "checkpoints" / "last.ckpt")["epoch"] == 0
    resumed = tmp_path / "resumed"
    train(tiny_cfg(resumed, "trainer.max_epochs=2", f"ckpt_path={first}/checkpoints/last.ckpt"))
    a = load_checkpoint(straight / "checkpoints" / "last.ckpt")
    b = load_checkpoint(resumed / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 2 * (64 // 16)
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=0, msg=key)


def test_resume_from_another_method_is_refused(trained, tmp_path):
    run_dir, _ = trained
    cfg = tiny_cfg(tmp_path, "method=parallel", f"ckpt_path={run_dir}/checkpoints/last.ckpt")
    with pytest.raises(CheckpointError, match="method=rsnet"):
        train(cfg)


@pytest.mark.parametrize("method, model, resolutions, message", [
    ("san", "resnet20", [16, 12], "trained with method=rsnet but this run has method=san"),
    ("rsnet", "mobilenetv2", [16, 12], "trained with model=resnet20 but this run has model=mobilenetv2"),
    ("rsnet", "resnet20", [16, 8], "trained with data.resolutions=[16, 12] but this run has data.resolutions=[16, 8]"),
])
def test_resume_into_another_method_backbone_or_resolution_set_names_both(method, model, resolutions, message):
    meta = {"method": {"name": "rsnet"}, "net": {"name": "resnet20", "resolutions": [16, 12]}}
    check_compatible(meta, "rsnet", "resnet20", [16, 12])  # the same run: accepted
    with pytest.raises(CheckpointError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_compatible(meta, method, model, resolutions)


def test_truncated_checkpoint_gives_a_clear_error(trained, tmp_path):
    run_dir, _ = trained
    data = (run_dir / "checkpoints" / "last.ckpt").read_bytes()
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="no file"):
        load_checkpoint(tmp_path / "missing.ckpt")


@pytest.mark.parametrize("extra,evaluated", [([], False), (["trainer.check_val_every_n_epoch=2"], True)])
def test_final_table_reuses_the_last_validation_only_when_it_is_current(extra, evaluated, tmp_path, monkeypatch):
    from resnet_switch.evaluation import results

    calls = []
    real = results.evaluate_configs
    monkeypatch.setattr(results, "evaluate_configs", lambda *a, **k: calls.append(1) or real(*a, **k))
    metrics = train(tiny_cfg(tmp_path, "trainer.limit_train_batches=2", "data.val_samples=16", *extra))
    assert bool(calls) == evaluated  # no validation after the last step: evaluated afresh
    logged = list(csv.DictReader((tmp_path / "csv" / "version_0" / "metrics.csv").open()))
    val = [r for r in logged if r.get("val/acc1@16")]
    if not evaluated:  # the table's figures are the last validation's
        assert float(val[-1]["val/acc1@16"]) == pytest.approx(metrics["acc1@16"], abs=1e-4)


def test_the_single_resolution_net_is_tested_at_every_test_resolution(tmp_path):
    # make train's I-Net: trained at 16 px, data.test_resolutions asks for 16, 14 and 12 px too
    metrics = train(tiny_cfg(tmp_path, "method=individual", "data.resolutions=[16]", "data.test_resolutions=[12,16,14]"))
    assert set(metrics) == {"acc1@16", "acc1@14", "acc1@12"}
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [int(r["resolution"]) for r in rows] == [16, 14, 12]
    assert int(rows[0]["madds"]) > int(rows[1]["madds"]) > int(rows[2]["madds"]) > 0


def test_validation_configs_add_the_test_resolutions_at_full_width():
    from resnet_switch.training.module import validation_configs

    method = [SubnetConfig(32), SubnetConfig(16, 0.5)]
    assert validation_configs(method, [16, 24, 32]) == [SubnetConfig(32), SubnetConfig(16, 0.5), SubnetConfig(24),
                                                        SubnetConfig(16)]
    assert validation_configs(method, ()) == method
