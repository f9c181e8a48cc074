"""The paper's channel-attention family as Flax NNX modules: ECA-NS, SE, SE-Var1/2/3 and SE-GC.

ECA-Net (Wang et al., CVPR 2020, https://arxiv.org/abs/1910.03151) Table 2 compares ECA with SE
and with SE variants that drop the channel reduction; :mod:`eca_multi.family` defines them (math,
canonical weights, init, parameter counts). Every module here runs the same
:func:`eca_multi.flax._ops.attend` as :class:`eca_multi.flax.ECA` (pool -> mix -> gate -> scale);
only the mixing differs (:func:`eca_multi.flax._ops.family_mix`). Argument checks, errors and
repr come from :func:`eca_multi.family.attention_config`.

Native parameters (``nnx.state`` paths) and their canonical (torch ``state_dict``) names:

=======  =====================================  =============================================
class    native path: shape                     canonical name: shape (layout)
=======  =====================================  =============================================
ECANS    ``kernel``: (C, k)                     ``weight``: (C, k) (same)
SE       ``fc1.kernel``: (1, 1, C, C/r),        ``fc1.weight``: (C/r, C, 1, 1) (1x1 Conv2d),
         ``fc1.bias``: (C/r,),                  ``fc1.bias``: (C/r,),
         ``fc2.kernel``: (1, 1, C/r, C),        ``fc2.weight``: (C, C/r, 1, 1) (1x1 Conv2d),
         ``fc2.bias``: (C,)                     ``fc2.bias``: (C,)
SEVar1   (none)                                 (none)
SEVar2   ``kernel``: (C,)                       ``weight``: (C,)
SEVar3   ``fc.kernel``: (C in, C out)           ``fc.weight``: (C out, C in) (Linear)
SEGC     ``fc.kernel``: (C, C/G)                ``fc.weight``: (C, C/G) (same)
=======  =====================================  =============================================

Example:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> se = make_attention("se", 64, rngs=nnx.Rngs(0))  # SENet's C // 16 = 4 hidden units
    >>> se(jnp.ones((2, 7, 7, 64))).shape, export_canonical(se)["fc1.weight"].shape
    ((2, 7, 7, 64), (4, 64, 1, 1))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..family import ATTENTIONS, AttentionConfig, attention_config, attention_schema
from ..spec import ECAConfig
from ..weights import check_state, to_canonical, to_native
from . import layer as _eca_layer
from ._ops import attend, family_mix, gate, native_params, uniform_init
from .layer import ECA

__all__ = [
    "ATTENTIONS",
    "ECANS",
    "SE",
    "SEGC",
    "SEVar1",
    "SEVar2",
    "SEVar3",
    "export_canonical",
    "from_config",
    "load_canonical",
    "make_attention",
]

_DEFAULT_FORMAT = "channels_last"  # as Flax's ECA (NHWC is the Flax convention)


class _Weights(nnx.Module):
    """Holder of a sub-layer's parameters (``fc1.kernel`` / ``fc1.bias`` ...): state paths only."""


class _Attention(nnx.Module):
    """Base of the family modules: parameters from :func:`native_params`, forward by ``attend``."""

    def __init__(
        self,
        kind: str,
        channels: int,
        gate: str,
        data_format: str,
        param_dtype: Any,
        rngs: nnx.Rngs | None,
        **kind_args: Any,
    ) -> None:
        # every kind but "eca" (an ECAConfig, built by ECA itself) gives an AttentionConfig
        self.config = cast(
            AttentionConfig,
            attention_config(kind, channels, gate=gate, data_format=data_format, **kind_args),
        )
        specs = native_params(self.config)
        if specs and rngs is None:
            raise TypeError(f"{self.config.name} needs rngs (nnx.Rngs) to draw its weights")
        for path, (_, shape, _, bound) in specs.items():  # drawn in canonical schema order
            holder, leaf = self, path
            if "." in path:
                sub, leaf = path.split(".")
                if not hasattr(self, sub):
                    setattr(self, sub, _Weights())
                holder = getattr(self, sub)
            draw = cast(nnx.Rngs, rngs).params  # not None: checked above when there are specs
            value = uniform_init(bound)(draw(), shape, param_dtype)
            setattr(holder, leaf, nnx.Param(value))

    def native_variables(self) -> dict[str, nnx.Variable]:
        """Native path (``fc1.kernel`` ...) -> the ``nnx.Param`` holding it."""
        out = {}
        for path in native_params(self.config):
            holder: Any = self
            for part in path.split("."):
                holder = getattr(holder, part)
            out[path] = holder
        return out

    def _mix(self):
        params = {p: v[...] for p, v in self.native_variables().items()}
        return lambda y, dt: family_mix(self.config, y, params, dt), tuple(params.values())

    def __call__(self, x: jax.Array) -> jax.Array:
        """Attention of ``x`` (rank >= 3, ``data_format`` layout); same shape and dtype."""
        return attend(self.config, x, *self._mix())

    def gate(self, x: jax.Array, pooled: jax.Array | None = None) -> jax.Array:
        """The (N, C) gate of ``x`` (from ``pooled``, x's spatial mean, when the caller has it);
        a block scales with it and fuses its own residual add."""
        mix, weights = self._mix()
        return gate(self.config, x, mix, weights, pooled)

    def __repr__(self) -> str:
        return self.config.describe(f"flax.nnx.{self.config.name}")


