"""ECA (Efficient Channel Attention, https://arxiv.org/abs/1910.03151) as a Flax Linen module.

Same fields, forward pass (:func:`eca_multi.flax._ops.eca`) and numbers as the NNX
:class:`eca_multi.flax.ECA`. Linen modules hold no weights, so the canonical functions work on a
variables dict: ``{"params": {"kernel": (k, 1, 1)}}`` (or the bare params dict ``{"kernel": ...}``).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from eca_multi.flax import linen
    >>> module = linen.ECA(channels=64)
    >>> variables = module.init(jax.random.key(0), jnp.ones((1, 4, 4, 64)))
    >>> linen.export_canonical(module, variables)["conv.weight"].shape
    (1, 1, 3)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from ..spec import ECAConfig, make_config
from ..weights import Layout, check_state, eca_schema, to_canonical, to_native
from ._ops import eca, kernel_init, native_kernel_shape

__all__ = ["ECA", "export_canonical", "load_canonical"]


class ECA(nn.Module):
    """Efficient Channel Attention (Linen). Fields as :class:`eca_multi.flax.ECA`'s arguments.

    Attributes:
        channels: channel count C; None accepts any C (then ``kernel_size`` is required).
        kernel_size: odd k; None derives it from ``channels`` by the paper's rule.
        gamma: the kernel-size rule's gamma.
        b: the kernel-size rule's b.
        min_kernel_size: smallest k the rule returns.
        padding: "zeros" or "circular".
        gate: "sigmoid" or "hard_sigmoid".
        data_format: "channels_last" (Flax default) or "channels_first".
        param_dtype: dtype of the kernel parameter ``"kernel"`` of shape (k, 1, 1).

    Input shape:
        Rank >= 3: ``(N, *spatial, C)`` (channels_last) or ``(N, C, *spatial)``; any float dtype.

    Output shape:
        Same shape and dtype as the input.
    """

    channels: int | None = None
    kernel_size: int | None = None
    gamma: float = 2
    b: float = 1
    min_kernel_size: int = 1
    padding: str = "zeros"
    gate: str = "sigmoid"
    data_format: str = "channels_last"
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        self.config  # noqa: B018  (validate the fields at construction, like the NNX module)
        super().__post_init__()

    @property
    def config(self) -> ECAConfig:
        return make_config(
            self.channels,
            self.kernel_size,
            self.gamma,
            self.b,
            self.min_kernel_size,
            self.padding,
            self.gate,
            self.data_format,
        )

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        config = self.config
        kernel = self.param("kernel", kernel_init, native_kernel_shape(config), self.param_dtype)
        return eca(config, x, kernel)


def _params(variables: Mapping[str, Any]) -> Mapping[str, Any]:
    return variables["params"] if "params" in variables else variables


def export_canonical(module: ECA, variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Canonical ``{"conv.weight": float32 (1, 1, k)}`` from a Linen ECA's variables.

    Raises:
        WeightMismatchError: the stored kernel does not have the module's kernel size.
    """
    native = np.asarray(_params(variables)["kernel"], dtype=np.float32)
    state = {"conv.weight": to_canonical(native, Layout.CONV1D)}
    check_state(eca_schema(module.config), state, where=module.config.describe("flax.linen.ECA"))
    return state


def load_canonical(
    module: ECA,
    variables: Mapping[str, Any] | None,
    state: Mapping[str, np.ndarray],
    strict: bool = True,
) -> dict[str, Any]:
    """New variables for ``module`` with the kernel from canonical weights (inputs untouched).

    Args:
        module: the Linen ECA the weights are for (its config gives the expected k).
        variables: current variables (``{"params": ...}`` or a bare params dict) whose structure,
            kernel dtype and placement are kept; None builds ``{"params": {"kernel": ...}}``.
        state: canonical weights.
        strict: refuse missing or unexpected keys (a wrong kernel size always fails).

    Raises:
        WeightMismatchError: every missing, unexpected and mis-shaped key at once.
    """
    schema = eca_schema(module.config)
    check_state(schema, state, strict=strict, where=module.config.describe("flax.linen.ECA"))
    if variables is None:
        variables = {
            "params": {"kernel": jnp.zeros(native_kernel_shape(module.config), module.param_dtype)}
        }
    params = dict(_params(variables))
    for name, (_, layout) in schema.items():
        if name in state:  # absent only when strict=False
            old = params["kernel"]
            new = jnp.asarray(to_native(state[name], layout), dtype=old.dtype)
            params["kernel"] = jax.device_put(new, old.sharding)
    return {**variables, "params": params} if "params" in variables else params
