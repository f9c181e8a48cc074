"""The package type-checks: ``python -m mypy`` with ``[tool.mypy]`` from pyproject.toml.

Strict on the framework-free core and the harnesses; the backends, the peers, port and the CLI,
which call framework APIs with partial stubs, get their bodies checked. The package ships
``py.typed`` (PEP 561), so users' type checkers read these annotations.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_passes():
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("backend missing: mypy not installed (pip install -e '.[test]')")
    cmd = [sys.executable, "-m", "mypy"]  # files and flags: [tool.mypy] in pyproject.toml
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"mypy exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"


def test_package_is_marked_typed():
    assert (ROOT / "eca_multi" / "py.typed").is_file()
