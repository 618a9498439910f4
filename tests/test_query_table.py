"""MutualNet's query table: budget selection, Pareto frontier, duplicate widths, stored BN
statistics reused, arbitrary widths in evaluate, and the CLI end to end on a tiny US-Net."""

import sys
import types

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from resnet_switch import evaluate as evaluate_module
from resnet_switch.cli.overrides import CONF_DIR
from resnet_switch.counts import parse_count
from resnet_switch.errors import ConfigError
from resnet_switch.evaluation import checkpoint_eval
from resnet_switch.evaluation.query_table import (
    log_to_wandb,
    measure_latency_ms,
    pareto_frontier,
    read_query_table,
    select_under_budget,
)
from resnet_switch.layers.calibration import calibratable_layers
from resnet_switch.models import create_model
from resnet_switch.models.inference_policy import InferencePolicy, channel_signature, unique_widths, width_grid
from resnet_switch.switch import SubnetConfig
from resnet_switch.train import train

from .helpers import run_cli, tiny_cfg


def row(width, resolution, madds, top1, latency_ms=1.0, params=100):
    return {"width": width, "resolution": resolution, "madds": madds, "params": params,
            "latency_ms": latency_ms, "top1": top1, "top5": 99.0}


ROWS = [
    row(1.0, 32, 400, 80.0, latency_ms=9.0),
    row(0.75, 32, 250, 77.0, latency_ms=6.0),
    row(1.0, 24, 230, 77.0, latency_ms=7.0),   # ties 0.75@32 on top-1 with fewer MAdds
    row(0.5, 32, 120, 70.0, latency_ms=3.0),
    row(0.75, 24, 140, 69.0, latency_ms=4.0),  # dominated by 0.5@32
    row(0.5, 24, 70, 62.0, latency_ms=2.0),
    row(0.25, 24, 70, 55.0, latency_ms=1.5),   # same MAdds as 0.5@24, less accurate
]


def tiny_slimmable(**layer_kwargs):
    return create_model("resnet20", [16, 12], layers="slimmable", widths=[1.0, 0.25], num_classes=4,
                        layer_kwargs={"divisor": 8, **layer_kwargs}, base_width=8)


# ------------------------------------------------------------------------------ pure functions
def test_select_under_budget_picks_the_most_accurate_row_that_fits():
    assert select_under_budget(ROWS, madds=1000) is ROWS[0]
    assert select_under_budget(ROWS) is ROWS[0]
    assert select_under_budget(ROWS, madds=260) is ROWS[2]  # top-1 tie -> fewer MAdds wins
    assert select_under_budget(ROWS, madds=230) is ROWS[2]  # the bound is inclusive
    assert select_under_budget(ROWS, madds=229) is ROWS[3]
    assert select_under_budget(ROWS, latency_ms=6.5) is ROWS[1]  # 1.0@24 is too slow
    assert select_under_budget(ROWS, madds=260, latency_ms=6.5) is ROWS[1]
    assert select_under_budget(ROWS, madds=100) is ROWS[5]


def test_select_under_budget_raises_when_nothing_fits():
    with pytest.raises(ValueError, match=r"^budget: no configuration fits madds <= 69.*cheapest is width 0.5 @ 24"):
        select_under_budget(ROWS, madds=69)
    with pytest.raises(ValueError, match="no configuration fits madds <= 1K and latency_ms <= 1;"):
        select_under_budget(ROWS, madds=1000, latency_ms=1.0)
    with pytest.raises(ValueError, match="latency"):
        select_under_budget([row(1.0, 32, 400, 80.0, latency_ms=None)], latency_ms=5.0)


def test_pareto_frontier_keeps_only_undominated_rows_by_cost():
    assert pareto_frontier(ROWS) == [ROWS[5], ROWS[3], ROWS[2], ROWS[0]]
    by_latency = pareto_frontier(ROWS, cost="latency_ms")
    assert by_latency == [ROWS[6], ROWS[5], ROWS[3], ROWS[1], ROWS[0]]
    tie = [row(1.0, 32, 100, 50.0), row(0.5, 32, 100, 50.0)]
    assert pareto_frontier(tie) == [tie[0]]


@pytest.mark.parametrize("value, expected", [
    (150_000_000, 150e6), (1.5e8, 150e6), ("150M", 150e6), ("1.2G", 1.2e9), ("900k", 9e5),
    ("2.5e6", 2.5e6), (" 12 m ", 12e6),
])
def test_parse_count_reads_numbers_and_units(value, expected):
    assert parse_count(value) == pytest.approx(expected)


