"""The eca-multi command line."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import require_backend


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "eca_multi.cli", *args], capture_output=True, text=True, timeout=600
    )


def test_kernel_size_command():
    out = _cli("kernel-size", "2048")
    assert out.returncode == 0 and out.stdout.strip() == "7", out
    assert _cli("kernel-size", "8", "--min", "3").stdout.strip() == "3"


def test_unknown_backend_is_an_error():
    out = _cli("conformance", "--backends", "torch,tensorflw")
    assert out.returncode == 2 and "unknown backend 'tensorflw'" in out.stderr, out


def test_goldens_check_command():
    out = _cli("goldens", "--check")
    assert out.returncode == 0 and "0 problems" in out.stdout, out.stdout + out.stderr


def test_conformance_command_prints_matrix_and_json(tmp_path):
    require_backend("torch")
    path = tmp_path / "r.json"
    out = _cli(
        "conformance", "--backends", "torch", "--cases", "c8_k3,bf16_c64_k3", "--json", str(path)
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "c8_k3" in out.stdout and "torch" in out.stdout and "2 passed, 0 failed" in out.stdout
    data = json.loads(path.read_text())
    assert data["ok"] and {r["case"] for r in data["results"]} == {"c8_k3", "bf16_c64_k3"}
    assert data["results"][0]["checks"]["y"]["max_abs"] <= 2e-6
