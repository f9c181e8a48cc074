"""The suite from the built wheel, not the work tree: goldens, tolerances and peers travel in it.

The wheel is built from this checkout (``pip wheel --no-deps --no-build-isolation``) and unpacked
with ``pip install --target`` into a folder that comes first on PYTHONPATH; the command runs from a
folder outside the repository, so every module, golden and entry point it uses is the wheel's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(ROOT)]
    subprocess.run(build, check=True, capture_output=True, timeout=600)
    (whl,) = (tmp / "dist").glob("eca_multi-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    for want in (
        "eca_multi/conformance/goldens/MANIFEST.json",
        "eca_multi/conformance/goldens/TOLERANCES.json",
        "eca_multi/conformance/goldens/c64_k3.npz",
        "eca_multi/peers/timm.py",
    ):
        assert want in names, f"the wheel lacks {want}"  # fmt: skip
    assert not any(n.startswith(("conformance/", "tests/")) for n in names), "repo folders leaked"
    site = tmp / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(whl)], check=True,
                   capture_output=True, timeout=600)  # fmt: skip
    return site


def test_conformance_runs_from_the_wheel(wheel_site, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(wheel_site)}
    where = subprocess.run(
        [sys.executable, "-c", "import eca_multi.conformance.generate as g; print(g.GOLDENS_DIR)"],
        env=env, cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert where.stdout.strip().startswith(str(wheel_site)), where.stdout
    out_json = tmp_path / "out.json"
    cmd = [
        sys.executable,
        "-m",
        "eca_multi.cli",
        "conformance",
        "--backends",
        "torch",
        "--impl",
        "official",
        "--cases",
        "c8_k3,c64_k3,cl_c64_k3",
        "--json",
        str(out_json),
    ]
    run = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    data = json.loads(out_json.read_text())
    got = {(r["backend"], r["case"]): r.get("status") for r in data["results"]}
    assert got == {
        ("torch", "c8_k3"): "ran", ("torch", "c64_k3"): "ran", ("torch", "cl_c64_k3"): "ran",
        ("official", "c8_k3"): "ran", ("official", "c64_k3"): "ran",
        ("official", "cl_c64_k3"): "not_expressible",
    }, got  # fmt: skip
    assert all(r["ok"] for r in data["results"] if r["status"] == "ran")
