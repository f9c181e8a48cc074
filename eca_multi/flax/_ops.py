"""The ECA forward pass in ``jax.numpy``, shared by the NNX and Linen modules.

Paper: Wang et al., "ECA-Net", CVPR 2020, https://arxiv.org/abs/1910.03151; the block is defined
once in :mod:`eca_multi.spec`. Pure function of (config, x, kernel): no host round trip, so it runs
under ``jax.jit`` / ``nnx.jit``, ``jax.grad`` and ``jax.vmap`` on whatever device holds ``x``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..spec import ECAConfig, check_input, padded_channel_index
from ..weights import Layout, to_native

__all__ = ["eca", "kernel_init", "native_kernel_shape"]


def native_kernel_shape(config: ECAConfig) -> tuple[int, ...]:
    """The kernel's Flax shape (k, in=1, out=1): the canonical (1, 1, k) in Layout.CONV1D."""
    return to_native(np.empty(config.weight_shape, np.float32), Layout.CONV1D).shape


def kernel_init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """uniform(-1/sqrt(k), 1/sqrt(k)) for the (k, 1, 1) kernel, as torch's Conv1d default."""
    bound = 1.0 / np.sqrt(shape[0])
    return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)


def _gate(z: jax.Array, kind: str) -> jax.Array:
    # hard_sigmoid = relu6(z + 3) / 6; relu6's gradient is 0 at the kinks, as in the reference.
    # NOTE: * (1/6), not / 6: XLA rewrites division by a constant into this multiply under jit
    # (but not in eager VJPs), so writing it out keeps eager and compiled results bit-equal.
    return jax.nn.sigmoid(z) if kind == "sigmoid" else jax.nn.relu6(z + 3.0) * (1.0 / 6.0)


def _channel_conv(y: jax.Array, kernel: jax.Array, config: ECAConfig) -> jax.Array:
    """Pad the pooled (N, C) vector along C, then a VALID k-tap cross-correlation (no flip)."""
    if config.padding == "circular":  # a gather: channel (i - p) mod C, defined for k > C
        y = jnp.take(y, jnp.asarray(padded_channel_index(y.shape[1], config.kernel_size)), axis=1)
    else:
        y = jnp.pad(y, ((0, 0), (config.pad, config.pad)))
    # HIGHEST: full float32 passes, no TF32 on GPUs whatever jax_default_matmul_precision says
    z = lax.conv_general_dilated(
        y[:, :, None],
        kernel,
        (1,),
        "VALID",
        dimension_numbers=("NWC", "WIO", "NWC"),
        precision=lax.Precision.HIGHEST,
    )
    return z[:, :, 0]


def eca(config: ECAConfig, x: jax.Array, kernel: jax.Array) -> jax.Array:
    """ECA of ``x`` with the native (k, 1, 1) ``kernel`` (Flax Conv1D layout ``(k, in, out)``).

    The attention path (pooled vector, conv, gate) runs in at least float32; the output has the
    dtype of ``x``. Shapes are static under ``jit``, so the input check runs at trace time.
    """
    x = jnp.asarray(x)
    floating = bool(jnp.issubdtype(x.dtype, jnp.floating))
    check_input(config, x.shape, is_floating=floating, dtype=str(x.dtype), backend="flax")
    spatial = config.spatial_axes(x.ndim)
    dtype = jnp.result_type(jnp.float32, x.dtype, kernel.dtype)  # upcast 16-bit inputs
    m = math.prod(x.shape[a] for a in spatial)  # NOTE: sum * (1/m), as XLA compiles a mean
    y = jnp.sum(x, axis=spatial, dtype=dtype) * (1.0 / m)  # (N, C); eager == jit bit for bit
    z = _channel_conv(y, kernel.astype(dtype), config)  # (N, C)
    s = _gate(z, config.gate).astype(x.dtype)
    return x * jnp.expand_dims(s, spatial)
