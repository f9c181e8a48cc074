"""The forward passes of ECA and its family in ``jax.numpy``, shared by the NNX and Linen modules.

Paper: Wang et al., "ECA-Net", CVPR 2020, https://arxiv.org/abs/1910.03151; the block is defined
once in :mod:`eca_multi.spec`, the rest of the paper's channel-attention family (SE, SE-Var1/2/3,
SE-GC, ECA-NS) in :mod:`eca_multi.family`. Every member runs :func:`attend` (pool -> mix -> gate
-> scale); only the channel mixing differs (:func:`family_mix`, ECA's :func:`_band`).
Pure functions of (config, x, weights): no host round trip, so they run under ``jax.jit`` /
``nnx.jit``, ``jax.grad`` and ``jax.vmap`` on whatever device holds ``x``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import cast

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..family import AttentionConfig, attention_schema, init_bounds
from ..spec import ECAConfig, check_input, padded_channel_index
from ..weights import Layout, to_native

__all__ = [
    "attend",
    "eca",
    "family_mix",
    "kernel_init",
    "native_kernel_shape",
    "native_params",
    "uniform_init",
]

_HIGHEST = lax.Precision.HIGHEST  # full float32 passes: no TF32 / bf16 on GPUs and TPUs


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


def _pad_channels(y: jax.Array, config: ECAConfig | AttentionConfig) -> jax.Array:
    """(N, C) -> (N, C + 2p): zero padding, or circular (a gather: channel (i - p) mod C)."""
    if config.padding == "circular":  # defined for k > C too
        k = cast(int, config.kernel_size)  # set for eca and eca_ns, the kinds with a padding
        return jnp.take(y, jnp.asarray(padded_channel_index(y.shape[1], k)), 1)
    return jnp.pad(y, ((0, 0), (config.pad, config.pad)))


def _taps(ypad: jax.Array, w: jax.Array, channels: int) -> jax.Array:
    """z[:, i] = sum_j w[j] * ypad[:, i + j]: the k-tap VALID cross-correlation (no flip) as k
    shifted multiply-adds on the padded (N, C + k - 1) vector, one elementwise XLA fusion."""
    z = w[0] * ypad[:, :channels]
    for j in range(1, w.shape[0]):
        z = z + w[j] * ypad[:, j : j + channels]
    return z


def _windows(ypad: jax.Array, channels: int, k: int) -> jax.Array:
    """(N, C + k - 1) padded vector -> (N, C, k): window i holds padded positions i .. i + k - 1."""
    return jnp.stack([ypad[:, j : j + channels] for j in range(k)], axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _band(config: ECAConfig, y: jax.Array, w: jax.Array) -> jax.Array:
    """ECA's channel mixing: pad the pooled (N, C) vector along C, then the (k,) taps ``w``.

    NOTE: an XLA convolution here costs 2-3x the whole layer's memory floor on CPU (a 1-channel
    conv of a tiny vector); the taps cost about nothing. Their autodiff backward, though, got
    fused into the per-pixel dx fusion and recomputed there (3-4x the floor), so the backward is
    written out (the band's transpose is the same taps, flipped) and materialized once.
    """
    return _taps(_pad_channels(y, config), w, y.shape[1])


def _band_fwd(config, y, w):
    return _band(config, y, w), (y, w)


def _band_bwd(config, residuals, dz):
    y, w = residuals
    c, k = y.shape[1], w.shape[0]
    # dy[i] = sum_j w[j] dz[(i + p - j)], the same padding (zeros, or circular mod C for any k)
    dy = _taps(_pad_channels(dz, config), w[::-1], c)
    dw = jnp.einsum("nck,nc->k", _windows(_pad_channels(y, config), c, k), dz, precision=_HIGHEST)
    return lax.optimization_barrier(dy), dw  # the barrier: computed once, not per pixel


_band.defvjp(_band_fwd, _band_bwd)


def gate(
    config: ECAConfig | AttentionConfig,
    x: jax.Array,
    mix: Callable[[jax.Array, jnp.dtype], jax.Array],
    weights: tuple[jax.Array, ...] = (),
    pooled: jax.Array | None = None,
) -> jax.Array:
    """pool -> ``mix`` -> gate: the (N, C) gate of ECA and every family member, in x's dtype.

    ``pooled``: x's (N, C) spatial mean when the caller already has it (a bottleneck block at
    inference: :func:`eca_multi.archs.pools_through_last_conv`); x is then read only by the scale.

    ``mix(y, dtype)`` maps the pooled (N, C) vector to the gate's input z (N, C), computing in
    ``dtype``: at least float32 (16-bit inputs and ``weights`` are upcast). Shapes are static
    under ``jit``, so the input check runs at trace time.
    """
    x = jnp.asarray(x)
    floating = bool(jnp.issubdtype(x.dtype, jnp.floating))
    check_input(config, x.shape, is_floating=floating, dtype=str(x.dtype), backend="flax")
    spatial = config.spatial_axes(x.ndim)
    dtype = jnp.result_type(jnp.float32, x.dtype, *(w.dtype for w in weights))
    m = math.prod(x.shape[a] for a in spatial)  # NOTE: sum * (1/m), as XLA compiles a mean
    if pooled is not None:  # the caller's spatial mean of x
        y = pooled.astype(dtype)
    else:  # NOTE: for 16-bit x the barrier keeps XLA from sharing one float32 copy of x between
        # the pooling and the scale (materialized: 2.6x the floor at 8x28x28x512 bf16)
        xp = lax.optimization_barrier(x) if x.dtype != dtype else x
        y = jnp.sum(xp, axis=spatial, dtype=dtype) * (1.0 / m)  # (N, C); eager == jit bit-equal
    z = mix(y, dtype)  # (N, C)
    return _gate(z, config.gate).astype(x.dtype)


def scale(config: ECAConfig | AttentionConfig, x: jax.Array, s: jax.Array) -> jax.Array:
    """``x * s`` with the (N, C) gate broadcast over the spatial axes."""
    return x * jnp.expand_dims(s, config.spatial_axes(x.ndim))


def attend(
    config: ECAConfig | AttentionConfig,
    x: jax.Array,
    mix: Callable[[jax.Array, jnp.dtype], jax.Array],
    weights: tuple[jax.Array, ...] = (),
) -> jax.Array:
    """pool -> ``mix`` -> gate -> scale: the one code path of ECA and every family member; the
    output has the shape and dtype of ``x``."""
    x = jnp.asarray(x)
    return scale(config, x, gate(config, x, mix, weights))


def _eca_mix(config: ECAConfig, kernel: jax.Array):
    taps = kernel.reshape(-1)
    return lambda y, dt: _band(config, y, taps.astype(dt))


@functools.partial(jax.jit, static_argnums=0)
def eca(config: ECAConfig, x: jax.Array, kernel: jax.Array) -> jax.Array:
    """ECA of ``x`` with the native (k, 1, 1) ``kernel`` (Flax Conv1D layout ``(k, in, out)``).

    The attention path (pooled vector, taps, gate) runs in at least float32; the output has the
    dtype of ``x``. Always compiled (``jax.jit``, ``config`` static; inlined into an enclosing
    ``jit``): XLA contracts the taps' multiply-adds into FMAs, so an op-by-op eager run would
    round differently from ``nnx.jit``; compiled both ways, eager and jit agree bit for bit.
    """
    return attend(config, x, _eca_mix(config, kernel), (kernel,))


@functools.partial(jax.jit, static_argnums=0)
def eca_gate(
    config: ECAConfig, x: jax.Array, kernel: jax.Array, pooled: jax.Array | None = None
) -> jax.Array:
    """ECA's (N, C) gate of ``x`` (from ``pooled``, x's spatial mean, when given); compiled as
    :func:`eca` is, for the same reason."""
    return gate(config, x, _eca_mix(config, kernel), (kernel,), pooled)


# ---------------------------------------------------------------------------------------------
# the rest of the family: native parameters and channel mixing


@functools.lru_cache(maxsize=512)  # configs are frozen (hashable); called on every forward
def native_params(config: AttentionConfig) -> dict[str, tuple[str, tuple[int, ...], Layout, float]]:
    """Native path -> (canonical name, native shape, layout, init bound) of a family member.

    Native paths rename the canonical ``weight`` to Flax's ``kernel`` (``fc1.weight`` ->
    ``fc1.kernel``, ``weight`` -> ``kernel``); shapes are the canonical ones through the layout
    table (CONV2D (out, in, 1, 1) -> (1, 1, in, out); LINEAR (out, in) -> (in, out)). The
    returned dict is shared (cached): do not modify it.
    """
    bounds = init_bounds(config)
    out = {}
    for name, (shape, layout) in attention_schema(config).items():
        path = name[: -len("weight")] + "kernel" if name.endswith("weight") else name
        native = to_native(np.empty(shape, np.float32), layout).shape
        out[path] = (name, tuple(native), layout, bounds[name])
    return out


def uniform_init(bound: float) -> Callable:
    """Initializer drawing U(-bound, bound) (torch's Conv / Linear default, see init_bounds)."""

    def init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)

    return init


