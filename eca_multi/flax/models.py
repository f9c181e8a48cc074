"""The ECA-Net model zoo in Flax NNX, built by walking the plans of :mod:`eca_multi.archs`.

The official ECA-Net family (Wang et al., CVPR 2020, https://arxiv.org/abs/1910.03151, code at
https://github.com/BangguWu/ECANet): torchvision-style ResNets and ECA-MobileNetV2; and timm's
ECA-ResNets (deep / tiered stems, average-pool downsample). Inputs are NHWC (Flax convention).

Module attributes mirror the torch module paths: ``layer1`` is a :class:`Sequential` (an
``nnx.List``) of blocks, the deep stem ``conv1`` a Sequential with stateless activations at
torch's ReLU indices, and so on. So the path of every Conv / BatchNorm / Linear / ECA in
``nnx.iter_modules`` joined by dots is its canonical (torch ``state_dict``) name, and the
``nnx.state`` paths read ``layer1.0.eca.kernel``. :mod:`eca_multi.flax.io` walks the model for
canonical weights and holds our own Flax export (msgpack). :func:`abstract_model` skips the random
init when weights will be loaded anyway.

``attention=`` swaps ECA for any member of the paper's channel-attention family
(:mod:`eca_multi.flax.family`: "eca_ns", "se", "se_var1", "se_var2", "se_var3", "se_gc") or for
nothing (``None``: the plain ResNet / MobileNetV2); the module sits where ECA sits, under the same
attribute, so its canonical keys read e.g. ``layer1.0.eca.fc1.weight``.

Models are returned in eval mode (BatchNorm running averages, no dropout): ``model.train()``
switches to batch statistics, ``model.eval()`` back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from .. import archs
from ..graph import GraphArch
from ..spec import ECAConfig
from ._ops import scale
from .family import from_config
from .layer import ECA

__all__ = [
    "BatchCount",
    "BatchNorm",
    "ECABlock",
    "ECAMobileNetV2",
    "ECAResNet",
    "InvertedResidual",
    "Sequential",
    "abstract_model",
    "create_model",
]

# torch BatchNorm2d: eps 1e-5; torch momentum 0.1 weights the new batch, Flax's the old average
_BN_EPS, _BN_MOMENTUM = 1e-5, 0.9


class BatchCount(nnx.BatchStat):
    """torch's ``num_batches_tracked`` (int32 in JAX without x64; exported as int64)."""


class BatchNorm(nnx.BatchNorm):
    """nnx.BatchNorm that also counts training batches like torch's ``num_batches_tracked``."""

    def __init__(self, num_features: int, *, rngs: nnx.Rngs, **kwargs: Any) -> None:
        # NNX BatchNorm defaults to training mode; build in eval mode (use_running_average=True)
        super().__init__(
            num_features,
            use_running_average=True,
            momentum=_BN_MOMENTUM,
            epsilon=_BN_EPS,
            rngs=rngs,
            **kwargs,
        )
        self.num_batches_tracked = BatchCount(jnp.zeros((), jnp.int32))

    def __call__(self, x: jax.Array, use_running_average: bool | None = None, **kw: Any):
        if use_running_average is None:
            use_running_average = self.use_running_average
        if use_running_average:
            return super().__call__(x, True, **kw)
        old_var = self.var[...]
        y = super().__call__(x, False, **kw)
        n = x.size // x.shape[-1]  # values per channel in this batch
        new_part = self.var[...] - self.momentum * old_var  # (1 - momentum) * biased batch var
        # torch updates running_var with the unbiased batch variance (n / (n - 1)); Flax biased
        self.var[...] = self.var[...] + new_part / max(n - 1, 1)
        self.num_batches_tracked[...] = self.num_batches_tracked[...] + 1
        return y


class _Act(nnx.Module):
    """A stateless activation holding the index torch gives it in a Sequential."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu6(x) if self.kind == "relu6" else jax.nn.relu(x)


class _Identity(nnx.Module):
    """timm's ``nn.Identity`` at ``downsample.0`` of a stride-1 average-pool downsample."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return x