_COMMON_DOC = """

    Args:
        channels: channel count C (required: the weights are C-shaped).{extra}
        gate: "sigmoid" or "hard_sigmoid" (``relu6(z + 3) / 6``).
        data_format: "channels_last" (Flax default) or "channels_first".
        param_dtype: dtype of the parameters.
        rngs: random streams; weights are drawn from ``rngs.params()`` as U(-b, b),
            b = 1 / sqrt(fan_in) (:func:`eca_multi.family.init_bounds`).

    Input shape:
        Rank >= 3: ``(N, *spatial, C)`` (channels_last) or ``(N, C, *spatial)``; any float dtype.

    Output shape:
        Same shape and dtype as the input (pooling, mixing and gate run in at least float32).
"""


class ECANS(_Attention):
    """ECA-NS: ``z[c] = sum_j W[c, j] y[c + j - (k-1)//2]``, k non-shared taps per channel (kC)."""

    __doc__ = (__doc__ or "") + _COMMON_DOC.format(
        extra="\n        kernel_size: odd k; None derives it from ``channels`` by ECA's rule."
        "\n        gamma, b, min_kernel_size: the kernel-size rule's parameters (as ECA)."
        '\n        padding: "zeros" (paper) or "circular" padding of the pooled vector.'
    )

    def __init__(
        self,
        channels: int,
        kernel_size: int | None = None,
        gamma: float = 2,
        b: float = 1,
        min_kernel_size: int = 1,
        padding: str = "zeros",
        gate: str = "sigmoid",
        data_format: str = _DEFAULT_FORMAT,
        *,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        super().__init__(
            "eca_ns",
            channels,
            gate,
            data_format,
            param_dtype,
            rngs,
            kernel_size=kernel_size,
            padding=padding,
            gamma=gamma,
            b=b,
            min_kernel_size=min_kernel_size,
        )


class SE(_Attention):
    """Squeeze-and-Excitation: ``FC(C -> C/r) -> ReLU -> FC(C/r -> C)``, both with bias."""

    __doc__ = (__doc__ or "") + _COMMON_DOC.format(
        extra="\n        reduction: r; the hidden width is SENet's ``C // r`` (at least 1)."
        "\n        rd_channels: explicit hidden width (overrides ``reduction``)."
        "\n        rd_divisor: round ``C / r`` to a multiple of this (timm's SEModule: 8)."
    )

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        rd_channels: int | None = None,
        rd_divisor: int = 1,
        gate: str = "sigmoid",
        data_format: str = _DEFAULT_FORMAT,
        *,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        super().__init__(
            "se",
            channels,
            gate,
            data_format,
            param_dtype,
            rngs,
            reduction=reduction,
            rd_channels=rd_channels,
            rd_divisor=rd_divisor,
        )


class SEVar1(_Attention):
    """SE-Var1: ``gate(y)``, no parameters (``rngs`` accepted for one vocabulary, unused)."""

    __doc__ = (__doc__ or "") + _COMMON_DOC.format(extra="")

    def __init__(
        self,
        channels: int,
        gate: str = "sigmoid",
        data_format: str = _DEFAULT_FORMAT,
        *,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs | None = None,
    ) -> None:
        super().__init__("se_var1", channels, gate, data_format, param_dtype, rngs)


class SEVar2(_Attention):
    """SE-Var2: ``gate(w * y)``, one weight per channel (C parameters)."""

    __doc__ = (__doc__ or "") + _COMMON_DOC.format(extra="")

    def __init__(
        self,
        channels: int,
        gate: str = "sigmoid",
        data_format: str = _DEFAULT_FORMAT,
        *,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        super().__init__("se_var2", channels, gate, data_format, param_dtype, rngs)


class SEVar3(_Attention):
    """SE-Var3: ``gate(W y)``, one full C x C matrix without bias (C^2 parameters)."""

    __doc__ = (__doc__ or "") + _COMMON_DOC.format(extra="")

    def __init__(
        self,
        channels: int,
        gate: str = "sigmoid",
        data_format: str = _DEFAULT_FORMAT,
        *,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        super().__init__("se_var3", channels, gate, data_format, param_dtype, rngs)


class SEGC(_Attention):
    """SE-GC: ``gate(W y)``, W block-diagonal in G groups, no bias (C^2 / G parameters)."""

    __doc__ = (__doc__ or "") + _COMMON_DOC.format(
        extra="\n        groups: G, the number of channel groups (C divisible by G)."
    )

    def __init__(
        self,
        channels: int,
        groups: int | None = None,
        gate: str = "sigmoid",
        data_format: str = _DEFAULT_FORMAT,
        *,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        super().__init__("se_gc", channels, gate, data_format, param_dtype, rngs, groups=groups)


CLASSES: dict[str, type[ECANS | SE | SEVar1 | SEVar2 | SEVar3 | SEGC]] = {
    "eca_ns": ECANS,
    "se": SE,
    "se_var1": SEVar1,
    "se_var2": SEVar2,
    "se_var3": SEVar3,
    "se_gc": SEGC,
}

AttentionModule = ECA | ECANS | SE | SEVar1 | SEVar2 | SEVar3 | SEGC


def from_config(
    config: AttentionConfig | ECAConfig,
    *,
    param_dtype: Any = jnp.float32,
    rngs: nnx.Rngs | None = None,
) -> AttentionModule:
    """The NNX module of a resolved config (an ECAConfig gives :class:`eca_multi.flax.ECA`)."""
    rngs = rngs if rngs is not None else nnx.Rngs(0)
    if isinstance(config, ECAConfig):
        c = config
        return ECA(
            c.channels,
            c.kernel_size,
            c.gamma,
            c.b,
            c.min_kernel_size,
            c.padding,
            c.gate,
            c.data_format,
            param_dtype=param_dtype,
            rngs=rngs,
        )
    return CLASSES[config.kind](**config.constructor_args(), param_dtype=param_dtype, rngs=rngs)


def make_attention(
    kind: str,
    channels: int,
    *,
    param_dtype: Any = jnp.float32,
    rngs: nnx.Rngs | None = None,
    **kwargs: Any,
) -> AttentionModule:
    """Any family member by name: ``kind`` in :data:`ATTENTIONS` ("eca" gives ECA).

    ``kwargs`` are the kind's constructor arguments (gate, data_format (default channels_last),
    kernel_size, padding, reduction, rd_channels, rd_divisor, groups ...), validated by
    :func:`eca_multi.family.attention_config`: an argument the kind does not take is a
    ValueError naming it. ``rngs`` defaults to ``nnx.Rngs(0)``.
    """
    kwargs.setdefault("data_format", _DEFAULT_FORMAT)
    config = attention_config(kind, channels, **kwargs)
    return from_config(config, param_dtype=param_dtype, rngs=rngs)


def export_canonical(layer: AttentionModule) -> dict[str, np.ndarray]:
    """The module's weights as canonical float32 NumPy arrays (torch names and layouts)."""
    if isinstance(layer, ECA):
        return _eca_layer.export_canonical(layer)
    specs = native_params(layer.config)
    return {
        specs[path][0]: to_canonical(np.asarray(var[...], np.float32), specs[path][2])
        for path, var in layer.native_variables().items()
    }


def load_canonical(
    layer: AttentionModule, state: Mapping[str, np.ndarray], strict: bool = True
) -> None:
    """Set the module's weights from canonical ones, in place (dtype and placement kept).

    Raises:
        WeightMismatchError: mis-shaped, or (``strict``) missing or unexpected keys; every
            problem is listed at once.
    """
    if isinstance(layer, ECA):
        _eca_layer.load_canonical(layer, state, strict)
        return
    check_state(attention_schema(layer.config), state, strict=strict, where=repr(layer))
    specs = native_params(layer.config)
    for path, var in layer.native_variables().items():
        name, _, layout, _ = specs[path]
        if name in state:  # absent only when strict=False
            old = var[...]
            new = jnp.asarray(to_native(np.asarray(state[name]), layout), dtype=old.dtype)
            var[...] = jax.device_put(new, old.sharding)
