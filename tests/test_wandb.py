"""W&B logging never blocks: with no W&B configuration it runs offline and still records the
results table and the accuracy-vs-MAdds plot."""

import json

from resnet_switch.train import train, wandb_offline

from .helpers import needs, tiny_cfg


def test_wandb_is_offline_unless_configured(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc login
    assert wandb_offline() is True
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_offline() is False
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_offline() is True


@needs("wandb")
def test_wandb_run_records_table_plot_and_curves(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    train(tiny_cfg(tmp_path, "logger=wandb", "trainer.limit_train_batches=2", "data.val_samples=16"))
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    media = runs[0] / "files" / "media"
    assert list((media / "images").glob("acc_vs_madds_*.png"))
    table = json.loads(next((media / "table").glob("results_*.table.json")).read_text())
    assert [row[0] for row in table["data"]] == [16, 12]  # one row per resolution
