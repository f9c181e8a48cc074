"""Orbax checkpoints of the Flax backend (eca_multi.flax.orbax): a port target and source beside
the msgpack export, bit-identical to it, recognised by content, written atomically, with the
canonical metadata (arch, classes, kernel sizes, attention, timm's pretrained config) kept."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from common import random_canonical_state
from conftest import require_backend

require_backend("flax")
ocp = require_backend("orbax.checkpoint")

from flax import nnx  # noqa: E402

from eca_multi import archs, cli  # noqa: E402
from eca_multi.flax import io as flax_io  # noqa: E402
from eca_multi.flax import orbax as flax_orbax  # noqa: E402
from eca_multi.flax.models import create_model  # noqa: E402
from eca_multi.port import detect_format, load_model, port, read_source  # noqa: E402
from eca_multi.preprocess import metadata_entries  # noqa: E402
from eca_multi.weights import load_file, save_file  # noqa: E402
from eca_multi.weights.integrity import DIGEST_KEY  # noqa: E402
from eca_multi.weights.sources import SourceError  # noqa: E402

ARCH = "eca_mobilenet_v2"  # the smallest architecture of `eca-multi models`
CLASSES = 10
CFG = {"input_size": [3, 32, 32], "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.3, 0.4], "crop_pct": 0.9}


def _max_abs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _batch() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Seeded random canonical weights (BatchNorm statistics too) ported once to both targets."""
    d = tmp_path_factory.mktemp("orbax")
    state = random_canonical_state(ARCH, CLASSES, scale=0.1, counter=7)
    save_file(d / "src.safetensors", state, metadata_entries(CFG))
    port(d / "src.safetensors", ARCH, "flax", d / "m.msgpack", progress=False)
    report = port(d / "src.safetensors", ARCH, "flax", d / "m.orbax", progress=False)
    return {"dir": d, "state": state, "report": report}


def test_port_writes_an_orbax_checkpoint_that_plain_orbax_restores(files):
    out = files["dir"] / "m.orbax"
    assert out.is_dir() and files["report"].out == str(out)
    assert detect_format(out) == "flax-orbax"
    assert flax_orbax.is_orbax_export(out) and not flax_io.is_flax_export(out)
    # the Flax ecosystem's way, without eca-multi's reader: Orbax restore -> replace_by_pure_dict
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        pure = ckptr.restore(out.absolute(), ocp.args.Composite(state=ocp.args.StandardRestore()))
    abstract = nnx.eval_shape(lambda: create_model(ARCH, CLASSES, rngs=nnx.Rngs(5)))
    graphdef, params = nnx.split(abstract)  # shapes only: no random init
    nnx.replace_by_pure_dict(params, pure["state"])
    plain = nnx.merge(graphdef, params)
    ours = flax_orbax.load_orbax(out, ARCH)
    x = _batch()
    d = _max_abs(flax_io.logits(plain, x), flax_io.logits(ours, x))
    assert d == 0.0, f"flax-orbax/plain-orbax-restore/logits: max_abs={d:.2e} > atol=0e+00"


def test_orbax_logits_equal_msgpack_bit_for_bit(files):
    d = files["dir"]
    fw_a, from_msgpack = load_model(d / "m.msgpack", ARCH)
    fw_b, from_orbax = load_model(d / "m.orbax", ARCH)
    assert fw_a == fw_b == "flax"
    x = _batch()
    a, b = flax_io.logits(from_msgpack, x), flax_io.logits(from_orbax, x)
    assert a.shape == (2, CLASSES) and np.isfinite(a).all()
    assert np.array_equal(a, b), (
        f"flax-orbax/vs-msgpack/logits: max_abs={_max_abs(a, b):.2e} > atol=0e+00"
    )
    a_state = flax_io.export_canonical_model(from_msgpack)
    b_state = flax_io.export_canonical_model(from_orbax)
    bad = {k: _max_abs(a_state[k], b_state[k]) for k in a_state if _max_abs(a_state[k], b_state[k])}
    assert not bad, f"flax-orbax/vs-msgpack/weights: max_abs {bad}"


def test_orbax_ports_back_to_canonical_bit_identically(files, capsys):
    d = files["dir"]
    out = d / "back.safetensors"
    rc = cli.main(["port", str(d / "m.orbax"), "--arch", ARCH, "--to", "canonical", "-o", str(out)])
    assert rc in (0, None), capsys.readouterr()
    assert "flax-orbax" in capsys.readouterr().out
    back, meta = load_file(out)
    src = files["state"]
    assert sorted(back) == sorted(src)
    bad = {k: _max_abs(back[k], src[k]) for k in src if not np.array_equal(back[k], src[k])}
    assert not bad, f"flax-orbax/to-canonical: max_abs per tensor {bad} > atol=0e+00"
    dtypes = {k: (back[k].dtype, src[k].dtype) for k in src if back[k].dtype != src[k].dtype}
    assert not dtypes, f"flax-orbax/to-canonical: dtypes differ {dtypes}"
    assert meta["source"] == "flax-orbax" and json.loads(meta["pretrained_cfg"]) == CFG
    _, info = read_source(out, ARCH)
    assert info["pretrained_cfg"] == CFG  # travelled safetensors -> orbax -> safetensors


