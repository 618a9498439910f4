"""The claims ledger (issue #37): ``make claims`` regenerates ``docs/claims.md``, each experiment
README's generated claims block and the docs' copies of the experiments' plots from the committed
files; these tests fail when a committed copy differs, or when a README's text states a verdict that
the regenerated one contradicts."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ledger():
    spec = importlib.util.spec_from_file_location("claims_ledger", ROOT / "tools" / "claims_ledger.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated(ledger):
    return ledger.generated()


def test_the_ledger_and_the_readme_blocks_are_what_make_claims_gives(ledger, generated):
    stale = ledger.stale(generated, ledger.plots())
    assert not stale, f"run `make claims`: {[str(p.relative_to(ROOT)) for p in stale]} differ"


def test_every_experiment_says_where_its_per_seed_results_are(ledger):
    for readme in sorted((ROOT / "experiments").glob("*/README.md")):
        assert readme.parent.name in ledger.RAW, f"{readme.parent.name}: add it to RAW in tools/claims_ledger.py"
        assert ledger.BEGIN in readme.read_text().split("\n## ", 1)[0], f"{readme}: the block belongs under the title"


def test_every_claim_has_a_verdict_and_a_paper_field(ledger):
    """Every claim has a verdict; "no results" only where the per-seed file is committed and the
    claim's runs are still pending (the runner resumes from that file; the ledger then computes it)."""
    for exp in sorted((ROOT / "experiments").glob("*/")):
        for row in ledger.experiment_rows(exp):
            pending = row.verdict == "no results" and exp.name in ledger.RESULTS and "no results for" in row.evidence
            assert row.verdict in ("holds", "does not hold", "not shown") or pending, row
            assert row.paper != "-", f"{exp.name}: give the claim {row.claim!r} a paper: field"


def test_computed_claims_match_the_recorded_results_md(ledger):
    """A computed verdict (from the committed per-seed file) is the one the runner's report recorded."""
    for name in ledger.RESULTS:
        exp = ROOT / "experiments" / name
        recorded = {}
        for md in sorted(exp.glob("results*.md")):
            recorded.update(ledger._recorded_claims(md))
        for row in ledger.experiment_rows(exp):
            if row.claim in recorded:
                assert recorded[row.claim] == (row.verdict, row.evidence), row


def test_readme_prose_does_not_contradict_the_verdicts(ledger, generated):
    """Outside the generated block, a README line that quotes a claim's text and names a verdict names
    the regenerated one (a claim reads "holds", "does not hold" or "not shown")."""
    for exp in sorted((ROOT / "experiments").glob("*/")):
        if not (exp / "README.md").is_file():
            continue
        text = (exp / "README.md").read_text()
        prose = text.split(ledger.BEGIN)[0] + text.split(ledger.END, 1)[-1]
        for row in ledger.experiment_rows(exp):
            for line in prose.splitlines():
                if row.claim in line:
                    named = [v for v in ("does not hold", "not shown", "holds") if re.search(rf"\b{v}\b", line)]
                    named = [v for v in named if not (v == "holds" and "does not hold" in named)]
                    assert not named or named == [row.verdict], f"{exp.name}: {line!r} against {row.verdict}"


def test_the_experiments_page_shows_every_plot(ledger):
    page = (ROOT / "docs" / "experiments.md").read_text()
    for copy in ledger.plots():
        assert f"]({copy.relative_to(ROOT / 'docs').as_posix()})" in page, f"docs/experiments.md: show {copy.name}"
