"""Canonical weights: the named layout table, the strict schema check, atomic safe file io."""

from __future__ import annotations

import numpy as np
import pytest

from eca_multi import make_config
from eca_multi.weights import (
    Layout,
    WeightMismatchError,
    check_state,
    eca_schema,
    load_file,
    save_file,
    to_canonical,
    to_native,
)

SHAPES = {
    Layout.NONE: (7,),
    Layout.CONV1D: (1, 1, 5),
    Layout.CONV2D: (8, 3, 3, 5),
    Layout.DEPTHWISE: (6, 1, 3, 3),
    Layout.LINEAR: (10, 4),
}
NATIVE = {
    Layout.NONE: (7,),
    Layout.CONV1D: (5, 1, 1),
    Layout.CONV2D: (3, 5, 3, 8),
    Layout.DEPTHWISE: (3, 3, 6, 1),
    Layout.LINEAR: (4, 10),
}


@pytest.mark.parametrize("layout", list(Layout), ids=[lay.name for lay in Layout])
def test_layout_round_trip_and_native_shape(layout):
    a = np.random.default_rng(0).normal(size=SHAPES[layout]).astype(np.float32)
    native = to_native(a, layout)
    assert native.shape == NATIVE[layout], f"{layout.name}: {native.shape}"
    np.testing.assert_array_equal(to_canonical(native, layout), a)


def test_conv1d_is_a_transpose_not_a_flip():
    w = np.array([[[1.0, 2.0, 3.0]]])
    np.testing.assert_array_equal(to_native(w, Layout.CONV1D)[:, 0, 0], [1.0, 2.0, 3.0])


def test_conv2d_matches_torch_to_keras_convention():
    w = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)  # (O, I, kh, kw)
    n = to_native(w, Layout.CONV2D)  # (kh, kw, I, O)
    assert n[1, 2, 0, 1] == w[1, 0, 1, 2]


def test_layout_rank_is_checked_not_guessed():
    with pytest.raises(ValueError, match="rank-3"):
        to_native(np.zeros((1, 5)), Layout.CONV1D)


def test_check_state_lists_every_problem_at_once():
    schema = {**eca_schema(make_config(channels=64), "a."), **eca_schema(make_config(256), "b.")}
    state = {"a.conv.weight": np.zeros((1, 1, 5), np.float32), "c.conv.weight": np.zeros(3)}
    with pytest.raises(WeightMismatchError) as e:
        check_state(schema, state)
    msg = str(e.value)
    assert "missing keys (1): b.conv.weight" in msg
    assert "unexpected keys (1): c.conv.weight" in msg
    assert "shape mismatch for a.conv.weight: expected (1, 1, 3), got (1, 1, 5)" in msg


def test_check_state_lenient_still_checks_shapes():
    schema = eca_schema(make_config(channels=64))
    check_state(schema, {}, strict=False)
    with pytest.raises(WeightMismatchError, match="shape mismatch"):
        check_state(schema, {"conv.weight": np.zeros((1, 1, 7))}, strict=False)


@pytest.mark.parametrize("suffix", ["safetensors", "npz"])
def test_save_load_round_trip_no_overwrite(tmp_path, suffix):
    w = {"conv.weight": np.random.default_rng(1).normal(size=(1, 1, 5)).astype(np.float32)}
    path = tmp_path / f"eca.{suffix}"
    save_file(path, w, {"source": "test"})
    got, meta = load_file(path)
    np.testing.assert_array_equal(got["conv.weight"], w["conv.weight"])
    assert meta["source"] == "test" and meta["layout"] == "torch"
    with pytest.raises(FileExistsError, match="--force"):
        save_file(path, w)
    save_file(path, {"conv.weight": w["conv.weight"] * 2}, overwrite=True)
    np.testing.assert_array_equal(load_file(path)[0]["conv.weight"], w["conv.weight"] * 2)
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "temp files left behind"


@pytest.mark.parametrize("suffix", ["safetensors", "npz"])
def test_truncated_file_is_a_clear_error(tmp_path, suffix):
    path = tmp_path / f"eca.{suffix}"
    save_file(path, {"conv.weight": np.ones((1, 1, 3), np.float32)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable"):
        load_file(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no weight file"):
        load_file(tmp_path / "nope.safetensors")


def test_safetensors_file_is_readable_by_plain_safetensors(tmp_path):
    from safetensors.numpy import load_file as st_load

    path = save_file(tmp_path / "w.safetensors", {"conv.weight": np.ones((1, 1, 3), np.float32)})
    assert st_load(str(path))["conv.weight"].shape == (1, 1, 3)
