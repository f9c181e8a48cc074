"""Framework-free architecture tables for the ECA model zoo, and their canonical weight schemas.

Two families:

* the official ECA-Net code (Wang et al., https://github.com/BangguWu/ECANet): torchvision-style
  ResNets with ECA after the block's last BatchNorm (key ``layerX.Y.eca.conv.weight``) and
  ECA-MobileNetV2 (ECA last in each inverted residual's ``conv`` Sequential), per-stage kernel
  sizes as published (they do NOT follow the paper's rule);
* timm's ECA-ResNets (``timm.models.resnet``): Bottleneck blocks, deep / tiered stems, average-pool
  downsample, ECA as the block's ``se`` attribute with timm's kernel rule (min 3).

Every framework builds its models by walking the same plans (:func:`resnet_blocks`,
:func:`mobilenet_v2_blocks`) so names, shapes and kernel sizes agree by construction. Canonical
names are torch ``state_dict`` keys (the official code's, or timm's).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, ClassVar

from .family import ATTENTIONS, AttentionConfig, attention_config, attention_schema, param_count
from .graph import ByobArch, GraphArch, NFNetArch, PrunedResNetArch, read_pruned_table
from .spec import ECAConfig
from .spec import kernel_size as rule_kernel_size
from .weights.layouts import Layout

# kernel sizes as the builders take them: per stage (a sequence; graph architectures: one k per
# ECA module, in order) or {block index: k} (MobileNetV2); both are indexed by slot
KernelSizes = Sequence[int] | Mapping[int, int]

__all__ = [
    "ARCHS",
    "MAX_CLASSES",
    "SIZE_MARGIN",
    "AttentionArgs",
    "attention_params",
    "block_attention",
    "branch_end_bns",
    "default_kernel_sizes",
    "head_name",
    "kernel_sizes_from_kernels",
    "num_classes_from_state",
    "resolve_attention",
    "BlockPlan",
    "InvertedResidualPlan",
    "MobileNetV2Arch",
    "ResNetArch",
    "get_arch",
    "kernel_sizes_from_state",
    "max_state_bytes",
    "max_tensor_bytes",
    "tensor_bytes_bounds",
    "mobilenet_v2_blocks",
    "pool_through_pays",
    "pools_through_last_conv",
    "resnet_blocks",
    "schema",
    "stem_plan",
]


@dataclass(frozen=True)
class ResNetArch:
    """A ResNet with ECA. ``kernel_sizes`` per stage (official) or None for timm's rule (min 3)."""

    name: str
    family: str  # "official" or "timm"
    block: str  # "basic" or "bottleneck"
    layers: tuple[int, ...]
    kernel_sizes: tuple[int, ...] | None
    stem: str = "plain"  # "plain" (7x7), "deep" (3 x 3x3), "deep_tiered"
    stem_width: int = 64
    avg_down: bool = False
    eca_attr: str = "eca"  # "eca" (official) or "se" (timm)
    num_classes: int = 1000

    kind: ClassVar[str] = "resnet"  # which builder of each backend's models.py walks it
    head: ClassVar[str] = "fc"  # the classifier's module path
    kernel_slots: ClassVar[str] = "per stage"  # one k per stage: a tuple

    @property
    def expansion(self) -> int:
        return 4 if self.block == "bottleneck" else 1

    def blocks(
        self,
        kernel_sizes: KernelSizes | None = None,
        attention: str | None = "eca",
        attention_kwargs: dict[str, Any] | None = None,
    ) -> list[BlockPlan]:
        """The residual blocks in order (:func:`resnet_blocks`)."""
        return resnet_blocks(self, kernel_sizes, attention, attention_kwargs)

    def pack_kernel_sizes(self, per_slot: Mapping[int, int]) -> tuple[int, ...]:
        """{stage index: k} -> the per-stage tuple builders take."""
        return tuple(int(per_slot[i]) for i in range(len(self.layers)))

    def layers_text(self) -> str:
        return f"{self.block} {'-'.join(map(str, self.layers))}, {self.stem} stem"

    def kernel_rule_text(self) -> str:
        rule = "published" if self.kernel_sizes is not None else "timm rule, min 3"
        ks = ",".join(map(str, self.pack_kernel_sizes({b.slot: b.k for b in self.blocks()})))
        return f"{ks} per stage ({rule})"


