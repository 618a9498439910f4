"""``make device-bundle`` (tools/device_bundle.sh + tools/device_bundle.txt), offline: every package
the project imports is in the GPU machines' image, in the bundle, or optional (imported only inside
the function that needs it, or guarded); the bundle's pins satisfy pyproject's ranges; the script
keeps the wheels that are there and removes those not listed, without asking an index."""

import ast
import importlib.metadata
import os
import re
import subprocess
import sys

import pytest
from packaging.requirements import Requirement

from .helpers import REPO

tomllib = pytest.importorskip("tomllib")

LIST = REPO / "tools" / "device_bundle.txt"
IMAGE_LIST = REPO / "tools" / "device_image.txt"  # the image's distributions (the local rehearsal installs them)
SRC = REPO / "src" / "resnet_switch"
# import names the image ('cuda', python3 3.12) holds: /work/.library/device/KINDS.md's package list
IMAGE = {"torch", "torchvision", "lightning", "pytorch_lightning", "lightning_utilities", "torchmetrics", "numpy",
         "PIL", "matplotlib", "tensorboard", "tqdm", "yaml", "packaging", "pytest", "onnx", "onnxruntime",
         "onnxscript", "sklearn", "scipy", "timm", "typing_extensions", "fsspec", "jinja2"}
OPTIONAL = {"wandb", "submitit", "hydra_plugins", "optuna", "sqlalchemy", "alembic", "executorch"}  # not carried
OPTIONAL_DISTS = {"wandb"}  # a runtime dependency imported lazily: the GPU machines run without it
DEVICE_ENV = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
              "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
              "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def listed(path) -> dict[str, str]:
    """``{canonical distribution: version or specifier}`` of a one-requirement-a-line file."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            out[canonical(req.name)] = str(req.specifier)
    return out


def bundle() -> dict[str, str]:
    """``{canonical distribution: version}`` of tools/device_bundle.txt."""
    return {name: spec.removeprefix("==") for name, spec in listed(LIST).items()}


def image_distributions() -> set[str]:
    return set(listed(IMAGE_LIST))


def project_requirements() -> list[Requirement]:
    """What runs on a GPU machine: the runtime dependencies, the build backend (the editable install)
    and the detection extra (task=detection runs there)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    return [Requirement(r) for r in project["project"]["dependencies"] + project["build-system"]["requires"]
            + project["project"]["optional-dependencies"]["detection"]]


def applies(req: Requirement) -> bool:
    """The requirement holds on the device's Python (3.12, Linux), no extras."""
    return req.marker is None or req.marker.evaluate(DEVICE_ENV)


def missing_from_the_image() -> dict[str, list[Requirement]]:
    """Every distribution the project needs there that the image lacks, with the requirements that ask
    for it: the project's requirements and, through the installed distributions' metadata, theirs,
    down to what the image holds or what is optional."""
    image = image_distributions()
    needed: dict[str, list[Requirement]] = {}
    queue = [r for r in project_requirements() if applies(r)]
    while queue:
        req = queue.pop()
        name = canonical(req.name)
        if name in image or name in OPTIONAL_DISTS:
            continue
        first = name not in needed
        needed.setdefault(name, []).append(req)
        if first:
            try:
                requires = importlib.metadata.requires(name) or []
            except importlib.metadata.PackageNotFoundError:
                pytest.fail(f"{name} is needed on the GPU machines but not installed here: pip install -e '.[dev]'")
            queue += [r for r in map(Requirement, requires) if applies(r)]
    return needed


def carried_imports() -> set[str]:
    """The top-level import names the bundle's distributions provide (their installed metadata)."""
    pins = bundle()
    return {module for module, dists in importlib.metadata.packages_distributions().items()
            if any(canonical(d) in pins for d in dists)}


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


def test_the_bundle_is_what_the_image_lacks():
    """The bundle carries exactly the distributions the project needs on a GPU machine that the image
    lacks (tools/device_image.txt): pyproject's requirements and what they require in turn."""
    pins = bundle()
    assert all(re.fullmatch(r"\d+(\.\d+)+", v) for v in pins.values()), pins
    needed = missing_from_the_image()
    assert set(pins) == set(needed), (f"missing from tools/device_bundle.txt: {sorted(set(needed) - set(pins))}; "
                                      f"carried but not needed: {sorted(set(pins) - set(needed))}")
    # every requirement that reaches a carried distribution, direct or transitive, accepts its pin
    for name, requirements in needed.items():
        for req in requirements:
            assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} outside {req}"


def test_the_derivation_follows_requirements_to_what_the_image_lacks():
    """hydra-core pulls omegaconf, omegaconf pulls antlr4 (neither in pyproject's own list of
    the parser); packaging and PyYAML, which they also require, are the image's."""
    needed = missing_from_the_image()
    assert "antlr4-python3-runtime" not in {canonical(r.name) for r in project_requirements()}
    assert {canonical(r.name) for r in needed["antlr4-python3-runtime"]} == {"antlr4-python3-runtime"}
    assert "packaging" in image_distributions() and "packaging" not in needed
    assert "pyyaml" in image_distributions() and "pyyaml" not in needed
    assert "wandb" not in needed  # optional: imported lazily, not carried
    assert {"hydra", "omegaconf", "antlr4", "torchcodec", "pycocotools"} <= carried_imports()


def test_every_import_is_in_the_image_the_bundle_or_optional_and_lazy():
    carried = carried_imports()
    found = third_party()
    assert found and {"torch", "hydra", "omegaconf"} <= {n for n, _, _ in found}  # the scan sees the imports
    unknown = sorted({(n, where) for n, _, where in found if n not in IMAGE | carried | OPTIONAL})
    assert not unknown, f"neither in the image nor in tools/device_bundle.txt: {unknown}"
    eager_optional = sorted((n, where) for n, eager, where in found if eager and n in OPTIONAL)
    assert not eager_optional, f"optional packages imported at module level: {eager_optional}"


def test_config_targets_import_from_the_image_the_bundle_or_optional():
    carried = carried_imports()
    targets = set()
    for path in (SRC / "conf").rglob("*.yaml"):
        targets |= {m.split(".")[0] for m in re.findall(r"_target_:\s*([A-Za-z_][\w.]*)", path.read_text())}
    assert "resnet_switch" in targets
    assert targets <= IMAGE | carried | OPTIONAL | {"resnet_switch"}, targets - IMAGE - carried - OPTIONAL


def test_script_keeps_listed_wheels_and_removes_others_offline(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel_names = [f"{re.sub(r'[-_.]+', '_', name)}-{version}-py3-none-any.whl" for name, version in bundle().items()]
    for name in [*wheel_names, "hydra_core-0.1-py3-none-any.whl", "stray-1.0-py3-none-any.whl"]:
        (wheels / name).write_bytes(b"")
    env = dict(os.environ, DEVICE_WHEELS=str(wheels), PY="false")  # pip is never asked: everything is there
    proc = subprocess.run(["bash", str(REPO / "tools" / "device_bundle.sh")], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in wheels.iterdir()) == sorted(wheel_names)
    lines = proc.stdout.strip().splitlines()
    assert "removed stray-1.0-py3-none-any.whl (not in tools/device_bundle.txt)" in lines
    assert f"removed hydra_core-0.1-py3-none-any.whl (not hydra-core=={bundle()['hydra-core']})" in lines
    assert lines[-1].startswith(f"device-bundle: 0 written, {len(wheel_names)} already there")


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
