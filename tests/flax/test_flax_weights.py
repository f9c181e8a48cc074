"""Canonical weights for the Flax ECA (NNX and Linen): round trips in memory and through files,
and strict checks that list every bad key."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from eca_multi import reference
from eca_multi.flax import ECA, export_canonical, linen, load_canonical
from eca_multi.weights import Layout, WeightMismatchError, load_file, save_file, to_native


def _w(k: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (1, 1, k)).astype(np.float32)


def test_export_layout_and_dtype():
    layer = ECA(channels=64, rngs=nnx.Rngs(0))
    state = export_canonical(layer)
    assert list(state) == ["conv.weight"]
    w = state["conv.weight"]
    assert w.shape == (1, 1, 3) and w.dtype == np.float32 and isinstance(w, np.ndarray)
    assert np.array_equal(to_native(w, Layout.CONV1D), np.asarray(layer.kernel[...]))


def test_round_trip_in_memory_and_numbers():
    w = _w(5)
    layer = ECA(channels=32, kernel_size=5, data_format="channels_first", rngs=nnx.Rngs(0))
    load_canonical(layer, {"conv.weight": w})
    assert np.array_equal(export_canonical(layer)["conv.weight"], w)
    # the loaded kernel is used unflipped: the output matches the reference with w itself
    x = np.random.default_rng(1).standard_normal((2, 32, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(layer(jnp.asarray(x))), reference.forward(x, w), rtol=2e-6, atol=2e-6
    )


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_round_trip_through_file(tmp_path, suffix):
    src = ECA(channels=256, rngs=nnx.Rngs(1))
    path = save_file(tmp_path / f"eca{suffix}", export_canonical(src), {"source": "flax"})
    state, meta = load_file(path)
    assert meta["source"] == "flax" and meta["layout"] == "torch"
    dst = ECA(channels=256, rngs=nnx.Rngs(2))
    load_canonical(dst, state)
    assert np.array_equal(dst.kernel[...], src.kernel[...])
    module = linen.ECA(channels=256)  # the same file into Linen
    variables = linen.load_canonical(module, None, state)
    x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 3, 3, 256)), jnp.float32)
    assert np.array_equal(module.apply(variables, x), src(x))


def test_wrong_kernel_size_is_rejected_and_layer_unchanged():
    layer = ECA(channels=64, rngs=nnx.Rngs(0))  # k = 3
    before = np.asarray(layer.kernel[...])
    msg = r"conv\.weight: expected \(1, 1, 3\), got \(1, 1, 5\)"
    with pytest.raises(WeightMismatchError, match=msg):
        load_canonical(layer, {"conv.weight": _w(5)})
    with pytest.raises(WeightMismatchError, match="expected"):
        load_canonical(layer, {"conv.weight": _w(3)[0]}, strict=False)  # (1, 3): no squeezing
    assert np.array_equal(layer.kernel[...], before)


def test_missing_and_unexpected_keys_listed():
    layer = ECA(channels=64, rngs=nnx.Rngs(0))
    with pytest.raises(WeightMismatchError) as info:
        load_canonical(layer, {"se.conv.weight": _w(3), "fc.bias": np.zeros(3, np.float32)})
    err = info.value
    assert err.missing == ["conv.weight"] and err.unexpected == ["fc.bias", "se.conv.weight"]
    assert "missing keys (1): conv.weight" in str(err)
    assert "unexpected keys (2): fc.bias, se.conv.weight" in str(err)


def test_non_strict_ignores_extra_and_missing():
    layer = ECA(channels=64, rngs=nnx.Rngs(0))
    before = np.asarray(layer.kernel[...])
    load_canonical(layer, {"other": np.zeros(2, np.float32)}, strict=False)
    assert np.array_equal(layer.kernel[...], before)
    load_canonical(layer, {"conv.weight": _w(3), "other": np.zeros(2)}, strict=False)
    assert np.array_equal(export_canonical(layer)["conv.weight"], _w(3))


def test_load_keeps_param_dtype():
    layer = ECA(channels=64, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    load_canonical(layer, {"conv.weight": np.array([[[0.5, -0.25, 1.0]]], np.float32)})
    assert layer.kernel[...].dtype == jnp.bfloat16
    out = export_canonical(layer)["conv.weight"]
    assert out.dtype == np.float32 and np.array_equal(out, [[[0.5, -0.25, 1.0]]])


def test_integer_weights_rejected():
    layer = ECA(channels=64, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="floating point"):
        load_canonical(layer, {"conv.weight": np.ones((1, 1, 3), np.int32)})


def test_linen_export_load_keep_structure():
    module = linen.ECA(channels=64)
    variables = module.init(jax.random.key(0), jnp.ones((1, 2, 2, 64)))
    state = linen.export_canonical(module, variables)
    assert state["conv.weight"].shape == (1, 1, 3)
    new = linen.load_canonical(module, variables, {"conv.weight": _w(3)})
    assert set(new) == {"params"}
    assert np.array_equal(linen.export_canonical(module, new)["conv.weight"], _w(3))
    old_kernel = variables["params"]["kernel"]
    assert not np.array_equal(old_kernel, new["params"]["kernel"]), "input variables changed"
    bare = linen.load_canonical(module, variables["params"], {"conv.weight": _w(3)})  # bare params
    assert set(bare) == {"kernel"}
    with pytest.raises(WeightMismatchError, match="missing keys"):
        linen.load_canonical(module, variables, {})
    with pytest.raises(WeightMismatchError, match=r"expected \(1, 1, 5\)"):
        linen.export_canonical(linen.ECA(channels=256), variables)  # k = 5 module, k = 3 kernel
