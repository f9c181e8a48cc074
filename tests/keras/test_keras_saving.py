"""Keras ECA in models: get_config / from_config, .keras files, symbolic inputs with None dims."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from common import assert_matches

from eca_multi import reference
from eca_multi.keras import ECA, export_canonical

BACKEND = keras.backend.backend()
CF, CL = "channels_first", "channels_last"
CONSTRUCTOR_ARGS = {
    "channels",
    "kernel_size",
    "gamma",
    "b",
    "min_kernel_size",
    "padding",
    "gate",
    "data_format",
}


def numpy(t) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(t))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(channels=64),
        dict(
            channels=None,
            kernel_size=5,
            gamma=3,
            b=2,
            min_kernel_size=3,
            padding="circular",
            gate="hard_sigmoid",
            data_format=CL,
            name="eca_x",
            dtype="mixed_bfloat16",
        ),
    ],
    ids=["rule_k", "all_args"],
)
def test_get_config_from_config_round_trip(kwargs):
    layer = ECA(**kwargs)
    config = layer.get_config()
    assert CONSTRUCTOR_ARGS <= set(config), f"missing {CONSTRUCTOR_ARGS - set(config)}"
    assert config["kernel_size"] == kwargs.get("kernel_size"), "kernel_size kept as passed"
    clone = ECA.from_config(config)
    assert clone.get_config() == config
    assert clone.config == layer.config
    assert keras.saving.get_registered_name(ECA) == "eca_multi>ECA"
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(again, ECA) and again.get_config() == config


def test_keras_file_round_trip_identical_outputs(tmp_path):
    inp = keras.Input((9, None, None))
    out = ECA(
        channels=9,
        kernel_size=5,
        padding="circular",
        gate="hard_sigmoid",
        data_format=CF,
        name="eca",
    )(inp)
    model = keras.Model(inp, out)
    x = np.random.default_rng(0).standard_normal((3, 9, 4, 5)).astype(np.float32)
    path = tmp_path / "eca.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    layer = loaded.get_layer("eca")
    assert isinstance(layer, ECA) and layer.config == model.get_layer("eca").config
    np.testing.assert_array_equal(
        export_canonical(layer)["conv.weight"],
        export_canonical(model.get_layer("eca"))["conv.weight"],
    )
    assert np.array_equal(numpy(loaded(x)), numpy(model(x))), "reloaded model differs"


def test_symbolic_input_with_none_dims():
    inp = keras.Input((None, None, 16))  # None batch and spatial dims
    layer = ECA(channels=16, data_format=CL)
    out = layer(inp)
    assert tuple(out.shape) == (None, None, None, 16) and out.dtype == "float32"
    assert layer.compute_output_shape((None, 3, 4, 16)) == (None, 3, 4, 16)
    model = keras.Model(inp, out)
    x = np.random.default_rng(1).standard_normal((3, 5, 4, 16)).astype(np.float32)
    y = model.predict(x, verbose=0)
    want = reference.forward(x, export_canonical(layer)["conv.weight"], data_format=CL)
    assert_matches(f"keras-{BACKEND}", "symbolic", {"y": y}, {"y": want})


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_symbolic_output_keeps_input_dtype(dtype):
    out = ECA(channels=4, data_format=CL)(keras.Input((3, 3, 4), dtype=dtype))
    assert out.dtype == dtype


@pytest.mark.parametrize("channels", [2, 7])
def test_unknown_channel_count_while_tracing(channels):
    """channels=None, circular, k > C: the gather index is built in-graph when C is unknown."""
    layer = ECA(kernel_size=5, padding="circular", data_format=CL)
    x = np.random.default_rng(channels).standard_normal((2, 3, channels)).astype(np.float32)
    if BACKEND == "tensorflow":  # the only backend that traces with unknown (None) dims
        import tensorflow as tf

        fn = tf.function(layer, input_signature=[tf.TensorSpec([None, None, None], tf.float32)])
        y = numpy(fn(x))
    else:
        y = numpy(keras.Model(inp := keras.Input((None, None)), layer(inp)).predict(x, verbose=0))
    want = reference.forward(
        x, export_canonical(layer)["conv.weight"], padding="circular", data_format=CL
    )
    assert_matches(f"keras-{BACKEND}", f"C={channels}", {"y": y}, {"y": want})
