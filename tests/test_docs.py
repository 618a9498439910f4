"""The documentation site builds with ``mkdocs build --strict`` (broken links, anchors, nav entries and
API references are errors), its API reference is generated from the docstrings, and the README stays a
short entry page that starts with the two commands."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import REPO, needs


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(REPO / "mkdocs.yml"),
                          "-d", str(out)], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    return out


def page_text(site: Path, page: str) -> str:
    html = (site / page / "index.html").read_text(encoding="utf-8")
    return re.sub(r"<[^>]+>", " ", html)


@needs("mkdocs")
def test_api_reference_is_generated_from_the_docstrings(site):
    switch = page_text(site, "api/switch")
    assert "SubnetConfig" in switch and "SwitchState" in switch
    models = page_text(site, "api/models")
    assert "SwitchableNet" in models and "materialize" in models and "switch" in models
    assert "SwitchableClassifier" in page_text(site, "api/deploy")
    # the docstring text itself, not only the headings mkdocstrings writes
    doc = __import__("resnet_switch.models.switchable", fromlist=["SwitchableNet"]).SwitchableNet.materialize.__doc__
    first_words = " ".join(doc.replace("`", "").split()[:4])
    assert first_words in " ".join(models.split())


@needs("mkdocs")
def test_every_topic_page_is_built(site):
    for page in ("getting-started", "methods", "configuration", "training-at-scale", "evaluation", "deployment",
                 "published-checkpoints", "quantization", "detection", "fine-tuning", "benchmarks", "data",
                 "experiments", "architecture"):
        assert (site / page / "index.html").is_file(), page


def test_readme_is_short_and_starts_with_the_two_commands():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200
    first_block = next(i for i, line in enumerate(lines) if line.startswith("```"))
    assert lines[first_block + 1].startswith("make train") and lines[first_block + 2].startswith("make test")
