"""``make device-bundle`` (tools/device_bundle.sh + tools/device_bundle.txt), offline: every package
the project imports is in the GPU machines' image, in the bundle, or optional (imported only inside
the function that needs it, or guarded); the bundle's pins satisfy pyproject's ranges; the script
keeps the wheels that are there and removes those not listed, without asking an index."""

import ast
import os
import re
import subprocess
import sys

import pytest
from packaging.requirements import Requirement

from .helpers import REPO

tomllib = pytest.importorskip("tomllib")

LIST = REPO / "tools" / "device_bundle.txt"
SRC = REPO / "src" / "resnet_switch"
# import names the image ('cuda', python3 3.12) holds: /work/.library/device/KINDS.md's package list
IMAGE = {"torch", "torchvision", "lightning", "pytorch_lightning", "lightning_utilities", "torchmetrics", "numpy",
         "PIL", "matplotlib", "tensorboard", "tqdm", "yaml", "packaging", "pytest", "onnx", "onnxruntime",
         "onnxscript", "sklearn", "scipy", "timm", "typing_extensions", "fsspec", "jinja2"}
OPTIONAL = {"wandb", "submitit", "hydra_plugins", "optuna", "sqlalchemy", "alembic"}  # not carried
IMPORT_NAME = {"hydra-core": "hydra", "omegaconf": "omegaconf", "antlr4-python3-runtime": "antlr4",
               "torchcodec": "torchcodec", "pycocotools": "pycocotools", "setuptools": "setuptools"}  # the bundle's distributions
IMAGE_DISTS = {"torch", "torchvision", "lightning", "torchmetrics", "tensorboard", "matplotlib", "pillow", "numpy"}
OPTIONAL_DISTS = {"wandb"}


def bundle() -> dict[str, str]:
    """``{distribution: version}`` of tools/device_bundle.txt."""
    pins = {}
    for line in LIST.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name] = version
    return pins


def imports(path) -> list[tuple[str, bool, int]]:
    """``(top-level name, eager, line)`` of every absolute import in ``path``; eager = runs when the
    module is imported (module or class level, not under a ``try`` that catches the ImportError)."""
    found = []

    def visit(node, eager):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((a.name.split(".")[0], eager, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and not child.level:
                found.append((child.module.split(".")[0], eager, child.lineno))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, False)
            elif isinstance(child, ast.Try) and any(
                    h.type is None or "Error" in ast.unparse(h.type) or "Exception" in ast.unparse(h.type)
                    for h in child.handlers):
                visit(child, False)
            else:
                visit(child, eager)

    visit(ast.parse(path.read_text()), True)
    return found


def third_party() -> list[tuple[str, bool, str]]:
    skip = set(sys.stdlib_module_names) | {"resnet_switch", "__future__"}
    return [(name, eager, f"{path.relative_to(REPO)}:{line}") for path in sorted(SRC.rglob("*.py"))
            for name, eager, line in imports(path) if name not in skip]


def test_the_bundle_list_is_pinned_and_known():
    pins = bundle()
    assert set(pins) == set(IMPORT_NAME), "tools/device_bundle.txt and this test name the same distributions"
    assert all(re.fullmatch(r"\d+(\.\d+)+", v) for v in pins.values()), pins
    assert {"hydra-core", "omegaconf", "antlr4-python3-runtime"} <= set(pins)


def test_every_import_is_in_the_image_the_bundle_or_optional_and_lazy():
    carried = {IMPORT_NAME[d] for d in bundle()}
    found = third_party()
    assert found and {"torch", "hydra", "omegaconf"} <= {n for n, _, _ in found}  # the scan sees the imports
    unknown = sorted({(n, where) for n, _, where in found if n not in IMAGE | carried | OPTIONAL})
    assert not unknown, f"neither in the image nor in tools/device_bundle.txt: {unknown}"
    eager_optional = sorted((n, where) for n, eager, where in found if eager and n in OPTIONAL)
    assert not eager_optional, f"optional packages imported at module level: {eager_optional}"


def test_config_targets_import_from_the_image_the_bundle_or_optional():
    carried = {IMPORT_NAME[d] for d in bundle()}
    targets = set()
    for path in (SRC / "conf").rglob("*.yaml"):
        targets |= {m.split(".")[0] for m in re.findall(r"_target_:\s*([A-Za-z_][\w.]*)", path.read_text())}
    assert "resnet_switch" in targets
    assert targets <= IMAGE | carried | OPTIONAL | {"resnet_switch"}, targets - IMAGE - carried - OPTIONAL


def test_bundle_pins_satisfy_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    pins = bundle()
    requirements = [Requirement(r) for r in project["project"]["dependencies"] + project["build-system"]["requires"]
                    + project["project"]["optional-dependencies"]["detection"]]  # carried: detection runs there
    for req in requirements:
        name = req.name.lower()
        if name in pins:
            assert req.specifier.contains(pins[name]), f"{name}=={pins[name]} outside pyproject's {req}"
        else:
            assert name in IMAGE_DISTS | OPTIONAL_DISTS, f"pyproject needs {req}: carry it or list it as the image's"
    assert {r.name.lower() for r in requirements} >= set(pins) - {"antlr4-python3-runtime"}


def test_script_keeps_listed_wheels_and_removes_others_offline(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    listed = [f"{re.sub(r'[-_.]+', '_', name)}-{version}-py3-none-any.whl" for name, version in bundle().items()]
    for name in [*listed, "hydra_core-0.1-py3-none-any.whl", "stray-1.0-py3-none-any.whl"]:
        (wheels / name).write_bytes(b"")
    env = dict(os.environ, DEVICE_WHEELS=str(wheels), PY="false")  # pip is never asked: everything is there
    proc = subprocess.run(["bash", str(REPO / "tools" / "device_bundle.sh")], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in wheels.iterdir()) == sorted(listed)
    lines = proc.stdout.strip().splitlines()
    assert "removed stray-1.0-py3-none-any.whl (not in tools/device_bundle.txt)" in lines
    assert f"removed hydra_core-0.1-py3-none-any.whl (not hydra-core=={bundle()['hydra-core']})" in lines
    assert lines[-1].startswith(f"device-bundle: 0 written, {len(listed)} already there")


def test_without_a_loadable_torchcodec_the_loader_check_skips_the_device_decode(monkeypatch):
    from resnet_switch import gpu_check

    assert gpu_check.codec_problem() == ""  # the bundle's TorchCodec loads with this torch
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)  # as if it were missing
    reason = gpu_check.codec_problem()
    assert reason.startswith("TorchCodec not loadable (ModuleNotFoundError: import of torchcodec.decoders halted")
    commands = []

    def fake_run(ctx, argv, limit, cwd=None):
        commands.append(list(argv))
        return 0, '{"worker_img_s": 812.4, "worker_batches": 14, "device_fallback": false}\n', "", 3.0

    monkeypatch.setattr(gpu_check, "run_command", fake_run)
    ctx = gpu_check.Context("cuda", deadline=float("inf"), workdir=REPO, workers=4, emit=lambda r: None)
    gpu_check.part_loader(ctx)
    (record,) = ctx.results
    assert commands[0][-1] == "decodes=[worker]" and "workers=4" in commands[0]
    assert record["status"] == "skip" and record["worker_img_s"] == 812.4
    assert record["summary"] == f"worker decode 812 img/s; device decode skipped: {reason}"
