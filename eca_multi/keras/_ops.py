"""The pieces every Keras channel-attention layer shares: input check, pooling, gate, scaling.

The paper's family (:mod:`eca_multi.family`) is one block, ``out = x * gate(mix(mean(x)))``; only
``mix`` differs between ECA, ECA-NS, SE and the SE variants. These functions are that shared code
path, with ``keras.ops`` only (tensorflow, jax and torch Keras backends). 16-bit inputs are pooled,
mixed and gated in float32 (float64 stays float64); the output keeps the input dtype.
"""

from __future__ import annotations

import keras
from keras import ops

from ..spec import check_input, padded_channel_index
from . import _private

__all__ = [
    "Gated",
    "attention_dtype",
    "channel_taps",
    "channel_windows",
    "checked_dtype",
    "gate",
    "pool",
    "pooled",
    "scale",
]


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
    if keras.backend.backend() == "jax" and keras.backend.standardize_dtype(x.dtype) != adt:
        # NOTE: 16-bit x under jax.jit: XLA shares one float32 copy of x between this cast and
        # the scale's and materializes it (4x the floor at 8x28x28x512 bf16); the barrier keeps
        # the two apart
        x = _barrier(x)
    return ops.mean(ops.cast(x, adt), axis=config.spatial_axes(x.ndim))


def pooled(x, config, adt: str, given=None):
    """:func:`pool`, or the caller's ``given`` (N, C) spatial mean of x cast to ``adt``."""
    return pool(x, config, adt) if given is None else ops.cast(given, adt)


def gate(z, kind: str):
    """``"sigmoid"`` or ``"hard_sigmoid"`` (``relu6(z + 3) / 6``, torch's and the reference's)."""
    return ops.sigmoid(z) if kind == "sigmoid" else ops.relu6(z + 3.0) / 6.0


def scale(x, s, config, dtype: str, residual=None):
    """``x * s`` with the (N, C) gate cast to the input dtype and broadcast over space; with a
    ``residual``, ``residual + x * s`` (a residual block's gate and shortcut add in one call: one
    fused op on the torch backend, ``torch.addcmul``; XLA fuses the two itself)."""
    s = ops.expand_dims(ops.cast(s, dtype), config.spatial_axes(x.ndim))
    if residual is None:
        return x * s
    if keras.backend.backend() == "torch":
        import torch

        return torch.addcmul(residual, x, s)
    return x * s + residual


def _padded(y, kernel_size: int, padding: str, channels: int | None = None):
    """(N, C) -> (N, C + 2p): zero padding, or circular (channel (i - p) mod C, any k)."""
    k, p = kernel_size, (kernel_size - 1) // 2
    if padding != "circular":
        return ops.pad(y, [[0, 0], [p, p]])
    c = channels if channels is not None else y.shape[1]
    if c is None:  # a traced TF graph with an unknown channel count: indices built in-graph
        return ops.take(y, (ops.arange(ops.shape(y)[1] + 2 * p) - p) % ops.shape(y)[1], axis=1)
    return ops.take(y, padded_channel_index(c, k), axis=1)


def _taps(ypad, w, kernel_size: int):
    """``z[:, i] = sum_j w[j] * ypad[:, i + j]``: k shifted multiply-adds on the padded vector."""
    k, z = kernel_size, None
    for j in range(k):
        tap = w[j] * ypad[:, j : (j - (k - 1)) or None]  # works with an unknown channel count
        z = tap if z is None else z + tap
    return z


def _barrier(t):
    """Materialize ``t`` once under XLA instead of letting it fuse into its per-pixel consumer.

    Without it XLA fuses the band's backward (a few ops on the (N, C) vector) into the dx kernel
    and recomputes it for every pixel: fwd+bwd 1.5-1.8x the floor under jit (measured).
    """
    backend = keras.backend.backend()
    if backend == "jax":
        from jax import lax

        return lax.optimization_barrier(t)
    if backend == "tensorflow":
        import tensorflow as tf

        if tf.executing_eagerly():  # op by op: nothing is fused
            return t
        barrier = _private.tf_optimization_barrier()  # not public TF API (see _private)
        return t if barrier is None else barrier([t])[0]
    return t