def test_orbax_round_trips_metadata(files):
    out = files["dir"] / "m.orbax"
    header = flax_orbax.read_orbax_header(out)
    model = nnx.eval_shape(lambda: create_model(ARCH, CLASSES, rngs=nnx.Rngs(0)))
    assert header["format"] == "eca-multi-flax-orbax" and header["format_version"] == 1
    assert header["arch"] == ARCH and header["num_classes"] == CLASSES
    assert header["kernel_sizes"] == model.kernel_sizes == archs.default_kernel_sizes(ARCH)
    assert header["model"] == {"attention": "eca", "attention_kwargs": {}}
    meta = flax_orbax.read_orbax_metadata(out)
    assert json.loads(meta["pretrained_cfg"]) == CFG
    assert meta[DIGEST_KEY] == flax_io.read_metadata(files["dir"] / "m.msgpack")[DIGEST_KEY]
    state, info = read_source(out, ARCH)
    assert info["format"] == "flax-orbax" and info["integrity"] == "sha256 verified"
    assert info["pretrained_cfg"] == CFG and info["num_classes"] == CLASSES
    assert info["kernel_sizes"] == archs.default_kernel_sizes(ARCH)
    # the Python API, directly: save_orbax -> read_orbax_header / load_orbax
    again = files["dir"] / "api.orbax"
    flax_orbax.save_orbax(flax_orbax.load_orbax(out, ARCH), again, metadata={"note": "x"})
    assert flax_orbax.read_orbax_metadata(again) == {"note": "x"}
    h2 = flax_orbax.read_orbax_header(again)
    assert {k: h2[k] for k in ("arch", "num_classes", "kernel_sizes", "model")} == {
        k: header[k] for k in ("arch", "num_classes", "kernel_sizes", "model")
    }
    # the stored state is nnx.state's pure dict: the same names and arrays as the msgpack export
    stored = flax_io._flatten(flax_orbax.read_orbax(again)[1])
    model_state = flax_io._flatten(nnx.to_pure_dict(nnx.state(model)))
    assert sorted(stored) == sorted(model_state)
    wrong = {k for k in stored if np.shape(stored[k]) != np.shape(model_state[k])}
    assert not wrong, f"flax-orbax/stored-state: shapes differ for {sorted(wrong)}"


def test_existing_output_needs_force_and_is_replaced_whole(files):
    d = files["dir"]
    with pytest.raises(FileExistsError, match="m.orbax exists"):
        port(d / "src.safetensors", ARCH, "flax", d / "m.orbax", progress=False)
    out = d / "forced.orbax"
    shutil.copytree(d / "m.orbax", out)
    (out / "stale.txt").write_text("old")
    port(d / "src.safetensors", ARCH, "flax", out, force=True, progress=False)
    assert not (out / "stale.txt").exists() and detect_format(out) == "flax-orbax"
    leftovers = [p.name for p in d.iterdir() if p.name.startswith(".")]
    assert not leftovers, f"temp folders left beside the output: {leftovers}"


def test_a_failed_save_leaves_no_folder_and_keeps_the_old_output(files, monkeypatch):
    d = files["dir"]
    model = flax_orbax.load_orbax(d / "m.orbax", ARCH)
    real = flax_orbax._str_keys

    def broken(tree):  # a leaf Orbax cannot serialize: the save fails inside Orbax
        return {**real(tree), "bad": object()}

    monkeypatch.setattr(flax_orbax, "_str_keys", broken)
    before = sorted(p.name for p in d.iterdir())
    with pytest.raises(Exception):  # noqa: B017 (whatever Orbax raises)
        flax_orbax.save_orbax(model, d / "new.orbax")
    assert sorted(p.name for p in d.iterdir()) == before, "a failed save left files behind"
    old = d / "keep.orbax"
    shutil.copytree(d / "m.orbax", old)
    before = sorted(p.name for p in d.iterdir())
    with pytest.raises(Exception):  # noqa: B017
        flax_orbax.save_orbax(model, old, overwrite=True)
    assert sorted(p.name for p in d.iterdir()) == before
    assert flax_orbax.read_orbax_header(old)["arch"] == ARCH  # the old checkpoint is intact


def test_bad_orbax_inputs_raise_source_errors_naming_the_path(files, tmp_path):
    good = files["dir"] / "m.orbax"
    plain = tmp_path / "plain.orbax"  # an Orbax checkpoint eca-multi did not write
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        ckptr.save(
            plain.absolute(), ocp.args.Composite(state=ocp.args.StandardSave({"w": np.ones(2)}))
        )
    with pytest.raises(SourceError, match=r"plain\.orbax.*did not write"):
        read_source(plain, ARCH)
    empty = tmp_path / "empty.orbax"
    empty.mkdir()
    with pytest.raises(SourceError, match=r"empty\.orbax is a folder"):
        read_source(empty, ARCH)
    unfinished = tmp_path / "unfinished.orbax"
    shutil.copytree(good, unfinished)
    (unfinished / "_CHECKPOINT_METADATA").unlink()
    with pytest.raises(SourceError, match=r"unfinished\.orbax: an unfinished Orbax checkpoint"):
        read_source(unfinished, ARCH)
    missing = tmp_path / "missing.orbax"
    shutil.copytree(good, missing)
    for f in (missing / "state").rglob("*"):
        if f.is_file() and f.parent.name == "d":  # the array data
            f.unlink()
    with pytest.raises(SourceError, match=r"missing\.orbax: truncated or corrupt"):
        read_source(missing, ARCH)
    flipped = tmp_path / "flipped.orbax"
    shutil.copytree(good, flipped)
    data = max(
        (f for f in (flipped / "state").rglob("*") if f.is_file()), key=lambda f: f.stat().st_size
    )
    b = bytearray(data.read_bytes())
    b[len(b) // 2] ^= 0xFF
    data.write_bytes(bytes(b))
    with pytest.raises(SourceError, match=r"flipped\.orbax"):
        read_source(flipped, ARCH)
    with pytest.raises(SourceError, match=r"m\.orbax: cannot read as .*not 'eca_resnet18'"):
        read_source(good, "eca_resnet18")
    assert flax_io.is_flax_export(good) is False  # a folder is never the msgpack export