def _mix_se_var1(config: AttentionConfig, y: jax.Array, p: Mapping[str, jax.Array]) -> jax.Array:
    return y


def _mix_se_var2(config: AttentionConfig, y: jax.Array, p: Mapping[str, jax.Array]) -> jax.Array:
    return lax.optimization_barrier(y) * p["kernel"]  # no reassociating (sum * 1/m) * w under jit


def _mix_se_var3(config: AttentionConfig, y: jax.Array, p: Mapping[str, jax.Array]) -> jax.Array:
    return jnp.dot(y, p["fc.kernel"], precision=_HIGHEST)  # native (in, out)


def _mix_se(config: AttentionConfig, y: jax.Array, p: Mapping[str, jax.Array]) -> jax.Array:
    # 1x1 conv kernels (1, 1, in, out) on the pooled vector: two matmuls
    h = jnp.dot(y, p["fc1.kernel"][0, 0], precision=_HIGHEST) + p["fc1.bias"]
    return jnp.dot(jax.nn.relu(h), p["fc2.kernel"][0, 0], precision=_HIGHEST) + p["fc2.bias"]


def _mix_se_gc(config: AttentionConfig, y: jax.Array, p: Mapping[str, jax.Array]) -> jax.Array:
    # block-diagonal: W[g*Cg + o, i] multiplies y[g*Cg + i]
    n, c = y.shape
    g = cast(int, config.groups)  # attention_config sets it for se_gc
    wg = p["fc.kernel"].reshape(g, c // g, c // g)  # (G, out, in)
    z = jnp.einsum("ngi,goi->ngo", y.reshape(n, g, c // g), wg, precision=_HIGHEST)
    return z.reshape(n, c)


def _mix_eca_ns(config: AttentionConfig, y: jax.Array, p: Mapping[str, jax.Array]) -> jax.Array:
    # z[c] = sum_j W[c, j] ypad[c + j], a band of k non-shared taps per channel: the (N, C, k)
    # windows of the padded vector contracted with W in one dot (one rounding order, so eager and
    # jit agree bit for bit; a sum of k products would be fused into FMAs by jit)
    c, k = y.shape[1], cast(int, config.kernel_size)  # set for eca_ns
    windows = _windows(_pad_channels(y, config), c, k)
    return jnp.einsum("nck,ck->nc", windows, p["kernel"], precision=_HIGHEST)


# each member's channel mixing, shared by the NNX and Linen modules (ECA's is _band)
MIXES: dict[str, Callable[[AttentionConfig, jax.Array, Mapping[str, jax.Array]], jax.Array]] = {
    "se_var1": _mix_se_var1,
    "se_var2": _mix_se_var2,
    "se_var3": _mix_se_var3,
    "se": _mix_se,
    "se_gc": _mix_se_gc,
    "eca_ns": _mix_eca_ns,
}


def family_mix(
    config: AttentionConfig, y: jax.Array, params: Mapping[str, jax.Array], dtype: jnp.dtype
) -> jax.Array:
    """z = mix(y) of a non-ECA member (:data:`MIXES`); ``params``: native path -> array (see
    native_params), cast to ``dtype``.

    Matmuls run at ``Precision.HIGHEST`` whatever ``jax_default_matmul_precision`` says.
    """
    return MIXES[config.kind](config, y, {k: v.astype(dtype) for k, v in params.items()})
