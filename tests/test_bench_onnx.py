"""``python -m resnet_switch.bench onnx``: the one ONNX file against the per-configuration folded exports
(what it reports, not how fast: no timing is checked here)."""

from __future__ import annotations

import json

import pytest

from resnet_switch.bench import main as bench_main
from resnet_switch.errors import ConfigError

from .ckpt_factory import write_checkpoint
from .helpers import needs

pytestmark = [needs("onnxscript"), needs("onnxruntime")]


def test_bench_onnx_reports_ratios_switching_sizes_and_memory(tmp_path, capsys):
    ckpt = write_checkpoint(tmp_path / "rsnet.ckpt", "rsnet")
    bench_main(["onnx", f"ckpt={ckpt}", "runs=2", "warmup=0", "batches=[1,2]", "size_bound=1.5",
                f"out_dir={tmp_path / 'files'}"])
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    assert result["task"] == "onnx" and result["threads"] == 1 and result["train_resolutions"] == [16, 12]
    assert [(row["resolution"], row["batch"]) for row in result["rows"]] == [(16, 1), (12, 1), (16, 2), (12, 2)]
    for row in result["rows"]:
        assert row["one_ms"]["min"] <= row["one_ms"]["median"] <= row["one_ms"]["max"]
        assert row["ratio"] == pytest.approx(row["one_ms"]["median"] / row["per_config_ms"]["median"], rel=1e-3)
        assert "switch_ms" in row
    sizes = result["sizes"]
    assert sizes["one_file_bytes"] == (tmp_path / "files" / "all.onnx").stat().st_size
    assert set(sizes["per_config_bytes"]) == {"16", "12"}
    assert sizes["per_config_total_bytes"] == sum(sizes["per_config_bytes"].values())
    assert result["memory"]["one_file_bytes"] > 0 and result["memory"]["per_config_bytes"] > 0
    text = "\n".join(out[:-1])
    assert "| resolution | batch |" in text and "size: one file" in text and "resident memory" in text


@pytest.mark.parametrize("args, field", [([], "ckpt"), (["ckpt=/nonexistent.ckpt"], "ckpt"),
                                         (["ckpt={ckpt}", "batches=[0]"], "batches"),
                                         (["ckpt={ckpt}", "runs=0"], "runs")])
def test_bench_onnx_bad_options_name_the_field(tmp_path, args, field):
    ckpt = tmp_path / "x.ckpt"
    ckpt.write_bytes(b"")
    with pytest.raises(ConfigError, match=f"^{field}:"):
        bench_main(["onnx", *[a.format(ckpt=ckpt) for a in args]])
