"""The ECA-Net model zoo in PyTorch, built by walking the plans of :mod:`eca_multi.archs`.

The official ECA-Net family (Wang et al., CVPR 2020, https://arxiv.org/abs/1910.03151, code at
https://github.com/BangguWu/ECANet): torchvision-style ResNets with ECA after the block's last
BatchNorm and before the residual add, and ECA-MobileNetV2. ``state_dict`` keys and their order are
exactly the official code's (= :func:`eca_multi.archs.schema`), so an official checkpoint loads
with ``load_state_dict`` once its DataParallel ``module.`` prefix is dropped.

timm's ECA-ResNets (``ecaresnet50d`` ...) are timm's own models on the torch side:
:func:`create_model` hands those names to ``timm.create_model``. Their canonical names are timm's
``state_dict`` keys, equal to :func:`eca_multi.archs.schema` of the same name.

Every builder takes ``attention=`` (one of :data:`eca_multi.family.ATTENTIONS`, or None for the
plain network) and ``attention_kwargs=``: the block's attention module, built by
:func:`eca_multi.torch.family.from_config` from the plan's config, sits where ECA sits (attribute
``eca`` / timm's ``se``), so e.g. SE's keys are ``layer1.0.eca.fc1.weight``. Attention modules
keep their own init (:func:`eca_multi.family.init_bounds`); convs and BatchNorms get torchvision's.

Canonical model weights are the ``state_dict`` as NumPy arrays, ``num_batches_tracked`` included:
:func:`eca_multi.torch.io.export_canonical_model` / ``load_canonical_model`` work for any
``nn.Module``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from .. import archs
from . import _ops
from ._ops import full_precision, pool
from .family import CLASSES, from_config

__all__ = [
    "ECAMobileNetV2",
    "ECAResNet",
    "OFFICIAL_MODELS",
    "create_model",
    "eca_mobilenet_v2",
    "eca_resnet18",
    "eca_resnet34",
    "eca_resnet50",
    "eca_resnet101",
    "eca_resnet152",
    "model_kernel_sizes",
    "randomize_batchnorm_",
]


def _conv(plan: archs.ConvPlan) -> nn.Conv2d:
    """A bias-free Conv2d with torch's symmetric padding (k - 1) // 2."""
    return nn.Conv2d(
        plan.cin, plan.cout, plan.k, plan.stride, (plan.k - 1) // 2, groups=plan.groups, bias=False
    )


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels)  # torch BatchNorm: eps 1e-5, momentum 0.1 (the reference)


def _leaf(name: str) -> str:
    return name.rsplit(".", 1)[1]


