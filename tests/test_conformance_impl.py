"""The open suite's implementation interface, end to end through ``eca-multi conformance --impl``.

* a third-party adapter written from conformance/README.md alone, in a package outside the
  repository, found through its entry point: its expressible cases pass, the rest are listed;
* one that declares too little: every case not expressible, exit status 1;
* an ONNX file written by ``eca-multi export`` passes through ``--impl onnx:``; a file whose graph
  flips the kernel fails per case, naming the case, the tensor, the error and the tolerance;
* ``--report`` writes the case x implementation matrix.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eca_multi.conformance.cases import CASES
from eca_multi.conformance.impl import Capabilities, load_adapter, not_expressible

ROOT = Path(__file__).resolve().parent.parent

# written from conformance/README.md ("The adapter"): NumPy, float64, both data formats, 1-3-D,
# both paddings and gates, forward and gradient, the kernel received as (k,)
THIRD_PARTY = """
import numpy as np
from eca_multi.conformance.impl import Capabilities


def _gate(z, kind):
    return 1 / (1 + np.exp(-z)) if kind == "sigmoid" else np.clip(z + 3, 0, 6) / 6


def _gate_grad(z, kind):
    s = 1 / (1 + np.exp(-z))
    return s * (1 - s) if kind == "sigmoid" else ((z > -3) & (z < 3)) / 6


class NumpyEca:
    name = "numpy-eca"
    capabilities = Capabilities(
        spatial_dims=(1, 2, 3),
        data_formats=("channels_first", "channels_last"),
        paddings=("zeros", "circular"),
        gates=("sigmoid", "hard_sigmoid"),
        dtypes=("float32",),
        gradients=True,
        weight_layout="(k,)",
    )

    def build(self, case, weights):
        w = np.asarray(weights["conv.weight"], np.float64)
        k, p, cf = w.size, (w.size - 1) // 2, case.data_format == "channels_first"

        def taps(c):  # (C, C) matrix M with z = pooled @ M.T: cross-correlation, no flip
            m = np.zeros((c, c))
            for i in range(c):
                for j in range(k):
                    src = i + j - p
                    if case.padding == "circular":
                        m[i, src % c] += w[j]
                    elif 0 <= src < c:
                        m[i, src] += w[j]
            return m

        def parts(x):
            xc = x if cf else np.moveaxis(x, -1, 1)
            axes = tuple(range(2, xc.ndim))
            pooled = xc.mean(axis=axes) if xc.shape[0] else np.zeros(xc.shape[:2])
            m = taps(xc.shape[1])
            return xc, axes, pooled, m, pooled @ m.T

        def back(a):
            return a if cf else np.moveaxis(a, 1, -1)

        def forward(x):
            xc, axes, _, _, z = parts(x)
            return back(xc * _gate(z, case.gate).reshape(z.shape + (1,) * len(axes)))

        def vjp(x, g):
            xc, axes, pooled, m, z = parts(x)
            gc = g if cf else np.moveaxis(g, -1, 1)
            ex = (1,) * len(axes)
            s = _gate(z, case.gate)
            dz = (gc * xc).sum(axis=axes) * _gate_grad(z, case.gate)
            dpooled = dz @ m
            size = int(np.prod([xc.shape[a] for a in axes]))
            dx = gc * s.reshape(s.shape + ex) + dpooled.reshape(dpooled.shape + ex) / size
            dw = np.zeros(k)
            c = xc.shape[1]
            for j in range(k):
                for i in range(c):
                    src = i + j - p
                    if case.padding == "circular":
                        dw[j] += (dz[:, i] * pooled[:, src % c]).sum()
                    elif 0 <= src < c:
                        dw[j] += (dz[:, i] * pooled[:, src]).sum()
            return back(dx), {"conv.weight": dw}

        forward.vjp = vjp
        return forward


class TooLittle:
    name = "too-little"
    capabilities = Capabilities(spatial_dims=(4,))  # no case has four spatial dims

    def build(self, case, weights):
        raise AssertionError("never called: nothing is expressible")


