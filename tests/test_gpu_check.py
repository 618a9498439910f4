"""``make gpu-check``: the skip line without CUDA, the pieces of the driver that run on the CPU (loss
comparison, report, parsing, the command lines it builds), and ``bench train_step``'s precision and
memory-format options."""

import json
import math
import subprocess
import sys
import time

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from resnet_switch import gpu_check
from resnet_switch.bench import loader as bench_loader
from resnet_switch.bench import step as bench_step
from resnet_switch.cli.options import parse_options
from resnet_switch.cli.overrides import CONF_DIR

from .helpers import REPO, run_cli

CUDA = torch.cuda.is_available()


@pytest.mark.skipif(CUDA, reason="this machine has a GPU: the check would run")
def test_script_says_skipped_and_exits_0_without_cuda():
    proc = subprocess.run(["bash", str(REPO / "tools" / "gpu_check.sh")], capture_output=True, text=True,
                          env=dict(gpu_check.package_env(), PY=sys.executable), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == gpu_check.SKIPPED_LINE


def test_bad_options_are_one_line_errors():
    proc = run_cli("resnet_switch.gpu_check", "parts=[train,nope]")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: parts: unknown 'nope'; choose one of ['adaptive', 'bench', 'ddp', 'loader', 'memory', 'tests', 'train']"]


def test_losses_compare_within_the_stated_tolerance():
    ref = [2.30, 2.25, 2.10]
    ok = gpu_check.compare_losses(ref, [2.301, 2.2495, 2.1005], gpu_check.RTOL["32"])
    assert ok["status"] == "pass" and ok["max_rel_diff"] == pytest.approx(0.001 / 2.30)
    drift = gpu_check.compare_losses(ref, [2.30, 2.25, 2.20], gpu_check.RTOL["32"])
    assert drift["status"] == "fail" and drift["max_rel_diff"] == pytest.approx(0.1 / 2.1)
    assert "4.76e-02 > 0.005" in drift["reason"]
    assert gpu_check.compare_losses(ref, [2.30, 2.25, 2.20], gpu_check.RTOL["bf16-mixed"])["status"] == "pass"
    assert gpu_check.compare_losses(ref, [2.3, math.nan, 2.1], 1.0)["status"] == "fail"  # NaN: always a failure
    assert "2 steps" in gpu_check.compare_losses(ref, [2.3, 2.2], 1.0)["reason"]


def test_summary_table_and_exit_code():
    results = [gpu_check.result("tests", "pytest -m cuda", "pass", 12.34, "6 passed"),
               gpu_check.result("train", "rsnet/32/contiguous", "fail", 5.0, "max relative difference 1e-2 > 0.005"),
               gpu_check.result("bench", "resnet50 san", "skip", 0.0, "time budget used up")]
    table = gpu_check.summary_table(results, "title").splitlines()
    assert table == ["title", "| check | name | status | result | s |", "|---|---|---|---|---|",
                     "| tests | pytest -m cuda | pass | 6 passed | 12.3 |",
                     "| train | rsnet/32/contiguous | fail | max relative difference 1e-2 > 0.005 | 5.0 |",
                     "| bench | resnet50 san | skip | time budget used up | 0.0 |",
                     "gpu-check: 1 pass, 1 fail, 1 skip"]
    assert gpu_check.exit_code(results) == 1 and gpu_check.exit_code(results[:1] + results[2:]) == 0
    assert json.loads(json.dumps(results[0])) == {"check": "tests", "name": "pytest -m cuda", "status": "pass",
                                                  "seconds": 12.3, "summary": "6 passed"}
    with pytest.raises(ValueError, match="status"):
        gpu_check.result("x", "y", "ok", 0.0, "")


def test_pytest_and_json_output_are_parsed():
    assert gpu_check.parse_pytest_counts("5 passed, 1 skipped, 2 deselected in 12.3s") == {
        "passed": 5, "skipped": 1, "deselected": 2}
    assert gpu_check.parse_pytest_counts("1 failed, 3 passed, 1 error in 2s") == {"failed": 1, "passed": 3, "error": 1}
    assert gpu_check.last_json('human line\n{"a": 1}\n{"b": 2}\n') == {"b": 2}
    assert gpu_check.last_json("no json\n") is None


def test_every_training_case_composes_with_the_real_config(tmp_path):
    cases = gpu_check.train_cases()
    names = [c.name for c in cases]
    assert len(names) == len(set(names)) == 19  # 3 methods x 3 precisions x 2 layouts + rsnet compiled
    assert {c.precision for c in cases} == {"32", "bf16-mixed", "16-mixed"}
    assert sum(c.compile for c in cases) == 1 and {c.method for c in cases} == {"rsnet", "san", "mutualnet"}
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        for case in [*cases, gpu_check.TrainCase("san", device="cpu")]:
            cfg = compose("train", overrides=[*case.overrides(), f"run_dir={tmp_path}", gpu_check.PROBE,
                                              f"+callbacks.gpu_check_probe.path={tmp_path / 'p.json'}"])
            assert cfg.method.name == case.method and cfg.memory_format == case.memory_format
            assert cfg.trainer.precision == ("32-true" if case.precision == "32" else case.precision)
            assert cfg.trainer.accelerator == ("gpu" if case.device == "cuda" else "cpu")
            assert cfg.compile is case.compile and cfg.trainer.limit_train_batches == gpu_check.TRAIN_STEPS
    GlobalHydra.instance().clear()


def test_bench_command_lines_are_valid_options():
    opts, extra = parse_options(bench_step.DEFAULTS, [*gpu_check.BENCH_SPEED, "steps=4", "warmup=2", "rounds=1",
                                                      "baseline_tuned=false", "device=cpu"], allow_extra=True)
    bench_step.check_options(opts, extra)
    assert opts["precision"] == "bf16-mixed" and opts["resolutions"] == [224, 192, 160, 128, 96] and not extra
    opts, _ = parse_options(bench_loader.DEFAULTS, ["workers=8", "device=cpu", "images=512", "batch_size=64"])
    bench_loader.check_options(opts)


@pytest.mark.parametrize("precision, layout", [("bf16-mixed", "channels_last"), ("16-mixed", "contiguous")])
def test_bench_train_step_applies_precision_and_layout_to_both_contenders(precision, layout):
    cpu = torch.device("cpu")
    opts = dict(bench_step.DEFAULTS, model="resnet20", resolutions=[16, 12], batch_size=2, num_classes=10,
                precision=precision, memory_format=layout)
    images, targets = bench_step.make_data(opts, cpu)
    for role in ("ours", "baseline"):
        step = bench_step.build_step(role, opts, {}, images, targets, cpu)
        convs = [p for p in step.params if p.dim() == 4]
        assert all(p.is_contiguous(memory_format=torch.channels_last) for p in convs) == (layout == "channels_last")
        seen = []  # the first convolution's output dtype and input layout
        first_conv = next(m for m in step.network.modules() if isinstance(m, torch.nn.Conv2d))
        handle = first_conv.register_forward_hook(lambda m, args, out, seen=seen: seen.append(
            (out.dtype, args[0].is_contiguous(memory_format=torch.channels_last))))
        before = [p.detach().clone() for p in step.params]
        step()
        handle.remove()
        moved = any(not torch.equal(a, p) for a, p in zip(before, step.params))
        assert (step.scaler is not None) == (precision == "16-mixed"), role
        # the step moved the weights, or (fp16) the scaler found overflowing gradients, skipped it and backed off
        assert moved or step.scaler.get_scale() < 2.0**16, role
        dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float16
        assert seen and all(d == dtype and nhwc == (layout == "channels_last") for d, nhwc in seen), (role, seen)


def test_bench_train_step_reports_images_per_second(monkeypatch, capsys):
    from resnet_switch import bench

    jobs = []

    def fake_child(entry, job, env=None):  # the timed child processes, with made-up timings
        jobs.append((job["role"], job["runtime"], job["opts"]["precision"], job["opts"]["memory_format"]))
        return {"ms": [10.0, 12.0]} if job["role"] == "ours" else {"ms": [20.0]}

    monkeypatch.setattr(bench_step, "run_child", fake_child)
    bench.main(["train_step", "batch_size=4", "rounds=1", "baseline_tuned=false", "precision=bf16-mixed",
                "memory_format=channels_last", "device=cpu"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert sorted(jobs) == [("baseline", "vanilla", "bf16-mixed", "channels_last"),
                            ("ours", "framework", "bf16-mixed", "channels_last")]  # no baseline_tuned run
    assert result["precision"] == "bf16-mixed" and result["memory_format"] == "channels_last"
    assert (result["ours_ms"], result["baseline_ms"], result["ratio"]) == (11.0, 20.0, 0.55)
    assert result["ours_img_s"] == pytest.approx(4000 / 11, abs=0.1) and result["baseline_img_s"] == 200.0
    assert "baseline_tuned_ms" not in result
    with pytest.raises(ValueError, match=r"^precision: unknown 'fp8'"):
        bench.main(["train_step", "precision=fp8"])


@pytest.mark.slow
def test_training_check_runs_end_to_end_on_the_cpu(tmp_path):
    # the driver's train part with a CPU "device": bf16 + channels_last against the fp32 CPU run
    case = gpu_check.TrainCase("rsnet", "bf16-mixed", "channels_last", device="cpu",
                               extra=("model=resnet20", "model.base_width=8", "data.resolutions=[16,12]"))
    records = list(gpu_check.train_checks("cpu", tmp_path, deadline=float("inf"), cases=[case]))
    assert [r["status"] for r in records] == ["pass"], [r["summary"] for r in records]
    assert len(records[0]["losses"]) == gpu_check.TRAIN_STEPS and records[0]["max_rel_diff"] <= 5e-2


@pytest.mark.slow
def test_ddp_part_records_backend_and_world_size_on_the_cpu(tmp_path):
    ctx = gpu_check.Context("cpu", deadline=time.monotonic() + 300, workdir=tmp_path, workers=0, emit=lambda r: None)
    gpu_check.part_ddp(ctx)
    (record,) = ctx.results
    assert record["status"] == "pass", record["summary"]
    assert record["backend"] == "gloo" and record["world_size"] == 1 and len(record["losses"]) == 5


@pytest.mark.slow
def test_adaptive_part_times_the_cascade_against_the_static_configuration_on_the_cpu(tmp_path):
    ctx = gpu_check.Context("cpu", deadline=time.monotonic() + 300, workdir=tmp_path, workers=0, emit=lambda r: None)
    gpu_check.part_adaptive(ctx)
    (record,) = ctx.results
    assert record["status"] == "pass", record["summary"]
    assert {r["batch_size"] for r in record["rows"]} == {1, 32}
    for row in record["rows"]:
        assert row["adaptive"]["ms_per_image"] > 0 and row["static"]["ms_per_image"] > 0
        assert abs(sum(row["adaptive"]["shares"]) - 1) < 1e-6
