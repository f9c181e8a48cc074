"""Run this folder again under the other two Keras backends, each in its own process.

Keras fixes its backend at import (KERAS_BACKEND), so one pytest command covers tensorflow, jax
and torch only through subprocesses. ECA_MULTI_KERAS_SUBPROCESS=1 stops the recursion;
ECA_MULTI_KERAS_SUBPROCESS_TIMEOUT (seconds, default 900) bounds each run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

ROOT = Path(__file__).resolve().parents[2]
OTHERS = [b for b in ("tensorflow", "jax", "torch") if b != keras.backend.backend()]


def _tail(out, err, n: int = 4000) -> str:
    text = "".join(s.decode() if isinstance(s, bytes) else (s or "") for s in (out, err))
    return text[-n:]


@pytest.mark.skipif(
    os.environ.get("ECA_MULTI_KERAS_SUBPROCESS") == "1",
    reason="already inside a per-backend subprocess",
)
@pytest.mark.parametrize("backend", OTHERS)
def test_keras_suite_on_other_backend(backend):
    env = {**os.environ, "KERAS_BACKEND": backend, "ECA_MULTI_KERAS_SUBPROCESS": "1"}
    folder = str(Path(__file__).parent)
    cmd = [sys.executable, "-m", "pytest", folder, "-q", "-p", "no:cacheprovider"]
    timeout = float(os.environ.get("ECA_MULTI_KERAS_SUBPROCESS_TIMEOUT", "900"))
    try:
        proc = subprocess.run(
            cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(
            f"Keras suite on KERAS_BACKEND={backend} ran past {timeout:.0f} s:\n"
            f"{_tail(e.stdout, e.stderr)}"
        )
    tail = _tail(proc.stdout, proc.stderr)
    assert proc.returncode == 0, f"Keras suite failed on KERAS_BACKEND={backend}:\n{tail}"
