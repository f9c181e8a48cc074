"""The ECA model zoo in Keras 3 (official ECA-Nets, timm's ECA-ResNets) and its weight adapter.

Every model is a functional ``keras.Model`` built by walking the framework-free plans of
:mod:`eca_multi.archs` (the same plans the torch and Flax zoos walk), with ``keras.layers`` and
``keras.ops`` only, so it runs on the tensorflow, jax and torch Keras backends in either
``data_format``. Paper: Wang et al., https://arxiv.org/abs/1910.03151.

Layer names: every layer that holds weights is named after its torch module path, the prefix of
its canonical (``state_dict``) keys, with ``"."`` written as ``"-"``: ``"conv1"``,
``"layer1-0-bn1"``, ``"layer1-0-eca"`` (timm: ``"layer1-0-se"``), ``"layer2-0-downsample-0"``,
``"fc"``, ``"features-3-conv-1-0"``, ``"classifier-1"`` (:func:`keras_name` / :func:`torch_path`).
The attention module keeps ECA's name whatever its kind (``attention="se"`` gives an
:class:`~eca_multi.keras.SE` named ``"layer1-0-eca"``, keys ``"layer1.0.eca.fc1.weight"`` ...;
``attention=None`` leaves it out: a plain ResNet / MobileNetV2).
Keras itself allows dots, but its torch backend keys every variable by ``"<layer name>/<var>"`` in
a ``torch.nn.ParameterDict``, which refuses ``"."``; torch module names never contain ``"-"``, so
the mapping is reversible and the same on every backend (a ``.keras`` file moves between them).
Weightless helpers (padding, activations, adds, pools) get names that map to no ``state_dict``
prefix (``"conv1-0_pad"``, ``"layer1-0-act1"``, ``"layer1-0-add"``); torch's own activation
modules keep their torch paths where torch has one (``"conv1-2"``, ``"features-0-2"``).

Speed (README "Performance"): a ResNet block's attention also adds the shortcut
(``attention(x, residual=shortcut)``, no ``Add`` layer), and a bottleneck's attention gets its
pooled vector from a weightless :class:`PooledThrough` (``"layer1-0-pool_through"``) that, at
inference, pools conv3's 4x smaller input through conv3 and its BN.

Example:
    >>> model = create_model("eca_resnet18", data_format="channels_last")
    >>> state = export_canonical_model(model)  # torch names and layouts
    >>> state["layer1.0.eca.conv.weight"].shape
    (1, 1, 3)
    >>> load_canonical_model(model, state)
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers, ops

from ..archs import (
    MobileNetV2Arch,
    ResNetArch,
    block_convs,
    downsample_convs,
    get_arch,
    kernel_sizes_from_state,
    mobilenet_v2_blocks,
    pools_through_last_conv,
    resnet_blocks,
    schema,
    stem_plan,
)
from ..family import se_reduced_channels
from ..weights.io import atomic_path
from ..weights.layouts import Layout, to_canonical, to_native
from ..weights.schema import check_state
from . import _ops
from .family import _Attention, attention_variables, from_config
from .layer import ECA

__all__ = [
    "BatchNormalization",
    "PooledThrough",
    "TorchPool2D",
    "create_model",
    "export_canonical_model",
    "keras_name",
    "link_pooled_through",
    "load_canonical_model",
    "load_weights_file",
    "save_weights_file",
    "torch_path",
]

_SEP = "-"  # stands for torch's "." in Keras layer names (see the module docstring)


def keras_name(path: str) -> str:
    """Torch module path -> Keras layer name (``"layer1.0.eca"`` -> ``"layer1-0-eca"``)."""
    if _SEP in path:
        raise ValueError(f"torch module path {path!r} contains {_SEP!r}")
    return path.replace(".", _SEP)


def torch_path(name: str) -> str:
    """Keras layer name -> torch module path; the inverse of :func:`keras_name`."""
    return name.replace(_SEP, ".")


_BN_EPS = 1e-5  # torch BatchNorm2d eps (Keras default: 1e-3)
_BN_MOMENTUM = 0.9  # torch momentum 0.1 weighs the new batch; Keras' momentum weighs the old value
# NOTE: in training Keras moves moving_variance toward the biased batch variance, torch toward the
# unbiased one (factor n / (n - 1)); batch normalisation itself and eval outputs are identical.
_SUFFIXES = (".weights.h5", ".keras")


@keras.saving.register_keras_serializable(package="eca_multi")
class TorchPool2D(keras.layers.Layer):
    """torch's 2-D max / average pooling where Keras' ``"same"`` padding differs from it.

    ``mode="max"``: ``nn.MaxPool2d(pool_size, strides, padding)``, padding with -inf on both sides.
    ``mode="avg_ceil"``: ``nn.AvgPool2d(pool_size, strides, ceil_mode=True,
    count_include_pad=False)`` (timm's avg-pool downsample), exact for even and odd sizes.

    Args:
        mode: ``"max"`` or ``"avg_ceil"``.
        pool_size: window size (square).
        strides: stride (both axes).
        padding: symmetric padding of ``"max"`` (torch's ``padding``); must be 0 for ``"avg_ceil"``.
        data_format: ``"channels_first"`` / ``"channels_last"``; None means
            ``keras.config.image_data_format()``.
        **kwargs: base layer arguments (``name``).
    """

    def __init__(
        self,
        mode: str,
        pool_size: int,
        strides: int,
        padding: int = 0,
        data_format: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if mode not in ("max", "avg_ceil") or (mode == "avg_ceil" and padding):
            raise ValueError(f"unsupported pooling mode={mode!r} padding={padding!r}")
        self.mode, self.pool_size, self.strides, self.padding = mode, pool_size, strides, padding
        self.data_format = data_format or keras.config.image_data_format()

    def _pad(self, x, before: int, after: int, value: float):
        spatial = [[before, after]] * 2
        pads = (
            [[0, 0], [0, 0], *spatial]
            if self.data_format == "channels_first"
            else [[0, 0], *spatial, [0, 0]]
        )
        return ops.pad(x, pads, constant_values=value)

    def _pool(self, x):
        pool = ops.max_pool if self.mode == "max" else ops.average_pool
        return pool(x, self.pool_size, self.strides, "valid", self.data_format)

    def call(self, x):
        if self.mode == "max":  # torch pads max-pool with -inf (Keras "same" pads asymmetrically)
            return self._pool(self._pad(x, self.padding, self.padding, -np.inf))
        # ceil_mode: s - 1 zeros after the end give ceil((n - k) / s) + 1 windows, and the windows
        # of a padded ones-map count the real elements (count_include_pad=False)
        s = self.strides - 1
        axis = 1 if self.data_format == "channels_first" else -1
        ones = ops.ones_like(ops.take(x[:1], ops.convert_to_tensor([0]), axis=axis))
        return self._pool(self._pad(x, 0, s, 0.0)) / self._pool(self._pad(ones, 0, s, 0.0))

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        first = self.data_format == "channels_first"
        n, c = input_shape[0], input_shape[1 if first else -1]
        dims = input_shape[2:] if first else input_shape[1:3]
        extra = 2 * self.padding if self.mode == "max" else self.strides - 1
        out = tuple(
            None if d is None else (d + extra - self.pool_size) // self.strides + 1 for d in dims
        )
        return (n, c, *out) if first else (n, *out, c)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "mode": self.mode,
            "pool_size": self.pool_size,
            "strides": self.strides,
            "padding": self.padding,
            "data_format": self.data_format,
        }


@keras.saving.register_keras_serializable(package="eca_multi")
class BatchNormalization(layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` plus torch's ``num_batches_tracked`` step counter.

    The counter is a non-trainable int32 scalar weight (int32 on every backend, like the Flax
    zoo's; exported as int64) that grows by 1 on each training-mode call that updates the moving
    statistics. Keeping the class name keeps the ``.weights.h5`` paths (``layers/
    batch_normalization*``); files from before the counter (4 variables) still load.
    """

    def build(self, input_shape):
        super().build(input_shape)
        # Keras BN has no step counter; keep torch's so checkpoints round-trip bit for bit
        self.num_batches_tracked = self.add_weight(
            shape=(),
            dtype="int32",
            initializer="zeros",
            trainable=False,
            name="num_batches_tracked",
            autocast=False,
        )

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or mask is not None:
            return super().call(inputs, training=training, mask=mask)
        # when Keras updates the moving statistics: count the step, as torch does
        self.num_batches_tracked.assign(self.num_batches_tracked + 1)
        old = ops.copy(ops.convert_to_tensor(self.moving_variance))  # a snapshot, not a view
        out = super().call(inputs, training=training, mask=mask)
        # NOTE: Keras moves the variance toward the biased batch variance, torch toward the
        # unbiased one (x n / (n - 1), n = elements per channel): add the difference
        new = ops.convert_to_tensor(self.moving_variance)
        n = ops.cast(ops.size(inputs), new.dtype) / ops.cast(
            ops.shape(inputs)[self.axis], new.dtype
        )
        self.moving_variance.assign(new + (new - self.momentum * old) / ops.maximum(n - 1.0, 1.0))
        return out

    def load_own_variables(self, store):
        if len(store.keys()) == 4:  # a file saved before the counter: it stays 0
            for i, v in enumerate(self._trainable_variables + self._non_trainable_variables[:2]):
                v.assign(store[str(i)])
            return
        super().load_own_variables(store)


@keras.saving.register_keras_serializable(package="eca_multi")
class PooledThrough(layers.Layer):
    """The spatial mean of a bottleneck's last BN output, for the block's attention (no weights).

    Inputs ``[h, out]``: the last conv's input and its BN's output. At inference, with that conv
    and BN linked (:func:`link_pooled_through`, which :func:`create_model` runs), the mean comes
    from ``h`` (4x fewer channels), and ``out`` is read once, by the attention's scale::

        (W @ mean(h) - moving_mean) * gamma / sqrt(moving_variance + epsilon) + beta

    (:func:`eca_multi.archs.pools_through_last_conv`). In training, or unlinked (a ``.keras``
    file loaded by ``keras.saving.load_model``), it is ``mean(out)``, the attention's own pool.
    """

    def __init__(self, conv: str, bn: str, data_format: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conv, self.bn, self.data_format = conv, bn, data_format
        self.unlink()

    def link(self, conv: layers.Layer, bn: layers.Layer) -> None:
        # untracked (object.__setattr__): the weights stay the graph's conv / BN layers' own
        object.__setattr__(self, "_linked", (conv, bn))

    def unlink(self) -> None:
        object.__setattr__(self, "_linked", None)

    def call(self, inputs, training=None):
        h, out = inputs
        axes = (2, 3) if self.data_format == "channels_first" else (1, 2)
        adt = _ops.attention_dtype(keras.backend.standardize_dtype(out.dtype))
        if training or self._linked is None:
            return ops.mean(ops.cast(out, adt), axis=axes)
        conv, bn = self._linked
        kernel = ops.cast(conv.kernel, adt)  # (1, 1, in, out)
        u = ops.matmul(ops.mean(ops.cast(h, adt), axis=axes), kernel[0, 0])  # W @ mean(h)
        scale = ops.rsqrt(ops.cast(bn.moving_variance, adt) + bn.epsilon)
        if bn.gamma is not None:
            scale = scale * ops.cast(bn.gamma, adt)
        shift = -ops.cast(bn.moving_mean, adt) * scale
        if bn.beta is not None:
            shift = shift + ops.cast(bn.beta, adt)
        return u * scale + shift

    def compute_output_spec(self, inputs, training=None) -> keras.KerasTensor:
        _, out = inputs
        channels = out.shape[1 if self.data_format == "channels_first" else -1]
        adt = _ops.attention_dtype(keras.backend.standardize_dtype(out.dtype))
        return keras.KerasTensor((out.shape[0], channels), dtype=adt)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "conv": self.conv,
            "bn": self.bn,
            "data_format": self.data_format,
        }


def link_pooled_through(model: keras.Model) -> keras.Model:
    """Link every :class:`PooledThrough` of ``model`` to its conv and BN layers (by name)."""
    for layer in model.layers:
        if isinstance(layer, PooledThrough):
            layer.link(model.get_layer(layer.conv), model.get_layer(layer.bn))
    return model


# ---------------------------------------------------------------------------------------------
# builders: walk the archs plans


def _conv(x, plan, data_format: str):
    """Bias-free conv with torch's symmetric padding (k - 1) // 2 (a DepthwiseConv2D if grouped)."""
    pad = (plan.k - 1) // 2
    padding = "same"  # stride 1, odd k: Keras "same" is symmetric, as torch's padding
    if plan.stride > 1 and pad:  # Keras/XLA "same" pads stride 2 asymmetrically: pad, then VALID
        x = layers.ZeroPadding2D(pad, data_format=data_format, name=keras_name(f"{plan.name}_pad"))(
            x
        )
        padding = "valid"
    common = dict(
        strides=plan.stride,
        padding=padding,
        use_bias=False,
        data_format=data_format,
        name=keras_name(plan.name),
    )
    if plan.groups == 1:
        return layers.Conv2D(plan.cout, plan.k, **common)(x)
    if plan.groups == plan.cin == plan.cout:  # torch groups=C conv: Keras DepthwiseConv2D
        return layers.DepthwiseConv2D(plan.k, **common)(x)
    raise ValueError(f"{plan.name}: grouped conv with groups={plan.groups} is not supported")


def _bn(x, name: str, data_format: str):
    axis = 1 if data_format == "channels_first" else -1
    return BatchNormalization(
        axis=axis, epsilon=_BN_EPS, momentum=_BN_MOMENTUM, name=keras_name(name)
    )(x)


def _attention(x, name: str, config):
    """The block's channel attention (any family member) named ``name``; None: no module."""
    return x if config is None else from_config(config, name=keras_name(name))(x)


def _resnet_block(x, b, data_format: str):
    shortcut = x
    convs = block_convs(b)
    config = b.attention_config(data_format)
    for i, (conv, bn) in enumerate(convs):
        h = x
        x = _bn(_conv(x, conv, data_format), bn, data_format)
        if i < len(convs) - 1:
            x = layers.ReLU(name=keras_name(f"{b.prefix}.act{i + 1}"))(x)
    pooled = None
    if config is not None and pools_through_last_conv(b):  # a bottleneck: pool conv3's input
        conv, bn = (keras_name(n) for n in (convs[-1][0].name, convs[-1][1]))
        name = keras_name(f"{b.prefix}.pool_through")
        pooled = PooledThrough(conv, bn, data_format, name=name)([h, x])
    if b.downsample == "avg" and b.stride > 1:  # timm avg_down: AvgPool2d(ceil_mode=True, ...)
        shortcut = TorchPool2D(
            "avg_ceil",
            b.stride,
            b.stride,
            data_format=data_format,
            name=keras_name(f"{b.prefix}.downsample.0"),
        )(shortcut)
    for conv, bn in downsample_convs(b):
        shortcut = _bn(_conv(shortcut, conv, data_format), bn, data_format)
    if config is None:
        x = layers.Add(name=keras_name(f"{b.prefix}.add"))([x, shortcut])
    else:  # after the last BN: the gate multiply and the shortcut add in one call
        attention = from_config(config, name=keras_name(f"{b.prefix}.{b.eca_attr}"))
        x = attention(x, pooled=pooled, residual=shortcut)
    return layers.ReLU(name=keras_name(f"{b.prefix}.act_out"))(x)


def _resnet(inputs, arch: ResNetArch, num_classes: int, kernel_sizes, data_format: str, att):
    stem, _ = stem_plan(arch)
    x = inputs
    for i, (kind, item) in enumerate(stem):
        if kind == "conv":
            x = _conv(x, item, data_format)
        elif kind == "bn":
            x = _bn(x, item, data_format)
        else:  # the deep stem's ReLUs are torch modules conv1.2 and conv1.5
            x = layers.ReLU(name=keras_name(f"conv1.{i}"))(x)
    x = layers.ReLU(name="relu")(x)
    x = TorchPool2D("max", 3, 2, 1, data_format=data_format, name="maxpool")(x)
    for b in resnet_blocks(arch, kernel_sizes, *att):
        x = _resnet_block(x, b, data_format)
    x = layers.GlobalAveragePooling2D(data_format=data_format, name="avgpool")(x)
    return layers.Dense(num_classes, name="fc")(x)


def _mobilenet_v2(inputs, arch: MobileNetV2Arch, num_classes: int, kernel_sizes, data_format, att):
    from ..archs import ConvPlan

    def conv_bn_relu6(x, conv, bn):
        x = _bn(_conv(x, conv, data_format), bn, data_format)
        return layers.ReLU(max_value=6.0, name=keras_name(f"{conv.name[:-2]}.2"))(
            x
        )  # torch ReLU6 module

    x = conv_bn_relu6(inputs, ConvPlan("features.0.0", 3, arch.input_channel, 3, 2), "features.0.1")
    blocks = mobilenet_v2_blocks(arch, kernel_sizes, *att)
    for b in blocks:
        shortcut = x
        for conv, bn, relu6 in b.convs():
            x = (
                conv_bn_relu6(x, conv, bn)
                if relu6
                else _bn(_conv(x, conv, data_format), bn, data_format)
            )
        x = _attention(x, b.eca_prefix, b.attention_config(data_format))  # after the projection BN
        if b.use_res:
            x = layers.Add(name=keras_name(f"features.{b.index}.add"))([shortcut, x])
    last = len(blocks) + 1
    x = conv_bn_relu6(
        x,
        ConvPlan(f"features.{last}.0", blocks[-1].oup, arch.last_channel, 1),
        f"features.{last}.1",
    )
    x = layers.GlobalAveragePooling2D(data_format=data_format, name="avgpool")(x)
    x = layers.Dropout(arch.dropout, name=keras_name("classifier.0"))(x)
    return layers.Dense(num_classes, name=keras_name("classifier.1"))(x)


def create_model(
    name: str,
    num_classes: int | None = None,
    kernel_sizes: tuple[int, ...] | Mapping[int, int] | None = None,
    data_format: str | None = None,
    input_shape: tuple | None = None,
    attention: str | None = "eca",
    attention_kwargs: Mapping[str, Any] | None = None,
) -> keras.Model:
    """Build an architecture of :data:`eca_multi.archs.ARCHS` as a functional Keras model.

    Args:
        name: architecture name, e.g. ``"eca_resnet50"``, ``"eca_mobilenet_v2"``,
            ``"ecaresnet50d"``.
        num_classes: classifier width (default: the architecture's, 1000).
        kernel_sizes: ECA kernel sizes: per stage for ResNets (official default: the published
            ones; timm: its rule), ``{block index: k}`` for MobileNetV2. Read them from a
            checkpoint with :func:`eca_multi.archs.kernel_sizes_from_state`.
        data_format: ``"channels_first"`` or ``"channels_last"``; None means
            ``keras.config.image_data_format()``.
        input_shape: input shape without the batch axis; default 3 channels, any spatial size.
        attention: the channel attention every block carries: a kind of
            :data:`eca_multi.family.ATTENTIONS` (``"eca"``, ``"eca_ns"``, ``"se"``, ``"se_var1"``,
            ``"se_var2"``, ``"se_var3"``, ``"se_gc"``) or None (no attention: a plain ResNet /
            MobileNetV2). The module sits where ECA sits, under ECA's name.
        attention_kwargs: the kind's constructor arguments shared by every block (e.g.
            ``{"reduction": 8}``, ``{"groups": 8}``, ``{"gate": "hard_sigmoid"}``); channels and
            data_format are set per block. ECA / ECA-NS take the block's k unless
            ``kernel_size`` is given; SE-GC defaults to ``groups=4`` (:mod:`eca_multi.archs`).

    Returns:
        A ``keras.Model`` named ``name`` whose weighted layers carry torch module paths
        (:func:`keras_name`).

    NOTE: Keras maps a functional graph recursively and ecaresnet269d is deeper than Python's
    default recursion limit allows; this function (and :func:`load_weights_file`) raise the limit
    while they build. Loading its ``.keras`` file with ``keras.saving.load_model`` directly needs
    ``sys.setrecursionlimit(20_000)`` first.
    """
    arch = get_arch(name)
    data_format = data_format or keras.config.image_data_format()
    if data_format not in ("channels_first", "channels_last"):
        raise ValueError(
            f"data_format must be 'channels_first' or 'channels_last', got {data_format!r}"
        )
    if input_shape is None:
        input_shape = (3, None, None) if data_format == "channels_first" else (None, None, 3)
    num_classes = arch.num_classes if num_classes is None else num_classes
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    build = _mobilenet_v2 if isinstance(arch, MobileNetV2Arch) else _resnet
    att = (attention, dict(attention_kwargs) if attention_kwargs else None)
    outputs = build(inputs, arch, num_classes, kernel_sizes, data_format, att)
    with _recursion_limit():
        return link_pooled_through(keras.Model(inputs, outputs, name=name))


@contextlib.contextmanager
def _recursion_limit(limit: int = 20_000):
    """Keras maps a functional graph recursively: ecaresnet269d is ~1,300 layers deep."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, limit))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


# ---------------------------------------------------------------------------------------------
# canonical weights

_BN_VARS = (
    ("weight", "gamma"),
    ("bias", "beta"),
    ("running_mean", "moving_mean"),
    ("running_var", "moving_variance"),
)


def _variables(model: keras.Model) -> dict[str, tuple[Any, Layout]]:
    """Canonical name -> (Keras variable, layout), walking the model's weighted layers."""
    table: dict[str, tuple[Any, Layout]] = {}
    for layer in model.layers:
        n = torch_path(layer.name)
        if isinstance(layer, layers.DepthwiseConv2D):
            table[f"{n}.weight"] = (layer.kernel, Layout.DEPTHWISE)  # torch (C,1,kh,kw)
        elif isinstance(layer, layers.Conv2D):
            table[f"{n}.weight"] = (layer.kernel, Layout.CONV2D)
        elif isinstance(layer, layers.BatchNormalization):
            for torch_name, attr in _BN_VARS:
                table[f"{n}.{torch_name}"] = (getattr(layer, attr), Layout.NONE)
            if hasattr(layer, "num_batches_tracked"):  # not on a plain keras BatchNormalization
                table[f"{n}.num_batches_tracked"] = (layer.num_batches_tracked, Layout.NONE)
        elif isinstance(layer, layers.Dense):
            table[f"{n}.weight"] = (layer.kernel, Layout.LINEAR)
            table[f"{n}.bias"] = (layer.bias, Layout.NONE)
        elif isinstance(layer, (ECA, _Attention)):
            for key, entry in attention_variables(layer).items():
                table[f"{n}.{key}"] = entry
        elif layer.weights:
            raise TypeError(
                f"layer {n!r} ({type(layer).__name__}) has weights but no canonical mapping"
            )
    return table


def _head(name: str) -> str:
    return "classifier.1" if isinstance(get_arch(name), MobileNetV2Arch) else "fc"


def _model_attention(model: keras.Model, name: str):
    """The ``attention`` / ``attention_kwargs`` / kernel sizes a model was built with.

    Read from its attention layers (all of one kind; none: ``attention=None``) so that
    :func:`eca_multi.archs.schema` of the result names and shapes exactly the model's weights:
    ECA / ECA-NS kernel sizes as per-stage (per-block) k, SE's hidden widths as ``reduction`` /
    ``rd_divisor`` when they follow that rule in every block (else one ``rd_channels``), SE-GC's
    ``groups``; the gate and ECA-NS padding come along so a rebuilt model computes the same.
    """
    att = [la for la in model.layers if isinstance(la, (ECA, _Attention))]
    if not att:
        return None, None, None
    kinds = sorted({"eca" if isinstance(la, ECA) else la.config.kind for la in att})
    if len(kinds) > 1:
        raise ValueError(f"the Keras model {model.name!r} mixes attention kinds {kinds}")
    kind, first = kinds[0], att[0].config
    kw: dict[str, Any] = {}
    ks = None
    if kind in ("eca", "eca_ns"):  # k per block, from the layers (archs reads it per stage)
        state = {
            f"{torch_path(la.name)}.conv.weight": np.zeros((1, 1, la.config.kernel_size))
            for la in att
        }
        ks = kernel_sizes_from_state(name, state)
        if first.padding != "zeros":
            kw["padding"] = first.padding
    elif kind == "se":
        rule = all(
            se_reduced_channels(la.config.channels, first.reduction, first.rd_divisor)
            == la.config.rd_channels
            for la in att
        )
        if rule:
            kw.update(reduction=first.reduction, rd_divisor=first.rd_divisor)
        else:
            kw["rd_channels"] = first.rd_channels
    elif kind == "se_gc":
        kw["groups"] = first.groups
    if first.gate != "sigmoid":
        kw["gate"] = first.gate
    return kind, kw, ks


def _model_schema(model: keras.Model, name: str | None):
    """The archs schema of the model's own configuration (classes, attention and kernel sizes)."""
    name = name or model.name
    head = _head(name)
    try:
        num_classes = model.get_layer(keras_name(head)).units
        attention, kw, ks = _model_attention(model, name)
        want = schema(name, num_classes, ks, attention, kw)
    except ValueError as e:
        raise ValueError(f"the Keras model {model.name!r} is not a {name}: {e}") from None
    have = _variables(model)
    extra = {n for n in set(have) ^ set(want) if not n.endswith("num_batches_tracked")}
    if extra:
        raise ValueError(
            f"the Keras model {model.name!r} is not a {name}; differing weights: "
            f"{', '.join(sorted(extra))}"
        )
    return name, ks, want, have, (attention, kw)


def export_canonical_model(model: keras.Model, name: str | None = None) -> dict[str, np.ndarray]:
    """The model's weights as canonical tensors (torch names and layouts, archs schema order).

    BatchNorm ``num_batches_tracked`` is written as an int64 scalar (0 for a plain Keras
    BatchNormalization without the counter) so the result loads into the torch / timm model with
    ``load_state_dict(strict=True)``.

    Args:
        model: a model from :func:`create_model` (or loaded from its files).
        name: architecture name; default ``model.name``.
    """
    _, _, want, have, _ = _model_schema(model, name)
    out = {}
    for key in want:
        if key.endswith("num_batches_tracked"):  # torch's int64 step counter
            count = ops.convert_to_numpy(have[key][0]) if key in have else 0
            out[key] = np.array(count, dtype=np.int64).reshape(())
            continue
        var, layout = have[key]
        out[key] = to_canonical(np.asarray(ops.convert_to_numpy(var), dtype=np.float32), layout)
    return out


def load_canonical_model(
    model: keras.Model,
    state: Mapping[str, np.ndarray],
    name: str | None = None,
    strict: bool = True,
) -> None:
    """Load canonical tensors (torch names and layouts) into ``model``, in place.

    The target is walked layer by layer; every tensor is fetched by canonical name, its exact
    shape checked against :func:`eca_multi.archs.schema` of the model's configuration (so an ECA
    kernel of another size than the model's is an error; build the model from the checkpoint
    with ``kernel_sizes=kernel_sizes_from_state(name, state)`` instead) and converted with
    :mod:`eca_multi.weights.layouts`. ``num_batches_tracked`` entries set the BatchNorm counters.

    Args:
        model: a model from :func:`create_model`.
        state: canonical name -> array.
        name: architecture name; default ``model.name``.
        strict: refuse missing and unexpected keys (shapes are always checked).

    Raises:
        WeightMismatchError: listing every missing, unexpected and mis-shaped key at once.
    """
    name, ks, want, have, (attention, _) = _model_schema(model, name)
    where = f"Keras {name} (" + (
        f"ECA kernel sizes {ks})" if attention == "eca" else f"attention {attention!r}, k {ks})"
    )
    check_state(want, state, strict=strict, where=where)
    for key, (var, layout) in have.items():
        if key in state:
            var.assign(to_native(np.asarray(state[key]), layout).astype(var.dtype))


# ---------------------------------------------------------------------------------------------
# Keras files


def _suffix(path: Path) -> str:
    for suffix in _SUFFIXES:
        if path.name.endswith(suffix):
            return suffix
    raise ValueError(f"{path}: a Keras weight file must end with .weights.h5 or .keras")


def save_weights_file(model: keras.Model, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Save ``model`` as ``.weights.h5`` (weights) or ``.keras`` (whole model), atomically.

    The file is written to a temp name in the target folder, then renamed over ``path``.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        ValueError: an unsupported suffix.
    """
    path = Path(path)
    suffix = _suffix(path)
    with atomic_path(path, overwrite=overwrite, suffix=f".tmp{suffix}") as tmp:
        if suffix == ".keras":
            model.save(tmp, overwrite=True)
        else:
            model.save_weights(tmp, overwrite=True)
    return path


def _h5_kernel_sizes(path: Path, name: str):
    """ECA kernel sizes stored in a ``.weights.h5`` file (k is read from the kernels' shapes).

    Keras files a model's layers by class and order (``layers/eca``, ``layers/eca_1`` ...), not by
    layer name; the ECA layers of our models come in plan order, the order of the schema's keys.
    """
    import h5py

    keys = [key for key, (_, layout) in schema(name).items() if layout is Layout.CONV1D]
    state = {}
    with h5py.File(path, "r") as f:
        for i, key in enumerate(keys):
            kernel = f.get(f"layers/eca{f'_{i}' if i else ''}/vars/0")
            if kernel is not None:
                state[key] = to_canonical(np.zeros(kernel.shape), Layout.CONV1D)
    return kernel_sizes_from_state(name, state)


def _h5_num_classes(path: Path) -> int | None:
    """Classifier width stored in a ``.weights.h5`` file: the columns of its one Dense kernel."""
    import h5py

    with h5py.File(path, "r") as f:
        kernel = f.get("layers/dense/vars/0")
        return None if kernel is None else int(kernel.shape[-1])


def load_weights_file(
    path: str | os.PathLike,
    name: str,
    num_classes: int | None = None,
    kernel_sizes: tuple[int, ...] | Mapping[int, int] | None = None,
    data_format: str | None = None,
    attention: str | None = "eca",
    attention_kwargs: Mapping[str, Any] | None = None,
) -> keras.Model:
    """Load a model saved by :func:`save_weights_file`.

    ``.keras`` archives load with ``keras.saving.load_model`` (the ECA and pooling layers are
    registered); if ``num_classes``, ``kernel_sizes`` or ``data_format`` is given, a model of that
    configuration is built and the archive's weights are moved into it through the canonical
    format (strictly). ``.weights.h5`` files load into ``create_model(...)``; ECA kernel sizes
    and ``num_classes`` default to the ones stored in the file. ``attention`` /
    ``attention_kwargs`` (as in :func:`create_model`) say which attention a ``.weights.h5`` file's
    model carries (a mismatch is a ValueError); a ``.keras`` archive carries its own.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a model of ``name`` or does not fit the requested
            configuration (including a :class:`~eca_multi.weights.WeightMismatchError`).
    """
    path = Path(path)
    suffix = _suffix(path)
    if not path.is_file():
        raise FileNotFoundError(f"no Keras weight file at {path}")
    if suffix == ".keras":
        try:
            with _recursion_limit():
                loaded = keras.saving.load_model(path)
        except Exception as e:  # zip / h5 / config errors from deep inside Keras
            raise ValueError(f"{path} is not a readable .keras archive ({e})") from e
        if loaded.name != name:
            raise ValueError(f"{path} holds a {loaded.name!r} model, not {name!r}")
        if num_classes is None and kernel_sizes is None and data_format is None:
            return link_pooled_through(loaded)
        _, stored, want, _, (att, att_kw) = _model_schema(loaded, name)
        num_classes = want[f"{_head(name)}.bias"][0][0] if num_classes is None else num_classes
        ks = stored if kernel_sizes is None else kernel_sizes
        model = create_model(name, num_classes, ks, data_format, None, att, att_kw)
        load_canonical_model(model, export_canonical_model(loaded))
        return model
    try:
        # ECA kernel sizes are read from the file; other kinds take kernel_sizes as given
        stored = _h5_kernel_sizes(path, name) if attention == "eca" else kernel_sizes
        if num_classes is None:
            num_classes = _h5_num_classes(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable {name} .weights.h5 file ({e})") from e
    if kernel_sizes is not None and _as_key(kernel_sizes) != _as_key(stored):
        raise ValueError(
            f"{path}: ECA kernel sizes {stored} in the file differ from the requested "
            f"{kernel_sizes}"
        )
    model = create_model(name, num_classes, stored, data_format, None, attention, attention_kwargs)
    try:
        with warnings.catch_warnings():  # a failed load also warns about Functional internals
            warnings.filterwarnings("ignore", message="Skipping nested container")
            model.load_weights(path)
    except Exception as e:  # a shape or structure mismatch raised deep inside Keras
        raise ValueError(f"{path} does not fit a Keras {name} ({e})") from e
    return model


def _as_key(kernel_sizes):
    return dict(kernel_sizes) if isinstance(kernel_sizes, Mapping) else tuple(kernel_sizes)
