"""Hostile and corrupt weight files (issue #14): each ends in one documented error naming the file,
in well under a second, or reads correctly (bfloat16); the CLI prints one line, no traceback.
The time bounds below (5 s) are loose on purpose: a bomb or an unbounded format takes minutes
and gigabytes, a refusal milliseconds; a loaded CI machine must not make them flaky.

Documented errors: FileNotFoundError, FileExistsError, NotADirectoryError, SourceError,
WeightMismatchError, WeightDtypeError (all but the first three are ValueErrors).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import stat
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from common import random_canonical_state
from conftest import require_backend

from eca_multi.port import nan_equal_max_abs, port, read_source
from eca_multi.weights import WeightDtypeError, WeightMismatchError, load_file, save_file
from eca_multi.weights.sources import SourceError

ARCH = "eca_resnet18"
ROOT = Path(__file__).resolve().parent.parent
DOCUMENTED = (FileNotFoundError, FileExistsError, NotADirectoryError, ValueError)


def _state(num_classes: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    return random_canonical_state(ARCH, num_classes, seed)


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "eca_multi.cli", *args],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, **env},
    )  # fmt: skip


def _one_line_error(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode == 2, f"exit {r.returncode}: {r.stdout}{r.stderr}"
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    for w in words:
        assert w in r.stderr, f"{w!r} not in the error: {r.stderr}"


def _refused(path: Path, exc: type[BaseException], *words: str, seconds: float = 5.0) -> str:
    t0 = time.perf_counter()
    with pytest.raises(exc) as e:
        read_source(path, ARCH)
    took = time.perf_counter() - t0
    msg = str(e.value)
    assert took < seconds, f"{path.name}: refused after {took:.2f} s (want < {seconds} s)"
    assert str(path) in msg or path.name in msg, f"the error does not name the file: {msg}"
    for w in words:
        assert w in msg, f"{w!r} not in: {msg}"
    return msg


# ---------------------------------------------------------------------------------------------
# row 1: an official checkpoint whose metadata is a nested list of shared references


def test_row1_shared_reference_metadata_is_not_formatted(tmp_path):
    torch = require_backend("torch")
    b: list = [0]
    for _ in range(30):
        b = [b, b]  # 2**30 leaves when printed
    sd = {f"module.{k}": torch.from_numpy(v.copy()) for k, v in _state().items()}
    path = tmp_path / "official.pth.tar"
    torch.save({"epoch": b, "arch": b, "best_prec1": b, "state_dict": sd}, path)
    t0 = time.perf_counter()
    _, info = read_source(path, ARCH)
    assert time.perf_counter() - t0 < 5.0, "formatting the metadata took too long"
    assert info["epoch"] == info["arch"] == "<list>", info


# ---------------------------------------------------------------------------------------------
# row 2: zip bombs, refused from the declared sizes before anything is inflated


def _bomb_npz(path: Path, mb: int, key: str = "conv1.weight") -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open(f"{key}.npy", "w", force_zip64=True) as f:
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                header, {"descr": "<f4", "fortran_order": False, "shape": (mb << 18,)}
            )
            f.write(header.getvalue())
            chunk = bytes(1 << 20)
            for _ in range(mb):
                f.write(chunk)


def test_row2_npz_bomb_refused_by_declared_size(tmp_path):
    path = tmp_path / "bomb.npz"
    _bomb_npz(path, 64, "zeros")  # 64 MB of zeros in ~64 KB, under the bound of any tensor
    assert path.stat().st_size < 1 << 20
    os.environ["ECA_MULTI_MAX_BYTES"] = str(16 << 20)
    try:
        _refused(path, SourceError, "declares", "ECA_MULTI_MAX_BYTES")
        t0 = time.perf_counter()
        with pytest.raises(ValueError, match="over the cap"):
            load_file(path)
        assert time.perf_counter() - t0 < 5.0
    finally:
        del os.environ["ECA_MULTI_MAX_BYTES"]


def test_row2_bounds_of_the_named_architecture(tmp_path):
    """Without any cap set, what eca_resnet18 cannot hold is refused: a 64 MB conv1.weight
    (its bound: 2 x its float64 bytes), a safetensors range of 4 MB for the same tensor, and a
    zip member declaring more than deflate can expand to."""
    from eca_multi import archs
    from eca_multi.weights.io import size_bound, tensor_limit
    from eca_multi.weights.sources import arch_size_bound

    bound = archs.tensor_bytes_bounds(ARCH)["conv1.weight"]
    assert bound == 2 * 8 * 64 * 3 * 7 * 7 + 4096, bound
    path = tmp_path / "bomb.npz"
    _bomb_npz(path, 64)
    _refused(path, SourceError, "conv1.weight", f"bound of {bound:,} bytes", ARCH)
    big = _state()
    big["conv1.weight"] = np.zeros((1 << 20,), np.float32)  # 4 MB stored, really there
    save_file(tmp_path / "big.safetensors", big)
    _refused(tmp_path / "big.safetensors", SourceError, "tensor conv1.weight declares 4,194,304")
    save_file(tmp_path / "big.npz", big)
    _refused(tmp_path / "big.npz", SourceError, "conv1.weight.npy", "bound")
    # outside a port (no architecture named) only the global cap applies
    assert load_file(tmp_path / "big.safetensors")[0]["conv1.weight"].size == 1 << 20
    with size_bound(arch_size_bound(ARCH)):
        limit, text = tensor_limit("fc.weight")
    fc = archs.schema(ARCH, archs.MAX_CLASSES)["fc.weight"][0]
    assert limit == 2 * 8 * fc[0] * fc[1] + 4096, (limit, fc)
    assert "fc.weight" in text and ARCH in text, text
    # a deflated member whose directory declares 10 GB unpacked from a few KB
    path = tmp_path / "w.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        buf = io.BytesIO()
        np.save(buf, _state()["fc.bias"])
        z.writestr("fc.bias.npy", buf.getvalue())
    data = bytearray(path.read_bytes())
    i = data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, i + 24, 0xFFFF_FFF0)  # uncompressed size, central directory
    path.write_bytes(bytes(data))
    _refused(path, SourceError, "more than its compression can hold")


def test_row2_torch_zip_bomb_refused_by_declared_size(tmp_path):
    torch = require_backend("torch")
    path = tmp_path / "bomb.pth"
    torch.save({k: torch.from_numpy(v.copy()) for k, v in _state().items()}, path)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as z:  # zeros after data.pkl
        with z.open("archive/data/zeros", "w", force_zip64=True) as f:
            for _ in range(64):
                f.write(bytes(1 << 20))
    r = _cli("port", str(path), "--arch", ARCH, "--to", "canonical", "-o",
             str(tmp_path / "o.safetensors"), ECA_MULTI_MAX_BYTES=str(16 << 20))  # fmt: skip
    _one_line_error(r, "bomb.pth", "declares", "ECA_MULTI_MAX_BYTES")
    assert not (tmp_path / "o.safetensors").exists()


def test_cap_must_be_a_positive_number(tmp_path):
    save_file(tmp_path / "w.npz", _state())
    os.environ["ECA_MULTI_MAX_BYTES"] = "lots"
    try:
        with pytest.raises(ValueError, match="ECA_MULTI_MAX_BYTES must be a number"):
            load_file(tmp_path / "w.npz")
    finally:
        del os.environ["ECA_MULTI_MAX_BYTES"]


# ---------------------------------------------------------------------------------------------
# row 4: damaged zip central directories


def _patch_central(path: Path, field: str, value: int) -> None:
    """Edit one field of every central-directory entry (offsets from the zip specification)."""
    data = bytearray(path.read_bytes())
    offsets = {"method": (10, "<H"), "version": (6, "<H"), "flags": (8, "<H")}
    off, fmt = offsets[field]
    i = data.find(b"PK\x01\x02")
    while i != -1:
        struct.pack_into(fmt, data, i + off, value)
        i = data.find(b"PK\x01\x02", i + 4)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("method", 99, ("compression method 99",)),
        ("flags", 0x1, ("encrypted",)),
        ("version", 0x3F00 | 175, ("corrupt zip",)),  # "made by" 17.5 on an unknown system
    ],
)
def test_row4_damaged_zip_directory(tmp_path, field, value, words):
    path = tmp_path / "w.npz"
    save_file(path, _state())
    _patch_central(path, field, value)
    if field == "version":  # a version alone is harmless: the file still reads, or says why
        try:
            read_source(path, ARCH)
        except ValueError as e:
            assert path.name in str(e), e
        return
    _refused(path, SourceError, *words)


def test_row4_non_utf8_member_name(tmp_path):
    path = tmp_path / "w.npz"
    save_file(path, _state())
    data = path.read_bytes().replace(b"conv1.weight.npy", b"conv1.weig\xff\xfe.npy")
    path.write_bytes(data)
    try:
        read_source(path, ARCH)
    except DOCUMENTED as e:
        assert path.name in str(e), e
    else:
        pytest.fail("a renamed member must not read as the canonical key")


# ---------------------------------------------------------------------------------------------
# row 5: bfloat16 / float16 safetensors (real hub files) and float8 (refused)


def test_row5_bfloat16_and_float16_safetensors_load(tmp_path):
    torch = require_backend("torch")
    from safetensors.torch import save_file as torch_save

    state = _state()
    t = {k: torch.from_numpy(v.copy()) for k, v in state.items()}
    bf16 = {k: v.bfloat16() if v.is_floating_point() else v for k, v in t.items()}
    torch_save(bf16, str(tmp_path / "bf16.safetensors"))
    got, _ = load_file(tmp_path / "bf16.safetensors")
    for k, v in bf16.items():
        want = v.float().numpy() if v.is_floating_point() else v.numpy()
        assert got[k].dtype == want.dtype and np.array_equal(got[k], want), k
    f16 = {k: v.half() if v.is_floating_point() else v for k, v in t.items()}
    torch_save(f16, str(tmp_path / "f16.safetensors"))
    state16, info = read_source(tmp_path / "f16.safetensors", ARCH)
    assert state16["fc.weight"].dtype == np.float16, state16["fc.weight"].dtype
    out = tmp_path / "o.pth"
    port(tmp_path / "bf16.safetensors", ARCH, "torch", out, progress=False)
    back = torch.load(out, weights_only=True)
    assert back["fc.weight"].dtype == torch.float32
    assert torch.equal(back["fc.weight"], bf16["fc.weight"].float())


def test_row5_float8_refused(tmp_path):
    torch = require_backend("torch")
    if not hasattr(torch, "float8_e4m3fn"):
        pytest.skip("this torch has no float8")
    from safetensors.torch import save_file as torch_save

    t = {k: torch.from_numpy(v.copy()) for k, v in _state().items()}
    t["fc.weight"] = t["fc.weight"].to(torch.float8_e4m3fn)
    torch_save(t, str(tmp_path / "f8.safetensors"))
    _refused(tmp_path / "f8.safetensors", SourceError, "fc.weight (F8_E4M3)", "bfloat16")


# ---------------------------------------------------------------------------------------------
# row 6: integer / bool / complex weights, refused identically, never cast


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_, np.complex64])
def test_row6_non_float_weights_refused(tmp_path, dtype):
    state = _state()
    state["fc.weight"] = state["fc.weight"].astype(dtype)
    path = tmp_path / "w.npz"
    save_file(path, state)
    with pytest.raises(WeightDtypeError, match="fc.weight") as e:
        read_source(path, ARCH)
    assert isinstance(e.value, ValueError) and isinstance(e.value, TypeError)
    assert np.dtype(dtype).name in str(e.value), e.value


def test_row6_edited_f32_header_to_i32(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file(path, _state())
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = data[8 : 8 + n].replace(b'"F32"', b'"I32"')
    path.write_bytes(data[:8] + header + data[8 + n :])
    r = _cli("port", str(path), "--arch", ARCH, "--to", "torch", "-o", str(tmp_path / "o.pth"))
    _one_line_error(r, "want floating point", "int32")
    assert not (tmp_path / "o.pth").exists()


def test_row6_torch_integer_tensors_refused(tmp_path):
    torch = require_backend("torch")
    sd = {k: torch.from_numpy(v.copy()) for k, v in _state().items()}
    sd["conv1.weight"] = sd["conv1.weight"].to(torch.int64)
    torch.save(sd, tmp_path / "w.pth")
    _refused(tmp_path / "w.pth", WeightDtypeError, "conv1.weight", "int64")


# ---------------------------------------------------------------------------------------------
# row 7: 0-d tensors, odd keys, sparse / quantized / meta tensors


def test_row7_zero_d_eca_and_fc(tmp_path):
    state = _state()
    state["layer1.0.eca.conv.weight"] = np.array(0.5, np.float32)
    save_file(tmp_path / "eca.npz", state)
    with pytest.raises(ValueError, match=r"layer1.0.eca.conv.weight has shape \(\)"):
        read_source(tmp_path / "eca.npz", ARCH, kernel_sizes="checkpoint")
    state = _state()
    state["fc.weight"] = np.array(1.0, np.float32)
    save_file(tmp_path / "fc.npz", state)
    with pytest.raises(ValueError, match=r"fc.weight has shape \(\)"):
        read_source(tmp_path / "fc.npz", ARCH)


def test_row7_odd_keys_and_tensor_kinds(tmp_path):
    torch = require_backend("torch")
    sd = {k: torch.from_numpy(v.copy()) for k, v in _state().items()}
    torch.save({**sd, 3: torch.zeros(1)}, tmp_path / "int_key.pth")
    _refused(tmp_path / "int_key.pth", SourceError, "keys must be strings", "3 (int)")
    torch.save({**sd, ("a", "b"): torch.zeros(1)}, tmp_path / "tuple_key.pth")
    _refused(tmp_path / "tuple_key.pth", SourceError, "keys must be strings")
    sparse = dict(sd, **{"fc.bias": sd["fc.bias"].to_sparse()})
    torch.save(sparse, tmp_path / "sparse.pth")
    _refused(tmp_path / "sparse.pth", SourceError, "fc.bias", "sparse")
    quant = dict(sd)
    quant["fc.weight"] = torch.quantize_per_tensor(sd["fc.weight"], 0.01, 0, torch.qint8)
    torch.save(quant, tmp_path / "quant.pth")
    _refused(tmp_path / "quant.pth", SourceError, "fc.weight", "quantized")


# ---------------------------------------------------------------------------------------------
# row 8: npz metadata that is no JSON object; counters that are no integers


@pytest.mark.parametrize("meta", ["5", "[1, 2]", "null", '"text"', '{"a": 1}'])
def test_row8_npz_metadata_not_an_object_of_strings(tmp_path, meta):
    path = tmp_path / "w.npz"
    np.savez(path, **_state(), __eca_multi_metadata__=np.array(meta))
    _refused(path, SourceError, "__eca_multi_metadata__")


@pytest.mark.parametrize("value", [np.array(np.nan, np.float32), np.array("3")])
def test_row8_counter_that_is_no_integer(tmp_path, value):
    state = _state()
    state["bn1.num_batches_tracked"] = value
    save_file(tmp_path / "w.npz", state)
    with pytest.raises(WeightDtypeError, match="bn1.num_batches_tracked"):
        read_source(tmp_path / "w.npz", ARCH)


# ---------------------------------------------------------------------------------------------
# row 9: zero classes; NaN / Inf weights with --verify


def test_row9_zero_classes(tmp_path):
    state = _state()
    state["fc.weight"] = np.zeros((0, 512), np.float32)
    state["fc.bias"] = np.zeros((0,), np.float32)
    save_file(tmp_path / "w.safetensors", state)
    _refused(tmp_path / "w.safetensors", ValueError, "classes >= 1")
    r = _cli("port", str(tmp_path / "w.safetensors"), "--arch", ARCH, "--to", "flax", "-o",
             str(tmp_path / "o.msgpack"))  # fmt: skip
    _one_line_error(r, "classes >= 1")
    r = _cli("port", str(tmp_path / "w.safetensors"), "--arch", ARCH, "--num-classes", "0",
             "--to", "canonical", "-o", str(tmp_path / "o.safetensors"))  # fmt: skip
    _one_line_error(r, "num_classes must be between 1")


def test_row9_nan_equal_verify():
    a = np.array([[1.0, np.nan, np.inf, -np.inf]])
    assert nan_equal_max_abs(a, a.copy()) == 0.0
    assert nan_equal_max_abs(a, np.array([[1.0, 0.0, np.inf, -np.inf]])) == np.inf
    assert nan_equal_max_abs(a, np.array([[1.5, np.nan, np.inf, -np.inf]])) == 0.5


def test_row9_nan_weights_port_verifies(tmp_path):
    require_backend("torch")
    state = _state()
    state["fc.bias"][3] = np.nan
    save_file(tmp_path / "w.safetensors", state)
    r = port(tmp_path / "w.safetensors", ARCH, "torch", tmp_path / "o.pth", verify=True,
             verify_size=64, verify_batch=1, progress=False)  # fmt: skip
    assert r.verify is not None and r.verify.ok and r.verify.max_abs == 0.0, r.verify


# ---------------------------------------------------------------------------------------------
# row 10: a file name that is not UTF-8


def test_row10_non_utf8_file_name(tmp_path):
    require_backend("torch")
    name = os.fsdecode(b"w\xff\xfe.safetensors")
    save_file(tmp_path / name, _state())
    for to, out in (("canonical", "o.safetensors"), ("torch", "o.pth")):
        r = subprocess.run(
            [sys.executable, "-m", "eca_multi.cli", "port", os.fsencode(tmp_path / name),
             "--arch", ARCH, "--to", to, "-o", str(tmp_path / out), "--quiet"],
            capture_output=True, timeout=300, cwd=ROOT,
        )  # fmt: skip
        text = (r.stdout + r.stderr).decode(errors="replace")
        assert r.returncode == 0 and b"Traceback" not in r.stderr, text
        assert "w\\xff\\xfe.safetensors" in text, text
    meta = load_file(tmp_path / "o.safetensors")[1]
    assert meta["source_file"] == "w\\xff\\xfe.safetensors", meta


# ---------------------------------------------------------------------------------------------
# row 12: output modes follow the umask; smaller ones


def test_row12_outputs_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        save_file(tmp_path / "a.safetensors", _state())
        os.umask(0o077)
        save_file(tmp_path / "b.safetensors", _state())
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.safetensors").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.safetensors").stat().st_mode) == 0o600


def test_not_a_regular_file(tmp_path):
    (tmp_path / "folder.safetensors").mkdir()
    _refused(tmp_path / "folder.safetensors", SourceError, "is a folder")
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    _refused(fifo, SourceError, "not a regular file")
    with pytest.raises(SourceError, match="not a regular file"):
        read_source("/dev/zero", ARCH)
    with pytest.raises(FileNotFoundError, match="no weight file"):
        read_source(tmp_path / "absent.pth", ARCH)


def test_unknown_empty_file_reads_as_words(tmp_path):
    (tmp_path / "weights.xyz").write_bytes(b"")
    msg = _refused(tmp_path / "weights.xyz", SourceError, "empty")
    assert "a unknown" not in msg and "expected a weight file" in msg, msg


def test_output_parent_is_a_file(tmp_path):
    save_file(tmp_path / "w.safetensors", _state())
    (tmp_path / "plain").write_text("x")
    r = _cli("port", str(tmp_path / "w.safetensors"), "--arch", ARCH, "--to", "canonical", "-o",
             str(tmp_path / "plain" / "o.safetensors"))  # fmt: skip
    _one_line_error(r, "is a file, not a folder")


def test_missing_and_mismatched_keys_are_listed(tmp_path):
    state = _state()
    del state["layer2.0.conv1.weight"]
    save_file(tmp_path / "w.safetensors", state)
    with pytest.raises(WeightMismatchError, match="layer2.0.conv1.weight"):
        read_source(tmp_path / "w.safetensors", ARCH)


def test_pickle_with_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"fc.weight": Evil()}, protocol=2))
    require_backend("torch")
    _refused(tmp_path / "evil.pth", SourceError, "refused")
    assert not marker.exists(), "code in the pickle ran"


# ---------------------------------------------------------------------------------------------
# row 3: Keras files declaring sizes they do not hold; absurd arguments; Flax dtypes; suffixes


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    require_backend("keras")
    from eca_multi.keras.io import load_canonical_model, save_weights_file
    from eca_multi.keras.models import create_model

    d = tmp_path_factory.mktemp("keras")
    model = create_model(ARCH, 10)
    load_canonical_model(model, _state())
    save_weights_file(model, d / "r18.weights.h5")
    save_weights_file(model, d / "r18.keras")
    return d


def _edit_h5(src: Path, dst: Path, key: str, **dataset) -> None:
    import shutil

    import h5py

    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        del f[key]
        f.create_dataset(key, **dataset)


def test_row3_weights_h5_declaring_what_it_does_not_hold(keras_files, tmp_path):
    src = keras_files / "r18.weights.h5"
    empty = tmp_path / "dense.weights.h5"  # a Dense kernel (512, 1.5M) with no data behind it
    _edit_h5(src, empty, "layers/dense/vars/0", shape=(512, 1_500_000), dtype="float32")
    assert empty.stat().st_size < 100 << 20
    _refused(empty, SourceError, "layers/dense/vars/0", "(512, 1500000)")
    eca = tmp_path / "eca.weights.h5"
    _edit_h5(src, eca, "layers/eca/vars/0", shape=(1_500_000_000, 1, 1), dtype="float32")
    _refused(eca, SourceError, "layers/eca/vars/0", "1500000000")
    ints = tmp_path / "int.weights.h5"
    _edit_h5(src, ints, "layers/dense/vars/0", data=np.ones((512, 10), np.int64))
    _refused(ints, WeightDtypeError, "layers/dense/vars/0", "int64")


def test_row3_keras_config_declaring_absurd_sizes(keras_files, tmp_path):
    src = keras_files / "r18.keras"
    for key, value in (("units", 1_500_000), ("kernel_size", [1_500_000_000, 1])):
        out = tmp_path / f"{key}.keras"
        with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w") as zout:
            for item in zin.infolist():
                data = zin.read(item.filename)
                if item.filename == "config.json":
                    text = data.decode()
                    old = '"units": 10' if key == "units" else '"kernel_size": [3, 3]'
                    assert old in text, f"no {old} in the archive's config"
                    new = f'"{key}": {json.dumps(value)}'
                    data = text.replace(old, new, 1).encode()
                zout.writestr(item, data)
        _refused(out, SourceError, key, "at most")


def test_row3_absurd_num_classes_refused_before_building(keras_files, tmp_path):
    t0 = time.perf_counter()
    r = _cli("port", str(keras_files / "r18.weights.h5"), "--arch", ARCH, "--num-classes",
             "1500000", "--to", "canonical", "-o", str(tmp_path / "o.safetensors"))  # fmt: skip
    _one_line_error(r, "num_classes must be between 1 and 100,000")
    assert time.perf_counter() - t0 < 30  # a subprocess start; no model of that width is built


def test_flax_export_with_integer_weights_refused(tmp_path):
    require_backend("flax")
    from flax import serialization

    from eca_multi.flax.io import load_weights_file
    from eca_multi.port import port as port_to

    port_to(_write_canonical(tmp_path), ARCH, "flax", tmp_path / "r18.msgpack", progress=False)
    data = serialization.msgpack_restore((tmp_path / "r18.msgpack").read_bytes())
    state = data["state"]
    key = next(iter(state))  # the first top-level variable group
    node = state[key]
    while isinstance(node, dict):
        parent, name = node, next(iter(node))
        node = node[name]
    parent[name] = np.asarray(node).astype(np.int64)
    (tmp_path / "int.msgpack").write_bytes(serialization.msgpack_serialize(data))
    with pytest.raises(WeightDtypeError, match="int64"):
        load_weights_file(tmp_path / "int.msgpack", ARCH)
    _refused(tmp_path / "int.msgpack", WeightDtypeError, "int64")


def _write_canonical(tmp_path: Path) -> Path:
    path = tmp_path / "w.safetensors"
    if not path.exists():
        save_file(path, _state())
    return path


@pytest.mark.parametrize(("to", "name"), [("keras", "o.h5"), ("flax", "o.bin"), ("torch", "o.h5")])
def test_bad_output_suffix_refused_at_once(tmp_path, to, name):
    require_backend(to)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="must end with"):
        port(_write_canonical(tmp_path), ARCH, to, tmp_path / name, progress=False)
    assert time.perf_counter() - t0 < 5.0


# ---------------------------------------------------------------------------------------------
# row 11: flipped data bytes in the files eca-multi writes are caught by their sha256


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def _data_offset(path: Path) -> int:
    """A byte inside the largest tensor's data."""
    if path.name.endswith(".weights.h5"):
        import h5py

        with h5py.File(path, "r") as f:
            best: list = []
            f.visititems(
                lambda k, o: (
                    best.append((o.nbytes, o.id.get_offset()))
                    if isinstance(o, h5py.Dataset) and o.id.get_offset() is not None
                    else None
                )
            )
        nbytes, off = max(best)
        return off + nbytes // 2
    return path.stat().st_size - 4096  # safetensors / msgpack: the data come last


