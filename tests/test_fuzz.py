"""The hostile-file fuzzers' quick runs (issue #14), in CI: tests/fuzz/fuzz_readers.py (a seeded
mutation corpus over every format through the readers and `eca-multi port`) and
tests/fuzz/atheris_readers.py (coverage-guided, the framework-free readers)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_backend

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "fuzz"))

import fuzz_readers  # noqa: E402

pytestmark = pytest.mark.slow


def test_quick_run_passes(tmp_path):
    for backend in ("torch", "keras", "flax"):
        require_backend(backend)
    out, scratch = tmp_path / "fuzz.json", tmp_path / "tmp"
    scratch.mkdir()
    r = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "fuzz" / "fuzz_readers.py"), "--cases", "300",
         "--seed", "0", "--json", str(out)],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
        env={**os.environ, "TMPDIR": str(scratch)},
    )  # fmt: skip
    assert r.returncode == 0, f"fuzz quick run failed:\n{r.stdout[-4000:]}{r.stderr[-3000:]}"
    summary = json.loads(out.read_text())
    assert summary["cases"] == 300 and not summary["failures"], summary
    assert set(summary["per_format"]) == set(fuzz_readers.FORMATS), summary["per_format"]
    left = sorted(p.name for p in scratch.iterdir())
    assert not left, f"a passing fuzz run left its work in TMPDIR: {left}"
    print(r.stdout)


def test_the_fuzzer_flags_undocumented_errors(tmp_path):
    from eca_multi.weights import WeightMismatchError
    from eca_multi.weights.sources import SourceError

    path = tmp_path / "w.safetensors"
    assert fuzz_readers._documented(SourceError(f"{path}: bad"), path)
    assert fuzz_readers._documented(WeightMismatchError([], [], {}), path)
    assert fuzz_readers._documented(ValueError(f"{path}: bad kernel sizes"), path)
    assert not fuzz_readers._documented(ValueError("no file named"), path)
    assert not fuzz_readers._documented(TypeError(f"{path}"), path)
    assert not fuzz_readers._documented(KeyError("x"), path)


def test_mutations_are_seeded():
    import random

    data = bytes(range(256)) * 64
    a = fuzz_readers.mutate(data, "npz", random.Random(7))
    b = fuzz_readers.mutate(data, "npz", random.Random(7))
    assert a == b and a != data


def test_atheris_quick_run_passes(tmp_path):
    """libFuzzer over the framework-free readers: 2,000 inputs, none failing, and the coverage
    it reports shows that eca_multi was instrumented (an uninstrumented run sees a few edges)."""
    pytest.importorskip("atheris", reason="atheris (requirements-ci.txt) is not installed")
    runs, scratch = 2000, tmp_path / "tmp"
    scratch.mkdir()
    r = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "fuzz" / "atheris_readers.py"), f"-runs={runs}",
         "-seed=1", f"-artifact_prefix={tmp_path}/", str(tmp_path / "corpus")],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, "TMPDIR": str(scratch)},
    )  # fmt: skip
    log = r.stdout + r.stderr
    assert r.returncode == 0, f"atheris quick run failed (exit {r.returncode}):\n{log[-5000:]}"
    assert f"Done {runs} runs" in log, log[-3000:]
    assert not list(tmp_path.glob("crash-*")) + list(tmp_path.glob("oom-*")), log[-3000:]
    cov = [int(c) for c in re.findall(r"cov: (\d+)", log)]
    assert cov and max(cov) >= 150, f"coverage {max(cov, default=0)} edges: not instrumented?"
    seeds = sorted(p.name for p in (tmp_path / "corpus").glob("seed-*"))
    assert len(seeds) == 4, seeds
    left = sorted(p.name for p in scratch.iterdir())
    assert not left, f"the atheris run left its work folder in TMPDIR: {left}"
    print(log[-1500:])


def test_atheris_memory_limit_ignores_the_parents_peak(tmp_path):
    """Linux carries a process's peak RSS across exec: started by a parent holding 3 GB, libFuzzer
    would report 3 GB before its first input and stop as out-of-memory (seen in CI under a large
    pytest worker). The harness runs the fuzzer in a fresh child; its reported RSS stays small."""
    pytest.importorskip("atheris", reason="atheris (requirements-ci.txt) is not installed")
    parent = (
        "import subprocess, sys\n"
        "held = bytearray(3 << 30)\n"
        "held[::4096] = b'\\x01' * len(held[::4096])\n"
        "sys.exit(subprocess.run(sys.argv[1:]).returncode)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", parent, sys.executable,
         str(ROOT / "tests" / "fuzz" / "atheris_readers.py"), "-runs=20", "-seed=1",
         f"-artifact_prefix={tmp_path}/", str(tmp_path / "corpus")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    log = r.stdout + r.stderr
    assert r.returncode == 0, f"atheris under a 3 GB parent: exit {r.returncode}:\n{log[-3000:]}"
    rss = [int(m) for m in re.findall(r"rss: (\d+)Mb", log)]
    assert rss and max(rss) < 2048, f"reported RSS {rss[:5]}... MB under a 3 GB parent"
