"""Installs proven from the built distribution, not the work tree.

The sdist is built with the project's own build backend (setuptools' PEP 517 ``build_sdist``),
the wheel is built from the unpacked sdist (so a file the sdist forgets fails here), and each is
installed into a fresh virtual environment that sees nothing of this one:

* core only (numpy): the reference runs, ``eca-multi goldens --check`` passes and
  ``eca-multi conformance`` lists every framework as not installed and exits 0, while
  ``--require-all`` fails;
* ``eca-multi[torch]`` with ``torch==2.13.0`` (the small CPU build): ``eca-multi conformance
  --backends torch`` passes.

Every command runs from a folder outside the repository, with no PYTHONPATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOT_SOURCE = (".git", ".venv", ".cache", "build", "dist", "*.egg-info", "__pycache__", "site",
              ".hypothesis", ".pytest_cache", ".ruff_cache", ".mypy_cache")  # fmt: skip
TORCH = "torch==2.13.0"  # the small CPU build on local disk (README, "Install one backend")

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, timeout: float = 900, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        cmd, cwd=cwd, env={**env, **kw}, capture_output=True, text=True, timeout=timeout
    )


def _ok(r: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    assert r.returncode == 0, f"{what} exited {r.returncode}:\n{r.stdout[-3000:]}{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("dist")
    tree = tmp / "tree"  # a copy: the build writes egg-info, never into the checkout
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    build = "import sys; from setuptools import build_meta as b; print(b.build_sdist(sys.argv[1]))"
    out = _ok(_run([sys.executable, "-c", build, str(tmp)], tree), "build_sdist").stdout
    sdist = tmp / out.strip().splitlines()[-1]
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
        tar.extractall(tmp / "src", filter="data")
    top = names[0].split("/")[0]
    for want in ("pyproject.toml", "README.md", "eca_multi/py.typed",
                 "eca_multi/conformance/goldens/MANIFEST.json"):  # fmt: skip
        assert f"{top}/{want}" in names, f"the sdist lacks {want}"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    _ok(_run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "wheel"),
              str(tmp / "src" / top)], tmp), "pip wheel from the sdist")  # fmt: skip
    (wheel,) = (tmp / "wheel").glob("eca_multi-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "eca_multi/py.typed" in names, "the wheel lacks the py.typed marker"
    return {"sdist": sdist, "wheel": wheel}


def _venv(where: Path, *requirements: str) -> Path:
    _ok(_run([sys.executable, "-m", "venv", str(where)], where.parent), "python -m venv")
    py = where / "bin" / "python"
    # --no-compile: the few modules a test imports compile on first import; byte-compiling all
    # of torch at install time cost ~10 s of this test
    pip = [str(py), "-m", "pip", "--disable-pip-version-check", "-q", "install", "--no-compile"]
    _ok(_run([*pip, *requirements], where.parent), f"pip install {' '.join(requirements)}")
    return py


def test_core_only_install(dist, tmp_path):
    py = _venv(tmp_path / "core", str(dist["wheel"]))
    cli = [str(py), "-m", "eca_multi.cli"]
    freeze = _ok(_run([str(py), "-m", "pip", "freeze"], tmp_path), "pip freeze").stdout
    names = {line.split("==")[0].split(" @ ")[0].lower() for line in freeze.splitlines()}
    assert names == {"eca-multi", "numpy"}, f"core install pulled more than numpy: {names}"
    ref = (
        "import numpy as np; from eca_multi import reference; "
        "x = np.random.default_rng(0).standard_normal((2, 8, 5, 5)); "
        "y = reference.forward(x, np.array([[[0.2, -0.5, 0.3]]])); print(y.shape, y.dtype); "
        "np.save('y.npy', y)"
    )
    out = _ok(_run([str(py), "-c", ref], tmp_path), "the reference").stdout
    assert out.strip() == "(2, 8, 5, 5) float64", out
    from eca_multi import reference

    x = np.random.default_rng(0).standard_normal((2, 8, 5, 5))
    want = reference.forward(x, np.array([[[0.2, -0.5, 0.3]]]))
    got = np.load(tmp_path / "y.npy")
    assert np.array_equal(got, want), f"the wheel's reference differs: {np.abs(got - want).max()}"
    _ok(_run([*cli, "goldens", "--check"], tmp_path), "eca-multi goldens --check")
    conf = _ok(_run([*cli, "conformance", "-q"], tmp_path), "eca-multi conformance (core only)")
    from eca_multi.conformance.backends import BACKENDS

    for b in BACKENDS:
        assert f"{b.name}: not installed" in conf.stdout, f"{b.name} not listed:\n{conf.stdout}"
    strict = _run([*cli, "conformance", "-q", "--require-all"], tmp_path)
    assert strict.returncode == 1, f"--require-all passed with no framework:\n{strict.stdout}"


def test_torch_install(dist, tmp_path):
    py = _venv(tmp_path / "torch", f"{dist['wheel']}[torch]", TORCH)
    probe = [str(py), "-c", "import torch; print(torch.__version__)"]
    version = _ok(_run(probe, tmp_path), "import torch")
    assert version.stdout.strip().startswith("2.13.0"), version.stdout
    conf = _run([str(py), "-m", "eca_multi.cli", "conformance", "--backends", "torch", "-q",
                 "--require-all"], tmp_path)  # fmt: skip
    assert conf.returncode == 0, f"torch conformance from the wheel:\n{conf.stdout}{conf.stderr}"
    assert "0 failed" in conf.stdout and "(1 backends" in conf.stdout, conf.stdout