def channel_taps(y, w, kernel_size: int, padding: str):
    """ECA's channel mixing: ``z[:, i] = sum_j w[j] * ypad[:, i + j]`` for the (k,) taps ``w``.

    A VALID cross-correlation (no flip, no bias) of the padded pooled vector, written as k shifted
    multiply-adds: one small elementwise kernel (fused under XLA), where a 1-channel Conv1D or a
    gathered (N, C, k) window tensor costs 1.5-2.6x the whole layer's memory floor. On tensorflow
    and jax the backward is written out (the band's transpose is the same taps, flipped).
    """
    k = kernel_size
    if keras.backend.backend() == "torch":  # eager autograd: nothing to fuse or recompute
        return _taps(_padded(y, k, padding), w, k)

    @ops.custom_gradient
    def band(y, w):
        ypad = _padded(y, k, padding)

        def grad(upstream):
            dy = _taps(_padded(upstream, k, padding), ops.flip(w, axis=0), k)
            dw = ops.sum(_windows(ypad, k) * ops.expand_dims(upstream, -1), axis=(0, 1))
            return _barrier(dy), dw

        return _taps(ypad, w, k), grad

    return band(y, w)


def channel_windows(y, kernel_size: int, padding: str, channels: int | None = None):
    """(N, C) -> (N, C, k): window i holds padded positions i .. i + k - 1 (pad (k - 1) // 2 each
    side, zeros or circular as :func:`_padded`; ``channels`` as there)."""
    return _windows(_padded(y, kernel_size, padding, channels), kernel_size)


def _windows(ypad, k: int):
    """The k shifted views of the padded (N, C + k - 1) vector, stacked: (N, C, k)."""
    return ops.stack([ypad[:, j : (j - (k - 1)) or None] for j in range(k)], axis=-1)


_pooled = pooled  # the module function: ``Gated.call`` has an argument of that name


class Gated(keras.layers.Layer):
    """Base of ECA and every family layer: ``call`` runs pool -> ``mix`` -> gate -> scale.

    A subclass calls :meth:`_configure` with its config in ``__init__``, creates its weights in
    ``build`` and defines ``mix(y, adt)`` (the channel mixing of the pooled (N, C) vector in the
    attention dtype). Config, shape and dtype inference, ``get_config`` and ``repr`` live here
    once. ``pooled`` / ``residual`` are what the ResNet blocks pass (:mod:`.models`).
    """

    @staticmethod
    def data_format_or_default(data_format: str | None) -> str:
        """None -> ``keras.config.image_data_format()``: the Keras convention, stored resolved so
        configs reload the same."""
        return keras.config.image_data_format() if data_format is None else data_format

    def _configure(self, config) -> None:
        self.config = config
        _private.accept_numpy_and_keep_dtype(self)  # keep the input dtype (see the ECA docstring)

    def mix(self, y, adt: str):
        raise NotImplementedError

    def call(self, inputs, pooled=None, residual=None):
        """Attention of ``inputs``; ``pooled``: their (N, C) spatial mean if the caller has it
        (a bottleneck block at inference); ``residual``: added to the output (a block's
        shortcut, fused into the scale)."""
        x = ops.convert_to_tensor(inputs)
        cfg = self.config
        dtype = checked_dtype(cfg, x.shape, x.dtype)
        adt = attention_dtype(dtype)
        s = gate(self.mix(_pooled(x, cfg, adt, pooled), adt), cfg.gate)
        return scale(x, s, cfg, dtype, residual)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)

    def compute_output_spec(self, inputs, pooled=None, residual=None) -> keras.KerasTensor:
        # symbolic calls (keras.Input) get the same checks and keep the input dtype
        dtype = checked_dtype(self.config, inputs.shape, inputs.dtype)
        return keras.KerasTensor(inputs.shape, dtype=dtype)

    def get_config(self) -> dict:
        return {**super().get_config(), **self.config.constructor_args()}

    def __repr__(self) -> str:
        return self.config.describe(type(self).__name__)
