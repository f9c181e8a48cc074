"""Flax ECA (NNX and Linen) against the float64 reference: construction, errors, edge cases,
forward and gradients, jit / vmap / grad, and compiled vs eager exactness."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from common import BAD_CONSTRUCTOR, BAD_INPUTS, assert_matches, eca_examples, reference_outputs
from flax import nnx
from hypothesis import given, settings

from eca_multi import reference
from eca_multi.conformance.cases import get_case
from eca_multi.conformance.generate import load_golden, round_to_dtype
from eca_multi.flax import ECA, export_canonical, linen, load_canonical
from eca_multi.weights import Layout, to_canonical


def _layer(w: np.ndarray | None = None, **kwargs) -> ECA:
    layer = ECA(**kwargs, rngs=nnx.Rngs(0))
    if w is not None:
        load_canonical(layer, {"conv.weight": np.asarray(w, np.float32)})
    return layer


def _vjp(layer: ECA, x: jax.Array, g: jax.Array):
    """Forward and the VJP of the output for upstream gradient g: (y, dx, kernel grad)."""
    graphdef, params = nnx.split(layer)
    y, pullback = jax.vjp(lambda p, x: nnx.merge(graphdef, p)(x), params, x)
    dparams, dx = pullback(g)
    return y, dx, dparams["kernel"][...]


_VJP_JIT = nnx.jit(_vjp)
_CALL_JIT = nnx.jit(lambda layer, x: layer(x))


def _canonical(dk) -> np.ndarray:
    return to_canonical(np.asarray(dk, np.float64), Layout.CONV1D)


def _fwd_bwd(layer: ECA, x: jax.Array, g: jax.Array, vjp=_vjp):
    """(y, dx, dw) with dw in the canonical (1, 1, k) layout."""
    y, dx, dk = vjp(layer, x, g)
    return y, dx, _canonical(dk)


def _as_f64(*arrays):
    return [np.asarray(a, np.float64) for a in arrays]


# ---------------------------------------------------------------- construction


def test_defaults_and_kernel_rule():
    layer = ECA(channels=64, rngs=nnx.Rngs(0))
    assert layer.config.kernel_size == 3 and layer.config.data_format == "channels_last"
    assert layer.kernel[...].shape == (3, 1, 1) and layer.kernel[...].dtype == jnp.float32
    assert repr(layer) == "flax.nnx.ECA(channels=64, kernel_size=3, data_format='channels_last')"
    ks = [ECA(channels=c, rngs=nnx.Rngs(0)).config.kernel_size for c in (8, 256, 2048)]
    assert ks == [3, 5, 7]
    assert ECA(channels=8, min_kernel_size=5, rngs=nnx.Rngs(0)).config.kernel_size == 5
    assert ECA(channels=2048, kernel_size=3, rngs=nnx.Rngs(0)).config.kernel_size == 3
    assert linen.ECA(channels=256).config.kernel_size == 5


def test_kernel_init_is_torch_conv1d_uniform():
    k = 9
    w = np.ravel([ECA(kernel_size=k, rngs=nnx.Rngs(s)).kernel[...] for s in range(50)])
    bound = 1 / np.sqrt(k)
    assert np.abs(w).max() <= bound, f"kernel init exceeds 1/sqrt(k)={bound:.3f}: {np.abs(w).max()}"
    assert np.abs(w).max() > 0.9 * bound and abs(w.mean()) < 0.05, "not uniform(-b, b)"


@pytest.mark.parametrize(
    "kwargs,exc,match", [c[1:] for c in BAD_CONSTRUCTOR], ids=[c[0] for c in BAD_CONSTRUCTOR]
)
@pytest.mark.parametrize("api", ["nnx", "linen"])
def test_bad_constructor(api, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ECA(**kwargs, rngs=nnx.Rngs(0)) if api == "nnx" else linen.ECA(**kwargs)


@pytest.mark.parametrize(
    "kwargs,shape,dtype,exc,match", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
@pytest.mark.parametrize("mode", ["nnx", "nnx-jit", "linen"])
def test_bad_inputs(mode, kwargs, shape, dtype, exc, match):
    kwargs = dict(kwargs, data_format="channels_first")  # BAD_INPUTS shapes are channels_first
    x = jnp.zeros(shape, dtype)
    with pytest.raises(exc, match=match):
        if mode == "linen":
            module = linen.ECA(**kwargs)
            module.apply(linen.load_canonical(module, None, {"conv.weight": np.ones((1, 1, 3))}), x)
        else:
            layer = _layer(**kwargs)
            _CALL_JIT(layer, x) if mode == "nnx-jit" else layer(x)


# ---------------------------------------------------------------- numbers vs the reference


@pytest.mark.parametrize(
    "case_id", ["cl_c16_k3_3d", "c2_k9_circular_1d", "cl_c32_k3_circular_hard"]
)
def test_matches_reference_nnx_grad(case_id):
    """Gradients through nnx.grad of sum(g * y) (the VJP for upstream g) vs the reference."""
    case, gold = get_case(case_id), load_golden(case_id)
    layer = _layer(gold["w"], **case.layer_kwargs())
    x, g = jnp.asarray(gold["x"], jnp.float32), jnp.asarray(gold["g"], jnp.float32)
    dlayer, dx = nnx.grad(lambda m, x: jnp.sum(m(x) * g), argnums=(0, 1))(layer, x)
    dw = _canonical(dlayer["kernel"][...])
    (y,) = _as_f64(layer(x))
    assert_matches("flax-nnx", case_id, {"y": y, "dx": np.asarray(dx, np.float64), "dw": dw}, gold)


@settings(max_examples=25, deadline=None)
@given(eca_examples())
def test_property_forward_backward(ex):
    layer = _layer(ex["w"], **ex["kwargs"])
    x, g = jnp.asarray(ex["x"], jnp.float32), jnp.asarray(ex["g"], jnp.float32)
    y, dx, dw = _fwd_bwd(layer, x, g, _VJP_JIT)  # jitted: one compile per drawn shape
    got = dict(zip(("y", "dx"), _as_f64(y, dx), strict=True), dw=dw)
    assert_matches("flax-nnx", f"{ex['shape']} {ex['kwargs']}", got, reference_outputs(ex))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_dtype_preserved(dtype, data_format):
    shape = (2, 5, 6, 16) if data_format == "channels_last" else (2, 16, 5, 6)
    rng = np.random.default_rng(1)
    x64 = round_to_dtype(rng.standard_normal(shape), dtype)
    g64 = round_to_dtype(rng.standard_normal(shape), dtype)
    layer = _layer(channels=16, kernel_size=3, data_format=data_format)
    y, dx, dw = _fwd_bwd(layer, jnp.asarray(x64, dtype), jnp.asarray(g64, dtype))
    assert (y.dtype.name, dx.dtype.name) == (dtype, dtype), f"{y.dtype=} {dx.dtype=} for {dtype}"
    w = export_canonical(layer)["conv.weight"]
    kw = dict(data_format=data_format)
    ref = {"y": reference.forward(x64, w, **kw)}
    ref["dx"], ref["dw"] = reference.backward(x64, w, g64, **kw)
    got = dict(zip(("y", "dx"), _as_f64(y, dx), strict=True), dw=dw)
    assert_matches("flax-nnx", f"dtype={dtype}", got, ref, dtype)


def test_empty_batch():
    layer = _layer(channels=8)
    x = jnp.zeros((0, 3, 3, 8))
    assert layer(x).shape == _CALL_JIT(layer, x).shape == (0, 3, 3, 8)
    y, dx, dw = _fwd_bwd(layer, x, x)
    assert y.shape == dx.shape == (0, 3, 3, 8) and np.array_equal(dw, np.zeros((1, 1, 3)))


@pytest.mark.parametrize("padding", ["zeros", "circular"])
def test_nan_propagates_to_neighbour_channels(padding):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 8, 4, 4)).astype(np.float32)
    x[0, 3, 1, 2] = np.nan
    x[1, 0, 0, 0] = np.nan  # at the edge: circular padding wraps the NaN to channel 7
    layer = _layer(channels=8, kernel_size=3, padding=padding, data_format="channels_first")
    out = np.asarray(layer(jnp.asarray(x)))
    ref = reference.forward(x, export_canonical(layer)["conv.weight"], padding=padding)
    assert np.array_equal(np.isnan(out), np.isnan(ref)), "NaN mask differs from the reference"
    nan_channels = [sorted(np.flatnonzero(np.isnan(out[n]).any(axis=(1, 2)))) for n in range(2)]
    want = [[2, 3, 4], [0, 1, 7] if padding == "circular" else [0, 1]]
    assert nan_channels == want, f"NaN output channels {nan_channels}, expected {want}"


def test_channels_none_accepts_any_channel_count():
    layer = _layer(kernel_size=5)
    w = export_canonical(layer)["conv.weight"]
    for c in (1, 3, 17):
        x = np.random.default_rng(c).standard_normal((2, 3, c)).astype(np.float32)
        got = np.asarray(layer(jnp.asarray(x)), np.float64)
        assert_matches(
            "flax-nnx",
            f"C={c}",
            {"y": got},
            {"y": reference.forward(x, w, data_format="channels_last")},
        )


# ---------------------------------------------------------------- transformations


def test_vmap_matches_loop():
    layer = _layer(channels=12, padding="circular")
    x = jnp.asarray(np.random.default_rng(3).standard_normal((3, 2, 4, 12)), jnp.float32)
    stacked = jax.vmap(layer)(x[:, :, None])  # a leading vmapped axis over (N=2, 1, 4, C)
    loop = jnp.stack([layer(xi[:, None]) for xi in x])
    assert np.array_equal(stacked, loop)


def _compiled_and_eager(case_id: str):
    case, gold = get_case(case_id), load_golden(case_id)
    layer = _layer(gold["w"], **case.layer_kwargs())
    x, g = (jnp.asarray(gold[n], case.dtype) for n in ("x", "g"))
    return case, _fwd_bwd(layer, x, g), _fwd_bwd(layer, x, g, nnx.jit(_vjp))


@pytest.mark.parametrize(
    "case_id",
    [
        "c64_k3",
        "c64_k3_hard",
        "cl_c32_k3_circular_hard",
        "c64_k3_saturate",
        "bf16_c64_k3",
        "fp16_cl_c16_k3_3d",
    ],
)
def test_nnx_jit_equals_eager(case_id):
    """Forward: bit-equal. Gradients: measured not bit-equal, so a few-ulp tolerance (below)."""
    case, (ye, dxe, dwe), (yj, dxj, dwj) = _compiled_and_eager(case_id)
    assert np.array_equal(ye, yj), f"{case_id}: nnx.jit forward differs from eager"
    # XLA fuses the backward (the sum over space of g * x, and dx = g * s + dy / M in one loop,
    # 16-bit elementwise work done in float32 with one rounding); eager rounds after every op.
    # Measured: dx <= 2 ulp, dw <= 5e-8 relative in float32, fp16 dw ~1e-3 relative.
    eps = float(jnp.finfo(case.dtype).eps)
    for name, a, b in (("dx", dxe, dxj), ("dw", dwe, dwj)):
        a, b = _as_f64(a, b)
        d, scale = np.abs(a - b).max(), np.abs(b).max()
        assert d <= 4 * eps * scale, (
            f"{case_id}/{name}: eager vs nnx.jit max_abs={d:.2e} > 4 eps * max|{name}| = "
            f"{4 * eps * scale:.2e} (fusion-level rounding differences only are expected)"
        )


@pytest.mark.parametrize("case_id", ["c64_k3", "cl_c2048_k7", "c2_k9_circular_1d", "bf16_c64_k3"])
def test_linen_equals_nnx(case_id):
    """Same weights: Linen apply and the NNX module give identical bits, eager and jitted."""
    case, gold = get_case(case_id), load_golden(case_id)
    state = {"conv.weight": gold["w"].astype(np.float32)}
    layer, module = _layer(gold["w"], **case.layer_kwargs()), linen.ECA(**case.layer_kwargs())
    variables = linen.load_canonical(module, None, state)
    x = jnp.asarray(gold["x"], case.dtype)
    assert np.array_equal(module.apply(variables, x), layer(x)), "eager Linen != eager NNX"
    yl = jax.jit(module.apply)(variables, x)
    assert np.array_equal(yl, _CALL_JIT(layer, x)), "jitted Linen != nnx.jit"
    g = jnp.asarray(gold["g"], case.dtype)
    _, pullback = jax.vjp(module.apply, variables, x)
    dvars, dx = pullback(g)
    _, dxn, dwn = _fwd_bwd(layer, x, g)
    assert np.array_equal(dx, dxn), "Linen dx != NNX dx (both eager)"
    dwl = _canonical(dvars["params"]["kernel"])
    assert np.array_equal(dwl, dwn), "Linen kernel grad != NNX kernel grad (both eager)"


def test_linen_init_shapes_and_dtype():
    module = linen.ECA(channels=64, param_dtype=jnp.bfloat16)
    variables = module.init(jax.random.key(0), jnp.ones((1, 4, 4, 64)))
    assert variables["params"]["kernel"].shape == (3, 1, 1)
    assert variables["params"]["kernel"].dtype == jnp.bfloat16
    assert module.apply(variables, jnp.ones((1, 4, 4, 64), jnp.float16)).dtype == jnp.float16


@settings(max_examples=15, deadline=None)
@given(eca_examples())
def test_property_linen_forward_backward(ex):
    """Flax Linen held to the reference on random shapes and options, forward and backward."""
    module = linen.ECA(**ex["kwargs"])
    variables = linen.load_canonical(module, None, {"conv.weight": ex["w"]})
    x, g = jnp.asarray(ex["x"], jnp.float32), jnp.asarray(ex["g"], jnp.float32)
    y, vjp = jax.vjp(lambda v, x: module.apply(v, x), variables, x)
    dvars, dx = vjp(g)
    dw = linen.export_canonical(module, dvars)["conv.weight"]  # the kernel's gradient, canonical
    got = {"y": np.asarray(y, np.float64), "dx": np.asarray(dx, np.float64), "dw": dw}
    assert_matches("flax-linen", f"{ex['shape']} {ex['kwargs']}", got, reference_outputs(ex))