@dataclass(frozen=True)
class MobileNetV2Arch:
    """The official ECA-MobileNetV2: k = 1 where the block's output channels <= 96, else 3."""

    name: str
    family: str = "official"
    setting: tuple[tuple[int, int, int, int], ...] = (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )  # (expand t, out c, repeats n, stride s)
    small_k: int = 1
    large_k: int = 3
    k_threshold: int = 96
    input_channel: int = 32
    last_channel: int = 1280
    dropout: float = 0.25
    num_classes: int = 1000

    kind: ClassVar[str] = "mobilenet_v2"
    head: ClassVar[str] = "classifier.1"
    kernel_slots: ClassVar[str] = "per block"  # one k per inverted residual: {index: k}

    def blocks(
        self,
        kernel_sizes: KernelSizes | None = None,
        attention: str | None = "eca",
        attention_kwargs: dict[str, Any] | None = None,
    ) -> list[InvertedResidualPlan]:
        """The inverted residuals in order (:func:`mobilenet_v2_blocks`)."""
        return mobilenet_v2_blocks(self, kernel_sizes, attention, attention_kwargs)

    def pack_kernel_sizes(self, per_slot: Mapping[int, int]) -> dict[int, int]:
        return {int(i): int(k) for i, k in sorted(per_slot.items())}

    def layers_text(self) -> str:
        return f"inverted residuals x{len(self.blocks())}"

    def kernel_rule_text(self) -> str:
        return f"k={self.small_k} if out channels <= {self.k_threshold} else k={self.large_k} (k13)"


