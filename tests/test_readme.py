"""The README's promises that can be checked mechanically."""

from __future__ import annotations

import re
from pathlib import Path

from eca_multi.conformance.backends import BACKENDS
from eca_multi.conformance.cases import CASES
from eca_multi.conformance.tolerances import markdown_rows

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_tolerance_table_matches_the_code():
    m = re.search(
        r"<!-- tolerance-table.*?-->\n\|.*?\|\n\|.*?\|\n(.*?)\n<!-- /tolerance-table -->",
        README,
        re.S,
    )
    assert m, "tolerance table markers missing from README"
    assert m.group(1) == markdown_rows(), "README tolerance table differs from tolerances.py"


def test_readme_opens_with_the_two_commands():
    head = README.split("```bash", 1)[1].split("```", 1)[0]
    assert "make conformance" in head and "make test" in head


def test_readme_names_every_backend_and_case_count():
    for b in BACKENDS:
        assert f"`{b.name}`" in README, f"README misses backend {b.name}"
    assert f"{len(CASES)} cases" in README


def test_ci_runs_the_readme_test_command():
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert "make test" in ci
