"""The torch ECA layer against the float64 reference: numbers, shapes, dtypes, errors, devices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from common import (
    BAD_CONSTRUCTOR,
    BAD_INPUTS,
    assert_matches,
    eca_examples,
    reference_outputs,
)
from hypothesis import given, settings

from eca_multi import kernel_size as rule_kernel_size
from eca_multi import reference
from eca_multi.conformance.generate import round_to_dtype
from eca_multi.torch import ECA

_TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _run(layer: ECA, x: np.ndarray, g: np.ndarray, dtype: str = "float32") -> dict:
    """Forward and VJP of ``layer`` on float64 arrays cast to ``dtype``; float64 results."""
    xt = torch.as_tensor(x).to(_TORCH_DTYPES[dtype]).requires_grad_(True)
    y = layer(xt)
    dx, dw = torch.autograd.grad(y, (xt, layer.conv.weight), torch.as_tensor(g).to(y.dtype))
    as64 = lambda t: t.detach().to(torch.float64).numpy()
    return {"y": as64(y), "dx": as64(dx), "dw": as64(dw)}


def _layer(w: np.ndarray, **kwargs) -> ECA:
    layer = ECA(**kwargs)
    with torch.no_grad():
        layer.conv.weight.copy_(torch.as_tensor(w))
    return layer


@pytest.mark.parametrize(
    "name,kwargs,exc,match", BAD_CONSTRUCTOR, ids=[b[0] for b in BAD_CONSTRUCTOR]
)
def test_bad_constructor(name, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ECA(**kwargs)


@pytest.mark.parametrize(
    "name,kwargs,shape,dtype,exc,match", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS]
)
def test_bad_input(name, kwargs, shape, dtype, exc, match):
    x = torch.zeros(shape, dtype=getattr(torch, dtype))
    with pytest.raises(exc, match=match):
        ECA(**kwargs)(x)


def test_state_dict_is_only_the_kernel():
    """Official ECA-Net / timm key and layout; the circular index buffer is not persistent."""
    for kwargs in (dict(channels=64), dict(channels=64, padding="circular"), dict(kernel_size=5)):
        layer = ECA(**kwargs)
        state = layer.state_dict()
        k = layer.config.kernel_size
        assert list(state) == ["conv.weight"], f"{kwargs}: state_dict keys {list(state)}"
        assert tuple(state["conv.weight"].shape) == (1, 1, k), (
            f"{kwargs}: {state['conv.weight'].shape}"
        )
    layer = ECA(channels=8, padding="circular").to(torch.float16)
    assert layer.channel_index.dtype == torch.int64, "index buffer must not follow .to(float16)"


def test_repr_from_config():
    assert repr(ECA(64)) == "ECA(channels=64, kernel_size=3, data_format='channels_first')"
    r = repr(
        ECA(kernel_size=5, padding="circular", gate="hard_sigmoid", data_format="channels_last")
    )
    assert r == (
        "ECA(channels=None, kernel_size=5, padding='circular', gate='hard_sigmoid', "
        "data_format='channels_last')"
    ), r


@pytest.mark.parametrize("channels", [1, 7, 8, 64, 128, 256, 2048])
@pytest.mark.parametrize("min_k", [1, 3])
def test_kernel_size_from_rule(channels, min_k):
    layer = ECA(channels=channels, min_kernel_size=min_k)
    want = rule_kernel_size(channels, min_size=min_k)
    assert layer.config.kernel_size == want, f"C={channels}: k={layer.config.kernel_size} != {want}"
    assert tuple(layer.conv.weight.shape) == (1, 1, want)


def test_explicit_kernel_size_wins_and_init_bound():
    layer = ECA(channels=2048, kernel_size=3)
    assert layer.config.kernel_size == 3
    torch.manual_seed(0)
    w = ECA(kernel_size=9).conv.weight.detach()
    bound = 1 / 9**0.5  # torch Conv1d default: uniform(-1/sqrt(k), 1/sqrt(k))
    assert float(w.abs().max()) <= bound, f"init max |w|={float(w.abs().max()):.3f} > {bound:.3f}"


@pytest.mark.parametrize("padding", ["zeros", "circular"])
@pytest.mark.parametrize("channels", [1, 5, 17])
def test_channels_none_accepts_any_c(padding, channels):
    rng = np.random.default_rng(channels)
    w = round_to_dtype(rng.uniform(-1, 1, (1, 1, 5)), "float32")
    x = round_to_dtype(rng.standard_normal((2, channels, 3, 4)), "float32")
    g = round_to_dtype(rng.standard_normal(x.shape), "float32")
    got = _run(_layer(w, kernel_size=5, padding=padding), x, g)
    y = reference.forward(x, w, padding=padding)
    dx, dw = reference.backward(x, w, g, padding=padding)
    assert_matches(
        "torch", f"channels_none_C{channels}_{padding}", got, {"y": y, "dx": dx, "dw": dw}
    )


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_empty_batch(data_format):
    layer = ECA(channels=8, data_format=data_format)
    shape = (0, 8, 3, 3) if data_format == "channels_first" else (0, 3, 3, 8)
    x = torch.zeros(shape, requires_grad=True)
    y = layer(x)
    assert y.shape == x.shape, f"N=0 output shape {tuple(y.shape)} != {shape}"
    (dx,) = torch.autograd.grad(y.sum(), x)
    assert dx.shape == x.shape


@pytest.mark.parametrize("padding", ["zeros", "circular"])
def test_nan_propagates_like_reference(padding):
    """A NaN in channel c makes exactly the channels within pad of c NaN (mod C if circular)."""
    rng = np.random.default_rng(3)
    w = round_to_dtype(rng.uniform(-1, 1, (1, 1, 5)), "float32")
    x = round_to_dtype(rng.standard_normal((2, 16, 3, 3)), "float32")
    x[0, 1, 2, 0] = np.nan  # near the left edge: circular padding wraps it to channels 15 and 14
    x[1, 9, 0, 0] = np.nan
    got = _layer(w, channels=16, kernel_size=5, padding=padding)(
        torch.as_tensor(x, dtype=torch.float32)
    )
    want = np.isnan(reference.forward(x, w, padding=padding))
    got_mask = torch.isnan(got).numpy()
    nan_channels = lambda mask: np.argwhere(mask.any(axis=(2, 3))).tolist()  # [n, c] pairs
    assert (got_mask == want).all(), (
        f"NaN channels differ: torch {nan_channels(got_mask)} vs reference {nan_channels(want)}"
    )


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_dtype_preserved_and_accurate(dtype, data_format):
    rng = np.random.default_rng(7)
    shape = (2, 32, 4, 5) if data_format == "channels_first" else (2, 4, 5, 32)
    x = round_to_dtype(rng.standard_normal(shape) * 2, dtype)
    g = round_to_dtype(rng.standard_normal(shape), dtype)
    w = round_to_dtype(rng.uniform(-1, 1, (1, 1, 3)), "float32")
    layer = _layer(w, channels=32, data_format=data_format)
    xt = torch.as_tensor(x).to(_TORCH_DTYPES[dtype]).requires_grad_(True)
    y = layer(xt)
    (dx,) = torch.autograd.grad(y, xt, torch.as_tensor(g).to(y.dtype))
    assert y.dtype == xt.dtype and dx.dtype == xt.dtype, f"{dtype}: y {y.dtype}, dx {dx.dtype}"
    got = _run(layer, x, g, dtype)
    ref = {"y": reference.forward(x, w, data_format=data_format)}
    ref["dx"], ref["dw"] = reference.backward(x, w, g, data_format=data_format)
    assert_matches("torch", f"{dtype}_{data_format}", got, ref, dtype)


def test_channels_last_equals_permuted_channels_first():
    torch.manual_seed(1)
    first = ECA(channels=24, padding="circular")
    last = ECA(channels=24, padding="circular", data_format="channels_last")
    last.load_state_dict(first.state_dict())
    x = torch.randn(2, 24, 5, 3)
    a = first(x)
    b = last(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    d = float((a - b).detach().abs().max())
    assert d <= 1e-6, f"channels_last vs permuted channels_first: max_abs={d:.2e} > 1e-6"


def test_half_weight_computes_attention_in_float32():
    """A .half() layer on fp16 input equals a float32 layer holding the same (fp16) kernel values:
    both run mean, conv and gate in float32 and round only s and the product to fp16."""
    torch.manual_seed(2)
    half = ECA(channels=64).half()
    full = ECA(channels=64)
    full.load_state_dict({"conv.weight": half.conv.weight.float()})
    x = (torch.randn(2, 64, 6, 6) * 3).half()
    a, b = half(x), full(x)
    assert a.dtype == torch.float16 and b.dtype == torch.float16
    assert torch.equal(a, b), f"max_abs={float((a.float() - b.float()).abs().max()):.2e}"


def test_autocast_keeps_attention_in_float32():
    """Under CPU bf16 autocast conv1d would run in bf16; the layer turns autocast off for the gate,
    so a float32 input gives exactly the float32 result."""
    torch.manual_seed(3)
    layer = ECA(channels=64)
    x = torch.randn(2, 64, 5, 5)
    want = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = layer(x)
    assert got.dtype == torch.float32, got.dtype
    assert torch.equal(got, want), f"autocast changed output: {float((got - want).abs().max()):.2e}"


def test_gradcheck_float64():
    for padding, gate in (("zeros", "sigmoid"), ("circular", "hard_sigmoid")):
        torch.manual_seed(4)
        layer = ECA(channels=5, kernel_size=3, padding=padding, gate=gate).double()
        x = torch.randn(2, 5, 3, 2, dtype=torch.float64, requires_grad=True)
        f = lambda x, w, layer=layer: torch.func.functional_call(layer, {"conv.weight": w}, (x,))
        assert torch.autograd.gradcheck(f, (x, layer.conv.weight)), f"{padding}/{gate} failed"


def test_meta_device_no_host_round_trip():
    """Meta tensors have no data: any .cpu() / .numpy() / .item() in forward would raise."""
    for kwargs in (
        dict(channels=16),
        dict(kernel_size=5, padding="circular"),
        dict(channels=16, padding="circular", data_format="channels_last"),
    ):
        layer = ECA(**kwargs, device="meta")
        shape = (2, 16, 3, 4) if kwargs.get("data_format") != "channels_last" else (2, 3, 4, 16)
        for dtype in (torch.float32, torch.bfloat16):
            y = layer(torch.empty(shape, device="meta", dtype=dtype))
            assert y.device.type == "meta" and y.shape == shape and y.dtype == dtype, (kwargs, y)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_reference():
    rng = np.random.default_rng(5)
    x = round_to_dtype(rng.standard_normal((2, 64, 5, 5)), "float32")
    g = round_to_dtype(rng.standard_normal(x.shape), "float32")
    w = round_to_dtype(rng.uniform(-1, 1, (1, 1, 3)), "float32")
    for padding in ("zeros", "circular"):
        layer = _layer(w, channels=64, padding=padding).cuda()
        xt = torch.as_tensor(x, dtype=torch.float32, device="cuda").requires_grad_(True)
        y = layer(xt)
        assert y.device.type == "cuda"
        dx, dw = torch.autograd.grad(y, (xt, layer.conv.weight), torch.as_tensor(g).float().cuda())
        as64 = lambda t: t.detach().double().cpu().numpy()
        ref = {"y": reference.forward(x, w, padding=padding)}
        ref["dx"], ref["dw"] = reference.backward(x, w, g, padding=padding)
        assert_matches("torch-cuda", padding, {"y": as64(y), "dx": as64(dx), "dw": as64(dw)}, ref)


@settings(max_examples=25, deadline=None)
@given(eca_examples())
def test_property_matches_reference(ex):
    layer = _layer(ex["w"], **ex["kwargs"])
    got = _run(layer, ex["x"], ex["g"], ex["dtype"])
    assert_matches("torch", f"{ex['kwargs']} shape={ex['shape']}", got, reference_outputs(ex))
