"""The paper's channel-attention family as Keras 3 layers: SE, SE-Var1/2/3, SE-GC, ECA-NS (+ ECA).

Every member is ``out = x * gate(mix(mean_spatial(x)))`` (Wang et al., CVPR 2020, Table 2,
https://arxiv.org/abs/1910.03151; the math and the canonical weights are in
:mod:`eca_multi.family`). Arguments are validated by :func:`eca_multi.family.attention_config`, so
errors and reprs are the same in every backend. Pooling, gate and scaling are
:mod:`eca_multi.keras._ops`, the code the :class:`~eca_multi.keras.ECA` layer runs; only ``mix``
is per kind. ``keras.ops`` only: tensorflow, jax and torch Keras backends.

Native weights (Keras variable name, native shape; canonical = torch ``state_dict`` name):

========  ========================================  =============================================
class     Keras variables (native layout)           canonical (torch) names and layouts
========  ========================================  =============================================
SE        fc1_kernel (1, 1, C, C/r), fc1_bias       fc1.weight (C/r, C, 1, 1), fc1.bias,
          (C/r,), fc2_kernel (1, 1, C/r, C),        fc2.weight (C, C/r, 1, 1), fc2.bias
          fc2_bias (C,)                             (timm SEModule, 1x1 Conv2d: Layout.CONV2D)
SEVar1    (none)                                    (none)
SEVar2    kernel (C,)                               weight (C,)
SEVar3    fc_kernel (C, C) (in, out)                fc.weight (C, C) (out, in): Layout.LINEAR
SEGC      fc_kernel (C, C/G)                        fc.weight (C, C/G), same layout
ECANS     kernel (C, k)                             weight (C, k), same layout
========  ========================================  =============================================

Dtypes as ECA: the layer does not cast its input (``_convert_input_args = False``); 16-bit inputs
are pooled, mixed and gated in float32 and the output keeps the input dtype; weights are float32
and never autocast.

Example:
    >>> layer = make_attention("se", 64, data_format="channels_last")  # C/r = 64 // 16 = 4
    >>> tuple(layer(keras.random.normal((2, 7, 7, 64))).shape)
    (2, 7, 7, 64)
    >>> sorted(export_canonical(layer))
    ['fc1.bias', 'fc1.weight', 'fc2.bias', 'fc2.weight']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import keras
import numpy as np
from keras import ops

from ..family import ATTENTIONS, AttentionConfig, attention_config, attention_schema, init_bounds
from ..spec import ECAConfig
from ..weights.layouts import Layout, to_canonical, to_native
from ..weights.schema import check_state
from . import _ops
from .layer import ECA
from .layer import export_canonical as _export_eca
from .layer import load_canonical as _load_eca

__all__ = [
    "ATTENTIONS",
    "CLASSES",
    "ECANS",
    "SE",
    "SEGC",
    "SEVar1",
    "SEVar2",
    "SEVar3",
    "attention_variables",
    "export_canonical",
    "from_config",
    "load_canonical",
    "make_attention",
]


def native_name(canonical: str) -> str:
    """Keras variable name of a canonical weight: ``"fc1.weight"`` -> ``"fc1_kernel"``.

    Keras' torch backend keys variables in a ``ParameterDict``, which refuses ``"."``.
    """
    parts = canonical.split(".")
    parts[-1] = "kernel" if parts[-1] == "weight" else parts[-1]
    return "_".join(parts)


class _Attention(_ops.Gated):
    """Shared machinery of the non-ECA family layers (see the module docstring)."""

    kind: str = ""

    def __init__(self, channels: int, gate: str, data_format: str | None, kw: dict, **kwargs):
        super().__init__(**kwargs)
        data_format = _ops.Gated.data_format_or_default(data_format)
        self._configure(
            attention_config(self.kind, channels, gate=gate, data_format=data_format, **kw)
        )
        self._table: dict[str, tuple[Any, Layout]] = {}

    def build(self, input_shape: tuple | None = None) -> None:
        """Create the weights (native layouts); U(-b, b), b = 1 / sqrt(fan_in), as torch."""
        bounds = init_bounds(self.config)
        for name, (shape, layout) in attention_schema(self.config).items():
            native = np.zeros(shape, dtype=np.bool_)
            var = self.add_weight(
                name=native_name(name),
                shape=to_native(native, layout).shape,
                initializer=keras.initializers.RandomUniform(-bounds[name], bounds[name]),
                autocast=False,  # the attention path casts to >= float32 itself
            )
            self._table[name] = (var, layout)

    def _w(self, name: str, adt: str):
        return ops.cast(self._table[name][0], adt)

    def __repr__(self) -> str:
        return self.config.describe()


@keras.saving.register_keras_serializable(package="eca_multi")
class SE(_Attention):
    """Squeeze-and-Excitation: ``gate(W2 relu(W1 y + b1) + b2)`` (two FCs with biases).

    Canonical weights follow timm's ``SEModule`` (``fc1`` / ``fc2``, 1x1 Conv2d layout) so timm SE
    weights load.

    Args:
        channels: channel count C.
        reduction: r; the hidden width is ``C // r`` (SENet, at least 1) unless ``rd_channels``.
        rd_channels: explicit hidden width (e.g. read from a checkpoint).
        rd_divisor: d > 1 rounds ``C / r`` to a multiple of d (timm's ``SEModule``: 8).
        gate: ``"sigmoid"`` or ``"hard_sigmoid"``.
        data_format: ``"channels_first"`` / ``"channels_last"``; None:
            ``keras.config.image_data_format()``.
        **kwargs: base layer arguments (``name``, ``dtype``, ``trainable``).
    """

    kind = "se"

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        rd_channels: int | None = None,
        rd_divisor: int = 1,
        gate: str = "sigmoid",
        data_format: str | None = None,
        **kwargs: Any,
    ) -> None:
        kw = dict(reduction=reduction, rd_channels=rd_channels, rd_divisor=rd_divisor)
        super().__init__(channels, gate, data_format, kw, **kwargs)

    def mix(self, y, adt):
        h = ops.relu(ops.matmul(y, self._w("fc1.weight", adt)[0, 0]) + self._w("fc1.bias", adt))
        return ops.matmul(h, self._w("fc2.weight", adt)[0, 0]) + self._w("fc2.bias", adt)


@keras.saving.register_keras_serializable(package="eca_multi")
class SEVar1(_Attention):
    """SE-Var1: ``gate(y)``, no parameters.

    Args:
        channels: channel count C.
        gate: ``"sigmoid"`` or ``"hard_sigmoid"``.
        data_format: ``"channels_first"`` / ``"channels_last"``; None:
            ``keras.config.image_data_format()``.
        **kwargs: base layer arguments.
    """

    kind = "se_var1"

    def __init__(
        self, channels: int, gate: str = "sigmoid", data_format: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(channels, gate, data_format, {}, **kwargs)

    def mix(self, y, adt):
        return y


@keras.saving.register_keras_serializable(package="eca_multi")
class SEVar2(_Attention):
    """SE-Var2: ``gate(w * y)``, one weight per channel (C parameters).

    Args: as :class:`SEVar1`.
    """

    kind = "se_var2"

    def __init__(
        self, channels: int, gate: str = "sigmoid", data_format: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(channels, gate, data_format, {}, **kwargs)

    def mix(self, y, adt):
        return y * self._w("weight", adt)


@keras.saving.register_keras_serializable(package="eca_multi")
class SEVar3(_Attention):
    """SE-Var3: ``gate(W y)``, one full C x C matrix without bias (C^2 parameters).

    Args: as :class:`SEVar1`.
    """

    kind = "se_var3"

    def __init__(
        self, channels: int, gate: str = "sigmoid", data_format: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(channels, gate, data_format, {}, **kwargs)

    def mix(self, y, adt):
        return ops.matmul(y, self._w("fc.weight", adt))  # native (in, out)


@keras.saving.register_keras_serializable(package="eca_multi")
class SEGC(_Attention):
    """SE-GC: ``gate(W y)`` with W block-diagonal in G groups (C^2 / G parameters).

    Args:
        channels: channel count C (divisible by ``groups``).
        groups: the number of channel groups G (required).
        gate: ``"sigmoid"`` or ``"hard_sigmoid"``.
        data_format: ``"channels_first"`` / ``"channels_last"``; None:
            ``keras.config.image_data_format()``.
        **kwargs: base layer arguments.
    """

    kind = "se_gc"

    def __init__(
        self,
        channels: int,
        groups: int | None = None,
        gate: str = "sigmoid",
        data_format: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(channels, gate, data_format, dict(groups=groups), **kwargs)

    def mix(self, y, adt):
        g, c = self.config.groups, self.config.channels
        w = ops.reshape(self._w("fc.weight", adt), (g, c // g, c // g))  # (G, out, in)
        yg = ops.reshape(y, (-1, g, c // g))
        return ops.reshape(ops.einsum("goi,ngi->ngo", w, yg), (-1, c))


@keras.saving.register_keras_serializable(package="eca_multi")
class ECANS(_Attention):
    """ECA-NS: ECA's band of k taps, but k non-shared weights per channel (k C parameters).

    ``z[c] = sum_j W[c, j] * y[c + j - (k - 1) // 2]``, padded like ECA.

    Args:
        channels: channel count C.
        kernel_size: odd k; None derives it from C by the paper's rule (as ECA).
        gamma: the rule's gamma (paper: 2).
        b: the rule's b (paper: 1).
        min_kernel_size: smallest k the rule may give.
        padding: ``"zeros"`` (paper) or ``"circular"``.
        gate: ``"sigmoid"`` or ``"hard_sigmoid"``.
        data_format: ``"channels_first"`` / ``"channels_last"``; None:
            ``keras.config.image_data_format()``.
        **kwargs: base layer arguments.
    """

    kind = "eca_ns"

    def __init__(
        self,
        channels: int,
        kernel_size: int | None = None,
        gamma: float = 2,
        b: float = 1,
        min_kernel_size: int = 1,
        padding: str = "zeros",
        gate: str = "sigmoid",
        data_format: str | None = None,
        **kwargs: Any,
    ) -> None:
        kw: dict[str, Any] = dict(kernel_size=kernel_size, padding=padding)
        if (gamma, b, min_kernel_size) != (2, 1, 1):
            kw.update(gamma=gamma, b=b, min_kernel_size=min_kernel_size)
        super().__init__(channels, gate, data_format, kw, **kwargs)

    def mix(self, y, adt):
        cfg = self.config
        windows = _ops.channel_windows(y, cfg.kernel_size, cfg.padding, cfg.channels)
        return ops.sum(windows * self._w("weight", adt), axis=-1)


CLASSES: dict[str, type[_Attention]] = {
    cls.kind: cls for cls in (SE, SEVar1, SEVar2, SEVar3, SEGC, ECANS)
}


def make_attention(kind: str, channels: int | None, **kwargs: Any) -> keras.layers.Layer:
    """A family layer by kind: ``"eca"`` gives :class:`~eca_multi.keras.ECA`, else the class.

    ``kwargs`` are the class's constructor arguments (and base layer ones such as ``name``).

    Raises:
        ValueError: an unknown kind, or an argument the kind does not take.
    """
    if kind == "eca":
        return ECA(channels=channels, **kwargs)
    layer_kw = {k: kwargs.pop(k) for k in ("name", "dtype", "trainable") if k in kwargs}
    # validate with the shared config first (an unknown kind; "attention 'se' takes no groups")
    check = {k: v for k, v in kwargs.items() if not (k == "data_format" and v is None)}
    attention_config(kind, channels, **check)  # refuses channels=None for every kind but "eca"
    return CLASSES[kind](cast(int, channels), **kwargs, **layer_kw)


def from_config(config: AttentionConfig | ECAConfig, **kwargs: Any) -> keras.layers.Layer:
    """The layer of a resolved config (e.g. ``archs`` block plans); ``kwargs``: ``name`` etc."""
    if isinstance(config, ECAConfig):
        return ECA(**config.constructor_args(), **kwargs)
    return CLASSES[config.kind](**config.constructor_args(), **kwargs)


def _ensure_built(layer) -> None:
    if not layer.built:  # weight shapes depend only on the config
        layer.build(None)


def attention_variables(layer: keras.layers.Layer) -> dict[str, tuple[Any, Layout]]:
    """{canonical name: (Keras variable, layout)} of any family layer (ECA included), built."""
    _ensure_built(layer)
    if isinstance(layer, ECA):
        return {"conv.weight": (layer.kernel, Layout.CONV1D)}
    if not isinstance(layer, _Attention):
        raise TypeError(f"not a channel-attention layer: {type(layer).__name__}")
    return dict(layer._table)


def export_canonical(layer: keras.layers.Layer) -> dict[str, np.ndarray]:
    """A family layer's weights as canonical float32 arrays (torch names and layouts)."""
    if isinstance(layer, ECA):
        return _export_eca(layer)
    return {
        name: to_canonical(np.asarray(ops.convert_to_numpy(var.value), dtype=np.float32), layout)
        for name, (var, layout) in attention_variables(layer).items()
    }


def load_canonical(
    layer: keras.layers.Layer, state: Mapping[str, np.ndarray], strict: bool = True
) -> None:
    """Load canonical weights into a family layer (built on demand).

    Raises:
        WeightMismatchError: every missing, unexpected (``strict``) and mis-shaped key at once.
    """
    if isinstance(layer, ECA):
        return _load_eca(layer, state, strict=strict)
    table = attention_variables(layer)
    schema = attention_schema(layer.config)
    check_state(schema, state, strict=strict, where=f"Keras {layer.config.describe()}")
    for name, (var, layout) in table.items():
        if name in state:
            var.assign(to_native(np.asarray(state[name], dtype=np.float32), layout))
    return None
