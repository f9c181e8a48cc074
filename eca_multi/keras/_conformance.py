"""Conformance adapter for the Keras 3 ECA: forward and VJP on the current Keras backend.

Variants: ``"eager"`` calls the layer directly and differentiates with the backend's own tool
(``tf.GradientTape``, ``jax.vjp`` over ``layer.stateless_call``, torch autograd); ``"jit"`` runs the
same under the backend's compiler (``tf.function(jit_compile=True)`` i.e. XLA, or ``jax.jit``).
The torch Keras backend has no ``"jit"`` variant. ``KERAS_BACKEND`` is fixed per process.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from ..weights.layouts import Layout, to_canonical
from .layer import ECA, load_canonical

__all__ = ["VARIANTS", "run_case", "setup", "vjp"]

VARIANTS = {"tensorflow": ("eager", "jit"), "jax": ("eager", "jit"), "torch": ("eager",)}


def setup() -> dict:
    """Full precision on the current backend; returns versions and the device."""
    backend = keras.backend.backend()
    info = {"keras": keras.__version__, "keras_backend": backend}
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(False)
        gpu = bool(tf.config.list_logical_devices("GPU"))
        info.update(tensorflow=tf.__version__, device="gpu" if gpu else "cpu")
    elif backend == "jax":
        import jax

        jax.config.update("jax_default_matmul_precision", "highest")
        info.update(jax=jax.__version__, device=jax.devices()[0].platform)
    elif backend == "torch":
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        info.update(torch=torch.__version__, device="cuda" if torch.cuda.is_available() else "cpu")
    return info


def _check_variant(variant: str) -> str:
    backend = keras.backend.backend()
    if variant not in VARIANTS.get(backend, ()):
        raise ValueError(
            f"unknown Keras conformance variant {variant!r} on backend {backend!r}; "
            f"known: {', '.join(VARIANTS.get(backend, ()))}"
        )
    return backend


def _tf_vjp(layer: ECA, x, g, jit: bool):
    import tensorflow as tf

    def f(x, g):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
        dx, dw = tape.gradient(y, [x, layer.kernel.value], output_gradients=g)
        return y, dx, dw

    return tf.function(f, jit_compile=True)(x, g) if jit else f(x, g)


def _jax_vjp(layer: ECA, x, g, jit: bool):
    import jax

    def f(kernel, x, g):
        fwd = lambda kernel, x: layer.stateless_call([kernel], [], x)[0]
        y, pullback = jax.vjp(fwd, kernel, x)
        dw, dx = pullback(g)
        return y, dx, dw

    return (jax.jit(f) if jit else f)(layer.kernel.value, x, g)


def _torch_vjp(layer: ECA, x, g):
    x = x.detach().requires_grad_(True)
    kernel = layer.kernel.value
    kernel.grad = None
    y = layer(x)
    y.backward(g)
    return y.detach(), x.grad, kernel.grad


def vjp(layer: ECA, x: Any, g: Any, variant: str = "eager"):
    """``(y, dx, dkernel)`` backend tensors: the forward and the VJP for upstream gradient ``g``.

    ``x`` and ``g`` are backend tensors of the input dtype; ``dkernel`` is in the native (k, 1, 1)
    layout. The layer must be built.
    """
    backend = _check_variant(variant)
    if backend == "tensorflow":
        return _tf_vjp(layer, x, g, jit=variant == "jit")
    if backend == "jax":
        return _jax_vjp(layer, x, g, jit=variant == "jit")
    return _torch_vjp(layer, x, g)


def to_numpy(t) -> np.ndarray:
    """A backend tensor (any float dtype, bf16 included) as float64 NumPy."""
    return np.asarray(keras.ops.convert_to_numpy(t)).astype(np.float64)


def dtype_name(t) -> str:
    return keras.backend.standardize_dtype(t.dtype)


def run_case(variant: str, case, golden: dict) -> dict:
    """Run one conformance case; see :mod:`eca_multi.conformance.backends` for the contract."""
    _check_variant(variant)
    layer = ECA(**case.layer_kwargs())
    load_canonical(layer, {"conv.weight": golden["w"].astype(np.float32)})
    # golden x and g are exactly representable in case.dtype: float32 first, then a lossless cast
    x = keras.ops.cast(keras.ops.convert_to_tensor(golden["x"].astype(np.float32)), case.dtype)
    g = keras.ops.cast(keras.ops.convert_to_tensor(golden["g"].astype(np.float32)), case.dtype)
    y, dx, dw = vjp(layer, x, g, variant)
    return {
        "y": to_numpy(y),
        "dx": to_numpy(dx),
        "dw": to_canonical(to_numpy(dw), Layout.CONV1D),
        "y_dtype": dtype_name(y),
        "dx_dtype": dtype_name(dx),
    }
