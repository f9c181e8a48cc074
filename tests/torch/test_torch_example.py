"""examples/torch_example.py runs to the end in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from common import run_family_example

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "torch_example.py"


def test_torch_example_runs():
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, (
        f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    assert "canonical round trip" in proc.stdout, proc.stdout


def test_torch_family_example_runs(capsys):
    """examples/torch_family_example.py: its asserts check every kind's parameter count."""
    out = run_family_example("torch_family_example.py", capsys)
    assert "backward ok" in out, out[-500:]
