"""ECA (Efficient Channel Attention, https://arxiv.org/abs/1910.03151) as a Flax Linen module.

Same fields, forward pass (:func:`eca_multi.flax._ops.eca`) and numbers as the NNX
:class:`eca_multi.flax.ECA`. Linen modules hold no weights, so the canonical functions work on a
variables dict: ``{"params": {"kernel": (k, 1, 1)}}`` (or the bare params dict ``{"kernel": ...}``).

The rest of the paper's channel-attention family (:mod:`eca_multi.flax.family`) has Linen twins
here too: :class:`ECANS`, :class:`SE`, :class:`SEVar1`, :class:`SEVar2`, :class:`SEVar3`,
:class:`SEGC` (and :func:`make_attention`), on the same ops and with the same native parameter
paths as the NNX modules (``{"params": {"fc1": {"kernel": ..., "bias": ...}, ...}}``);
:func:`export_canonical` / :func:`load_canonical` take any of them.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from eca_multi.flax import linen
    >>> module = linen.ECA(channels=64)
    >>> variables = module.init(jax.random.key(0), jnp.ones((1, 4, 4, 64)))
    >>> linen.export_canonical(module, variables)["conv.weight"].shape
    (1, 1, 3)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from ..family import AttentionConfig, attention_config, attention_schema
from ..spec import ECAConfig, make_config
from ..weights import Layout, check_state, eca_schema, to_canonical, to_native
from ._ops import (
    attend,
    eca,
    family_mix,
    kernel_init,
    native_kernel_shape,
    native_params,
    uniform_init,
)

__all__ = [
    "ECA",
    "ECANS",
    "SE",
    "SEGC",
    "SEVar1",
    "SEVar2",
    "SEVar3",
    "export_canonical",
    "load_canonical",
    "make_attention",
]


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


def export_canonical(
    module: ECA | _Attention, variables: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """Canonical weights (``{"conv.weight": float32 (1, 1, k)}`` for ECA) from a module's variables.

    Raises:
        WeightMismatchError: the stored weights do not have the module's shapes.
    """
    if isinstance(module, _Attention):
        return _export_family(module, variables)
    native = np.asarray(_params(variables)["kernel"], dtype=np.float32)
    state = {"conv.weight": to_canonical(native, Layout.CONV1D)}
    check_state(eca_schema(module.config), state, where=module.config.describe("flax.linen.ECA"))
    return state


def load_canonical(
    module: ECA | _Attention,
    variables: Mapping[str, Any] | None,
    state: Mapping[str, np.ndarray],
    strict: bool = True,
) -> dict[str, Any]:
    """New variables for ``module`` with the kernel from canonical weights (inputs untouched).

    Args:
        module: the Linen ECA (or family module) the weights are for (its config gives the
            expected shapes).
        variables: current variables (``{"params": ...}`` or a bare params dict) whose structure,
            dtypes and placement are kept; None builds ``{"params": {...}}`` from the module.
        state: canonical weights.
        strict: refuse missing or unexpected keys (a wrong kernel size always fails).

    Raises:
        WeightMismatchError: every missing, unexpected and mis-shaped key at once.
    """
    if isinstance(module, _Attention):
        return _load_family(module, variables, state, strict)
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


# ---------------------------------------------------------------------------------------------
# the rest of the channel-attention family (eca_multi.family), on the ops of the NNX modules

_BASE_FIELDS = ("channels", "gate", "data_format", "param_dtype", "parent", "name")


class _Params(nn.Module):
    """A sub-layer's parameters (``fc1`` -> ``{"kernel", "bias"}``), returned by name."""

    specs: tuple[tuple[str, tuple[int, ...], float], ...]
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self) -> dict[str, jax.Array]:
        return {
            n: self.param(n, uniform_init(b), shape, self.param_dtype) for n, shape, b in self.specs
        }


class _Attention(nn.Module):
    """Base of the Linen family modules; a subclass sets ``KIND`` and its own fields."""

    KIND = ""

    def __post_init__(self) -> None:
        self.config  # noqa: B018  (validate the fields at construction, like the NNX modules)
        super().__post_init__()

    @property
    def config(self) -> AttentionConfig:
        names = [f.name for f in dataclasses.fields(self) if f.name not in _BASE_FIELDS]
        kw = {n: getattr(self, n) for n in names}
        # KIND is never "eca" (ECA has its own module): an AttentionConfig
        return cast(
            AttentionConfig,
            attention_config(
                self.KIND, self.channels, gate=self.gate, data_format=self.data_format, **kw
            ),
        )

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        config = self.config
        params: dict[str, jax.Array] = {}
        nested: dict[str, list[tuple[str, tuple[int, ...], float]]] = {}
        for path, (_, shape, _, bound) in native_params(config).items():
            if "." in path:
                sub, leaf = path.split(".")
                nested.setdefault(sub, []).append((leaf, shape, bound))
            else:
                params[path] = self.param(path, uniform_init(bound), shape, self.param_dtype)
        for sub, specs in nested.items():
            got = _Params(tuple(specs), self.param_dtype, name=sub)()
            params.update({f"{sub}.{leaf}": v for leaf, v in got.items()})
        return attend(
            config, x, lambda y, dt: family_mix(config, y, params, dt), tuple(params.values())
        )

    def __repr__(self) -> str:
        return self.config.describe(f"flax.linen.{self.config.name}")