class _AvgPoolCeil(nnx.Module):
    """torch ``AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)`` on NHWC input."""

    def __call__(self, x: jax.Array) -> jax.Array:
        h, w = x.shape[1:3]
        # ceil_mode: an odd edge gets a partial last window, averaged over its valid elements only
        pad = ((0, 0), (0, h % 2), (0, w % 2), (0, 0))
        window = (1, 2, 2, 1)
        s = lax.reduce_window(
            jnp.pad(x, pad), np.zeros((), x.dtype), lax.add, window, window, "VALID"
        )
        count = np.pad(np.ones((h, w), np.float32), pad[1:3])
        count = count.reshape(count.shape[0] // 2, 2, count.shape[1] // 2, 2).sum((1, 3))
        return s / jnp.asarray(count[None, :, :, None], x.dtype)


def _max_pool(x: jax.Array, k: int = 3, stride: int = 2, pad: int = 1) -> jax.Array:
    """torch ``MaxPool2d(k, stride, pad)`` on NHWC: pad with -inf (never the max), then VALID."""
    x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=-jnp.inf)
    window, strides = (1, k, k, 1), (1, stride, stride, 1)
    return lax.reduce_window(x, np.array(-np.inf, x.dtype), lax.max, window, strides, "VALID")


class Sequential(nnx.List):
    """torch's ``nn.Sequential``: an ``nnx.List`` (paths = torch indices), called in order."""

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self:
            x = layer(x)
        return x


def _no_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32):
    """Initializer of :func:`abstract_model`: the shape only, no random draw and no compile."""
    return jax.ShapeDtypeStruct(shape, dtype)


class _Factory:
    """Creates the leaf layers with one set of rngs and dtypes (``abstract``: shapes only)."""

    def __init__(self, rngs: nnx.Rngs, dtype: Any, param_dtype: Any, abstract: bool = False):
        self.rngs, self.dtype, self.param_dtype = rngs, dtype, param_dtype
        self.abstract = abstract

    def _init(self, init: Any) -> Any:
        return _no_init if self.abstract else init

    def conv(self, p: archs.ConvPlan) -> nnx.Conv:
        pad = (p.k - 1) // 2  # torch's symmetric padding; XLA "SAME" pads stride 2 asymmetrically
        return nnx.Conv(
            p.cin,
            p.cout,
            (p.k, p.k),
            p.stride,
            padding=((pad, pad), (pad, pad)),
            feature_group_count=p.groups,
            use_bias=False,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            rngs=self.rngs,
            # torchvision's kaiming_normal_(mode="fan_out", nonlinearity="relu")
            kernel_init=self._init(nnx.initializers.variance_scaling(2.0, "fan_out", "normal")),
        )

    def bn(self, channels: int) -> BatchNorm:
        return BatchNorm(
            channels,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            scale_init=self._init(nnx.initializers.ones),
            bias_init=self._init(nnx.initializers.zeros),
            rngs=self.rngs,
        )

    def eca(self, channels: int | None, k: int) -> ECA:
        # k from the plan (published per-stage k or timm's rule), padding "zeros", sigmoid gate
        return ECA(channels, k, param_dtype=self.param_dtype, rngs=self.rngs)

    def attention(self, config: Any) -> nnx.Module:
        """The block's attention module (NHWC): ECA as :meth:`eca`, or a family member."""
        if isinstance(config, ECAConfig):
            return self.eca(config.channels, config.kernel_size)
        if self.abstract:  # shapes only: no random draw (SE-Var3 at C = 2048 is 4M weights)
            return nnx.eval_shape(lambda: from_config(config, param_dtype=self.param_dtype))
        return from_config(config, param_dtype=self.param_dtype, rngs=self.rngs)

    def linear(self, cin: int, cout: int) -> nnx.Linear:
        return nnx.Linear(
            cin,
            cout,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=self._init(nnx.initializers.lecun_normal()),
            bias_init=self._init(nnx.initializers.zeros),
            rngs=self.rngs,
        )


def _leaf(name: str) -> str:
    return name.rsplit(".", 1)[1]


