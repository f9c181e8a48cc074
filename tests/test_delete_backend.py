"""Deleting one backend's folder removes that backend and nothing else.

For each backend, a temporary copy of the repository without ``eca_multi/<backend>/`` must still
run the other backends' tests, conformance rows and ports, and must report the deleted one as not
installed: its conformance rows as ``missing`` (listed as not installed; a failure only with
``--require-all``) and a port to it as
:class:`eca_multi.registry.BackendNotInstalled`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("torch", "keras", "flax")
CASE = "c8_k3"  # one small ECA case is enough: every group starts, imports and runs its adapter
# a file of layer tests per remaining backend (Keras: this process' backend only)
LAYER_TESTS = {
    "torch": "tests/torch/test_torch_layer.py",
    "keras": "tests/keras/test_keras_layer.py",
    "flax": "tests/flax/test_flax_layer.py",
}

PORT_PROBE = r"""
import json, sys
import numpy as np
from eca_multi import archs
from eca_multi.port import port
from eca_multi.registry import BackendNotInstalled
from eca_multi.weights import save_file

deleted, out = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(0)
state = {}
for key, (shape, _) in archs.schema("eca_resnet18", 10).items():
    if key.endswith("num_batches_tracked"):
        state[key] = np.array(0, np.int64)
    elif key.endswith("running_var"):
        state[key] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
    else:
        state[key] = (0.05 * rng.standard_normal(shape)).astype(np.float32)
save_file(f"{out}/src.safetensors", state, {"note": "random"})
result = {}
for to, name in (("torch", "o.pth"), ("keras", "o.weights.h5"), ("flax", "o.msgpack")):
    try:
        # canonical files run in torch: verify only where torch is there
        r = port(f"{out}/src.safetensors", "eca_resnet18", to, f"{out}/{name}",
                 verify=deleted != "torch", verify_size=64, verify_batch=1, progress=False)
        result[to] = {"ok": True, "max_abs": None if r.verify is None else r.verify.max_abs}
    except BackendNotInstalled as e:
        result[to] = {"ok": False, "not_installed": True, "error": str(e)}
json.dump(result, open(f"{out}/port.json", "w"))
"""


# The copy stands for an installation of itself. The editable install of the real tree adds a
# meta-path finder that resolves any eca_multi.* name to the real folder, so it would still find
# the deleted subpackage: the copy's processes drop it (site runs sitecustomize after the .pth).
SITECUSTOMIZE = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
"""


def _copy_without(backend: str, dest: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for part in ("eca_multi", "tests", "examples"):
        shutil.copytree(ROOT / part, dest / part, ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")
    (dest / "sitecustomize.py").write_text(SITECUSTOMIZE)
    shutil.rmtree(dest / "eca_multi" / backend)
    return dest


def _run(args: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "ECA_MULTI_REQUIRE_ALL")}
    env.update(PYTHONPATH=str(cwd), ECA_MULTI_KERAS_SUBPROCESS="1")
    if os.environ.get("CI"):  # the copy's tests draw CI's fixed hypothesis examples too
        env.setdefault("ECA_MULTI_HYPOTHESIS_PROFILE", "ci")
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("deleted", BACKENDS)
def test_one_backend_deleted(deleted, tmp_path):
    copy = _copy_without(deleted, tmp_path / "repo")
    probe = (
        "import importlib.util as u, eca_multi; "
        f"print(eca_multi.__file__, u.find_spec('eca_multi.{deleted}'))"
    )
    where = _run(["-c", probe], copy)
    assert where.stdout.strip() == f"{copy / 'eca_multi' / '__init__.py'} None", (
        f"the copy must import itself, without eca_multi.{deleted}: {where.stdout}{where.stderr}"
    )
    others = [b for b in BACKENDS if b != deleted]

    # conformance: the other backends' rows pass, the deleted one's are reported missing
    report = tmp_path / "conf.json"
    conf = _run(
        ["-m", "eca_multi.cli", "conformance", "--cases", CASE, "--json", str(report)], copy
    )
    assert report.exists(), f"no conformance report without {deleted}: {conf.stdout}{conf.stderr}"
    records = json.loads(report.read_text())["results"]
    for r in records:
        fw = r["backend"].split("-")[0]
        if fw == deleted:
            assert r["status"] == "missing" and f"eca_multi.{deleted}" in r["error"], (
                f"without {deleted}: row {r['backend']} is {r['status']}, not missing: {r}"
            )
        else:
            assert r["ok"], f"without {deleted}: {r['backend']}/{r['case']} failed: {r}"
    assert {r["backend"].split("-")[0] for r in records if r["ok"]} == set(others)
    assert conf.returncode == 0, f"rows of a backend not installed fail only --require-all: {conf}"
    gone = sorted({r["backend"] for r in records if r["backend"].split("-")[0] == deleted})
    for name in gone:
        assert f"{name}: not installed" in conf.stdout, f"{name} not listed: {conf.stdout}"
    strict = _run(
        ["-m", "eca_multi.cli", "conformance", "--cases", CASE, "--backends", ",".join(gone),
         "--require-all"], copy,
    )  # fmt: skip
    assert strict.returncode == 1, f"--require-all must fail without {deleted}: {strict}"
    assert f"{gone[0]}: MISSING (--require-all)" in strict.stdout, strict.stdout

    # ports: to each remaining backend they run (verified where the source's torch is there);
    # to the deleted one they say it is not installed
    probe = _run(["-c", PORT_PROBE, deleted, str(tmp_path)], copy)
    assert probe.returncode == 0, probe.stdout + probe.stderr
    ports = json.loads((tmp_path / "port.json").read_text())
    assert ports[deleted]["not_installed"] and "not installed" in ports[deleted]["error"], ports
    for fw in others:
        assert ports[fw]["ok"], f"without {deleted}: port to {fw} failed: {ports[fw]}"
        if deleted != "torch":
            assert ports[fw]["max_abs"] <= 1e-4, f"port to {fw}: {ports[fw]}"

    # tests: the other backends' layer tests still pass in the copy
    files = [LAYER_TESTS[b] for b in others] + ["tests/test_weights.py", "tests/test_spec.py"]
    tests = _run(["-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *files], copy)
    # the failing check's own line first: a hypothesis example's repr can push it out of the tail
    why = [ln for ln in tests.stdout.splitlines() if "max_abs=" in ln or ln.startswith("FAILED")]
    assert tests.returncode == 0, (
        f"without {deleted}: "
        + "\n".join(why[:10])
        + f"\n...\n{tests.stdout[-2000:]}{tests.stderr[-1000:]}"
    )
    assert " passed" in tests.stdout and "error" not in tests.stdout.splitlines()[-1]