adapter = NumpyEca()
too_little = TooLittle()
"""


def _env(extra_path: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if extra_path is not None:
        env["PYTHONPATH"] = str(extra_path)
    return env


def _cli(*args, env=None, timeout=600):
    cmd = [sys.executable, "-m", "eca_multi.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def third_party(tmp_path_factory) -> Path:
    """A package outside the repository, installed the way pip lays one out (a .dist-info with
    its entry points), on PYTHONPATH only."""
    site = tmp_path_factory.mktemp("site")
    (site / "numpy_eca").mkdir()
    (site / "numpy_eca" / "__init__.py").write_text(THIRD_PARTY)
    info = site / "numpy_eca-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: numpy-eca\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[eca_multi.conformance]\n"
        "numpy-eca = numpy_eca:adapter\n"
        "too-little = numpy_eca:too_little\n"
    )
    return site


def test_third_party_adapter_found_by_entry_point(third_party, tmp_path):
    report, js = tmp_path / "report.md", tmp_path / "out.json"
    args = ["conformance", "--impl", "numpy-eca", "--report", str(report), "--json", str(js)]
    out = _cli(*args, env=_env(third_party))
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    data = json.loads(js.read_text())
    recs = [r for r in data["results"] if r["backend"] == "numpy-eca"]
    assert len(recs) == len(CASES)
    ran = [r for r in recs if r["status"] != "not_expressible"]
    want = [c for c in CASES if c.attention == "eca" and c.dtype == "float32"]
    assert {r["case"] for r in ran} == {c.id for c in want}, "float32 ECA cases are expressible"
    bad = [(r["case"], r.get("error") or r["checks"]) for r in ran if not r["ok"]]
    assert not bad, f"numpy-eca failed: {bad[:3]}"
    assert all({"y", "dx", "dw", "y_dtype"} <= set(r["checks"]) for r in ran), "grads checked"
    ne = [r for r in recs if r["status"] == "not_expressible"]
    assert all(r["reason"] for r in ne) and all(r["ok"] is None for r in ne)
    text = report.read_text()
    assert "| case | numpy-eca |" in text and "n/e" in text and "pass" in text, text[:500]
    assert f"{len(want)} / {len(want)} expressible cases pass" in text, text[-800:]


def test_adapter_that_declares_too_little_fails(third_party):
    out = _cli("conformance", "--impl", "too-little", env=_env(third_party))
    assert out.returncode == 1, out.stdout[-3000:]
    assert f"too-little: expresses none of the {len(CASES)} cases" in out.stdout, out.stdout[-2000:]
    assert f"0 passed, 0 failed, {len(CASES)} not expressible" in out.stdout


def test_unknown_implementation_is_a_clear_failure():
    out = _cli("conformance", "--impl", "no_such_pkg.mod:adapter")
    assert out.returncode == 1
    assert "cannot import no_such_pkg.mod" in out.stdout, out.stdout[-2000:]
    with pytest.raises(ValueError, match="registered names: .*official"):
        load_adapter("not-registered")
    with pytest.raises(ValueError, match="needs an argument: onnx:ARG"):
        load_adapter("onnx")


def test_capabilities_reasons():
    class A:
        name = "a"
        capabilities = Capabilities(kernel_rule="timm", dtypes=("float32", "bfloat16"))

        def build(self, case, weights):
            raise AssertionError

    by_id = {c.id: c for c in CASES}
    assert not_expressible(A(), by_id["c64_k3"]) is None  # k = 3 is the rule's at C = 64
    assert "timm rule forces k = 3 at C = 1" in not_expressible(A(), by_id["c1_k1"])
    assert "data_format channels_last" in not_expressible(A(), by_id["cl_c64_k3"])
    with pytest.raises(ValueError, match="weight_layout"):
        Capabilities(weight_layout="(k, 1)")


# --- ONNX files ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported_layer(tmp_path_factory) -> Path:
    """The ECA layer's ONNX file exactly as ``eca-multi export`` writes it (kept with --out)."""
    pytest.importorskip("onnxruntime")
    out = tmp_path_factory.mktemp("export") / "artifacts"
    run = _cli("export", "--groups", "torch", "--models", "layer", "--out", str(out))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    path = out / "torch" / "layer.onnx"
    assert path.is_file(), sorted(p.name for p in out.rglob("*"))
    again = _cli("export", "--groups", "torch", "--models", "layer", "--out", str(out))
    assert again.returncode == 2 and "pass --force" in again.stderr  # nothing overwritten
    return path