@pytest.mark.parametrize(
    ("to", "name"),
    [
        ("canonical", "o.safetensors"),
        ("canonical", "o.npz"),
        ("torch", "model.safetensors"),
        ("keras", "o.weights.h5"),
        ("flax", "o.msgpack"),
    ],
)
def test_row11_flipped_bytes_fail_the_sha256(tmp_path, to, name):
    require_backend("torch" if to == "canonical" else to)
    arch = "ecaresnet26t" if name == "model.safetensors" else ARCH
    src = tmp_path / "w.safetensors"
    if arch == ARCH:
        save_file(src, _state())
    else:  # timm's model.safetensors is written for timm architectures
        require_backend("torch")
        timm = require_backend("timm")
        from safetensors.torch import save_file as torch_save

        torch_save(timm.create_model(arch, num_classes=10).state_dict(), str(src))
    out = tmp_path / name
    port(src, arch, to, out, progress=False)
    state, info = read_source(out, arch)
    assert info.get("integrity") == "sha256 verified", info
    if name.endswith(".npz"):  # deflate-free npz: flip inside a member, keep the zip's CRC honest
        data = dict(np.load(out))
        key = "fc.weight"
        data[key] = data[key].copy()
        data[key].view(np.uint8)[5] ^= 0x40
        np.savez(out, **data)
    else:
        _flip(out, _data_offset(out))
    with pytest.raises(SourceError, match="integrity check failed"):
        read_source(out, arch)


