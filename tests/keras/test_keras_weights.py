"""Keras ECA canonical weights: export / load in memory and through files, strict key checks."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from eca_multi import reference
from eca_multi.keras import ECA, export_canonical, load_canonical
from eca_multi.weights import Layout, WeightMismatchError, load_file, save_file, to_native

W5 = np.array([[[0.5, -0.25, 0.125, 0.75, -1.0]]], np.float32)  # asymmetric: a flip shows


def numpy(t) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(t))


def test_export_is_canonical_float32():
    layer = ECA(channels=2048)  # built on demand; k = 7
    state = export_canonical(layer)
    assert list(state) == ["conv.weight"]
    w = state["conv.weight"]
    assert w.shape == (1, 1, 7) and w.dtype == np.float32
    np.testing.assert_array_equal(to_native(w, Layout.CONV1D), numpy(layer.kernel.value))


def test_load_then_export_round_trip_and_orientation():
    layer = ECA(kernel_size=5, data_format="channels_first")
    load_canonical(layer, {"conv.weight": W5})
    assert layer.built
    np.testing.assert_array_equal(export_canonical(layer)["conv.weight"], W5)
    np.testing.assert_array_equal(numpy(layer.kernel.value)[:, 0, 0], W5[0, 0])
    x = np.random.default_rng(0).standard_normal((2, 6, 3, 3)).astype(np.float32)
    y = numpy(layer(x))
    np.testing.assert_allclose(y, reference.forward(x, W5), rtol=2e-6, atol=2e-6)
    flipped = reference.forward(x, W5[..., ::-1])
    assert np.abs(y - flipped).max() > 1e-3, "a flipped kernel gives the same output"


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_file_round_trip(tmp_path, suffix):
    src = ECA(channels=256, data_format="channels_last")
    path = save_file(tmp_path / f"eca{suffix}", export_canonical(src), {"source": "keras"})
    state, meta = load_file(path)
    assert meta["source"] == "keras" and meta["layout"] == "torch"
    dst = ECA(channels=256, data_format="channels_last")
    load_canonical(dst, state)
    x = np.random.default_rng(1).standard_normal((2, 3, 3, 256)).astype(np.float32)
    assert np.array_equal(numpy(dst(x)), numpy(src(x))), "reloaded layer differs"


def test_wrong_kernel_size_raises():
    layer = ECA(channels=64)  # k = 3
    with pytest.raises(
        WeightMismatchError, match=r"conv.weight: expected \(1, 1, 3\), got \(1, 1, 5"
    ):
        load_canonical(layer, {"conv.weight": W5})
    with pytest.raises(WeightMismatchError, match=r"expected \(1, 1, 5\), got \(5, 1, 1\)"):
        load_canonical(ECA(kernel_size=5), {"conv.weight": to_native(W5, Layout.CONV1D)})


def test_missing_and_unexpected_keys_listed():
    layer = ECA(kernel_size=5)
    with pytest.raises(WeightMismatchError) as err:
        load_canonical(layer, {"weight": W5, "conv.bias": np.zeros(1, np.float32)})
    msg = str(err.value)
    assert "missing keys (1): conv.weight" in msg
    assert "unexpected keys (2): conv.bias, weight" in msg
    assert err.value.missing == ["conv.weight"]


def test_non_strict_ignores_extra_keys():
    layer = ECA(kernel_size=5)
    load_canonical(layer, {"conv.weight": W5, "extra": np.zeros(2)}, strict=False)
    np.testing.assert_array_equal(export_canonical(layer)["conv.weight"], W5)
    with pytest.raises(WeightMismatchError, match="shape mismatch"):  # shapes always checked
        load_canonical(layer, {"conv.weight": W5[..., :3]}, strict=False)