def test_onnx_file_from_export_passes(exported_layer, tmp_path):
    js = tmp_path / "onnx.json"
    out = _cli("conformance", "--impl", f"onnx:{exported_layer}", "--json", str(js))
    assert out.returncode == 0, out.stdout[-4000:]
    recs = json.loads(js.read_text())["results"]
    ran = {r["case"] for r in recs if r["status"] != "not_expressible"}
    # C = 64 fixed by the graph, k = 3 from its initializer, 2-D NCHW float32, zeros, sigmoid
    want = {
        c.id
        for c in CASES
        if c.attention == "eca" and c.channels == 64 and c.k == 3 and c.spatial_dims == 2
        and c.data_format == "channels_first" and c.dtype == "float32" and c.padding == "zeros"
        and c.gate == "sigmoid"
    }  # fmt: skip
    assert ran == want and len(want) >= 3, (ran, want)
    assert all(r["ok"] for r in recs if r["case"] in ran)


def test_onnx_file_with_flipped_kernel_fails_per_case(tmp_path):
    """A graph that flips the kernel (a convolution, not a cross-correlation) fails every case
    it runs, each with its own line."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from torch import nn

    from eca_multi.torch.deploy import dynamic_shapes, export_onnx

    class Flipped(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(1, 1, 3, padding=1, bias=False)

        def forward(self, x):
            y = x.mean((2, 3)).unsqueeze(1)
            y = nn.functional.conv1d(y, self.conv.weight.flip(-1), padding=1)
            return x * torch.sigmoid(y).squeeze(1)[:, :, None, None]

    path = tmp_path / "flipped.onnx"
    assert dynamic_shapes(1)  # the same dynamic axes as eca-multi export
    meta = {"eca.data_format": "channels_first", "eca.padding": "zeros", "eca.gate": "sigmoid"}
    export_onnx(Flipped().eval(), torch.randn(2, 64, 8, 8), path, 1, metadata=meta, optimize=False)
    out = _cli("conformance", "--impl", f"onnx:{path}")
    assert out.returncode == 1, out.stdout[-3000:]
    for case in ("c64_k3", "c64_k3_1x1"):
        line = next((ln for ln in out.stdout.splitlines() if f"/{case}/y:" in ln), None)
        assert line is not None, out.stdout[-3000:]
        assert line.startswith("onnx:flipped.onnx/") and "max_abs=" in line and "atol=" in line


def test_onnx_file_that_is_not_an_eca_layer(tmp_path):
    pytest.importorskip("onnxruntime")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(ValueError, match="not an ONNX model"):
        load_adapter(f"onnx:{bad}")


def test_readme_counts_match_the_peers():
    """conformance/README.md states how many cases each shipped peer expresses and passes."""
    text = (ROOT / "conformance" / "README.md").read_text()
    for spec in ("timm-eca", "timm-ceca", "official"):
        pytest.importorskip("timm")
        adapter = load_adapter(spec)
        n = sum(not_expressible(adapter, c) is None for c in CASES)
        assert f"| `{spec}` | {n} |" in text, f"README row for {spec} should say {n} cases"


def test_readme_tolerance_rows_are_the_data():
    """conformance/README.md's tolerance table is TOLERANCES.json, row for row."""
    from eca_multi.conformance.tolerances import TOLERANCES

    text = (ROOT / "conformance" / "README.md").read_text()
    for (dtype, kind), t in TOLERANCES.items():
        scale = "yes" if t.scale_atol else "no"
        row = f"| {dtype} | {kind} | {t.atol:.0e} | {t.rtol:.0e} | {scale} |".replace("e-0", "e-")
        assert row in text, f"conformance/README.md lacks the row {row}"