class ECABlock(nn.Module):
    """A basic or bottleneck residual block from an :class:`eca_multi.archs.BlockPlan`.

    Attributes in the official order (conv1, bn1, ..., ``eca`` or timm's ``se``, downsample), so
    ``state_dict`` keys are ``layerX.Y.conv1.weight`` ... ``layerX.Y.eca.conv.weight``. The
    attention module is the plan's (:meth:`eca_multi.archs.BlockPlan.attention_config`); with
    ``attention=None`` the attribute is None and the block is a plain ResNet block.
    """

    def __init__(self, plan: archs.BlockPlan) -> None:
        super().__init__()
        self.pairs: list[tuple[str, str]] = []
        for conv, bn in archs.block_convs(plan):
            setattr(self, _leaf(conv.name), _conv(conv))
            setattr(self, _leaf(bn), _bn(conv.cout))
            self.pairs.append((_leaf(conv.name), _leaf(bn)))
        self.relu = nn.ReLU(inplace=True)
        self.eca_attr = plan.eca_attr
        cfg = plan.attention_config()  # ECA / ECA-NS: k from the plan, not the rule
        setattr(self, plan.eca_attr, None if cfg is None else from_config(cfg))
        # inference: the attention pools conv3's 4x smaller input (archs.pools_through_last_conv)
        self.pools_through = cfg is not None and archs.pools_through_last_conv(plan)
        ds = archs.downsample_convs(plan)
        if plan.downsample == "conv":
            ((conv, _),) = ds
            self.downsample: nn.Sequential | None = nn.Sequential(_conv(conv), _bn(conv.cout))
        elif plan.downsample == "avg":
            ((conv, _),) = ds
            # timm avg_down: AvgPool2d(2, s, ceil_mode=True, count_include_pad=False), 1x1 conv, BN
            pool = (
                nn.AvgPool2d(2, plan.stride, ceil_mode=True, count_include_pad=False)
                if plan.stride > 1
                else nn.Identity()
            )
            self.downsample = nn.Sequential(pool, _conv(conv), _bn(conv.cout))
        else:
            self.downsample = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, pooled = x, None
        attention = getattr(self, self.eca_attr)
        for i, (conv, bn) in enumerate(self.pairs):
            conv, bn = getattr(self, conv), getattr(self, bn)
            if (
                i == len(self.pairs) - 1
                and self.pools_through
                and not self.training
                and archs.pool_through_pays(conv.in_channels, out.shape[-2] * out.shape[-1])
            ):
                pooled = _pool_through(out, conv, bn, attention)  # conv3's 4x smaller input
            out = bn(conv(out))
            if i < len(self.pairs) - 1:
                out = self.relu(out)
        identity = x if self.downsample is None else self.downsample(x)
        if attention is None:
            return self.relu(out + identity)
        # after the last BN, before the residual add: the block fuses the gate multiply into the
        # add, identity + out * s in one op (addcmul), the same values as attention(out) +
        # identity without writing and re-reading out * s
        s = attention.attention(out, pooled)  # the (N, C) gate
        return self.relu(_ops.scale_add(out, s, identity, attention.config))


