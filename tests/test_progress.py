"""Progress output (eca_multi.progress, tqdm): one line per stage off a terminal, a tqdm bar on
one, nothing with --quiet; workers report backend x case steps to the conformance driver."""

from __future__ import annotations

import io
import os
import select
import subprocess
import sys
from pathlib import Path

import pytest
from common import random_canonical_state

from eca_multi import archs, progress
from eca_multi.weights import save_file

ROOT = Path(__file__).resolve().parent.parent
ARCH = "eca_resnet18"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "eca_multi.cli", *args],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip


@pytest.fixture(scope="module")
def canonical(tmp_path_factory) -> Path:
    state = random_canonical_state(ARCH, 10)
    path = tmp_path_factory.mktemp("progress") / "src.safetensors"
    save_file(path, state, {})
    return path


def test_stage_off_a_terminal_is_one_line():
    buf = io.StringIO()  # not a terminal
    with progress.Stage(5, "converting to keras", "tensors", True, file=buf) as bar:
        for _ in range(5):
            bar.update()
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("converting to keras: 5/5 tensors in "), lines
    quiet = io.StringIO()
    with progress.Stage(5, "x", "tensors", False, file=quiet) as bar:
        bar.update(5)
    assert quiet.getvalue() == "", "a disabled stage printed"


def test_stage_on_a_terminal_is_a_tqdm_bar():
    pytest.importorskip("tqdm")
    main, other = os.openpty()
    with os.fdopen(other, "w") as tty:
        with progress.Stage(4, "verifying", "steps", True, file=tty) as bar:
            assert bar._bar is not None and type(bar._bar).__module__.startswith("tqdm"), bar._bar
            bar.update(4)
    # A pty hands back one write per read: drain every write tqdm made (open, redraws, close).
    chunks = []
    while select.select([main], [], [], 1.0)[0]:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO once the slave side is closed and drained (Linux)
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    text = b"".join(chunks).decode(errors="replace")
    assert "verifying" in text and "4/4" in text and "\r" in text, repr(text)  # tqdm's redraws


def test_worker_ticks_are_read_whole_lines_only(tmp_path, monkeypatch):
    path = tmp_path / "ticks"
    monkeypatch.setenv(progress.PROGRESS_ENV, str(path))
    progress.tick("torch/c8_k3")
    progress.tick("torch/c16_k5", n=2)
    with open(path, "a") as f:
        f.write("7\tpartial")  # a line being written: not counted yet
    steps, offset = progress.read_ticks(path, 0)
    assert (steps, offset) == (3, len("1\ttorch/c8_k3\n2\ttorch/c16_k5\n")), (steps, offset)
    with open(path, "a") as f:
        f.write("\n")
    assert progress.read_ticks(path, offset) == (7, offset + len("7\tpartial\n"))
    assert progress.read_ticks(tmp_path / "none", 0) == (0, 0)


def test_port_progress_off_a_terminal_and_quiet(canonical, tmp_path):
    out = tmp_path / "o.pth"
    r = _cli("port", str(canonical), "--arch", ARCH, "--to", "torch", "-o", str(out), "--verify")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    n = len(archs.schema(ARCH, 10))
    assert any(ln.startswith(f"converting to torch: {n}/{n} tensors in ") for ln in lines), lines
    assert any(ln.startswith("verifying: 3/3 steps in ") for ln in lines), lines
    assert not any("\r" in ln for ln in lines), "a bar was drawn off a terminal"
    r = _cli("port", str(canonical), "--arch", ARCH, "--to", "torch", "-o", str(out), "--force",
             "--quiet")  # fmt: skip
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


@pytest.mark.slow
def test_conformance_progress_counts_backend_x_case():
    r = _cli("conformance", "--backends", "torch,torch-compile", "--cases", "c8_k3,c64_k3")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "conformance: 4/4 backend x case in " in r.stderr, r.stderr
    r = _cli("conformance", "--backends", "torch", "--cases", "c8_k3", "-q")
    assert r.returncode == 0 and "backend x case" not in r.stderr, r.stderr


def test_version():
    import eca_multi

    r = _cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"eca-multi {eca_multi.__version__}", r
    from importlib.metadata import version

    assert eca_multi.__version__ == version("eca-multi")
    assert "## [Unreleased]" in (ROOT / "CHANGELOG.md").read_text()
