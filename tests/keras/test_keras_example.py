"""examples/keras_example.py runs (on this process's Keras backend) and reports success."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import keras

ROOT = Path(__file__).resolve().parents[2]


def test_keras_example_runs(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend()}
    out = tmp_path / "eca.safetensors"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "keras_example.py"), str(out)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    tail = (proc.stdout + proc.stderr)[-3000:]
    assert proc.returncode == 0, f"example failed (rc={proc.returncode}):\n{tail}"
    assert f"backend={keras.backend.backend()}" in proc.stdout, tail
    assert "identical output: True" in proc.stdout, tail
    assert out.is_file()
