"""The private Keras / TensorFlow APIs named in eca_multi/keras/_private.py still do their job.

These tests fail when a Keras or TF release removes or changes one of them, before any layer
test shows a confusing dtype or speed symptom. Each also runs the default (public) behaviour, so
it proves the switch makes a difference rather than that nothing changed.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from eca_multi.keras import _private

BACKEND = keras.backend.backend()


class _Probe(keras.layers.Layer):
    def call(self, x):
        return keras.ops.convert_to_tensor(x)


def _dtype(t) -> str:
    return keras.backend.standardize_dtype(t.dtype)


def test_convert_input_args_switch_keeps_the_input_dtype():
    x = keras.ops.convert_to_tensor(np.ones((2, 3), np.float16))
    plain, kept = _Probe(dtype="float32"), _Probe(dtype="float32")
    _private.accept_numpy_and_keep_dtype(kept)
    assert _dtype(plain(x)) == "float32", f"{BACKEND}: Keras no longer casts inputs by default"
    assert _dtype(kept(x)) == "float16", (
        f"{BACKEND}: Layer._convert_input_args = False no longer keeps a float16 input's dtype"
    )


def test_non_tensor_positional_args_switch_accepts_plain_inputs():
    plain, kept = _Probe(), _Probe()
    _private.accept_numpy_and_keep_dtype(kept)
    with pytest.raises(ValueError, match="Only input tensors may be passed as positional"):
        plain([[1.0, 2.0]])
    assert tuple(kept([[1.0, 2.0]]).shape) == (1, 2), (
        f"{BACKEND}: Layer._allow_non_tensor_positional_args = True no longer accepts a list"
    )


@pytest.mark.skipif(BACKEND != "tensorflow", reason="a TensorFlow op (jax's barrier is public)")
def test_tf_xla_optimization_barrier_exists_and_is_the_identity():
    import tensorflow as tf

    barrier = _private.tf_optimization_barrier()
    assert barrier is not None, "tensorflow.compiler.tf2xla.ops.gen_xla_ops lost its barrier op"
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    got = tf.function(lambda t: barrier([t])[0], jit_compile=True)(tf.constant(x))
    np.testing.assert_array_equal(got.numpy(), x, err_msg="XLA barrier changed its values")
