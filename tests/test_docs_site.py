"""The documentation site: ``mkdocs build --strict`` passes, a broken link or reference fails it,
and every public module of the package has its API reference page entry."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings")

ROOT = Path(__file__).resolve().parent.parent
# what the build reads: the pages, the README / CHANGELOG they include, the package (API
# reference) and the repository files the included sections link to
TREE = ("mkdocs.yml", "docs", "README.md", "CHANGELOG.md", "eca_multi", "conformance",
        "benchmarks", "examples")  # fmt: skip


def _build(root: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
        cwd=root, capture_output=True, text=True, timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip


def _copy(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for part in TREE:
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dest / part)
    return dest


def test_site_builds_strict(tmp_path):
    r = _build(ROOT, tmp_path / "site")
    assert r.returncode == 0, f"mkdocs build --strict failed:\n{r.stdout}{r.stderr}"
    api = (tmp_path / "site" / "api" / "torch" / "index.html").read_text()
    assert "eca_multi.torch.layer.ECA" in api, "the API reference lacks eca_multi.torch's ECA"
    page = (tmp_path / "site" / "conformance" / "index.html").read_text()
    assert "Tolerances" in page, "the conformance page lacks the README's Tolerances section"


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        ("[a page](nowhere.md)", "nowhere.md"),
        ("[a file](no_such_file.py)", "no_such_file.py"),
        ("[eca_multi.spec.no_such_function][]", "no_such_function"),
        ('--8<-- "README.md:no-such-section"', "no-such-section"),
    ],
)
def test_a_broken_link_or_reference_fails_the_build(tmp_path, edit, words):
    root = _copy(tmp_path / "repo")
    index = root / "docs" / "index.md"
    index.write_text(index.read_text() + f"\n{edit}\n")
    r = _build(root, tmp_path / "site")
    assert r.returncode != 0, f"a broken {edit!r} built:\n{r.stdout}{r.stderr}"
    assert words in r.stdout + r.stderr, r.stdout + r.stderr


def test_every_public_module_has_reference_docs():
    pages = "\n".join(p.read_text() for p in (ROOT / "docs" / "api").glob("*.md"))
    documented = set(re.findall(r"^::: (\S+)$", pages, re.M))
    public = set()
    for path in (ROOT / "eca_multi").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if any(p.startswith("_") and p != "__init__" for p in parts) or parts[-1] == "__main__":
            continue
        public.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    public.discard("eca_multi")  # the package root re-exports spec (documented there)
    missing = sorted(public - documented)
    assert not missing, f"public modules without an API reference entry in docs/api: {missing}"
