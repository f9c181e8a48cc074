"""Smoke run of ``eca-multi bench --quick`` (tiny sizes, every backend): the benchmark code cannot
rot. Not a timing test: it asserts the table and files were produced and every backend x mode x
pass x shape row holds a finite, positive ratio (no threshold on the ratio itself)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

from conftest import require_backend

from eca_multi.benchmark import BENCH_GROUPS, QUICK_SHAPES, shape_id


def test_bench_quick_every_backend(tmp_path):
    for module in ("torch", "keras", "jax", "flax", "matplotlib"):
        require_backend(module)
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "eca_multi.cli", "bench", "--quick", "--no-models", "--jobs", "2"]
    proc = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (
        f"eca-multi bench --quick exited {proc.returncode}:\n" + (proc.stdout + proc.stderr)[-4000:]
    )
    data = json.loads((out / "bench.json").read_text())
    assert not data["errors"], f"bench groups failed: {data['errors']}"
    assert (out / "bench.png").stat().st_size > 1000, "no PNG plot written"
    table = (out / "bench.md").read_text()
    rows = data["rows"]
    frameworks = {r["framework"] for r in rows}
    want = {"torch", "keras-tensorflow", "keras-jax", "keras-torch", "flax"}
    assert frameworks == want, f"frameworks with rows: {sorted(frameworks)}, want {sorted(want)}"
    for g in BENCH_GROUPS:
        assert g.name in data["env"], f"no environment recorded for {g.name}"
    bad = [r for r in rows if not (math.isfinite(r["ratio"]) and r["ratio"] > 0)]
    assert not bad, f"non-finite or non-positive ratios: {bad}"
    # every framework has an eager/jit row for every quick shape, forward and forward+backward
    for fw in want:
        for p in ("fwd", "fwd+bwd"):
            shapes = {r["shape"] for r in rows if r["framework"] == fw and r["pass"] == p}
            missing = {shape_id(s) for s in QUICK_SHAPES} - shapes
            assert not missing, f"{fw} {p}: no row for shapes {sorted(missing)}"
    for r in rows:  # each row is a line of the markdown table
        assert f"| {r['framework']} {r['mode']} | {r['pass']} | {r['dtype']} |" in table, (
            f"row {r['framework']} {r['mode']} {r['pass']} {r['dtype']} missing from bench.md"
        )