@pytest.mark.parametrize("value", ["lots", "-5M", 0, "1.2X", True])
def test_parse_count_rejects_bad_budgets(value):
    with pytest.raises(ValueError, match="^budget.madds:"):
        parse_count(value)


def test_width_grid_is_exact_and_includes_both_ends():
    grid = width_grid(0.25, 1.0, 0.05)
    assert len(grid) == 16 and grid[0] == 0.25 and grid[-1] == 1.0 and grid[7] == 0.6
    assert width_grid(0.25, 1.0, 0.3) == [0.25, 0.55, 0.85, 1.0]
    with pytest.raises(ValueError, match="width_step"):
        width_grid(0.25, 1.0, 0.0)


# --------------------------------------------------------------------------- duplicate widths
def test_widths_with_identical_channels_are_one_configuration():
    net = tiny_slimmable()
    groups = unique_widths(net, width_grid(0.25, 1.0, 0.05))
    # base_width 8, divisor 8: channels (8, 16, 32) only take 4 distinct slimmed shapes
    assert list(groups) == [1.0, 0.8, 0.55, 0.25]
    assert groups[0.8] == [0.6, 0.65, 0.7, 0.75, 0.8]

    def shapes(width):
        plain = net.materialize(SubnetConfig(16, width))
        return [tuple(m.weight.shape) for m in plain.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]

    kept_shapes = {kept: shapes(kept) for kept in groups}
    assert len({tuple(s) for s in kept_shapes.values()}) == 4
    for kept, members in groups.items():
        for width in members:
            assert shapes(width) == kept_shapes[kept], (kept, width)


def test_private_bn_per_width_keeps_widths_with_equal_channels_apart():
    net = create_model("resnet20", [16], layers="slimmable", widths=[1.0, 0.95], num_classes=4,
                       layer_kwargs={"divisor": 8, "private_bn_per_width": True}, base_width=8)
    assert channel_signature(net, 1.0) != channel_signature(net, 0.95)
    assert list(unique_widths(net, [1.0, 0.95])) == [1.0, 0.95]


def test_evaluate_widths_are_checked_against_the_checkpoint_kind():
    plain = InferencePolicy(create_model("resnet20", [16], layers="private_bn", num_classes=4, base_width=8))
    assert plain.widths.check([1.0]) == [1.0]
    with pytest.raises(ConfigError, match="^widths: .*not slimmable"):
        plain.widths.check([1.0, 0.5])
    assert InferencePolicy(tiny_slimmable()).widths.check([0.9, 0.3]) == [0.9, 0.3]
    snet = InferencePolicy(create_model("resnet20", [16], layers="slimmable", widths=[1.0, 0.5], num_classes=4,
                                        layer_kwargs={"divisor": 8, "private_bn_per_width": True}, base_width=8))
    with pytest.raises(ConfigError, match=r"^widths: 0.75 has no private BN"):
        snet.widths.check([1.0, 0.75])
    assert snet.widths.query_grid(0.05) == [0.5, 1.0]
    assert plain.widths.query_grid(0.05) == [1.0]


def test_latency_measurement_restores_the_thread_count():
    threads = torch.get_num_threads()
    plain = tiny_slimmable().materialize(SubnetConfig(12, 0.5))
    assert measure_latency_ms(plain, 12, runs=1, warmup=0, threads=1) > 0
    assert torch.get_num_threads() == threads


def test_active_wandb_run_receives_the_table(monkeypatch, tmp_path):
    logged = []
    fake = types.SimpleNamespace(run=object(), log=logged.append,
                                 Table=lambda columns, data: ("table", columns, data),
                                 Image=lambda path: ("image", path),
                                 init=lambda **kw: pytest.fail("must not start a run"),
                                 finish=lambda: pytest.fail("must not finish the user's run"))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    assert log_to_wandb(ROWS[:2], tmp_path / "p.png")
    kind, columns, data = logged[0]["query_table"]
    assert kind == "table" and columns[:2] == ["width", "resolution"] and data[1][:2] == [0.75, 32]
    fake.run = None
    assert not log_to_wandb(ROWS[:2], tmp_path / "p.png")  # no run and not asked to start one
    assert len(logged) == 1