class ECANS(_Attention):
    """ECA-NS (Linen): k non-shared taps per channel. Fields as :class:`eca_multi.flax.ECANS`."""

    KIND = "eca_ns"
    channels: int
    kernel_size: int | None = None
    gamma: float = 2
    b: float = 1
    min_kernel_size: int = 1
    padding: str = "zeros"
    gate: str = "sigmoid"
    data_format: str = "channels_last"
    param_dtype: Any = jnp.float32


class SE(_Attention):
    """SE (Linen): FC -> ReLU -> FC with bias. Fields as :class:`eca_multi.flax.SE`."""

    KIND = "se"
    channels: int
    reduction: int = 16
    rd_channels: int | None = None
    rd_divisor: int = 1
    gate: str = "sigmoid"
    data_format: str = "channels_last"
    param_dtype: Any = jnp.float32


class SEVar1(_Attention):
    """SE-Var1 (Linen): ``gate(y)``, no parameters."""

    KIND = "se_var1"
    channels: int
    gate: str = "sigmoid"
    data_format: str = "channels_last"
    param_dtype: Any = jnp.float32


class SEVar2(_Attention):
    """SE-Var2 (Linen): ``gate(w * y)``, parameter ``kernel`` (C,)."""

    KIND = "se_var2"
    channels: int
    gate: str = "sigmoid"
    data_format: str = "channels_last"
    param_dtype: Any = jnp.float32


class SEVar3(_Attention):
    """SE-Var3 (Linen): ``gate(W y)``, parameter ``fc/kernel`` (C in, C out)."""

    KIND = "se_var3"
    channels: int
    gate: str = "sigmoid"
    data_format: str = "channels_last"
    param_dtype: Any = jnp.float32


class SEGC(_Attention):
    """SE-GC (Linen): block-diagonal ``W y`` in ``groups`` groups, parameter ``fc/kernel``."""

    KIND = "se_gc"
    channels: int
    groups: int | None = None
    gate: str = "sigmoid"
    data_format: str = "channels_last"
    param_dtype: Any = jnp.float32


_CLASSES = {c.KIND: c for c in (ECANS, SE, SEVar1, SEVar2, SEVar3, SEGC)}


def make_attention(kind: str, channels: int, **kwargs: Any) -> ECA | _Attention:
    """Any family member as a Linen module ("eca" gives :class:`ECA`); kwargs as the NNX
    :func:`eca_multi.flax.family.make_attention` (validated by ``attention_config``)."""
    param_dtype = kwargs.pop("param_dtype", jnp.float32)
    kwargs.setdefault("data_format", "channels_last")
    config = attention_config(kind, channels, **kwargs)
    if isinstance(config, ECAConfig):
        args = config.constructor_args()
        return ECA(**args, param_dtype=param_dtype)
    return _CLASSES[kind](**config.constructor_args(), param_dtype=param_dtype)


def _export_family(module: _Attention, variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    params, state = _params(variables), {}
    for path, (name, _, layout, _) in native_params(module.config).items():
        node = params
        for part in path.split("."):
            node = node[part]
        state[name] = to_canonical(np.asarray(node, dtype=np.float32), layout)
    check_state(attention_schema(module.config), state, where=repr(module))
    return state


def _load_family(
    module: _Attention,
    variables: Mapping[str, Any] | None,
    state: Mapping[str, np.ndarray],
    strict: bool,
) -> dict[str, Any]:
    config = module.config
    check_state(attention_schema(config), state, strict=strict, where=repr(module))
    specs = native_params(config)
    if variables is None:
        zeros: dict[str, Any] = {}
        for path, (_, shape, _, _) in specs.items():
            node = zeros
            *subs, leaf = path.split(".")
            for sub in subs:
                node = node.setdefault(sub, {})
            node[leaf] = jnp.zeros(shape, module.param_dtype)
        variables = {"params": zeros}
    params = jax.tree.map(lambda a: a, dict(_params(variables)))  # fresh containers, same leaves
    for path, (name, _, layout, _) in specs.items():
        if name not in state:  # absent only when strict=False
            continue
        *subs, leaf = path.split(".")
        node = params
        for sub in subs:
            node[sub] = dict(node[sub])
            node = node[sub]
        old = node[leaf]
        new = jnp.asarray(to_native(np.asarray(state[name]), layout), dtype=old.dtype)
        node[leaf] = jax.device_put(new, old.sharding)
    return {**variables, "params": params} if "params" in variables else params