def _pruned_table(name: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """timm's pruned-model widths, shipped as package data (eca_multi/data/, from timm 1.0.31)."""
    text = resources.files("eca_multi").joinpath(f"data/{name}.txt").read_text("ascii")
    return read_pruned_table(text)


Arch = ResNetArch | MobileNetV2Arch | GraphArch

_OFF, _TIMM = "official", "timm"
ARCHS: dict[str, Arch] = {
    a.name: a
    for a in (
        # official: published per-stage k (k3557 for ResNet-50 etc.)
        ResNetArch("eca_resnet18", _OFF, "basic", (2, 2, 2, 2), (3, 5, 7, 7)),
        ResNetArch("eca_resnet34", _OFF, "basic", (3, 4, 6, 3), (3, 3, 5, 7)),
        ResNetArch("eca_resnet50", _OFF, "bottleneck", (3, 4, 6, 3), (3, 5, 5, 7)),
        ResNetArch("eca_resnet101", _OFF, "bottleneck", (3, 4, 23, 3), (3, 3, 5, 7)),
        ResNetArch("eca_resnet152", _OFF, "bottleneck", (3, 8, 36, 3), (3, 3, 5, 7)),
        MobileNetV2Arch("eca_mobilenet_v2"),
        # timm: kernel from the rule with min 3, ECA under the attribute "se"
        ResNetArch(
            "ecaresnetlight", _TIMM, "bottleneck", (1, 1, 11, 3), None, "plain", 32, True, "se"
        ),
        ResNetArch(
            "ecaresnet26t", _TIMM, "bottleneck", (2, 2, 2, 2), None, "deep_tiered", 32, True, "se"
        ),
        ResNetArch("ecaresnet50d", _TIMM, "bottleneck", (3, 4, 6, 3), None, "deep", 32, True, "se"),
        ResNetArch(
            "ecaresnet50t", _TIMM, "bottleneck", (3, 4, 6, 3), None, "deep_tiered", 32, True, "se"
        ),
        ResNetArch(
            "ecaresnet101d", _TIMM, "bottleneck", (3, 4, 23, 3), None, "deep", 32, True, "se"
        ),
        ResNetArch(
            "ecaresnet269d", _TIMM, "bottleneck", (3, 30, 48, 8), None, "deep", 32, True, "se"
        ),
        # timm's newer ECA models, as framework-free graphs (eca_multi.graph)
        NFNetArch("eca_nfnet_l0", (1, 2, 6, 3), 1.5),
        NFNetArch("eca_nfnet_l1", (2, 4, 12, 6), 2.0),
        NFNetArch("eca_nfnet_l2", (3, 6, 18, 9), 2.0),
        ByobArch(
            "eca_resnet33ts",
            (
                (2, 256, 1, 0, 0.25),
                (3, 512, 2, 0, 0.25),
                (3, 1536, 2, 0, 0.25),
                (2, 1536, 2, 0, 0.25),
            ),
            num_features=1280,
        ),
        ByobArch(
            "eca_resnext26ts",
            (
                (2, 256, 1, 32, 0.25),
                (2, 512, 2, 32, 0.25),
                (2, 1024, 2, 32, 0.25),
                (2, 2048, 2, 32, 0.25),
            ),
            stem_pool=True,
        ),
        PrunedResNetArch("ecaresnet50d_pruned", (3, 4, 6, 3), _pruned_table("ecaresnet50d_pruned")),
        PrunedResNetArch(
            "ecaresnet101d_pruned", (3, 4, 23, 3), _pruned_table("ecaresnet101d_pruned")
        ),
    )
}


def get_arch(name: str) -> Arch:
    try:
        return ARCHS[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(ARCHS)}") from None


# ---------------------------------------------------------------------------------------------
# attention: which family member each block carries

AttentionArgs = tuple[tuple[str, Any], ...]  # hashable kwargs, sorted by name

# defaults the builders use where a kind needs an argument the block does not fix
ATTENTION_DEFAULTS: dict[str, dict[str, Any]] = {"se_gc": {"groups": 4}}


def resolve_attention(
    attention: str | None, attention_kwargs: Mapping[str, Any] | None = None
) -> tuple[str | None, AttentionArgs]:
    """Check a builder's ``attention`` choice; returns (kind or None, hashable kwargs).

    Raises:
        ValueError: an unknown kind, or kwargs given with ``attention=None``.
    """
    if attention is None:
        if attention_kwargs:
            raise ValueError("attention_kwargs given but attention=None (no attention module)")
        return None, ()
    if attention not in ATTENTIONS:
        raise ValueError(
            f"attention must be None or one of {', '.join(map(repr, ATTENTIONS))}, "
            f"got {attention!r}"
        )
    for key in ("channels", "data_format"):
        if key in (attention_kwargs or {}):
            raise ValueError(f"attention_kwargs may not set {key!r}: the model sets it per block")
    return attention, tuple(sorted((attention_kwargs or {}).items()))


def block_attention(
    attention: str | None,
    channels: int,
    k: int,
    args: AttentionArgs = (),
    data_format: str = "channels_first",
) -> AttentionConfig | ECAConfig | None:
    """The attention config of one block with ``channels`` output channels.

    ECA and ECA-NS take the block's k (the architecture's per-stage k, or timm's rule) unless
    ``kernel_size`` is given; SE-GC defaults to ``groups=4``; SE to ``reduction=16`` (SENet's
    ``C // 16``; pass ``rd_divisor=8`` for timm's ``SEModule`` width).
    """
    if attention is None:
        return None
    kw = {**ATTENTION_DEFAULTS.get(attention, {}), **dict(args)}
    if attention in ("eca", "eca_ns"):
        kw.setdefault("kernel_size", k)
    return attention_config(attention, channels, data_format=data_format, **kw)


# ---------------------------------------------------------------------------------------------
# plans: what every framework's builder walks


@dataclass(frozen=True)
class ConvPlan:
    """A bias-free Conv2d (torch padding (k - 1) // 2 both sides, explicit in every framework)."""

    name: str
    cin: int
    cout: int
    k: int
    stride: int = 1
    groups: int = 1


@dataclass(frozen=True)
class BlockPlan:
    """One residual block: torch prefix, widths, stride, downsample and the ECA kernel size."""

    prefix: str  # e.g. "layer2.0"
    block: str  # "basic" / "bottleneck"
    inplanes: int
    planes: int
    outplanes: int
    stride: int
    downsample: str | None  # None, "conv" (1x1 stride s: keys .0 conv, .1 bn) or "avg" (timm:
    #                         AvgPool2d(2, s, ceil_mode, count_include_pad=False) if s > 1, then
    #                         1x1 conv .1 and bn .2)
    k: int
    eca_attr: str
    attention: str | None = "eca"
    attention_args: AttentionArgs = ()

    def attention_config(
        self, data_format: str = "channels_first"
    ) -> AttentionConfig | ECAConfig | None:
        """The block's attention config (None: no attention), channels = the block's output."""
        return block_attention(
            self.attention, self.outplanes, self.k, self.attention_args, data_format
        )

    @property
    def attention_prefix(self) -> str:
        """The attention module's path (``layer1.0.eca``; timm: ``layer1.0.se``)."""
        return f"{self.prefix}.{self.eca_attr}"

    @property
    def slot(self) -> int:
        """Where the block's k sits in the architecture's kernel sizes: its stage (0-based)."""
        return int(self.prefix.split(".")[0].removeprefix("layer")) - 1

    @property
    def branch_end_bn(self) -> str:
        """The BatchNorm that ends the residual branch (before the attention and the add)."""
        return block_convs(self)[-1][1]


def stem_plan(arch: ResNetArch) -> tuple[list[tuple[str, ConvPlan | str]], int]:
    """Stem convolutions and BatchNorms in order, as (kind, plan-or-bn-name); and its width.

    plain: conv1 7x7/2 -> bn1 -> relu -> maxpool 3x3/2 pad 1.
    deep / deep_tiered: conv1.0 3x3/2, conv1.1 BN, relu, conv1.3 3x3, conv1.4 BN, relu,
    conv1.6 3x3 -> bn1 -> relu -> maxpool.
    """
    if arch.stem == "plain":
        inplanes = 64
        return [("conv", ConvPlan("conv1", 3, inplanes, 7, 2)), ("bn", "bn1")], inplanes
    inplanes = arch.stem_width * 2
    w = arch.stem_width
    c0, c1 = (3 * (w // 4), w) if arch.stem == "deep_tiered" else (w, w)
    return [
        ("conv", ConvPlan("conv1.0", 3, c0, 3, 2)),
        ("bn", "conv1.1"),
        ("relu", ""),
        ("conv", ConvPlan("conv1.3", c0, c1, 3, 1)),
        ("bn", "conv1.4"),
        ("relu", ""),
        ("conv", ConvPlan("conv1.6", c1, inplanes, 3, 1)),
        ("bn", "bn1"),
    ], inplanes


def resnet_blocks(
    arch: ResNetArch,
    kernel_sizes: KernelSizes | None = None,
    attention: str | None = "eca",
    attention_kwargs: dict[str, Any] | None = None,
) -> list[BlockPlan]:
    """Every residual block of ``arch`` in order. ``kernel_sizes`` overrides the per-stage k.

    ``attention`` picks the family member each block carries (None: a plain ResNet); see
    :func:`block_attention` for how its arguments are resolved per block.
    """
    attention, args = resolve_attention(attention, attention_kwargs)
    ks = kernel_sizes or arch.kernel_sizes
    _, inplanes = stem_plan(arch)
    plans = []
    for stage, (planes, n) in enumerate(zip((64, 128, 256, 512), arch.layers, strict=True)):
        stride = 1 if stage == 0 else 2
        out = planes * arch.expansion
        k = ks[stage] if ks is not None else rule_kernel_size(out, min_size=3)
        for i in range(n):
            s = stride if i == 0 else 1
            ds = None
            if i == 0 and (s != 1 or inplanes != out):
                ds = "avg" if arch.avg_down else "conv"
            plans.append(
                BlockPlan(
                    f"layer{stage + 1}.{i}",
                    arch.block,
                    inplanes,
                    planes,
                    out,
                    s,
                    ds,
                    k,
                    arch.eca_attr,
                    attention,
                    args,
                )
            )
            inplanes = out
    return plans


def block_convs(b: BlockPlan) -> list[tuple[ConvPlan, str]]:
    """(conv, its BatchNorm's name) of a block's main path, in order."""
    p = b.prefix
    if b.block == "basic":
        return [
            (ConvPlan(f"{p}.conv1", b.inplanes, b.planes, 3, b.stride), f"{p}.bn1"),
            (ConvPlan(f"{p}.conv2", b.planes, b.planes, 3), f"{p}.bn2"),
        ]
    return [
        (ConvPlan(f"{p}.conv1", b.inplanes, b.planes, 1), f"{p}.bn1"),
        (ConvPlan(f"{p}.conv2", b.planes, b.planes, 3, b.stride), f"{p}.bn2"),
        (ConvPlan(f"{p}.conv3", b.planes, b.outplanes, 1), f"{p}.bn3"),
    ]


def pools_through_last_conv(b: BlockPlan) -> bool:
    """Whether, at inference, the block's attention can pool the last conv's *input*.

    The attention pools BN(conv(h)) over space. When that conv is 1x1, stride 1, one group and
    bias-free (the bottleneck's conv3) and the BN uses running statistics, both are affine per
    position, so the spatial mean commutes with them::

        mean(BN(conv(h))) = (W @ mean(h) - running_mean) * gamma / sqrt(running_var + eps) + beta

    mean(h) reads a tensor 4x smaller than the block's output, and the block's output is then
    read only once (BN, gate multiply, shortcut add, ReLU). Equal up to float rounding (the
    models' tests bound it); in training BN uses batch statistics and the rule is not used.
    """
    conv, _ = block_convs(b)[-1]
    return conv.k == 1 and conv.stride == 1 and conv.groups == 1


def pool_through_pays(in_channels: int, spatial_size: int) -> bool:
    """Whether pooling through the last conv (:func:`pools_through_last_conv`) saves work.

    Per sample it reads C_in * HW values and multiplies (C_in) x (C_in, C_out) instead of reading
    C_out * HW values: a win when C_in <= HW. In ResNet-50 at 224x224 that is stages 1-2 (HW
    3136, 784 vs C_in 64, 128), not 3-4 (HW 196, 49 vs C_in 256, 512), where the matmul costs
    more than the small mean it replaces (torch CPU profile: sum + mm 15.0 -> 10.1 ms at every
    stage, 7.7 ms with this rule, per 3 batches of 8). Under XLA (Flax, Keras) the block output's
    mean is a separate pass over memory and the dot is cheap: pooling through every bottleneck
    measured better there (Flax ECA-ResNet50 1.01x vs 1.02x the plain net with this rule).
    """
    return in_channels <= spatial_size


def downsample_convs(b: BlockPlan) -> list[tuple[ConvPlan, str]]:
    if b.downsample is None:
        return []
    if b.downsample == "conv":
        return [
            (
                ConvPlan(f"{b.prefix}.downsample.0", b.inplanes, b.outplanes, 1, b.stride),
                f"{b.prefix}.downsample.1",
            )
        ]
    return [
        (
            ConvPlan(f"{b.prefix}.downsample.1", b.inplanes, b.outplanes, 1),
            f"{b.prefix}.downsample.2",
        )
    ]


@dataclass(frozen=True)
class InvertedResidualPlan:
    """One ECA-MobileNetV2 inverted residual (``features.{index}``)."""

    index: int
    inp: int
    oup: int
    stride: int
    expand: int
    hidden: int
    k: int
    attention: str | None = "eca"
    attention_args: AttentionArgs = ()

    def attention_config(
        self, data_format: str = "channels_first"
    ) -> AttentionConfig | ECAConfig | None:
        """The block's attention config (None: no attention), channels = the block's output."""
        return block_attention(self.attention, self.oup, self.k, self.attention_args, data_format)

    @property
    def use_res(self) -> bool:
        return self.stride == 1 and self.inp == self.oup

    def convs(self) -> list[tuple[ConvPlan, str, bool]]:
        """(conv, bn name, followed by ReLU6) of ``features.I.conv``; ECA is the next index."""
        p = f"features.{self.index}.conv"
        out, j = [], 0
        if self.expand != 1:
            out.append((ConvPlan(f"{p}.0.0", self.inp, self.hidden, 1), f"{p}.0.1", True))
            j = 1
        out.append(
            (
                ConvPlan(f"{p}.{j}.0", self.hidden, self.hidden, 3, self.stride, self.hidden),
                f"{p}.{j}.1",
                True,
            )
        )
        out.append((ConvPlan(f"{p}.{j + 1}", self.hidden, self.oup, 1), f"{p}.{j + 2}", False))
        return out

    @property
    def attention_prefix(self) -> str:
        """The attention module's path: last in ``features.I.conv``."""
        return f"features.{self.index}.conv.{4 if self.expand != 1 else 3}"

    @property
    def slot(self) -> int:
        """Where the block's k sits in the architecture's kernel sizes: its index."""
        return self.index

    @property
    def branch_end_bn(self) -> str:
        return self.convs()[-1][1]


def mobilenet_v2_blocks(
    arch: MobileNetV2Arch,
    kernel_sizes: KernelSizes | None = None,
    attention: str | None = "eca",
    attention_kwargs: dict[str, Any] | None = None,
) -> list[InvertedResidualPlan]:
    """The inverted residuals (features.1 ... features.17); ``kernel_sizes`` maps index -> k."""
    attention, args = resolve_attention(attention, attention_kwargs)
    plans, inp, idx = [], arch.input_channel, 1
    for t, c, n, s in arch.setting:
        for i in range(n):
            k = arch.small_k if c <= arch.k_threshold else arch.large_k
            if kernel_sizes is not None:
                k = kernel_sizes[idx]
            hidden = int(round(inp * t))
            plans.append(
                InvertedResidualPlan(idx, inp, c, s if i == 0 else 1, t, hidden, k, attention, args)
            )
            inp, idx = c, idx + 1
    return plans


# ---------------------------------------------------------------------------------------------
# canonical schemas

Schema = dict[str, tuple[tuple[int, ...], Layout]]


def _conv(s: Schema, c: ConvPlan) -> None:
    s[f"{c.name}.weight"] = ((c.cout, c.cin // c.groups, c.k, c.k), Layout.CONV2D)


def _bn(s: Schema, name: str, ch: int) -> None:
    for p in ("weight", "bias", "running_mean", "running_var"):
        s[f"{name}.{p}"] = ((ch,), Layout.NONE)
    s[f"{name}.num_batches_tracked"] = ((), Layout.NONE)


def schema(
    name: str,
    num_classes: int | None = None,
    kernel_sizes: KernelSizes | None = None,
    attention: str | None = "eca",
    attention_kwargs: dict[str, Any] | None = None,
) -> Schema:
    """Canonical (torch ``state_dict``) names, shapes and layouts of an architecture, in order.

    Includes BatchNorm ``num_batches_tracked`` (int64 scalars) so a file loads into torch / timm
    with ``strict=True``. ``attention`` / ``attention_kwargs`` as in :func:`resnet_blocks`.
    """
    arch = get_arch(name)
    nc = arch.num_classes if num_classes is None else num_classes
    if isinstance(arch, GraphArch):
        arch.blocks(None, attention, attention_kwargs)  # a clear error for another attention
        return arch.schema(nc, kernel_sizes)
    s: Schema = {}
    if isinstance(arch, MobileNetV2Arch):
        _conv(s, ConvPlan("features.0.0", 3, arch.input_channel, 3, 2))
        _bn(s, "features.0.1", arch.input_channel)
        irs = mobilenet_v2_blocks(arch, kernel_sizes, attention, attention_kwargs)
        for ir in irs:
            for conv, bn, _ in ir.convs():
                _conv(s, conv)
                _bn(s, bn, conv.cout)
            _attention(s, ir, f"{ir.attention_prefix}.")
        last = len(irs) + 1
        _conv(s, ConvPlan(f"features.{last}.0", irs[-1].oup, arch.last_channel, 1))
        _bn(s, f"features.{last}.1", arch.last_channel)
        s["classifier.1.weight"] = ((nc, arch.last_channel), Layout.LINEAR)
        s["classifier.1.bias"] = ((nc,), Layout.NONE)
        return s
    stem, _ = stem_plan(arch)
    for kind, item in stem:
        if isinstance(item, ConvPlan):  # kind "conv"
            _conv(s, item)
            width = item.cout
        elif kind == "bn":
            _bn(s, item, width)
    blocks = resnet_blocks(arch, kernel_sizes, attention, attention_kwargs)
    for b in blocks:
        for conv, bn in block_convs(b):
            _conv(s, conv)
            _bn(s, bn, conv.cout)
        _attention(s, b, f"{b.prefix}.{b.eca_attr}.")
        for conv, bn in downsample_convs(b):
            _conv(s, conv)
            _bn(s, bn, conv.cout)
    s["fc.weight"] = ((nc, blocks[-1].outplanes), Layout.LINEAR)
    s["fc.bias"] = ((nc,), Layout.NONE)
    return s


def _attention(s: Schema, block: BlockPlan | InvertedResidualPlan, prefix: str) -> None:
    cfg = block.attention_config()
    if cfg is not None:
        s.update(attention_schema(cfg, prefix))


def attention_params(
    name: str,
    attention: str | None = "eca",
    attention_kwargs: dict[str, Any] | None = None,
    kernel_sizes: KernelSizes | None = None,
) -> int:
    """Parameters all the blocks' attention modules add: the kind's formula summed over blocks.

    A model built with ``attention`` has exactly this many parameters more than the same model
    built with ``attention=None``.
    """
    blocks = get_arch(name).blocks(kernel_sizes, attention, attention_kwargs)
    cfgs = [b.attention_config() for b in blocks]
    return sum(param_count(c) for c in cfgs if c is not None)


def default_kernel_sizes(
    name: str, kernel_sizes: KernelSizes | None = None
) -> tuple[int, ...] | dict[int, int]:
    """The kernel sizes ``name`` is built with: its own (published, "k13" or timm's rule), or
    ``kernel_sizes`` completed into the architecture's shape (per stage or {block index: k})."""
    arch = get_arch(name)
    return arch.pack_kernel_sizes({b.slot: b.k for b in arch.blocks(kernel_sizes)})


def kernel_sizes_from_kernels(
    name: str, kernels: Mapping[str, int]
) -> tuple[int, ...] | dict[int, int]:
    """Kernel sizes from {attention module path: k}, e.g. read from a file's kernel shapes.

    Raises:
        ValueError: a block's kernel is missing, or a stage mixes kernel sizes.
    """
    arch = get_arch(name)
    per_slot: dict[int, set[int]] = {}
    for b in arch.blocks():
        if b.attention_prefix not in kernels:
            raise ValueError(
                f"{name}: checkpoint has no ECA weight {b.attention_prefix}.conv.weight"
            )
        per_slot.setdefault(b.slot, set()).add(int(kernels[b.attention_prefix]))
    for slot, ks in per_slot.items():
        if len(ks) != 1:
            raise ValueError(f"{name}: stage {slot + 1} mixes ECA kernel sizes {sorted(ks)}")
    return arch.pack_kernel_sizes({slot: next(iter(ks)) for slot, ks in per_slot.items()})


MAX_CLASSES = 100_000  # ImageNet-21k has 21,843; a classifier wider than this is a damaged file
# the bound on what a weight file of an architecture may declare: this many times the float64
# bytes of the largest tensor (or of all tensors) that architecture can hold at MAX_CLASSES classes
SIZE_MARGIN = 2


def _sizes_at_max_classes(name: str) -> dict[str, int]:
    """Element counts of every tensor of ``name`` with MAX_CLASSES classes (the classifier's
    tensors are the ones that grow with the class count)."""
    one, two = schema(name, 1), schema(name, 2)
    sizes = {}
    for key, (shape, _) in one.items():
        n = math.prod(shape)
        grow = math.prod(two[key][0]) - n  # elements per class (0 for every other tensor)
        sizes[key] = n + grow * (MAX_CLASSES - 1)
    return sizes


def tensor_bytes_bounds(name: str) -> dict[str, int]:
    """The most bytes each named tensor of a ``name`` file may declare: :data:`SIZE_MARGIN` times
    its float64 size in the schema (the classifier's at :data:`MAX_CLASSES` classes). A reader
    that knows a tensor's name (safetensors, ``.npz``) refuses a bigger one before reading it.
    Each bound has 4 KiB more for a format's own header of a tensor (``.npy``'s)."""
    return {k: SIZE_MARGIN * 8 * n + 4096 for k, n in _sizes_at_max_classes(name).items()}


def max_tensor_bytes(name: str) -> int:
    """The most bytes any one tensor of a ``name`` file may declare: :data:`SIZE_MARGIN` times the
    float64 size of its largest tensor (the classifier at :data:`MAX_CLASSES` classes, or its
    widest conv). For tensors whose name a reader does not know yet (h5 datasets)."""
    return max(tensor_bytes_bounds(name).values())


def max_state_bytes(name: str) -> int:
    """The most bytes a whole ``name`` checkpoint may declare unpacked in one piece (a torch
    storage, a ``.keras`` member, an Orbax checkpoint): :data:`SIZE_MARGIN` times the float64 size
    of all its tensors at :data:`MAX_CLASSES` classes, plus 16 MiB for the container's own
    records (a pickle, a config)."""
    return sum(tensor_bytes_bounds(name).values()) + (16 << 20)


def _shape_of(value: Any) -> tuple[int, ...]:
    """An array's shape as ints (no NumPy import here); () for a scalar or a non-array."""
    return tuple(int(d) for d in getattr(value, "shape", ()))


def kernel_sizes_from_state(
    name: str, state: Mapping[str, Any]
) -> tuple[int, ...] | dict[int, int]:
    """Read ECA kernel sizes from a checkpoint's weight shapes (never from the rule).

    Returns per-stage k for ResNets (all blocks of a stage must agree) or {block index: k} for
    MobileNetV2. Raises ValueError naming the offending keys.
    """
    kernels: dict[str, int] = {}
    for b in get_arch(name).blocks():
        key = f"{b.attention_prefix}.conv.weight"
        if key in state:
            shape = _shape_of(state[key])
            if len(shape) != 3:
                raise ValueError(f"{name}: {key} has shape {shape}; an ECA kernel is (1, 1, k)")
            kernels[b.attention_prefix] = int(shape[-1])  # torch layout (1, 1, k)
    return kernel_sizes_from_kernels(name, kernels)


def branch_end_bns(name: str) -> set[str | None]:
    """The BatchNorms that end a residual branch (before the attention and the add)."""
    return {b.branch_end_bn for b in get_arch(name).blocks()}


def head_name(name: str) -> str:
    """The classifier's module path (``fc``; MobileNetV2: ``classifier.1``)."""
    return get_arch(name).head


def num_classes_from_state(name: str, state: Mapping[str, Any]) -> int | None:
    """The classifier width of a canonical state (None: it has no classifier weight)."""
    key = f"{head_name(name)}.weight"
    if key not in state:
        return None
    shape = _shape_of(state[key])
    if len(shape) != 2 or shape[0] == 0:
        raise ValueError(
            f"{name}: {key} has shape {shape}; a classifier weight is (classes >= 1, features)"
        )
    return int(shape[0])
