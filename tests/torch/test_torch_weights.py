"""Canonical weights of the torch ECA: export / load round trips, files, and strict errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eca_multi.torch import ECA, export_canonical, load_canonical
from eca_multi.weights import WeightMismatchError, load_file, save_file


def test_export_is_canonical_float32():
    layer = ECA(channels=256)  # k = 5
    state = export_canonical(layer)
    assert list(state) == ["conv.weight"]
    w = state["conv.weight"]
    assert isinstance(w, np.ndarray) and w.dtype == np.float32 and w.shape == (1, 1, 5), (
        f"{type(w).__name__} {getattr(w, 'dtype', None)} {getattr(w, 'shape', None)}"
    )
    np.testing.assert_array_equal(w, layer.conv.weight.detach().numpy())
    w[...] = 0  # a copy, not a view of the parameter
    assert float(layer.conv.weight.detach().abs().max()) > 0


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_round_trip_through_file(tmp_path, suffix):
    torch.manual_seed(0)
    src = ECA(channels=64, padding="circular")
    dst = ECA(channels=64, padding="circular")
    path = save_file(tmp_path / f"eca{suffix}", export_canonical(src), {"source": "torch"})
    state, meta = load_file(path)
    assert meta["source"] == "torch" and meta["layout"] == "torch", meta
    load_canonical(dst, state)
    assert torch.equal(dst.conv.weight, src.conv.weight)
    x = torch.randn(2, 64, 3, 3)
    assert torch.equal(dst(x), src(x))


def test_load_keeps_layer_dtype_and_accepts_torch_tensors():
    layer = ECA(kernel_size=3).half()
    load_canonical(layer, {"conv.weight": torch.tensor([[[0.25, -0.5, 1.0]]])})
    assert layer.conv.weight.dtype == torch.float16
    assert layer.conv.weight.detach().float().tolist() == [[[0.25, -0.5, 1.0]]]


def test_wrong_kernel_size_is_rejected():
    layer = ECA(channels=64)  # k = 3
    with pytest.raises(
        WeightMismatchError, match=r"conv.weight: expected \(1, 1, 3\), got \(1, 1, 5\)"
    ):
        load_canonical(layer, {"conv.weight": np.zeros((1, 1, 5), np.float32)})
    with pytest.raises(WeightMismatchError, match="shape mismatch"):  # never squeezed to fit
        load_canonical(layer, {"conv.weight": np.zeros((3,), np.float32)}, strict=False)


def test_missing_and_unexpected_keys_are_all_listed():
    layer = ECA(channels=64)
    before = layer.conv.weight.detach().clone()
    bad = {"conv.weigth": np.zeros((1, 1, 3), np.float32), "fc.bias": np.zeros(2, np.float32)}
    with pytest.raises(WeightMismatchError) as err:
        load_canonical(layer, bad)
    msg = str(err.value)
    assert "missing keys (1): conv.weight" in msg, msg
    assert "unexpected keys (2): conv.weigth, fc.bias" in msg, msg
    assert torch.equal(layer.conv.weight, before), "a failed load must not change the layer"
    # lenient only when asked: extra keys ignored, the known one still loaded
    ok = {"conv.weight": np.full((1, 1, 3), 0.5, np.float32), "fc.bias": np.zeros(2, np.float32)}
    load_canonical(layer, ok, strict=False)
    assert layer.conv.weight.detach().tolist() == [[[0.5, 0.5, 0.5]]]
