"""``logger=tensorboard``: Lightning's TensorBoardLogger records the per-configuration curves and, at the
end, the results table and the accuracy-vs-MAdds plot."""

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from resnet_switch.train import train

from .helpers import tiny_cfg


def test_tensorboard_run_records_curves_table_and_plot(tmp_path):
    metrics = train(tiny_cfg(tmp_path, "logger=tensorboard", "trainer.limit_train_batches=2", "data.val_samples=16"))
    (version,) = (tmp_path / "tensorboard").glob("version_*")
    events = EventAccumulator(str(version), size_guidance={"images": 0, "tensors": 0, "scalars": 0}).Reload()
    tags = events.Tags()
    assert {"val/acc1@16", "val/acc1@12", "val/acc1_mean", "train/loss"} <= set(tags["scalars"])
    assert events.Scalars("val/acc1@16")[-1].value == metrics["acc1@16"]  # the final table's figure
    assert "acc_vs_madds" in tags["images"]
    (text,) = [t for t in tags["tensors"] if t.startswith("results")]
    table = events.Tensors(text)[-1].tensor_proto.string_val[0].decode()
    assert "| 16 |" in table and "| 12 |" in table