def _pool_through(
    h: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d, attention: nn.Module
) -> torch.Tensor | None:
    """The spatial mean of ``bn(conv(h))`` from the mean of ``h`` (a 1x1 conv, BN on running
    statistics): :func:`eca_multi.archs.pools_through_last_conv`. None if BN tracks none."""
    if bn.running_mean is None or bn.running_var is None:
        return None
    acc = torch.promote_types(torch.promote_types(h.dtype, conv.weight.dtype), torch.float32)
    with full_precision(h.device):
        m = pool(h, attention.config, acc)  # (N, C_in); only the spatial axes are used
        u = m @ conv.weight.to(acc).flatten(1).T  # (N, C_out): W @ mean(h)
        scale = torch.rsqrt(bn.running_var.to(acc) + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.to(acc)
        shift = -bn.running_mean.to(acc) * scale
        if bn.bias is not None:
            shift = shift + bn.bias.to(acc)
        return u * scale + shift


class ECAResNet(nn.Module):
    """An ECA-ResNet (official torchvision-style; timm stems and avg-down also walk here).

    Args:
        name: an architecture of :data:`eca_multi.archs.ARCHS` that is a ResNet.
        num_classes: classifier width (default: the arch's 1000).
        kernel_sizes: per-stage ECA kernel sizes (default: the arch's published ones).
        attention: the block attention (:data:`eca_multi.family.ATTENTIONS`) or None (none).
        attention_kwargs: its arguments (not ``channels`` / ``data_format``), e.g.
            ``{"groups": 8}`` for "se_gc" or ``{"rd_divisor": 8}`` for timm's SE width.

    Input shape:
        (N, 3, H, W) float32 images.

    Output shape:
        (N, num_classes) logits.
    """

    def __init__(
        self,
        name: str,
        num_classes: int | None = None,
        kernel_sizes: tuple[int, ...] | None = None,
        attention: str | None = "eca",
        attention_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        arch = archs.get_arch(name)
        if not isinstance(arch, archs.ResNetArch):
            raise ValueError(f"{name} is not a ResNet architecture")
        self.arch_name = name
        _remember(self, kernel_sizes, attention, attention_kwargs)
        stem, width = archs.stem_plan(arch)
        conv1: list[nn.Module] = []  # plain: one 7x7 conv; timm deep stems: (conv, bn, relu) x 3
        for kind, item in stem:
            if kind == "conv":
                item = cast(archs.ConvPlan, item)  # a conv's item is its plan, the rest BN names
                conv1.append(_conv(item))
                c = item.cout
            elif kind == "relu":
                conv1.append(nn.ReLU(inplace=True))
            elif item != "bn1":
                conv1.append(_bn(c))
        self.conv1 = conv1[0] if len(conv1) == 1 else nn.Sequential(*conv1)
        self.bn1 = _bn(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)  # torch pads with -inf
        blocks = arch.blocks(kernel_sizes, attention, attention_kwargs)
        for stage in range(1, len(arch.layers) + 1):
            layer = [ECABlock(b) for b in blocks if b.prefix.startswith(f"layer{stage}.")]
            setattr(self, f"layer{stage}", nn.Sequential(*layer))  # layer1 ... layer4
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # official: AvgPool2d(7) == global mean at 224
        nc = arch.num_classes if num_classes is None else num_classes
        self.fc = nn.Linear(blocks[-1].outplanes, nc)
        _init_weights(self)

    if TYPE_CHECKING:  # set by setattr in __init__
        layer1: nn.Sequential
        layer2: nn.Sequential
        layer3: nn.Sequential
        layer4: nn.Sequential

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class InvertedResidual(nn.Module):
    """ECA-MobileNetV2 block ``features.I``: ``conv`` = [ConvBNReLU6 ...], Conv2d, BN, attention.

    The attention module (the plan's; none with ``attention=None``) is the Sequential's last item.
    """

    def __init__(self, plan: archs.InvertedResidualPlan) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for conv, _, relu6 in plan.convs():
            if relu6:
                layers.append(nn.Sequential(_conv(conv), _bn(conv.cout), nn.ReLU6(inplace=True)))
            else:
                layers += [_conv(conv), _bn(conv.cout)]
        cfg = plan.attention_config()  # after the projection BN: features.I.conv.{3,4}
        if cfg is not None:
            layers.append(from_config(cfg))
        self.conv = nn.Sequential(*layers)
        self.use_res_connect = plan.use_res

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class ECAMobileNetV2(nn.Module):
    """The official ECA-MobileNetV2 (k = 1 where a block's output channels <= 96, else 3).

    Args:
        num_classes: classifier width (default 1000).
        kernel_sizes: ``{block index: k}`` for ``features.1`` ... ``features.17`` (default: the
            published "k13" rule).
        attention: the block attention (:data:`eca_multi.family.ATTENTIONS`) or None (none).
        attention_kwargs: its arguments (not ``channels`` / ``data_format``).

    Input shape:
        (N, 3, H, W) float32 images.

    Output shape:
        (N, num_classes) logits.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        kernel_sizes: Mapping[int, int] | None = None,
        attention: str | None = "eca",
        attention_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        arch = cast(archs.MobileNetV2Arch, archs.get_arch("eca_mobilenet_v2"))
        self.arch_name = arch.name
        _remember(self, kernel_sizes, attention, attention_kwargs)
        stem = archs.ConvPlan("features.0.0", 3, arch.input_channel, 3, 2)
        ks = dict(kernel_sizes) if kernel_sizes else None
        blocks = arch.blocks(ks, attention, attention_kwargs)
        last = archs.ConvPlan(f"features.{len(blocks) + 1}.0", blocks[-1].oup, arch.last_channel, 1)
        self.features = nn.Sequential(
            nn.Sequential(_conv(stem), _bn(stem.cout), nn.ReLU6(inplace=True)),
            *(InvertedResidual(b) for b in blocks),
            nn.Sequential(_conv(last), _bn(last.cout), nn.ReLU6(inplace=True)),
        )
        nc = arch.num_classes if num_classes is None else num_classes
        self.classifier = nn.Sequential(nn.Dropout(arch.dropout), nn.Linear(arch.last_channel, nc))
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).mean(-1).mean(-1)  # the official code's global mean over W then H
        return self.classifier(x)


_ATTENTION_TYPES = tuple(CLASSES.values())


def _remember(model: nn.Module, kernel_sizes, attention, attention_kwargs) -> None:
    """Record the build arguments that :func:`eca_multi.torch.io.load_canonical_model` needs."""
    archs.resolve_attention(attention, attention_kwargs)  # a clear error before any layer is built
    model.kernel_sizes_arg = kernel_sizes
    model.attention = attention
    # Module.__setattr__ takes any value; its annotation says Tensor | Module
    model.attention_kwargs = dict(attention_kwargs or {})  # type: ignore[assignment]


def _init_weights(model: nn.Module) -> None:
    """torchvision's init: Kaiming-normal (fan_out) convs, BN gamma 1 / beta 0.

    Attention modules keep their own init (SE's 1x1 convs included): ``init_bounds``.
    """
    own = {id(s) for m in model.modules() if isinstance(m, _ATTENTION_TYPES) for s in m.modules()}
    for m in model.modules():
        if id(m) in own:
            continue
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def eca_resnet18(
    kernel_sizes=None,
    num_classes: int = 1000,
    attention: str | None = "eca",
    attention_kwargs: dict[str, Any] | None = None,
) -> ECAResNet:
    """ECA-ResNet-18 (basic blocks, published k per stage 3, 5, 7, 7).

    ``attention`` / ``attention_kwargs``: the block attention, as for :class:`ECAResNet`.
    """
    return ECAResNet("eca_resnet18", num_classes, kernel_sizes, attention, attention_kwargs)


def eca_resnet34(
    kernel_sizes=None,
    num_classes: int = 1000,
    attention: str | None = "eca",
    attention_kwargs: dict[str, Any] | None = None,
) -> ECAResNet:
    """ECA-ResNet-34 (basic blocks, published k per stage 3, 3, 5, 7).

    ``attention`` / ``attention_kwargs``: the block attention, as for :class:`ECAResNet`.
    """
    return ECAResNet("eca_resnet34", num_classes, kernel_sizes, attention, attention_kwargs)


def eca_resnet50(
    kernel_sizes=None,
    num_classes: int = 1000,
    attention: str | None = "eca",
    attention_kwargs: dict[str, Any] | None = None,
) -> ECAResNet:
    """ECA-ResNet-50 (bottlenecks, published k per stage 3, 5, 5, 7).

    ``attention`` / ``attention_kwargs``: the block attention, as for :class:`ECAResNet`.
    """
    return ECAResNet("eca_resnet50", num_classes, kernel_sizes, attention, attention_kwargs)


def eca_resnet101(
    kernel_sizes=None,
    num_classes: int = 1000,
    attention: str | None = "eca",
    attention_kwargs: dict[str, Any] | None = None,
) -> ECAResNet:
    """ECA-ResNet-101 (bottlenecks, published k per stage 3, 3, 5, 7).

    ``attention`` / ``attention_kwargs``: the block attention, as for :class:`ECAResNet`.
    """
    return ECAResNet("eca_resnet101", num_classes, kernel_sizes, attention, attention_kwargs)


def eca_resnet152(
    kernel_sizes=None,
    num_classes: int = 1000,
    attention: str | None = "eca",
    attention_kwargs: dict[str, Any] | None = None,
) -> ECAResNet:
    """ECA-ResNet-152 (bottlenecks, published k per stage 3, 3, 5, 7).

    ``attention`` / ``attention_kwargs``: the block attention, as for :class:`ECAResNet`.
    """
    return ECAResNet("eca_resnet152", num_classes, kernel_sizes, attention, attention_kwargs)


def eca_mobilenet_v2(
    kernel_sizes=None,
    num_classes: int = 1000,
    attention: str | None = "eca",
    attention_kwargs: dict[str, Any] | None = None,
) -> ECAMobileNetV2:
    """ECA-MobileNetV2 (k = 1 for blocks with <= 96 output channels, else 3); ``attention`` as
    :class:`ECAMobileNetV2`."""
    return ECAMobileNetV2(num_classes, kernel_sizes, attention, attention_kwargs)


OFFICIAL_MODELS = {
    "eca_resnet18": eca_resnet18,
    "eca_resnet34": eca_resnet34,
    "eca_resnet50": eca_resnet50,
    "eca_resnet101": eca_resnet101,
    "eca_resnet152": eca_resnet152,
    "eca_mobilenet_v2": eca_mobilenet_v2,
}


def _timm_model(
    name: str,
    num_classes: int | None,
    kernel_sizes,
    attention: str | None = "eca",
    attention_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    try:
        import timm
        from timm.layers.eca import EcaModule
    except ImportError as e:
        raise ImportError(
            f"{name} is a timm architecture: its torch model is timm's; pip install timm"
        ) from e
    archs.resolve_attention(attention, attention_kwargs)  # a clear error before timm builds
    kwargs: dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
    model = timm.create_model(name, pretrained=False, **kwargs)
    _remember(model, kernel_sizes, attention, attention_kwargs)
    if attention != "eca" or attention_kwargs:  # our module in each block's ``se`` (or none)
        arch = archs.get_arch(name)
        arch.blocks(kernel_sizes, attention, attention_kwargs)  # graph archs: timm's ECA only
        for b in arch.blocks(kernel_sizes, attention, attention_kwargs):
            b = cast(archs.BlockPlan, b)  # a timm ResNet's (graph archs raised above)
            cfg = b.attention_config()
            se = None if cfg is None else from_config(cfg)
            # Module.__setattr__ takes None for a registered submodule; annotated Tensor | Module
            model.get_submodule(b.prefix).se = se  # type: ignore[assignment]
    elif kernel_sizes is not None:  # timm's rule sets k; swap in an ECA of the requested k
        for b in archs.get_arch(name).blocks(tuple(kernel_sizes)):
            conv = cast(nn.Conv1d, model.get_submodule(b.attention_prefix).conv)  # timm's ECA
            if conv.kernel_size[0] != b.k:
                model.set_submodule(b.attention_prefix, EcaModule(channels=None, kernel_size=b.k))
    return model


def create_model(
    name: str,
    num_classes: int | None = None,
    kernel_sizes=None,
    attention: str | None = "eca",
    attention_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """Build a torch model by architecture name (random init, training mode like any new module).

    Args:
        name: an official name (``eca_resnet50``, ``eca_mobilenet_v2`` ...) or a timm ECA-ResNet
            (``ecaresnet50d`` ...; built by ``timm.create_model(name, pretrained=False)``).
        num_classes: classifier width (default 1000).
        kernel_sizes: per-stage ECA kernel sizes for ResNets, ``{block index: k}`` for
            MobileNetV2; default: the architecture's own.
        attention: the attention in every block: one of :data:`eca_multi.family.ATTENTIONS`
            ("eca" by default; e.g. "se", "se_gc", "eca_ns") or None for the plain network.
            For timm names other than "eca", each block's ``se`` becomes our module.
        attention_kwargs: the attention's arguments other than ``channels`` / ``data_format``
            (e.g. ``{"rd_divisor": 8}``: timm's SE width; ``{"groups": 8}`` for SE-GC, default 4).

    Raises:
        KeyError: unknown name. ImportError: a timm name without timm installed.
        ValueError: an unknown attention or an argument it does not take.

    Example:
        >>> m = create_model("eca_resnet50", num_classes=10, attention="se")
        >>> m.layer1[0].eca
        SE(channels=256, rd_channels=16, data_format='channels_first')
    """
    arch = archs.get_arch(name)
    if arch.family == "timm":
        return _timm_model(name, num_classes, kernel_sizes, attention, attention_kwargs)
    nc = arch.num_classes if num_classes is None else num_classes
    return OFFICIAL_MODELS[name](
        kernel_sizes=kernel_sizes,
        num_classes=nc,
        attention=attention,
        attention_kwargs=attention_kwargs,
    )


def model_kernel_sizes(name: str, model: nn.Module):
    """The ECA kernel sizes a built model holds (per stage, or {block index: k} for MobileNetV2)."""
    return archs.kernel_sizes_from_state(name, model.state_dict())


def randomize_batchnorm_(
    model: nn.Module, seed: int = 0, name: str | None = None, image_size: int = 128
) -> nn.Module:
    """Give every BatchNorm random, well-posed affine parameters and statistics (tests, examples).

    Weight-standardized convs (NFNet's ScaledStdConv2d) get random gains U(0.5, 1.5) (U(0.2, 0.6)
    where they end a residual branch) and biases N(0, 0.1); graph architectures
    (:mod:`eca_multi.graph`) get their classifier scaled to logits of unit spread.

    gamma ~ U(0.5, 1.5) (U(0.2, 0.6) for the BN that ends a residual branch, cf. timm's
    zero_init_last), beta ~ N(0, 0.1); running statistics estimated on one random image, then
    jittered (mean + 0.05 sigma noise, variance x U(0.95, 1.05)) so they differ per channel and
    from 0 / 1; ``num_batches_tracked`` random. NOTE: fully random statistics make deep nets
    chaotic (eca_resnet101 logits ~1e3, float32 vs float64 differences far above 1e-4), so a
    port could not be held to 1e-4 on them.

    Args:
        model: our model or timm's (any module with BatchNorms; returned in eval mode).
        seed: seeds the affine parameters, the image and the jitter.
        name: architecture name for the branch-ending BNs (default: ``model.arch_name`` or timm's
            ``pretrained_cfg["architecture"]``).
        image_size: side of the calibration image.
    """
    name = (
        name
        or getattr(model, "arch_name", None)
        or getattr(model, "pretrained_cfg", {}).get("architecture")
    )
    last = archs.branch_end_bns(name) if name in archs.ARCHS else set()
    g = torch.Generator().manual_seed(seed)
    bns = {k: m for k, m in model.named_modules() if isinstance(m, _ops.BATCH_NORMS)}
    with torch.no_grad():
        # weight-standardized convs (timm's ScaledStdConv2d: NFNet has no BatchNorm): random
        # gains, small gains where the conv ends a residual branch (timm zero-inits them), biases
        for key, m in model.named_modules():
            gain = getattr(m, "gain", None)
            if isinstance(m, nn.Conv2d) and isinstance(gain, nn.Parameter):
                lo, hi = (0.2, 0.6) if key in last else (0.5, 1.5)
                gain.copy_(lo + (hi - lo) * torch.rand(gain.shape, generator=g))
                if m.bias is not None:
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
        for key, bn in bns.items():
            lo, hi = (0.2, 0.6) if key in last else (0.5, 1.5)
            bn.weight.copy_(lo + (hi - lo) * torch.rand(bn.num_features, generator=g))
            bn.bias.copy_(0.1 * torch.randn(bn.num_features, generator=g))
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average: the one batch sets the statistics
        model.train()(torch.randn(1, 3, image_size, image_size, generator=g))
        for bn in bns.values():
            bn.momentum = 0.1  # torch's default again
            noise = torch.randn(bn.num_features, generator=g)
            # tracked statistics (reset_running_stats above): the buffers are tensors
            mean, var = cast(torch.Tensor, bn.running_mean), cast(torch.Tensor, bn.running_var)
            mean.add_(0.05 * var.sqrt() * noise)
            var.mul_(0.95 + 0.1 * torch.rand(bn.num_features, generator=g))
            count = cast(torch.Tensor, bn.num_batches_tracked)
            count.fill_(int(torch.randint(1, 10_000, (1,), generator=g)))
        if name in archs.ARCHS and archs.get_arch(name).kind == "graph":
            # logits of unit size on the calibration image (a random head on deep features can
            # give logits ~50, where float32 rounding alone reaches the 1e-4 port tolerance)
            image = torch.randn(2, 3, image_size, image_size, generator=g)
            fc = model.eval().get_submodule(archs.head_name(name))
            cast(torch.Tensor, fc.weight).mul_(1.0 / float(model(image).std()))
    return model.eval()