class ECABlock(nnx.Module):
    """A basic or bottleneck block: convs, BNs, attention (ECA ...) after the last BN, residual.

    ``plan.attention`` None builds no attention module (a plain ResNet block).
    """

    def __init__(self, plan: archs.BlockPlan, make: _Factory) -> None:
        self.pairs = tuple((_leaf(c.name), _leaf(bn)) for c, bn in archs.block_convs(plan))
        for conv, bn in archs.block_convs(plan):
            setattr(self, _leaf(conv.name), make.conv(conv))
            setattr(self, _leaf(bn), make.bn(conv.cout))
        config = plan.attention_config("channels_last")
        self.eca_attr = None if config is None else plan.eca_attr  # "eca" (official), "se" (timm)
        if config is not None:
            setattr(self, plan.eca_attr, make.attention(config))
        # at inference the attention pools conv3's input (archs.pools_through_last_conv)
        self.pools_through = config is not None and archs.pools_through_last_conv(plan)
        ds = archs.downsample_convs(plan)
        if plan.downsample == "avg":  # timm: pool (Identity at stride 1) at .0, conv .1, bn .2
            pool = _AvgPoolCeil() if plan.stride > 1 else _Identity()
            self.downsample = Sequential([pool, make.conv(ds[0][0]), make.bn(ds[0][0].cout)])
        else:  # official: conv .0, bn .1; an empty list is the identity shortcut
            self.downsample = Sequential(
                [m for c, _ in ds for m in (make.conv(c), make.bn(c.cout))]
            )

    def __call__(self, x: jax.Array) -> jax.Array:
        out, pooled = x, None
        for i, (conv, bn) in enumerate(self.pairs):
            conv, bn = getattr(self, conv), getattr(self, bn)
            # every bottleneck under XLA (1.01x the plain net; only where archs.pool_through_pays
            # says so, as torch eager does: 1.02x, measured)
            if i == len(self.pairs) - 1 and self.pools_through and bn.use_running_average:
                pooled = _pool_through(out, conv, bn)  # conv3's 4x smaller input
            out = bn(conv(out))
            out = out if i == len(self.pairs) - 1 else jax.nn.relu(out)
        if self.eca_attr is not None:  # after the last BN, before the residual add
            attention = getattr(self, self.eca_attr)
            out = scale(attention.config, out, attention.gate(out, pooled))  # the (N, C) gate
        return jax.nn.relu(out + self.downsample(x))


def _pool_through(h: jax.Array, conv: nnx.Conv, bn: BatchNorm) -> jax.Array:
    """The spatial mean of ``bn(conv(h))`` (NHWC) from the mean of ``h``: a 1x1 conv and BN on
    running statistics commute with it (:func:`eca_multi.archs.pools_through_last_conv`)."""
    dtype = jnp.result_type(jnp.float32, h.dtype)
    m = jnp.mean(h, axis=(1, 2), dtype=dtype)  # (N, C_in)
    u = jnp.dot(m, conv.kernel[...][0, 0].astype(dtype), precision=lax.Precision.HIGHEST)
    scale = lax.rsqrt(bn.var[...].astype(dtype) + bn.epsilon)
    if bn.scale is not None:
        scale = scale * bn.scale[...].astype(dtype)
    shift = -bn.mean[...].astype(dtype) * scale
    if bn.bias is not None:
        shift = shift + bn.bias[...].astype(dtype)
    return u * scale + shift