# ---------------------------------------------------------------------------------------------
# a bfloat16 model.safetensors of ecaresnet50d, as timm saves it, ports with --verify


@pytest.mark.slow
@pytest.mark.parametrize(("to", "name"), [("keras", "r50d.weights.h5"), ("flax", "r50d.msgpack")])
def test_bf16_ecaresnet50d_ports_with_verify(tmp_path, to, name):
    torch = require_backend("torch")
    timm = require_backend("timm")
    require_backend(to)
    from safetensors.torch import save_file as torch_save

    from eca_multi.torch.models import randomize_batchnorm_

    torch.manual_seed(0)
    model = timm.create_model("ecaresnet50d", pretrained=False)
    randomize_batchnorm_(model, seed=1, name="ecaresnet50d", image_size=64)
    sd = {k: v.bfloat16() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    src = tmp_path / "model.safetensors"
    torch_save(sd, str(src), metadata={"format": "pt"})
    r = _cli("port", str(src), "--arch", "ecaresnet50d", "--to", to, "-o", str(tmp_path / name),
             "--verify", "--quiet")  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "-> OK" in r.stdout and "safetensors" in r.stdout, r.stdout
    line = next(ln for ln in r.stdout.splitlines() if "max abs logit difference" in ln)
    err = float(line.split("max abs logit difference ")[1].split()[0])
    assert err <= 1e-4, f"bf16 ecaresnet50d -> {to}: max abs logit difference {err:.2e} > 1e-4"


# ---------------------------------------------------------------------------------------------
# the original exception stays chained under the documented one


def _truncated(src: Path, dst: Path, keep: float = 0.6) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


@pytest.mark.parametrize("fmt", ["safetensors", "npz", "torch-zip", "torch-legacy", "flax"])
def test_wrapped_reader_errors_keep_their_cause(tmp_path, fmt):
    """Every reader wraps a library's error with ``raise ... from``: the documented error names
    the file, ``__cause__`` holds the library's own exception for a debugger or a bug report."""
    state = _state()
    if fmt in ("safetensors", "npz"):
        src = tmp_path / f"w.{fmt}"
        save_file(src, state)
    elif fmt.startswith("torch"):
        require_backend("torch")
        import torch

        src = tmp_path / "w.pth"
        tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
        torch.save(tensors, src, _use_new_zipfile_serialization=fmt == "torch-zip")
    else:
        require_backend("flax")
        src = tmp_path / "w.msgpack"
        port(_write_canonical(tmp_path), ARCH, "flax", src, progress=False)
    bad = _truncated(src, tmp_path / f"bad{src.suffix}")
    with pytest.raises(SourceError) as e:
        read_source(bad, ARCH)
    assert str(bad) in str(e.value), f"{fmt}: the error does not name the file: {e.value}"
    assert e.value.__cause__ is not None, f"{fmt}: no chained cause under: {e.value}"
