"""The private Keras and TensorFlow APIs this backend relies on, named in this one place.

Each has no public equivalent in Keras 3.15 / TF 2.21; tests/keras/test_keras_private_apis.py
fails when one disappears or stops doing what we use it for:

* ``Layer._convert_input_args = False``: Keras casts floating inputs to the layer's compute
  dtype before ``call``; ECA and its family keep the input's dtype (a bf16 / fp16 input gives a
  bf16 / fp16 output, the attention path runs in float32 inside), as Keras' own preprocessing
  layers do with the same switch.
* ``Layer._allow_non_tensor_positional_args = True``: NumPy inputs are accepted as positional
  arguments (converted in ``call``), as Keras layers accept them.
* ``tensorflow.compiler.tf2xla.ops.gen_xla_ops.xla_optimization_barrier``: XLA's optimization
  barrier as a TF op (``jax.lax.optimization_barrier`` on jax is public). Without it the
  backward only runs slower, so its absence falls back to the identity.
"""

from __future__ import annotations

from typing import Any

__all__ = ["accept_numpy_and_keep_dtype", "tf_optimization_barrier"]


def accept_numpy_and_keep_dtype(layer: Any) -> None:
    """Keep the input dtype (no cast to the compute dtype) and accept NumPy positional inputs."""
    layer._convert_input_args = False
    layer._allow_non_tensor_positional_args = True


def tf_optimization_barrier():
    """TF's XLA optimization barrier op (a function of a list of tensors), or None."""
    try:
        from tensorflow.compiler.tf2xla.ops import gen_xla_ops
    except ImportError:
        return None
    return getattr(gen_xla_ops, "xla_optimization_barrier", None)
