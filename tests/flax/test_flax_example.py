"""The Flax example script runs to completion."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from common import run_family_example

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "flax_example.py"


def test_flax_example_runs():
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert "same output: True" in proc.stdout


def test_flax_family_example_runs(capsys):
    """examples/flax_family_example.py: its asserts check every kind's parameter count."""
    out = run_family_example("flax_family_example.py", capsys)
    assert "eca_resnet18 with SE: loss" in out, out[-500:]
