"""The ECA model zoo in Keras 3 (official ECA-Nets, timm's ECA-ResNets); weights: :mod:`.io`.

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
    >>> from eca_multi.keras.io import export_canonical_model, load_canonical_model
    >>> model = create_model("eca_resnet18", data_format="channels_last")
    >>> state = export_canonical_model(model)  # torch names and layouts
    >>> state["layer1.0.eca.conv.weight"].shape
    (1, 1, 3)
    >>> load_canonical_model(model, state)
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Mapping
from typing import Any, cast

import keras
import numpy as np
from keras import layers, ops

from ..archs import (
    MobileNetV2Arch,
    ResNetArch,
    block_convs,
    downsample_convs,
    get_arch,
    pools_through_last_conv,
    stem_plan,
)
from . import _ops
from .family import from_config

__all__ = [
    "BatchNormalization",
    "ECAModel",
    "PooledThrough",
    "TorchPool2D",
    "create_model",
    "keras_name",
    "link_pooled_through",
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
    and BN linked (:func:`link_pooled_through`, which :class:`ECAModel` runs), the mean comes
    from ``h`` (4x fewer channels), and ``out`` is read once, by the attention's scale::

        (W @ mean(h) - moving_mean) * gamma / sqrt(moving_variance + epsilon) + beta

    (:func:`eca_multi.archs.pools_through_last_conv`). In training, or unlinked (a plain
    ``keras.Model`` around the layers; :class:`ECAModel` links itself, also when
    ``keras.saving.load_model`` revives it), it is ``mean(out)``, the attention's own pool.
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


@keras.saving.register_keras_serializable(package="eca_multi")
class ECAModel(keras.Model):
    """A functional ECA-Net, as :func:`create_model` builds it: a ``keras.Model`` whose
    :class:`PooledThrough` layers are linked whenever the model is built, so one revived by
    ``keras.saving.load_model`` (which rebuilds it from its config through this class) runs the
    inference fast path with no relinking."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        link_pooled_through(self)


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
        conv_name, bn_name = (keras_name(n) for n in (convs[-1][0].name, convs[-1][1]))
        name = keras_name(f"{b.prefix}.pool_through")
        pooled = PooledThrough(conv_name, bn_name, data_format, name=name)([h, x])
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
            x = _bn(x, cast(str, item), data_format)  # a BN's item is its name
        else:  # the deep stem's ReLUs are torch modules conv1.2 and conv1.5
            x = layers.ReLU(name=keras_name(f"conv1.{i}"))(x)
    x = layers.ReLU(name="relu")(x)
    x = TorchPool2D("max", 3, 2, 1, data_format=data_format, name="maxpool")(x)
    for b in arch.blocks(kernel_sizes, *att):
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
    blocks = arch.blocks(kernel_sizes, *att)
    for b in blocks:
        shortcut = x
        for conv, bn, relu6 in b.convs():
            x = (
                conv_bn_relu6(x, conv, bn)
                if relu6
                else _bn(_conv(x, conv, data_format), bn, data_format)
            )
        x = _attention(
            x, b.attention_prefix, b.attention_config(data_format)
        )  # after the projection BN
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


_BUILDERS = {ResNetArch.kind: _resnet, MobileNetV2Arch.kind: _mobilenet_v2}


def _builder(kind: str):
    """The builder of an architecture kind; graphs (timm's NFNet, ByobNet, pruned ResNets) are
    :mod:`eca_multi.keras.graph`'s interpreter (imported here: it imports this module)."""
    if kind == "graph":
        from .graph import build

        return build
    return _BUILDERS[kind]


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
    build = _builder(arch.kind)
    att = (attention, dict(attention_kwargs) if attention_kwargs else None)
    outputs = build(inputs, arch, num_classes, kernel_sizes, data_format, att)
    with _recursion_limit():
        return ECAModel(inputs, outputs, name=name)


@contextlib.contextmanager
def _recursion_limit(limit: int = 20_000):
    """Keras maps a functional graph recursively: ecaresnet269d is ~1,300 layers deep."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, limit))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)
