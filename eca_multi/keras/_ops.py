"""The pieces every Keras channel-attention layer shares: input check, pooling, gate, scaling.

The paper's family (:mod:`eca_multi.family`) is one block, ``out = x * gate(mix(mean(x)))``; only
``mix`` differs between ECA, ECA-NS, SE and the SE variants. These functions are that shared code
path, with ``keras.ops`` only (tensorflow, jax and torch Keras backends). 16-bit inputs are pooled,
mixed and gated in float32 (float64 stays float64); the output keeps the input dtype.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from ..spec import check_input, padded_channel_index

__all__ = ["attention_dtype", "channel_windows", "checked_dtype", "gate", "pool", "scale"]


def attention_dtype(dtype: str) -> str:
    """The attention path runs in at least float32 (16-bit inputs are upcast)."""
    return "float64" if dtype == "float64" else "float32"


def checked_dtype(config, shape, dtype) -> str:
    """The shared input check (:func:`eca_multi.spec.check_input`); the standardized dtype name."""
    dtype = keras.backend.standardize_dtype(dtype)
    floating = keras.backend.is_float_dtype(dtype)
    check_input(config, tuple(shape), is_floating=floating, dtype=dtype, backend="keras")
    return dtype


def pool(x, config, adt: str):
    """Mean over the spatial axes in the attention dtype: (N, C)."""
    return ops.mean(ops.cast(x, adt), axis=config.spatial_axes(x.ndim))


def gate(z, kind: str):
    """``"sigmoid"`` or ``"hard_sigmoid"`` (``relu6(z + 3) / 6``, torch's and the reference's)."""
    return ops.sigmoid(z) if kind == "sigmoid" else ops.relu6(z + 3.0) / 6.0


def scale(x, s, config, dtype: str):
    """``x * s`` with the (N, C) gate cast to the input dtype and broadcast over space."""
    return x * ops.expand_dims(ops.cast(s, dtype), config.spatial_axes(x.ndim))


def channel_windows(y, kernel_size: int, padding: str, channels: int | None = None):
    """(N, C) -> (N, C, k): each channel's k padded neighbours, gathered in one op.

    Window i covers padded positions i .. i + k - 1 (pad (k - 1) // 2 each side); ``"zeros"``
    gathers them from the zero-padded vector, ``"circular"`` from y itself with channel indices
    modulo C (:func:`eca_multi.spec.padded_channel_index`, so k > C works). ``channels`` defaults
    to y's static channel count; if that is unknown (a traced TF graph), indices are built in-graph.
    """
    k, p = kernel_size, (kernel_size - 1) // 2
    c = channels if channels is not None else y.shape[1]
    if c is None:
        c = ops.shape(y)[1]
        window = ops.arange(c)[:, None] + ops.arange(k)[None, :]
        circular = (window - p) % c
    else:
        window = np.arange(c)[:, None] + np.arange(k)[None, :]
        circular = padded_channel_index(c, k)[window]
    if padding == "circular":
        return ops.take(y, circular, axis=1)
    return ops.take(ops.pad(y, [[0, 0], [p, p]]), window, axis=1)