class ECAResNet(nnx.Module):
    """An ECA-ResNet (official or timm) on NHWC input; logits of shape (N, num_classes)."""

    if TYPE_CHECKING:  # set by setattr in __init__ (one Sequential per stage)
        layer1: Sequential
        layer2: Sequential
        layer3: Sequential
        layer4: Sequential

    def __init__(
        self,
        arch: archs.ResNetArch,
        num_classes: int,
        kernel_sizes: tuple[int, ...],
        make: _Factory,
        attention: str | None = "eca",
        attention_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.arch_name, self.num_classes, self.kernel_sizes = arch.name, num_classes, kernel_sizes
        self.attention, self._attention_args = archs.resolve_attention(attention, attention_kwargs)
        stem, _ = archs.stem_plan(arch)
        self.conv1: nnx.Conv | Sequential
        if arch.stem == "plain":
            self.conv1 = make.conv(cast(archs.ConvPlan, stem[0][1]))  # ("conv", conv1) first
        else:  # deep stem Sequential: conv .0, bn .1, relu .2, conv .3, bn .4, relu .5, conv .6
            layers: list[nnx.Module] = []
            width = 0
            for kind, item in stem[:-1]:
                if isinstance(item, archs.ConvPlan):  # kind "conv"
                    layers.append(make.conv(item))
                    width = item.cout
                else:
                    layers.append(make.bn(width) if kind == "bn" else _Act("relu"))
            self.conv1 = Sequential(layers)
        self.bn1 = make.bn(archs.stem_plan(arch)[1])
        blocks = arch.blocks(kernel_sizes, self.attention, self.attention_kwargs)
        for stage in range(1, 5):
            name = f"layer{stage}"
            setattr(
                self,
                name,
                Sequential([ECABlock(b, make) for b in blocks if b.prefix.split(".")[0] == name]),
            )
        self.fc = make.linear(blocks[-1].outplanes, num_classes)

    @property
    def attention_kwargs(self) -> dict[str, Any]:
        return dict(self._attention_args)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """Logits of NHWC ``x``; ``rngs`` is accepted for one API (ResNets have no dropout)."""
        x = self.conv1(x)
        x = _max_pool(jax.nn.relu(self.bn1(x)))
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
        return self.fc(jnp.mean(x, axis=(1, 2)))  # global average pool, then fc


class InvertedResidual(nnx.Module):
    """ECA-MobileNetV2 block: ``conv`` = [expand ConvBNReLU6], dw ConvBNReLU6, pw conv, BN, ECA.

    The attention module (ECA or a family member) is the last element of ``conv``; none when
    ``plan.attention`` is None.
    """

    def __init__(self, plan: archs.InvertedResidualPlan, make: _Factory) -> None:
        self.use_res = plan.use_res  # x + conv(x) when stride 1 and inp == oup
        layers: list[nnx.Module] = []
        for conv, _, relu6 in plan.convs():
            if relu6:
                layers.append(Sequential([make.conv(conv), make.bn(conv.cout), _Act("relu6")]))
            else:
                layers += [make.conv(conv), make.bn(conv.cout)]
        config = plan.attention_config("channels_last")
        self.conv = Sequential([*layers, *([] if config is None else [make.attention(config)])])

    def __call__(self, x: jax.Array) -> jax.Array:
        out = self.conv(x)
        return x + out if self.use_res else out


class ECAMobileNetV2(nnx.Module):
    """The official ECA-MobileNetV2 on NHWC input; logits of shape (N, num_classes)."""

    def __init__(
        self,
        arch: archs.MobileNetV2Arch,
        num_classes: int,
        kernel_sizes: dict[int, int],
        make: _Factory,
        attention: str | None = "eca",
        attention_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.arch_name, self.num_classes = arch.name, num_classes
        self._ks = tuple(sorted(kernel_sizes.items()))  # hashable static attribute
        self.attention, self._attention_args = archs.resolve_attention(attention, attention_kwargs)
        blocks = arch.blocks(kernel_sizes, self.attention, self.attention_kwargs)
        first = archs.ConvPlan("features.0.0", 3, arch.input_channel, 3, 2)
        last = archs.ConvPlan("", blocks[-1].oup, arch.last_channel, 1)
        self.features = Sequential(
            [
                Sequential([make.conv(first), make.bn(first.cout), _Act("relu6")]),
                *(InvertedResidual(b, make) for b in blocks),
                Sequential([make.conv(last), make.bn(last.cout), _Act("relu6")]),
            ]
        )
        # Dropout(0.25) at classifier.0 (inactive in eval mode; its rngs come with the call, so
        # the model's state is weights only), Linear at classifier.1
        self.classifier = Sequential(
            [
                nnx.Dropout(arch.dropout, deterministic=True),
                make.linear(arch.last_channel, num_classes),
            ]
        )

    @property
    def kernel_sizes(self) -> dict[int, int]:
        return dict(self._ks)

    @property
    def attention_kwargs(self) -> dict[str, Any]:
        return dict(self._attention_args)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """Logits of NHWC ``x``; ``rngs`` (a ``dropout`` stream) is needed in train mode only."""
        dropout, fc = self.classifier
        return fc(dropout(jnp.mean(self.features(x), axis=(1, 2)), rngs=rngs))


def create_model(
    name: str,
    num_classes: int | None = None,
    kernel_sizes: Any = None,
    *,
    rngs: nnx.Rngs | None = None,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
    attention: str | None = "eca",
    attention_kwargs: Mapping[str, Any] | None = None,
) -> ECAResNet | ECAMobileNetV2:
    """Build an NNX model of any architecture in :data:`eca_multi.archs.ARCHS` (random init).

    Args:
        name: ``eca_resnet18`` ... ``eca_resnet152``, ``eca_mobilenet_v2`` or a timm ECA-ResNet
            (``ecaresnetlight``, ``ecaresnet26t``, ``ecaresnet50d`` ...).
        num_classes: classifier width (default 1000).
        kernel_sizes: per-stage ECA kernel sizes for ResNets, ``{block index: k}`` for
            MobileNetV2; default: the architecture's own (published k, or timm's rule).
        rngs: random streams for the initial weights (default ``nnx.Rngs(0)``).
        dtype: computation dtype of convolutions, BatchNorms and the classifier (default: inferred).
        param_dtype: dtype of the parameters.
        attention: the channel attention of every block: "eca" (default), "eca_ns", "se",
            "se_var1", "se_var2", "se_var3", "se_gc" (:mod:`eca_multi.flax.family`), or None for
            the plain network without attention.
        attention_kwargs: arguments of that attention (e.g. ``{"groups": 8}`` for "se_gc",
            ``{"rd_divisor": 8}`` for timm's SE width); channels and data_format are set per block.

    Returns:
        The model in eval mode (``model.train()`` switches BatchNorm to batch statistics); input
        NHWC ``(N, H, W, 3)``, output logits ``(N, num_classes)``.

    Example:
        >>> model = create_model("eca_resnet18", num_classes=10)
        >>> model(jnp.zeros((1, 64, 64, 3))).shape
        (1, 10)
        >>> create_model("eca_resnet18", num_classes=10, attention="se").layer1[0].eca
        flax.nnx.SE(channels=64, rd_channels=4, data_format='channels_last')
    """
    make = _Factory(rngs if rngs is not None else nnx.Rngs(0), dtype, param_dtype)
    return _build(name, num_classes, kernel_sizes, make, attention, attention_kwargs)


_MODELS = {archs.ResNetArch.kind: ECAResNet, archs.MobileNetV2Arch.kind: ECAMobileNetV2}


def _build(
    name: str,
    num_classes: int | None,
    kernel_sizes: Any,
    make: _Factory,
    attention: str | None = "eca",
    attention_kwargs: Mapping[str, Any] | None = None,
):
    arch = archs.get_arch(name)
    nc = arch.num_classes if num_classes is None else int(num_classes)
    att = (attention, attention_kwargs)
    ks = archs.default_kernel_sizes(name, kernel_sizes)
    if isinstance(arch, GraphArch):  # timm's NFNet, ByobNet, pruned ResNets: the graph
        from .graph import GraphNet  # (it imports this module)

        return GraphNet(arch, nc, ks, make, *att)
    return _MODELS[arch.kind](arch, nc, ks, make, *att)


def abstract_model(
    name: str,
    num_classes: int | None = None,
    kernel_sizes: Any = None,
    *,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
    attention: str | None = "eca",
    attention_kwargs: Mapping[str, Any] | None = None,
) -> ECAResNet | ECAMobileNetV2:
    """The model of :func:`create_model` without its weights: the fast start for loading.

    Convolution, Linear and BatchNorm affine parameters (and the weights of non-ECA attention
    modules) hold a ``jax.ShapeDtypeStruct`` until :func:`load_canonical_model` (strict) fills
    them (BatchNorm statistics and the small ECA kernels get their usual initial values). This
    skips the random initialisation, which on CPU costs one XLA compile per distinct weight shape
    (tens of seconds for a deep network); ``nnx.eval_shape`` of the whole model would trace
    instead, and NNX's RNG bookkeeping makes that quadratic in depth (family modules are small
    and are built under ``nnx.eval_shape`` one at a time).
    """
    make = _Factory(nnx.Rngs(0), dtype, param_dtype, True)
    return _build(name, num_classes, kernel_sizes, make, attention, attention_kwargs)
