"""Keras ECA layer: arguments, input checks, numerics and gradients vs the reference, dtypes.

Runs on this process's Keras backend (KERAS_BACKEND; tensorflow by default);
test_keras_other_backends.py runs the folder again under the other two backends.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
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
from eca_multi.keras import ECA, export_canonical, load_canonical, make_attention
from eca_multi.keras._conformance import dtype_name, to_numpy, vjp

BACKEND = keras.backend.backend()
CF, CL = "channels_first", "channels_last"


def tensor(x64: np.ndarray, dtype: str = "float32"):
    """A backend tensor of ``dtype`` holding float64 values exactly representable in it."""
    return keras.ops.cast(keras.ops.convert_to_tensor(x64.astype(np.float32)), dtype)


def example(shape, dtype="float32", seed=0, scale=1.0, k=None):
    """Seeded float64 x, g (representable in dtype) and an asymmetric kernel w (1, 1, k)."""
    rng = np.random.default_rng(seed)
    x = round_to_dtype(rng.standard_normal(shape) * scale, dtype)
    g = round_to_dtype(rng.standard_normal(shape), dtype)
    w = round_to_dtype(rng.uniform(-1, 1, size=(1, 1, k)), "float32") if k else None
    return x, g, w


def layer_with(w: np.ndarray, **kwargs) -> ECA:
    layer = ECA(kernel_size=w.shape[-1], **kwargs)
    load_canonical(layer, {"conv.weight": w})
    return layer


def run(layer: ECA, x64, g64, dtype="float32", variant="eager") -> dict:
    y, dx, dw = vjp(layer, tensor(x64, dtype), tensor(g64, dtype), variant)
    out = {"y": to_numpy(y), "dx": to_numpy(dx), "dw": np.transpose(to_numpy(dw), (2, 1, 0))}
    out.update(y_dtype=dtype_name(y), dx_dtype=dtype_name(dx))
    return out


def ref(x64, g64, w, **kw) -> dict:
    dx, dw = reference.backward(x64, w, g64, **kw)
    return {"y": reference.forward(x64, w, **kw), "dx": dx, "dw": dw}


# --- arguments -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, exc, match", [c[1:] for c in BAD_CONSTRUCTOR], ids=[c[0] for c in BAD_CONSTRUCTOR]
)
def test_bad_constructor_raises(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ECA(**kwargs)


@pytest.mark.parametrize("mode", ["eager", "symbolic"])
@pytest.mark.parametrize(
    "kwargs, shape, dtype, exc, match", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_raises(kwargs, shape, dtype, exc, match, mode):
    layer = ECA(**kwargs, data_format=CF)
    x = np.zeros(shape, dtype) if mode == "eager" else keras.Input(shape[1:], dtype=dtype)
    with pytest.raises(exc, match=match):
        layer(x)


@pytest.mark.parametrize("channels, k", [(1, 1), (8, 3), (64, 3), (256, 5), (2048, 7)])
def test_kernel_size_from_rule(channels, k):
    layer = ECA(channels=channels)
    layer.build(None)
    assert layer.config.kernel_size == k == rule_kernel_size(channels)
    assert tuple(layer.kernel.shape) == (k, 1, 1), "Keras Conv1D layout (k, in=1, out=1)"


def test_kernel_size_min_gamma_b_and_explicit():
    assert ECA(channels=2).config.kernel_size == 1
    assert ECA(channels=2, min_kernel_size=3).config.kernel_size == 3  # timm's EcaModule
    assert ECA(channels=64, gamma=1, b=2).config.kernel_size == rule_kernel_size(64, 1, 2) == 9
    assert ECA(channels=64, kernel_size=7).config.kernel_size == 7  # explicit k wins


def test_kernel_init_is_torch_conv1d_default():
    for k in (1, 3, 9):
        layer = ECA(kernel_size=k)
        layer.build(None)
        w = to_numpy(layer.kernel.value)
        assert layer.kernel.dtype == "float32" and layer.kernel.path.endswith("kernel")
        assert np.all(np.abs(w) <= 1 / np.sqrt(k)), f"k={k}: {w.ravel()} outside +-1/sqrt(k)"
    a, b = ECA(kernel_size=9), ECA(kernel_size=9)
    a.build(None), b.build(None)
    assert not np.array_equal(to_numpy(a.kernel.value), to_numpy(b.kernel.value)), (
        "init is not random"
    )


def test_data_format_none_follows_keras_config():
    assert ECA(channels=4).config.data_format == keras.config.image_data_format()
    old = keras.config.image_data_format()
    try:
        keras.config.set_image_data_format("channels_first")
        layer = ECA(channels=4)
    finally:
        keras.config.set_image_data_format(old)
    assert layer.config.data_format == CF
    assert layer.get_config()["data_format"] == CF, "stored resolved, so a reload is the same"


def test_repr_and_weights():
    layer = ECA(channels=64, padding="circular", data_format=CL)
    assert (
        repr(layer) == "ECA(channels=64, kernel_size=3, padding='circular', data_format="
        "'channels_last')"
    )
    layer.build(None)
    assert [v.path.split("/")[-1] for v in layer.trainable_weights] == ["kernel"]


# --- numerics vs the float64 reference -------------------------------------------------------

REF_CASES = [
    # id, shape, k, layer kwargs
    ("2d_cf", (2, 16, 5, 7), 3, dict(data_format=CF)),
    (
        "1d_cl_circular_hard",
        (3, 9, 12),
        5,
        dict(data_format=CL, padding="circular", gate="hard_sigmoid"),
    ),
    ("3d_cf_k_gt_c_circular", (2, 3, 2, 3, 4), 9, dict(data_format=CF, padding="circular")),
    ("2d_cl_k_gt_c_zeros", (2, 4, 3, 2), 7, dict(data_format=CL)),
]


@pytest.mark.parametrize(
    "shape, k, kwargs", [c[1:] for c in REF_CASES], ids=[c[0] for c in REF_CASES]
)
def test_forward_backward_match_reference(shape, k, kwargs):
    x, g, w = example(shape, k=k, seed=k)
    got = run(layer_with(w, **kwargs), x, g)
    assert_matches(f"keras-{BACKEND}", str(shape), got, ref(x, g, w, **kwargs))


@settings(max_examples=25, deadline=None)
@given(ex=eca_examples())
def test_property_matches_reference(ex):
    layer = ECA(**ex["kwargs"])
    load_canonical(layer, {"conv.weight": ex["w"]})
    # eager JAX compiles every primitive for each new shape (~30 XLA compiles, 2-3 s per example
    # on this CPU); jax.jit compiles once (~0.4 s). Eager JAX is checked by the fixed cases above.
    got = run(layer, ex["x"], ex["g"], variant="jit" if BACKEND == "jax" else "eager")
    assert_matches(f"keras-{BACKEND}", f"{ex['shape']} {ex['kwargs']}", got, reference_outputs(ex))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_dtype_preserved_and_accurate(dtype):
    x, g, w = example((2, 5, 4, 24), dtype=dtype, k=3)
    got = run(layer_with(w, data_format=CL), x, g, dtype)
    assert (got["y_dtype"], got["dx_dtype"]) == (dtype, dtype), "output/grad dtype != input dtype"
    assert_matches(f"keras-{BACKEND}", dtype, got, ref(x, g, w, data_format=CL), dtype)


def test_channels_none_accepts_any_channel_count():
    layer = ECA(kernel_size=3, data_format=CF)
    for c in (1, 5, 20):
        x, _, _ = example((2, c, 3, 3), seed=c)
        y = to_numpy(layer(tensor(x)))
        want = reference.forward(x, export_canonical(layer)["conv.weight"])
        assert_matches(f"keras-{BACKEND}", f"C={c}", {"y": y}, {"y": want})


@pytest.mark.parametrize("data_format", [CF, CL])
def test_empty_batch(data_format):
    shape = (0, 8, 3, 3) if data_format == CF else (0, 3, 3, 8)
    layer = ECA(channels=8, data_format=data_format)
    layer.build(None)
    x = tensor(np.zeros(shape))
    y, dx, dw = vjp(layer, x, x)
    assert tuple(y.shape) == shape and dtype_name(y) == "float32"
    assert tuple(dx.shape) == shape
    np.testing.assert_array_equal(to_numpy(dw), 0.0, err_msg="no samples, no kernel gradient")


@pytest.mark.parametrize("padding", ["zeros", "circular"])
@pytest.mark.parametrize("gate", ["sigmoid", "hard_sigmoid"])
def test_nan_propagates_to_neighbour_channels_only(padding, gate):
    x, _, w = example((2, 16, 4, 4), k=5)
    x[0, 0, 1, 2] = np.nan  # channel 0: its neighbours are 1, 2 (and 14, 15 when circular)
    got = to_numpy(layer_with(w, padding=padding, gate=gate, data_format=CF)(tensor(x)))
    want = reference.forward(x, w, padding=padding, gate=gate)
    nan_channels = sorted(set(np.nonzero(np.isnan(got))[1]))
    assert np.array_equal(np.isnan(got), np.isnan(want)), f"NaN in channels {nan_channels}"
    assert_matches(f"keras-{BACKEND}", "nan", {"y": got}, {"y": want})


# --- dtype policies ----------------------------------------------------------------------------


def test_mixed_bfloat16_policy():
    x, g, w = example((2, 4, 4, 16), dtype="bfloat16", k=3)
    mixed = layer_with(w, data_format=CL, dtype="mixed_bfloat16")
    plain = layer_with(w, data_format=CL)
    assert (mixed.kernel.dtype, mixed.compute_dtype) == ("float32", "bfloat16")
    got = run(mixed, x, g, "bfloat16")
    assert (got["y_dtype"], got["dx_dtype"]) == ("bfloat16", "bfloat16")
    assert_matches(f"keras-{BACKEND}", "mixed_bf16", got, ref(x, g, w, data_format=CL), "bfloat16")
    # the kernel is read without autocast: same numbers as a float32-policy layer
    same = run(plain, x, g, "bfloat16")
    assert np.array_equal(got["y"], same["y"]), "mixed policy changed the attention precision"
    # float32 input keeps float32 (the layer never casts its input)
    assert dtype_name(mixed(tensor(x))) == "float32"


def test_mixed_bfloat16_in_a_model():
    inp = keras.Input((4, 4, 8))
    h = keras.layers.Activation("relu", dtype="mixed_bfloat16")(inp)  # casts its input to bf16
    out = ECA(channels=8, data_format=CL, dtype="mixed_bfloat16")(h)
    assert out.dtype == "bfloat16"
    y = keras.Model(inp, out)(np.ones((2, 4, 4, 8), np.float32))
    assert dtype_name(y) == "bfloat16" and tuple(y.shape) == (2, 4, 4, 8)


@pytest.mark.parametrize("kind", ["eca", "se"])
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_pooled_and_residual_arguments(kind, data_format):
    """What the ResNet blocks pass: ``pooled`` (the input's spatial mean) gives the layer's own
    output, ``residual`` adds the shortcut in the same call (torch backend: one addcmul)."""
    layer = make_attention(kind, 32, data_format=data_format)
    x64 = np.random.default_rng(7).standard_normal((2, 32, 5, 6))
    if data_format == "channels_last":
        x64 = np.ascontiguousarray(x64.transpose(0, 2, 3, 1))
    r64 = np.random.default_rng(8).standard_normal(x64.shape)
    axes = (2, 3) if data_format == "channels_first" else (1, 2)
    x, r = tensor(x64), tensor(r64)
    own = to_numpy(layer(x)).astype(np.float64)
    mean = keras.ops.mean(x, axis=axes)
    given = to_numpy(layer(x, pooled=mean)).astype(np.float64)
    d = float(np.abs(given - own).max())
    assert d <= 1e-6, f"{BACKEND}/{kind}/{data_format}: pooled= vs own pooling max_abs={d:.2e}"
    fused = to_numpy(layer(x, residual=r)).astype(np.float64)
    d = float(np.abs(fused - (own + r64.astype(np.float32))).max())
    assert d <= 1e-6, f"{BACKEND}/{kind}/{data_format}: residual= vs layer(x) + r max_abs={d:.2e}"
    assert float(np.abs(fused - own).max()) > 0.1  # the residual really was added
