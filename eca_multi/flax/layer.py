"""ECA (Efficient Channel Attention, https://arxiv.org/abs/1910.03151) as a Flax NNX module.

The forward pass is :func:`eca_multi.flax._ops.eca`; argument checks, kernel-size policy and repr
come from :mod:`eca_multi.spec`. Canonical weights ``{"conv.weight": (1, 1, k)}`` (torch layout)
go in and out through :mod:`eca_multi.weights` only.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..spec import make_config
from ..weights import Layout, check_state, eca_schema, to_canonical, to_native
from ._ops import eca, eca_gate, kernel_init, native_kernel_shape

__all__ = ["ECA", "export_canonical", "load_canonical"]


class ECA(nnx.Module):
    """Efficient Channel Attention: ``x * gate(conv1d_k(mean_spatial(x)))`` over the channel axis.

    Args:
        channels: channel count C; None accepts any C (then ``kernel_size`` is required).
        kernel_size: odd k; None derives it from ``channels`` by the paper's rule.
        gamma: the kernel-size rule's gamma.
        b: the kernel-size rule's b.
        min_kernel_size: smallest k the rule returns (timm's EcaModule uses 3).
        padding: "zeros" (paper) or "circular" (timm's CECA) padding of the pooled channel vector.
        gate: "sigmoid" or "hard_sigmoid" (``relu6(z + 3) / 6``).
        data_format: "channels_last" (Flax default) or "channels_first".
        param_dtype: dtype of the kernel.
        rngs: random streams; the kernel is drawn from ``rngs.params()``.

    Input shape:
        Rank >= 3: ``(N, *spatial, C)`` (channels_last) or ``(N, C, *spatial)``; any float dtype.

    Output shape:
        Same shape and dtype as the input (the attention path runs in at least float32).

    Example:
        >>> from flax import nnx
        >>> import jax.numpy as jnp
        >>> layer = ECA(channels=64, rngs=nnx.Rngs(0))  # k = 3 by the paper's rule
        >>> layer(jnp.ones((2, 7, 7, 64))).shape
        (2, 7, 7, 64)
    """

    def __init__(
        self,
        channels: int | None = None,
        kernel_size: int | None = None,
        gamma: float = 2,
        b: float = 1,
        min_kernel_size: int = 1,
        padding: str = "zeros",
        gate: str = "sigmoid",
        data_format: str = "channels_last",
        *,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        self.config = make_config(
            channels, kernel_size, gamma, b, min_kernel_size, padding, gate, data_format
        )
        shape = native_kernel_shape(self.config)
        self.kernel = nnx.Param(kernel_init(rngs.params(), shape, param_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        """ECA of ``x``: same shape and dtype."""
        return eca(self.config, x, self.kernel[...])

    def gate(self, x: jax.Array, pooled: jax.Array | None = None) -> jax.Array:
        """The (N, C) gate of ``x`` (from ``pooled``, x's spatial mean, when the caller has it);
        a block scales with it and fuses its own residual add."""
        return eca_gate(self.config, x, self.kernel[...], pooled)

    def __repr__(self) -> str:
        return self.config.describe("flax.nnx.ECA")


def export_canonical(layer: ECA) -> dict[str, np.ndarray]:
    """The layer's weights as canonical ``{"conv.weight": float32 (1, 1, k)}`` (torch layout)."""
    native = np.asarray(layer.kernel[...], dtype=np.float32)
    return {"conv.weight": to_canonical(native, Layout.CONV1D)}


def load_canonical(layer: ECA, state: Mapping[str, np.ndarray], strict: bool = True) -> None:
    """Set the layer's kernel from canonical weights, in place.

    The new kernel keeps the old one's dtype and placement (device / sharding).

    Raises:
        WeightMismatchError: a weight of another kernel size, or (``strict``) missing or
            unexpected keys; every problem is listed at once.
    """
    schema = eca_schema(layer.config)
    check_state(schema, state, strict=strict, where=repr(layer))
    for name, (_, layout) in schema.items():
        if name in state:  # absent only when strict=False
            old = layer.kernel[...]
            new = jnp.asarray(to_native(state[name], layout), dtype=old.dtype)
            layer.kernel[...] = jax.device_put(new, old.sharding)
