"""Conformance adapter for the Keras 3 ECA: forward and VJP on the current Keras backend.

Variants: ``"eager"`` calls the layer directly and differentiates with the backend's own tool
(``tf.GradientTape``, ``jax.vjp`` over ``layer.stateless_call``, torch autograd); ``"jit"`` runs the
same under the backend's compiler (``tf.function(jit_compile=True)`` i.e. XLA, or ``jax.jit``).
The torch Keras backend has no ``"jit"`` variant. ``KERAS_BACKEND`` is fixed per process.

Every member of the channel-attention family (:data:`ATTENTIONS`) runs through the same code:
the layer comes from :func:`eca_multi.keras.family.make_attention`, weights from the golden's
canonical params, and the gradient of every weight is returned in the canonical layout.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from ..conformance.generate import golden_params
from ..family import ATTENTIONS
from ..weights.layouts import to_canonical
from .family import attention_variables, load_canonical, make_attention
from .io import versions

__all__ = ["ATTENTIONS", "VARIANTS", "run_case", "setup", "vjp", "vjp_params"]

VARIANTS = {"tensorflow": ("eager", "jit"), "jax": ("eager", "jit"), "torch": ("eager",)}


def setup() -> dict:
    """Full precision on the current backend; returns the versions report (and the device)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(False)
    elif backend == "jax":
        import jax

        jax.config.update("jax_default_matmul_precision", "highest")
    elif backend == "torch":
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
    return versions()


def _check_variant(variant: str) -> str:
    backend = keras.backend.backend()
    if variant not in VARIANTS.get(backend, ()):
        raise ValueError(
            f"unknown Keras conformance variant {variant!r} on backend {backend!r}; "
            f"known: {', '.join(VARIANTS.get(backend, ()))}"
        )
    return backend


def _tf_vjp(layer, x, g, jit: bool):
    import tensorflow as tf

    variables = [v.value for v in layer.trainable_variables]

    def f(x, g):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
        dx, *dws = tape.gradient(y, [x, *variables], output_gradients=g)
        return y, dx, dws

    return tf.function(f, jit_compile=True)(x, g) if jit else f(x, g)


def _jax_vjp(layer, x, g, jit: bool):
    import jax

    def f(trainable, non_trainable, x, g):
        fwd = lambda trainable, x: layer.stateless_call(trainable, non_trainable, x)[0]
        y, pullback = jax.vjp(fwd, trainable, x)
        dws, dx = pullback(g)
        return y, dx, list(dws)

    trainable = [v.value for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]
    return (jax.jit(f) if jit else f)(trainable, non_trainable, x, g)


def _torch_vjp(layer, x, g):
    x = x.detach().requires_grad_(True)
    variables = [v.value for v in layer.trainable_variables]
    for v in variables:
        v.grad = None
    y = layer(x)
    y.backward(g)
    return y.detach(), x.grad, [v.grad for v in variables]


def vjp_params(layer, x: Any, g: Any, variant: str = "eager"):
    """``(y, dx, dweights)``: the forward and the VJP for upstream gradient ``g``.

    ``x`` and ``g`` are backend tensors of the input dtype; ``dweights`` lists the gradients of
    ``layer.trainable_variables`` in that order, in the native layouts. The layer must be built.
    """
    backend = _check_variant(variant)
    if backend == "tensorflow":
        return _tf_vjp(layer, x, g, jit=variant == "jit")
    if backend == "jax":
        return _jax_vjp(layer, x, g, jit=variant == "jit")
    return _torch_vjp(layer, x, g)


def vjp(layer, x: Any, g: Any, variant: str = "eager"):
    """``(y, dx, dkernel)`` of a one-weight layer (ECA: dkernel in the native (k, 1, 1) layout)."""
    y, dx, dws = vjp_params(layer, x, g, variant)
    return y, dx, dws[0]


def to_numpy(t) -> np.ndarray:
    """A backend tensor (any float dtype, bf16 included) as float64 NumPy."""
    return np.asarray(keras.ops.convert_to_numpy(t)).astype(np.float64)


def dtype_name(t) -> str:
    return keras.backend.standardize_dtype(t.dtype)


def run_case(variant: str, case, golden: dict) -> dict:
    """Run one conformance case; see :mod:`eca_multi.conformance.backends` for the contract."""
    _check_variant(variant)
    layer = make_attention(case.attention, **case.attention_kwargs())
    load_canonical(layer, golden_params(golden))
    # golden x and g are exactly representable in case.dtype: float32 first, then a lossless cast
    x = keras.ops.cast(keras.ops.convert_to_tensor(golden["x"].astype(np.float32)), case.dtype)
    g = keras.ops.cast(keras.ops.convert_to_tensor(golden["g"].astype(np.float32)), case.dtype)
    y, dx, dws = vjp_params(layer, x, g, variant)
    names = {id(var): (name, layout) for name, (var, layout) in attention_variables(layer).items()}
    dparams = {}
    for var, dw in zip(layer.trainable_variables, dws, strict=True):
        name, layout = names[id(var)]
        dparams[name] = to_canonical(to_numpy(dw), layout)
    return {
        "y": to_numpy(y),
        "dx": to_numpy(dx),
        "dparams": dparams,
        "y_dtype": dtype_name(y),
        "dx_dtype": dtype_name(dx),
    }
