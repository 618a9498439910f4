"""The key=value command lines: costs and bench (user errors, JSON output)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import resnet_switch
from resnet_switch import bench, costs
from resnet_switch.bench import step as bench_step
from resnet_switch.cli.options import parse_options, run_tool

SRC = str(Path(resnet_switch.__file__).resolve().parents[1])
TINY_BENCH = ["model=resnet20", "resolutions=[16,12]", "batch_size=2", "steps=2", "warmup=1", "num_classes=10",
              "rounds=1"]
TRAIN_STEP_KEYS = {"task", "method", "model", "batch_size", "resolutions", "threads", "device",
                   "ours_ms", "baseline_ms", "ratio"}


def run_module(module, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p))
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env,
                          timeout=600)


def run_in_process(main, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_tool(main, argv)
    return exit_info.value.code, capsys.readouterr()


def test_costs_cli_rejects_unsorted_resolutions_in_one_line():
    proc = run_module("resnet_switch.costs", "model=resnet20", "resolutions=[16,32]")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: resolutions:"), proc.stderr
    assert "[32, 16]" in lines[0]  # the fix
    assert proc.stdout == ""


@pytest.mark.parametrize("argv, field", [
    (["model=resnet20", "colour=red"], "colour"),
    (["model=resnet1000"], "model"),
    (["model=resnet20", "resolutions=[16,32]"], "resolutions"),
    (["model=resnet20", "format=xlsx"], "format"),
    (["model=resnet20", "widths=[1.0,1.5]"], "widths"),
    (["resolutions=[32]"], "model"),
    (["model=resnet20", "resolutions=[32,"], "resolutions"),
])
def test_costs_user_errors_exit_2_naming_the_field(argv, field, capsys):
    code, captured = run_in_process(costs.main, argv, capsys)
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}:"), captured.err


def test_unknown_key_message_lists_valid_options():
    with pytest.raises(ValueError, match=r"^colour: unknown option; valid: model, resolutions, widths"):
        parse_options(costs.DEFAULTS, ["colour=red"])
    opts, extra = parse_options(bench_step.DEFAULTS, ["method.width_range=[0.7,1.0]", "batch_size=4"],
                                allow_extra=True)
    assert extra == {"method.width_range": [0.7, 1.0]} and opts["batch_size"] == 4
    with pytest.raises(ValueError, match="^batch_size: expected an integer"):
        parse_options(bench_step.DEFAULTS, ["batch_size=2.5"])


@pytest.mark.parametrize("argv, field", [
    (["train_step", "bogus=1"], "bogus"),  # neither a bench option nor an rsnet argument
    (["train_step", "method.bogus=1"], "method.bogus"),
    (["train_step", "method=nonet"], "method"),
    (["train_step", "compare_method=nonet"], "compare_method"),
    (["train_step", "model=vgg"], "model"),
    (["train_step", "resolutions=[16,32]"], "resolutions"),
    (["train_step", "batch_size=1"], "batch_size"),
    (["fly"], "task"),
    (["model=resnet20"], "task"),
])
def test_bench_user_errors_exit_2_naming_the_field(argv, field, capsys):
    code, captured = run_in_process(bench.main, argv, capsys)
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}:"), captured.err


def test_options_spelled_as_in_train_are_one_key_each():
    opts, _ = parse_options(costs.DEFAULTS, ["model=resnet18", "quant=lq", "quant.weight_bits=3", "quant.act_bits=32"])
    assert (opts["quant"], opts["quant.weight_bits"], opts["quant.act_bits"]) == ("lq", 3, 32)
    with pytest.raises(ValueError, match=r"^quant.weight_bits: expected an integer"):
        parse_options(costs.DEFAULTS, ["quant.weight_bits=two"])
    with pytest.raises(ValueError, match=r"^weight_bits: use quant.weight_bits=2 \(as in train\)$"):
        parse_options(costs.DEFAULTS, ["weight_bits=2"], renamed={"weight_bits": "quant.weight_bits"})


@pytest.mark.parametrize("argv, line", [
    (["train_step", "quant=lq", "weight_bits=2"], "error: weight_bits: use quant.weight_bits=2 (as in train)"),
    (["train_step", "quant=lq", "act_bits=32"], "error: act_bits: use quant.act_bits=32 (as in train)"),
    (["train_step", "method=mutualnet", "width_range=[0.7,1.0]"],
     "error: width_range: use method.width_range=[0.7,1.0] (as in train)"),
    (["train_step", "distill=none"], "error: distill: use method.distill=none (as in train)"),
])
def test_bench_refuses_retired_spellings_with_trains(argv, line, capsys):
    code, captured = run_in_process(bench.main, argv, capsys)
    assert code == 2
    assert captured.err.strip().splitlines() == [line]


def test_bench_method_arguments_are_spelled_method_dot():
    opts = dict(bench_step.DEFAULTS, model="resnet20", resolutions=[16, 12], batch_size=2, num_classes=10)
    assert bench_step.check_options(dict(opts), {"method.distill": "none"}) == {"distill": "none"}
    assert bench_step.check_options(dict(opts, method="mutualnet"), {"method.width_range": [0.7, 1.0]}) == {
        "width_range": [0.7, 1.0]}
    with pytest.raises(ValueError, match=r"^method.bogus: unknown option; .*method=rsnet also takes: method.distill"):
        bench_step.check_options(dict(opts), {"method.bogus": 1})


def test_bench_forwards_method_arguments():
    assert "distill" in bench_step.method_options("rsnet")
    cpu = torch.device("cpu")
    opts = dict(bench_step.DEFAULTS, model="resnet20", resolutions=[16, 12], batch_size=2, num_classes=10)
    images, targets = bench_step.make_data(opts, cpu)
    with pytest.raises(ValueError, match="distill"):  # the extra key reaches the method
        bench_step.build_step("ours", opts, {"distill": "bogus"}, images, targets, cpu)
    step = bench_step.build_step("ours", opts, {"distill": "none"}, images, targets, cpu)
    before = [p.detach().clone() for p in step.params]
    step()
    assert any(not torch.equal(a, p) for a, p in zip(before, step.params))  # SGD moved the weights
    assert all(p.grad is None for p in step.params)  # zero_grad(set_to_none=True)


def test_bench_train_step_prints_json_last_line():
    proc = run_module("resnet_switch.bench", "train_step", *TINY_BENCH, "compare_method=parallel")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) >= 2  # human lines before the JSON
    result = json.loads(lines[-1])
    assert TRAIN_STEP_KEYS | {"compare_ms", "compare_ratio", "baseline_tuned_ms", "ratio_tuned"} <= set(result)
    assert result["task"] == "train_step" and result["method"] == "rsnet" and result["resolutions"] == [16, 12]
    assert result["ours_ms"] > 0 and result["baseline_ms"] > 0
    assert result["ratio"] == pytest.approx(result["ours_ms"] / result["baseline_ms"], rel=1e-2)


@pytest.mark.parametrize("runtime, tuned", [("framework", True), ("vanilla", False)])
def test_bench_time_child_applies_the_framework_allocator_only_when_asked(runtime, tuned, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(bench_step, "keep_freed_memory", lambda: calls.append(1))
    opts = dict(bench_step.DEFAULTS, model="resnet20", resolutions=[16, 12], batch_size=2, num_classes=10, steps=3,
                warmup=0, device="cpu", threads=torch.get_num_threads())
    bench_step.time_child(json.dumps({"role": "baseline", "runtime": runtime, "opts": opts, "method_kwargs": {}}))
    assert bool(calls) == tuned
    assert len(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["ms"]) == 3


@pytest.mark.slow
def test_bench_memory_prints_json_last_line(capsys):
    bench.main(["memory", *TINY_BENCH])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"ours_mb", "baseline_mb", "ratio"} <= set(result)
    assert result["ours_mb"] > 0 and result["baseline_mb"] > 0


def test_a_text_option_keeps_a_colon():
    # `report title="make train: ..."` (the Makefile's): YAML would read "a: b" as a mapping
    from resnet_switch.cli.options import parse_options

    options, _ = parse_options({"title": "", "runs": 1}, ["title=make train: the nets", "runs=2"])
    assert options == {"title": "make train: the nets", "runs": 2}
