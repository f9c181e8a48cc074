"""The Flax example script runs to completion."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "flax_example.py"


def test_flax_example_runs():
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert "same output: True" in proc.stdout


def test_flax_family_example_runs(capsys):
    """examples/flax_family_example.py: its asserts check every kind's parameter count."""
    import runpy

    from eca_multi import archs
    from eca_multi.family import ATTENTIONS

    runpy.run_path(str(EXAMPLE.with_name("flax_family_example.py")), run_name="__main__")
    out = capsys.readouterr().out
    for kind in ATTENTIONS:
        n = archs.attention_params("eca_resnet50", kind)
        assert f"attention={kind!r:10s} +{n:>11,} parameters" in out, out[-2000:]
    assert "eca_resnet18 with SE: loss" in out, out[-500:]