# ------------------------------------------------------------------- on a tiny trained US-Net
@pytest.fixture(scope="module")
def usnet_ckpt(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("usnet")
    train(tiny_cfg(run_dir, "method=usnet", "model.base_width=8", "trainer.limit_train_batches=2",
                   "data.val_samples=16", "calibration_samples=16"))
    return run_dir / "checkpoints" / "last.ckpt"


def eval_cfg(*overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("evaluate", overrides=["calibration_samples=16", "device=cpu", *overrides])


def test_stored_statistics_are_reused_not_recalibrated(usnet_ckpt, tmp_path, monkeypatch):
    calibrated = []
    real = checkpoint_eval.calibrate_configs

    def spy(net, datamodule, configs, num_samples, progress=True):
        calibrated.extend(c.key() for c in configs)
        real(net, datamodule, configs, num_samples, progress=False)

    monkeypatch.setattr(checkpoint_eval, "calibrate_configs", spy)
    # widths 0.25, 0.625, 1.0 are exactly the training run's evaluation configurations
    rows = evaluate_module.evaluate(eval_cfg(f"ckpt={usnet_ckpt}", f"run_dir={tmp_path / 'a'}",
                                             "query_table=true", "width_step=0.375", "latency_runs=1"))
    assert calibrated == [] and len(rows) == 6
    # width 0.8 has 0.625's channels (stored: shared, not recomputed); only 0.55 is new
    rows = evaluate_module.evaluate(eval_cfg(f"ckpt={usnet_ckpt}", f"run_dir={tmp_path / 'b'}",
                                             "query_table=true", "width_step=0.05", "latency_runs=0"))
    assert sorted(calibrated) == ["r12_w0.55", "r16_w0.55"]
    assert {(r["width"], r["resolution"]) for r in rows} == {(w, r) for w in (1.0, 0.8, 0.55, 0.25) for r in (16, 12)}
    assert all(r["latency_ms"] is None for r in rows)


def test_stored_twin_statistics_are_shared_under_the_new_key(usnet_ckpt):
    loaded = checkpoint_eval.load_for_eval(str(usnet_ckpt), eval_cfg("ckpt=x"), torch.device("cpu"))
    configs = [SubnetConfig(16, 0.8), SubnetConfig(16, 0.55)]
    assert loaded.policy.provide_statistics(configs) == {configs[0]: "twin", configs[1]: "needs_calibration"}
    layer = calibratable_layers(loaded.net)[-1]
    assert layer.calibrated["r16_w0.8"][0] is layer.calibrated["r16_w0.625"][0]


def test_evaluate_runs_a_slimmable_checkpoint_at_any_width(usnet_ckpt, tmp_path):
    rows = evaluate_module.evaluate(eval_cfg(f"ckpt={usnet_ckpt}", f"run_dir={tmp_path}", "widths=[1.0,0.5]",
                                             "test_resolutions=[16,14]"))
    assert [(r["width"], r["resolution"], r["bn"]) for r in rows] == [
        (1.0, 16, "stored"), (1.0, 14, "recalibrated"), (0.5, 16, "recalibrated"), (0.5, 14, "recalibrated")]
    assert rows[0]["madds"] > rows[2]["madds"] > 0
    table = (tmp_path / "eval_table.md").read_text()
    assert "w0.5 |" in table and "w1 |" in table


def test_query_table_cli_end_to_end(usnet_ckpt, tmp_path):
    result = run_cli("resnet_switch.evaluate", f"ckpt={usnet_ckpt}", "query_table=true", "width_step=0.05",
                     "budget.madds=2M", "calibration_samples=16", "latency_runs=2", "latency_warmup=1",
                     f"run_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("query_table.csv", "query_table.md", "query_frontier.png"):
        assert (tmp_path / name).is_file(), name
    rows = read_query_table(tmp_path / "query_table.csv")
    assert len(rows) == 8 and len({(r["width"], r["resolution"]) for r in rows}) == 8
    assert {r["width"] for r in rows} == {1.0, 0.8, 0.55, 0.25}
    assert all(r["madds"] > 0 and r["params"] > 0 and r["latency_ms"] > 0 for r in rows)
    best = select_under_budget(rows, madds=2e6)
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith("best under madds <= 2M: ")
    assert f"width {best['width']:g} @ {best['resolution']}px: top-1 {best['top1']:.2f}%" in line
    assert "<-" in (tmp_path / "query_table.md").read_text()


def test_query_table_says_when_no_configuration_fits(usnet_ckpt, tmp_path, capsys):
    evaluate_module.evaluate(eval_cfg(f"ckpt={usnet_ckpt}", f"run_dir={tmp_path}", "query_table=true",
                                      "width_step=0.375", "latency_runs=0", "budget.madds=1k"))
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("budget: no configuration fits madds <= 1K; the cheapest is width 0.25 @ 12")
    assert (tmp_path / "query_frontier.png").is_file()
