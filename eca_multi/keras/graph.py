"""Keras 3 interpreter of :class:`eca_multi.graph.Graph`: timm's NFNet-L, ByobNet and pruned
ECA-ResNets as functional models, every backend, both data formats.

One Keras layer per graph node, named after its torch module path (:func:`keras_name`), so the
canonical weights are walked exactly like the ResNets' (:mod:`eca_multi.keras.io`). Two layers
are new here: :class:`StdConv2D` (timm's ``ScaledStdConv2d``) and :class:`Scale` (a constant
multiply: NFNet's alpha, beta and attention gain).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, ops

from ..graph import GraphArch, Node
from ..spec import make_config
from ..weights.layouts import Layout
from .family import from_config
from .models import BatchNormalization, TorchPool2D, keras_name

__all__ = ["Scale", "StdConv2D", "build"]


@keras.saving.register_keras_serializable(package="eca_multi")
class StdConv2D(layers.Layer):
    """timm's ``ScaledStdConv2d``: a Conv2D whose kernel is standardized per output channel.

    ``w_hat = (w - mean) / sqrt(var + eps) * gain * gamma / sqrt(fan_in)`` with mean and biased
    variance over (kh, kw, in); then a grouped convolution with symmetric zero padding ``pad``
    and a bias. Weights: ``kernel`` (kh, kw, in / groups, out), ``bias`` (out,), ``gain`` kept in
    torch's shape (out, 1, 1, 1).

    Args:
        filters: output channels, as torch's Conv2d ``out_channels``.
        kernel_size: the square kernel's side.
        strides: the stride.
        groups: grouped convolution's groups.
        pad: zero padding on both sides.
        gamma: the activation's gamma (timm folds it into the scale).
        eps: added to the variance (timm: 1e-5 for NFNet-L).
        data_format: ``"channels_first"`` / ``"channels_last"``.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int,
        strides: int = 1,
        groups: int = 1,
        pad: int = 0,
        gamma: float = 1.0,
        eps: float = 1e-6,
        data_format: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.strides = filters, kernel_size, strides
        self.groups, self.pad, self.gamma, self.eps = groups, pad, gamma, eps
        self.data_format = data_format or keras.config.image_data_format()

    def build(self, input_shape) -> None:
        cin = input_shape[1 if self.data_format == "channels_first" else -1]
        k = self.kernel_size
        self.kernel = self.add_weight(
            shape=(k, k, cin // self.groups, self.filters),
            initializer="he_normal",
            name="kernel",
        )
        self.bias = self.add_weight(shape=(self.filters,), initializer="zeros", name="bias")
        self.gain = self.add_weight(shape=(self.filters, 1, 1, 1), initializer="ones", name="gain")
        self.scale = self.gamma * float(k * k * (cin // self.groups)) ** -0.5

    def standardized_kernel(self):
        w = ops.cast(self.kernel, "float32")
        mean = ops.mean(w, axis=(0, 1, 2), keepdims=True)
        var = ops.mean(ops.square(w - mean), axis=(0, 1, 2), keepdims=True)
        g = ops.reshape(ops.cast(self.gain, "float32"), (1, 1, 1, self.filters)) * self.scale
        return (w - mean) * ops.rsqrt(var + self.eps) * g

    def call(self, x):
        w = ops.cast(self.standardized_kernel(), x.dtype)
        if self.pad:
            p = [[self.pad, self.pad]] * 2
            first = self.data_format == "channels_first"
            x = ops.pad(x, [[0, 0], [0, 0], *p] if first else [[0, 0], *p, [0, 0]])
        y = ops.conv(x, w, self.strides, "valid", self.data_format)
        b = ops.cast(self.bias, y.dtype)
        return y + (ops.reshape(b, (1, -1, 1, 1)) if self.data_format == "channels_first" else b)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        first = self.data_format == "channels_first"
        dims = input_shape[2:] if first else input_shape[1:3]
        out = tuple(
            None if d is None else (d + 2 * self.pad - self.kernel_size) // self.strides + 1
            for d in dims
        )
        n = input_shape[0]
        return (n, self.filters, *out) if first else (n, *out, self.filters)

    def canonical_variables(self) -> dict[str, tuple[Any, Layout]]:
        """{canonical suffix: (variable, layout)}: ``weight``, ``bias``, ``gain``."""
        return {
            "weight": (self.kernel, Layout.CONV2D),
            "bias": (self.bias, Layout.NONE),
            "gain": (self.gain, Layout.NONE),
        }

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "groups": self.groups,
            "pad": self.pad,
            "gamma": self.gamma,
            "eps": self.eps,
            "data_format": self.data_format,
        }


@keras.saving.register_keras_serializable(package="eca_multi")
class Scale(layers.Layer):
    """``x * value`` for a constant Python float (no weights)."""

    def __init__(self, value: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.value = float(value)

    def call(self, x):
        return x * ops.cast(self.value, x.dtype)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "value": self.value}


def _conv(x, n: Node, data_format: str):
    if n["ws"]:
        return StdConv2D(
            n["cout"],
            n["k"],
            n["stride"],
            n["groups"],
            n["pad"],
            n["ws"]["gamma"],
            n["ws"]["eps"],
            data_format,
            name=keras_name(n.name),
        )(x)
    padding = "valid"
    if n["pad"] and n["stride"] == 1 and 2 * n["pad"] == n["k"] - 1:
        padding = "same"  # stride 1, odd k: Keras "same" is torch's symmetric padding
    elif n["pad"]:
        x = layers.ZeroPadding2D(
            n["pad"], data_format=data_format, name=keras_name(f"{n.name}_pad")
        )(x)
    return layers.Conv2D(
        n["cout"],
        n["k"],
        strides=n["stride"],
        padding=padding,
        groups=n["groups"],
        use_bias=n["bias"],
        data_format=data_format,
        name=keras_name(n.name),
    )(x)


def _node(n: Node, args: list, data_format: str):
    """The Keras layer call of one graph node."""
    op, x = n.op, args[0]
    name = keras_name(n.name or n.output)
    if op == "conv":
        return _conv(x, n, data_format)
    if op == "bn":
        axis = 1 if data_format == "channels_first" else -1
        return BatchNormalization(axis=axis, epsilon=n["eps"], momentum=0.9, name=name)(x)
    if op == "act":
        return layers.Activation(n["fn"], name=name)(x)
    if op == "scale":
        return Scale(n["value"], name=name)(x)
    if op == "eca":
        config = make_config(n["channels"], n["k"], data_format=data_format)
        return from_config(config, name=name)(x)
    if op == "add":
        return layers.Add(name=name)(args)
    if op == "maxpool":
        return TorchPool2D("max", n["k"], n["stride"], n["pad"], data_format, name=name)(x)
    if op == "avgpool_ceil":
        return TorchPool2D("avg_ceil", n["k"], n["stride"], data_format=data_format, name=name)(x)
    if op == "mean":
        return layers.GlobalAveragePooling2D(data_format=data_format, name=name)(x)
    if op == "linear":
        return layers.Dense(n["cout"], name=name)(x)
    raise ValueError(f"the Keras graph interpreter has no operation {op!r}")


def build(inputs, arch: GraphArch, num_classes: int, kernel_sizes, data_format: str, att):
    """The functional graph of ``arch`` on ``inputs`` (a ``keras.Input``); returns the logits."""
    arch.blocks(kernel_sizes, *att)  # a clear error for an attention the graph cannot carry
    values: dict[str, Any] = {"input": inputs}
    g = arch.graph(num_classes, kernel_sizes)
    for n in g.nodes:
        values[n.output] = _node(n, [values[i] for i in n.inputs], data_format)
    return values[g.output]
