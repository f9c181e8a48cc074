"""A Keras ``.weights.h5`` file written by earlier code must keep loading, bit for bit.

The fixture (tests/fixtures/keras_eca_mobilenet_v2_v0.1.0.weights.h5.xz) was written by
eca-multi 0.1.0 code (commit 91a571e) with ``save_weights_file`` of an ECA-MobileNetV2
(10 classes, channels_last, KERAS_BACKEND=tensorflow) holding seeded random weights; next to it
is the canonical state it was given (``...safetensors.xz``, ``eca_multi.weights.io``). Both are
xz-compressed (stdlib ``lzma``) to keep the repository small; tests/fixtures/
make_keras_h5_fixture.py wrote them and documents the values.

Keras files a ``.weights.h5`` by layer class and creation order (``layers/eca_3/vars/0``), not
by layer name, and ``load_weights_file`` reads the ECA kernel sizes and the class count from
those paths; so any refactor of the Keras model code (layer order, layer classes, the
BatchNormalization subclass and its ``num_batches_tracked`` counter, the file readers) must keep
loading this file: on every Keras backend, in both data formats, ``export_canonical_model`` of
the loaded model must equal the committed state bit for bit, with the same keys.
Regenerate the fixture only for a deliberate, documented format break.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ARCH = "eca_mobilenet_v2"
H5 = FIXTURES / "keras_eca_mobilenet_v2_v0.1.0.weights.h5.xz"
STATE = FIXTURES / "keras_eca_mobilenet_v2_v0.1.0.safetensors.xz"
BACKENDS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}  # backend -> module
DATA_FORMATS = ("channels_last", "channels_first")
TIMEOUT = float(os.environ.get("ECA_MULTI_KERAS_SUBPROCESS_TIMEOUT", "900"))

# Runs in a fresh process per Keras backend (Keras fixes its backend at import). The public
# model-file functions live in eca_multi.keras.models in 0.1.0 and in eca_multi.keras.io after
# the refactor that split it; the first module that has them is used.
_CHILD = """
import importlib, importlib.util, json, sys
if importlib.util.find_spec("torch") is not None:  # torch (and its _dynamo) before TensorFlow
    import torch, torch._dynamo
import keras, numpy as np

h5, arch, out, backend, formats = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
assert keras.backend.backend() == backend, (keras.backend.backend(), backend)
for name in ("eca_multi.keras.io", "eca_multi.keras.models"):
    try:
        api = importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name != name:
            raise
        continue
    if hasattr(api, "load_weights_file") and hasattr(api, "export_canonical_model"):
        break
else:
    raise SystemExit("no eca_multi.keras module with load_weights_file / export_canonical_model")
report = {"api": api.__name__}
for fmt in formats:
    model = api.load_weights_file(h5, arch, data_format=fmt)  # classes and k from the file
    state = api.export_canonical_model(model, arch)
    np.savez(f"{out}/{fmt}.npz", **{k.replace(".", "|"): v for k, v in state.items()})
    report[fmt] = {"model": model.name, "keys": list(state)}
print("REPORT " + json.dumps(report))
"""


def _tail(text: str | bytes | None, n: int = 6000) -> str:
    text = text.decode() if isinstance(text, bytes) else (text or "")
    return text[-n:]


@pytest.fixture(scope="module")
def fixture_files(tmp_path_factory):
    """The decompressed .weights.h5 path and the committed canonical state."""
    if importlib.util.find_spec("safetensors") is None:
        pytest.skip("backend missing: safetensors not installed")
    import lzma

    from eca_multi.weights.io import load_file

    folder = tmp_path_factory.mktemp("keras-h5-fixture")
    h5 = folder / H5.name.removesuffix(".xz")
    h5.write_bytes(lzma.decompress(H5.read_bytes()))
    st = folder / STATE.name.removesuffix(".xz")
    st.write_bytes(lzma.decompress(STATE.read_bytes()))
    state, meta = load_file(st)
    assert meta.get("eca_multi_commit", "").startswith("91a571e"), meta
    assert meta.get("arch") == ARCH, meta
    return h5, state


@pytest.mark.slow
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_v0_1_0_weights_h5_loads_bit_for_bit(backend, fixture_files, tmp_path):
    for module in ("keras", "h5py", BACKENDS[backend]):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"backend missing: {module} not installed")
    h5, expected = fixture_files
    env = {**os.environ, "KERAS_BACKEND": backend}
    cmd = [sys.executable, "-c", _CHILD, str(h5), ARCH, str(tmp_path), backend, *DATA_FORMATS]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"KERAS_BACKEND={backend}: ran past {TIMEOUT:.0f} s:\n{_tail(e.stderr)}")
    assert proc.returncode == 0, (
        f"KERAS_BACKEND={backend}: loading {H5.name} failed:\n{_tail(proc.stdout + proc.stderr)}"
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT ")]
    assert lines, f"KERAS_BACKEND={backend}: no report:\n{_tail(proc.stdout + proc.stderr)}"
    report = json.loads(lines[-1].removeprefix("REPORT "))

    for fmt in DATA_FORMATS:
        where = f"KERAS_BACKEND={backend} {fmt} ({report['api']})"
        assert report[fmt]["model"] == ARCH, f"{where}: model named {report[fmt]['model']!r}"
        with np.load(tmp_path / f"{fmt}.npz", allow_pickle=False) as z:
            got = {k.replace("|", "."): z[k] for k in z.files}
        assert list(got) == report[fmt]["keys"]
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        assert not missing and not extra, (
            f"{where}: key sets differ; missing {missing[:20]} ({len(missing)}), "
            f"unexpected {extra[:20]} ({len(extra)})"
        )
        bad = []
        for key, want in expected.items():
            have = got[key]
            if have.dtype != want.dtype or have.shape != want.shape:
                bad.append(f"{key}: {have.dtype}{have.shape} != {want.dtype}{want.shape}")
            elif not np.array_equal(have, want):
                diff = np.max(np.abs(have.astype(np.float64) - want.astype(np.float64)))
                bad.append(f"{key}: max abs diff {diff:.3g}")
        assert not bad, f"{where}: {len(bad)} of {len(expected)} tensors differ:\n" + "\n".join(
            bad[:40]
        )
