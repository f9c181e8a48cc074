"""The package's layering (``[tool.importlinter]`` in pyproject.toml), checked by import-linter.

cli > port > the backends (torch | keras | flax, independent) > the harnesses (deploy, benchmark,
worker) > the framework-free core (spec, family, archs, reference, weights, conformance,
registry); the core, the harnesses and ``import eca_multi`` import no framework; cli and port
reach the backends only by module path. grimp reads every import statement, so a lazy import
inside a function breaks a contract as much as a top-level one; the second test proves that on
a copy of the package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint_imports(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the venv's lint-imports in ``cwd``, analysing the ``eca_multi`` found there."""
    if not LINT_IMPORTS.exists():
        pytest.skip(f"backend missing: import-linter not installed ({LINT_IMPORTS})")
    env = {
        **os.environ,
        "PYTHONPATH": str(cwd),  # grimp imports eca_multi to find it: this folder's copy
        "COLUMNS": "400",  # rich wraps long chain lines at the terminal width
        "NO_COLOR": "1",
    }
    cmd = [str(LINT_IMPORTS), "--no-cache", "--no-logo", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_import_contracts_hold():
    proc = _lint_imports(ROOT)
    assert proc.returncode == 0, f"lint-imports found broken contracts:\n{proc.stdout}{proc.stderr}"


# (core module, code appended to it, texts its lint-imports output must show; "{line}" is the
# line of the appended import, which exists only in the copy, so the copy is what was analysed)
LAZY_IMPORTS = {
    "framework": (
        "spec.py",
        "def _sneaky():\n    import torch\n\n    return torch\n",
        [
            "the core and the harnesses import no framework, not even lazily BROKEN",
            "eca_multi.spec is not allowed to import torch:",
            "eca_multi.spec -> torch (l.{line})",
        ],
    ),
    "backend": (
        "archs.py",
        "def _sneaky():\n    from eca_multi import torch as _t\n\n    return _t\n",
        [
            "eca_multi layers: cli > port > backends > harnesses > framework-free core BROKEN",
            "eca_multi.archs is not allowed to import eca_multi.torch:",
            "eca_multi.archs -> eca_multi.torch (l.{line})",
        ],
    ),
}


@pytest.mark.parametrize("kind", list(LAZY_IMPORTS))
def test_contracts_catch_a_lazy_framework_import(kind, tmp_path):
    module, code, expected = LAZY_IMPORTS[kind]
    shutil.copytree(
        ROOT / "eca_multi", tmp_path / "eca_multi", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "eca_multi" / module
    source = target.read_text()
    source = source if source.endswith("\n") else source + "\n"
    line = source.count("\n") + 4  # two blank lines, the def, then the import
    target.write_text(source + "\n\n" + code)
    assert target.read_text().splitlines()[line - 1].strip().startswith(("import", "from"))

    proc = _lint_imports(tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"a lazy {kind} import in eca_multi/{module} passed:\n{out}"
    for text in expected:
        assert text.format(line=line) in out, f"{text.format(line=line)!r} not in:\n{out}"
