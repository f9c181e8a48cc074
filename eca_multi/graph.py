"""Framework-free network graphs: the newer timm ECA models as one list of typed operations.

The official ECA-ResNets / MobileNetV2 and timm's classic ECA-ResNets have their own plans in
:mod:`eca_multi.archs`. The architectures here (timm's ``eca_nfnet_l0/l1/l2`` from
``models/nfnet.py``, ``eca_resnet33ts`` / ``eca_resnext26ts`` from ``models/byobnet.py`` and the
pruned ``ecaresnet50d_pruned`` / ``ecaresnet101d_pruned`` from ``models/resnet.py``) are written
once, as a :class:`Graph`: operations in execution order, each reading named values and writing
one. Every backend has one interpreter of these few operations (``conv``, ``bn``, ``act``,
``scale``, ``eca``, ``add``, ``maxpool``, ``avgpool_ceil``, ``mean``, ``linear``), so a new
architecture made of them is a new function here and nothing else: no backend changes.

Weighted operations are named by their torch module path (their ``state_dict`` prefix); the
canonical schema (names, shapes, layouts) is read off the graph (:meth:`Graph.schema`).
Numerics follow timm 1.0.31:

* ``conv`` with ``ws`` is timm's ``ScaledStdConv2d``: per output channel the weight is
  standardized over (in, kh, kw) with the biased variance, ``(w - mean) / sqrt(var + eps)``, then
  multiplied by ``gain * gamma / sqrt(fan_in)`` (``gain`` a learned (out, 1, 1, 1) tensor);
* padding is timm's ``get_padding``: ``((stride - 1) + (k - 1)) // 2`` on both sides;
* ``eca`` is timm's ``EcaModule`` (k = the rule with min 3, from ``math.log(C, 2)`` as timm
  computes it; pruned models keep the unpruned net's k, read from the checkpoint's shapes).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .spec import ECAConfig, make_config
from .weights.layouts import Layout

__all__ = [
    "ACTIVATIONS",
    "ByobArch",
    "Graph",
    "GraphArch",
    "NFNetArch",
    "Node",
    "PrunedResNetArch",
    "timm_eca_kernel_size",
]

ACTIVATIONS = ("relu", "silu")  # what the interpreters implement

# timm models/nfnet.py _nonlin_gamma (from DeepMind's nfnets code): the activation's variance
# correction, folded into ScaledStdConv2d's scale when gamma_in_act is False (the L models)
NONLIN_GAMMA = {"relu": 1.7139588594436646, "silu": 1.7881293296813965}


def timm_eca_kernel_size(channels: int, gamma: float = 2, beta: float = 1) -> int:
    """timm ``EcaModule``'s k for ``channels``: the paper's rule with min 3, as timm computes it
    (``math.log(channels, 2)``, which can differ from ``log2`` in the last bit)."""
    t = int(abs(math.log(channels, 2) + beta) / gamma)
    return max(t if t % 2 else t + 1, 3)


def make_divisible(v: float, divisor: int = 8) -> int:
    """timm ``make_divisible`` (round to a multiple of ``divisor``, never below 90 %)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def timm_padding(k: int, stride: int = 1, dilation: int = 1) -> int:
    """timm ``get_padding``: symmetric padding of a conv."""
    return ((stride - 1) + dilation * (k - 1)) // 2


@dataclass(frozen=True)
class Node:
    """One operation: reads the values ``inputs``, writes the value ``output``.

    ``name`` is the torch module path of its weights ("" for weightless operations);
    ``attrs`` its static arguments (see the module docstring for each ``op``).
    """

    op: str
    output: str
    inputs: tuple[str, ...]
    name: str = ""
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.attrs[key]


Schema = dict[str, tuple[tuple[int, ...], Layout]]


@dataclass
class Graph:
    """A network as :class:`Node` s in execution order; the value ``"input"`` is the image.

    The builder methods append a node and return its output value's name.
    """

    nodes: list[Node] = field(default_factory=list)
    output: str = "input"

    def _add(
        self, op: str, output: str, inputs: tuple[str, ...], name: str = "", **attrs: Any
    ) -> str:
        if any(n.output == output for n in self.nodes) or output == "input":
            raise ValueError(f"graph value {output!r} defined twice")
        self.nodes.append(Node(op, output, inputs, name, attrs))
        self.output = output
        return output

    def conv(
        self,
        x: str,
        name: str,
        cin: int,
        cout: int,
        k: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
        ws: Mapping[str, float] | None = None,
    ) -> str:
        """A Conv2d (``ws``: ScaledStdConv2d with ``{"gamma": g, "eps": e}``)."""
        if cin % groups or cout % groups:
            raise ValueError(f"{name}: {cin} -> {cout} channels do not split into {groups} groups")
        return self._add(
            "conv",
            name,
            (x,),
            name,
            cin=cin,
            cout=cout,
            k=k,
            stride=stride,
            groups=groups,
            pad=timm_padding(k, stride),
            bias=bias,
            ws=dict(ws) if ws else None,
        )

    def bn(self, x: str, name: str, channels: int, eps: float = 1e-5) -> str:
        return self._add("bn", name, (x,), name, channels=channels, eps=eps)

    def act(self, x: str, out: str, fn: str) -> str:
        if fn not in ACTIVATIONS:
            raise ValueError(f"activation {fn!r} is not one of {ACTIVATIONS}")
        return self._add("act", out, (x,), fn=fn)

    def scale(self, x: str, out: str, value: float) -> str:
        """``x * value`` (a Python float; timm's alpha, beta and attention gain)."""
        return self._add("scale", out, (x,), value=float(value))

    def eca(self, x: str, name: str, channels: int, k: int) -> str:
        """timm ``EcaModule``: ``x * sigmoid(conv1d(mean(x)))``, weight ``{name}.conv.weight``."""
        return self._add("eca", name, (x,), name, channels=channels, k=k)

    def add(self, a: str, b: str, out: str) -> str:
        return self._add("add", out, (a, b))

    def maxpool(self, x: str, out: str, k: int = 3, stride: int = 2, pad: int = 1) -> str:
        """torch ``MaxPool2d(k, stride, pad)`` (pads with -inf)."""
        return self._add("maxpool", out, (x,), k=k, stride=stride, pad=pad)

    def avgpool_ceil(self, x: str, out: str, stride: int = 2) -> str:
        """torch ``AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)``."""
        return self._add("avgpool_ceil", out, (x,), k=2, stride=stride)

    def mean(self, x: str, out: str) -> str:
        """Global average pool over space: (N, C)."""
        return self._add("mean", out, (x,))

    def linear(self, x: str, name: str, cin: int, cout: int) -> str:
        return self._add("linear", name, (x,), name, cin=cin, cout=cout)

    # -- reading it

    def weighted(self) -> Iterator[Node]:
        return (n for n in self.nodes if n.name)

    def schema(self) -> Schema:
        """Canonical (torch ``state_dict``) names, shapes and layouts, in module order."""
        s: Schema = {}
        for n in self.weighted():
            p = n.name
            if n.op == "conv":
                s[f"{p}.weight"] = (
                    (n["cout"], n["cin"] // n["groups"], n["k"], n["k"]),
                    Layout.CONV2D,
                )
                if n["bias"]:
                    s[f"{p}.bias"] = ((n["cout"],), Layout.NONE)
                if n["ws"]:
                    s[f"{p}.gain"] = ((n["cout"], 1, 1, 1), Layout.NONE)
            elif n.op == "bn":
                for q in ("weight", "bias", "running_mean", "running_var"):
                    s[f"{p}.{q}"] = ((n["channels"],), Layout.NONE)
                s[f"{p}.num_batches_tracked"] = ((), Layout.NONE)
            elif n.op == "eca":
                s[f"{p}.conv.weight"] = ((1, 1, n["k"]), Layout.CONV1D)
            elif n.op == "linear":
                s[f"{p}.weight"] = ((n["cout"], n["cin"]), Layout.LINEAR)
                s[f"{p}.bias"] = ((n["cout"],), Layout.NONE)
        return s


@dataclass(frozen=True)
class AttentionSlot:
    """One ECA module of a graph architecture, in the shape :mod:`eca_multi.archs` reads blocks:
    its module path, its place in the kernel-size tuple, k, and the residual branch's last BN."""

    attention_prefix: str
    slot: int
    k: int
    channels: int
    branch_end_bn: str | None = None
    attention: str = "eca"

    def attention_config(self, data_format: str = "channels_first") -> ECAConfig:
        """The module's ECA config (timm's: sigmoid gate, zero padding, k from the graph)."""
        return make_config(self.channels, self.k, data_format=data_format)


class GraphArch:
    """What every graph architecture provides (the protocol :mod:`eca_multi.archs` uses).

    Subclasses implement :meth:`build` (num_classes, ECA kernel sizes or None) -> Graph and
    :meth:`_branch_ends`. Kernel sizes are one k per ECA module, in graph order (a tuple).
    """

    kind: ClassVar[str] = "graph"
    kernel_slots: ClassVar[str] = "per module"
    head: ClassVar[str] = "head.fc"
    family: str = "timm"
    name: str = ""
    num_classes: int = 1000

    def build(
        self, num_classes: int | None = None, kernel_sizes: Iterable[int] | None = None
    ) -> Graph:
        raise NotImplementedError

    def layers_text(self) -> str:
        """The stage depths as the models table prints them (each subclass has its own)."""
        raise NotImplementedError

    def graph(
        self, num_classes: int | None = None, kernel_sizes: Iterable[int] | None = None
    ) -> Graph:
        """The network (built once per configuration and shared: do not modify it)."""
        nc = self.num_classes if num_classes is None else int(num_classes)
        ks = None if kernel_sizes is None else tuple(int(k) for k in kernel_sizes)
        return _cached_graph(self, nc, ks)

    def _checked_graph(self, nc: int, ks: tuple[int, ...] | None) -> Graph:
        g = self.build(nc, ks)
        n_eca = sum(1 for n in g.nodes if n.op == "eca")
        if ks is not None and len(ks) != n_eca:
            raise ValueError(f"{self.name} has {n_eca} ECA modules, got {len(ks)} kernel sizes")
        return g

    def _branch_ends(self) -> dict[str, str | None]:
        """ECA module path -> the BN (NFNet: the conv) that ends its residual branch."""
        return {}

    def blocks(
        self,
        kernel_sizes: Iterable[int] | None = None,
        attention: str | None = "eca",
        attention_kwargs: Mapping[str, Any] | None = None,
    ) -> list[AttentionSlot]:
        if attention != "eca" or attention_kwargs:
            raise ValueError(
                f"{self.name}: only timm's own ECA can be built (attention={attention!r}, "
                f"attention_kwargs={attention_kwargs!r}); other attentions are for the ResNets "
                "and MobileNetV2"
            )
        ends = self._branch_ends()
        ecas = [n for n in self.graph(None, kernel_sizes).nodes if n.op == "eca"]
        return [
            AttentionSlot(n.name, i, n["k"], n["channels"], ends.get(n.name))
            for i, n in enumerate(ecas)
        ]

    def pack_kernel_sizes(self, per_slot: Mapping[int, int]) -> tuple[int, ...]:
        return tuple(int(per_slot[i]) for i in range(len(per_slot)))

    def schema(
        self, num_classes: int | None = None, kernel_sizes: Iterable[int] | None = None
    ) -> Schema:
        return self.graph(num_classes, kernel_sizes).schema()

    def kernel_rule_text(self) -> str:
        ks = [b.k for b in self.blocks()]
        runs: list[list[int]] = []
        for k in ks:
            if runs and runs[-1][0] == k:
                runs[-1][1] += 1
            else:
                runs.append([k, 1])
        text = ",".join(f"{k}x{n}" if n > 1 else str(k) for k, n in runs)
        return f"{text} per module ({self.rule_text})"

    rule_text: ClassVar[str] = "timm rule, min 3"


@functools.lru_cache(maxsize=64)
def _cached_graph(arch: GraphArch, nc: int, ks: tuple[int, ...] | None) -> Graph:
    """Flax's interpreter walks the graph on every call, Keras and the schema at build time: one
    build per (architecture, classes, kernel sizes). The archs are frozen dataclasses (hashable)."""
    return arch._checked_graph(nc, ks)


# ---------------------------------------------------------------------------------------------
# NFNet (timm models/nfnet.py, the ECA "L" variants)


@dataclass(frozen=True)
class NFNetArch(GraphArch):
    """timm's ``eca_nfnet_l*``: normalization-free pre-activation bottlenecks (no BatchNorm).

    Stem 'deep_quad' (4 ScaledStdConv2d, stride 4), stages of NormFreeBlocks (act1 * beta ->
    [avg-pool + 1x1 conv shortcut] ; conv1 1x1, conv2 3x3 grouped, conv2b 3x3 grouped, conv3 1x1,
    ECA * attn_gain ; * alpha + shortcut), final 1x1 conv, SiLU, mean, head.fc.
    """

    name: str = ""
    depths: tuple[int, ...] = (1, 2, 6, 3)
    feat_mult: float = 1.5
    channels: tuple[int, ...] = (256, 512, 1536, 1536)
    group_size: int = 64
    bottle_ratio: float = 0.25
    stem_chs: int = 128
    alpha: float = 0.2
    attn_gain: float = 2.0
    act: str = "silu"
    std_conv_eps: float = 1e-5
    num_classes: int = 1000

    def layers_text(self) -> str:
        return f"NF bottleneck {'-'.join(map(str, self.depths))}, deep_quad stem"

    def _branch_ends(self) -> dict[str, str | None]:
        """No BatchNorm: the gain of conv3 (timm zero-inits it) ends each residual branch."""
        return {
            f"stages.{si}.{bi}.attn_last": f"stages.{si}.{bi}.conv3"
            for si, d in enumerate(self.depths)
            for bi in range(d)
        }

    def build(
        self, num_classes: int | None = None, kernel_sizes: Iterable[int] | None = None
    ) -> Graph:
        g, act = Graph(), self.act
        ws = {"gamma": NONLIN_GAMMA[act], "eps": self.std_conv_eps}
        ks = iter(kernel_sizes) if kernel_sizes is not None else None
        nc = self.num_classes if num_classes is None else num_classes  # graph() resolves it

        def conv(
            x: str, name: str, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1
        ) -> str:
            return g.conv(x, name, cin, cout, k, stride, groups, bias=True, ws=ws)

        # stem: conv1 3x3/2, act2, conv2, act3, conv3, act4, conv4 3x3/2
        s = self.stem_chs
        chs, strides = (s // 8, s // 4, s // 2, s), (2, 1, 1, 2)
        x, cin = "input", 3
        for i, (c, st) in enumerate(zip(chs, strides, strict=True)):
            x = conv(x, f"stem.conv{i + 1}", cin, c, 3, st)
            if i < len(chs) - 1:
                x = g.act(x, f"stem.act{i + 2}", act)
            cin = c
        expected_var = 1.0
        for si, depth in enumerate(self.depths):
            stride = 1 if si == 0 else 2  # the stem has stride 4
            out = make_divisible(self.channels[si])
            for bi in range(depth):
                p = f"stages.{si}.{bi}"
                st = stride if bi == 0 else 1
                mid = make_divisible(out * self.bottle_ratio)
                groups = mid // self.group_size
                mid = self.group_size * groups
                beta = 1.0 / expected_var**0.5
                h = g.scale(g.act(x, f"{p}.act1", act), f"{p}.beta", beta)
                shortcut = x
                if cin != out or st != 1:  # DownsampleAvg on the pre-activated input
                    d = g.avgpool_ceil(h, f"{p}.downsample.pool", st) if st > 1 else h
                    shortcut = conv(d, f"{p}.downsample.conv", cin, out, 1)
                h = conv(h, f"{p}.conv1", cin, mid, 1)
                h = conv(g.act(h, f"{p}.act2", act), f"{p}.conv2", mid, mid, 3, st, groups)
                h = conv(g.act(h, f"{p}.act2b", act), f"{p}.conv2b", mid, mid, 3, 1, groups)
                h = conv(g.act(h, f"{p}.act3", act), f"{p}.conv3", mid, out, 1)
                k = next(ks) if ks is not None else timm_eca_kernel_size(out)
                h = g.scale(g.eca(h, f"{p}.attn_last", out, k), f"{p}.attn_gain", self.attn_gain)
                x = g.add(g.scale(h, f"{p}.alpha", self.alpha), shortcut, f"{p}.add")
                if bi == 0:
                    expected_var = 1.0
                expected_var += self.alpha**2
                cin = out
        features = make_divisible(int(self.channels[-1] * self.feat_mult))
        x = g.act(conv(x, "final_conv", cin, features, 1), "final_act", act)
        g.linear(g.mean(x, "head.global_pool"), "head.fc", features, nc)
        return g


# ---------------------------------------------------------------------------------------------
# ByobNet (timm models/byobnet.py): bottleneck blocks of ConvNormAct


@dataclass(frozen=True)
class ByobArch(GraphArch):
    """timm's ``eca_resnet33ts`` / ``eca_resnext26ts``: SiLU bottlenecks (ConvNormAct: ``.conv``,
    ``.bn``), tiered stem, ECA after the kxk conv (mid channels), 1x1 conv shortcut.

    ``stages``: (depth, out channels, stride, group size (0: 1 group), bottleneck ratio).
    """

    name: str = ""
    stages: tuple[tuple[int, int, int, int, float], ...] = ()
    stem_chs: int = 64
    stem_pool: bool = False
    num_features: int = 0
    act: str = "silu"
    num_classes: int = 1000

    def layers_text(self) -> str:
        d = "-".join(str(s[0]) for s in self.stages)
        grouped = any(s[3] for s in self.stages)
        return f"{'grouped ' if grouped else ''}bottleneck {d}, tiered stem"

    def _branch_ends(self) -> dict[str, str | None]:
        return {
            f"stages.{si}.{bi}.attn": f"stages.{si}.{bi}.conv3_1x1.bn"
            for si, s in enumerate(self.stages)
            for bi in range(s[0])
        }

    def build(
        self, num_classes: int | None = None, kernel_sizes: Iterable[int] | None = None
    ) -> Graph:
        g, act = Graph(), self.act
        ks = iter(kernel_sizes) if kernel_sizes is not None else None
        nc = self.num_classes if num_classes is None else num_classes  # graph() resolves it

        def cna(
            x: str,
            p: str,
            cin: int,
            cout: int,
            k: int,
            stride: int = 1,
            groups: int = 1,
            apply_act: bool = True,
        ) -> str:
            x = g.bn(g.conv(x, f"{p}.conv", cin, cout, k, stride, groups), f"{p}.bn", cout)
            return g.act(x, f"{p}.bn.act", act) if apply_act else x

        s = self.stem_chs
        chs = (3 * s // 8, s // 2, s)
        strides = (2, 1, 1 if self.stem_pool else 2)
        x, cin = "input", 3
        for i, (c, st) in enumerate(zip(chs, strides, strict=True)):
            x = cna(x, f"stem.conv{i + 1}", cin, c, 3, st)
            cin = c
        if self.stem_pool:
            x = g.maxpool(x, "stem.pool")
        for si, (depth, c, stride, gs, br) in enumerate(self.stages):
            out = make_divisible(c)
            for bi in range(depth):
                p = f"stages.{si}.{bi}"
                st = stride if bi == 0 else 1
                mid = make_divisible(out * br)
                groups = mid // gs if gs else 1
                shortcut = x
                if cin != out or st != 1:
                    shortcut = cna(x, f"{p}.shortcut", cin, out, 1, st, apply_act=False)
                h = cna(x, f"{p}.conv1_1x1", cin, mid, 1)
                h = cna(h, f"{p}.conv2_kxk", mid, mid, 3, st, groups)
                k = next(ks) if ks is not None else timm_eca_kernel_size(mid)
                h = g.eca(h, f"{p}.attn", mid, k)
                h = cna(h, f"{p}.conv3_1x1", mid, out, 1, apply_act=False)
                x = g.act(g.add(h, shortcut, f"{p}.add"), f"{p}.act", act)
                cin = out
        if self.num_features:
            x = cna(x, "final_conv", cin, self.num_features, 1)
            cin = self.num_features
        g.linear(g.mean(x, "head.global_pool"), "head.fc", cin, nc)
        return g


# ---------------------------------------------------------------------------------------------
# pruned ECA-ResNet-D (timm models/resnet.py + models/_pruned/*.txt)


@dataclass(frozen=True)
class PrunedResNetArch(GraphArch):
    """timm's ``ecaresnet50d_pruned`` / ``ecaresnet101d_pruned``: an ECA-ResNet-D (deep stem,
    avg-pool downsample, ECA as ``se`` after bn3) whose every width is its own.

    ``shapes`` maps each conv / BN / fc weight key to its shape, as timm's pruned-model file
    lists them (``eca_multi/data/<name>.txt``, copied from timm 1.0.31 ``models/_pruned/``); ECA
    keeps the unpruned net's k (``layerX.Y.se.conv.weight``). A checkpoint's own shapes can
    replace them (:meth:`with_shapes`).
    """

    name: str = ""
    layers: tuple[int, ...] = (3, 4, 6, 3)
    shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()
    num_classes: int = 1000

    head: ClassVar[str] = "fc"
    rule_text: ClassVar[str] = "timm rule on the unpruned widths"

    def layers_text(self) -> str:
        return f"pruned bottleneck {'-'.join(map(str, self.layers))}, deep stem"

    def _shape(self, key: str) -> tuple[int, ...]:
        table = dict(self.shapes)
        if key not in table:
            raise ValueError(f"{self.name}: the width table has no {key}")
        return table[key]

    def _branch_ends(self) -> dict[str, str | None]:
        return {
            f"layer{s + 1}.{i}.se": f"layer{s + 1}.{i}.bn3"
            for s, n in enumerate(self.layers)
            for i in range(n)
        }

    def build(
        self, num_classes: int | None = None, kernel_sizes: Iterable[int] | None = None
    ) -> Graph:
        g = Graph()
        ks = iter(kernel_sizes) if kernel_sizes is not None else None
        nc = self.num_classes if num_classes is None else num_classes  # graph() resolves it
        w = self._shape

        def conv_bn(
            x: str, conv: str, bn: str, cin: int, k: int, stride: int = 1
        ) -> tuple[str, int]:
            cout, have = w(f"{conv}.weight")[:2]
            if have != cin:
                raise ValueError(f"{self.name}: {conv}.weight takes {have} channels, not {cin}")
            return g.bn(g.conv(x, conv, cin, cout, k, stride), bn, cout), cout

        x, c = conv_bn("input", "conv1.0", "conv1.1", 3, 3, 2)
        x, c = conv_bn(g.act(x, "conv1.2", "relu"), "conv1.3", "conv1.4", c, 3)
        x, c = conv_bn(g.act(x, "conv1.5", "relu"), "conv1.6", "bn1", c, 3)
        x = g.maxpool(g.act(x, "act1", "relu"), "maxpool")
        for si, n in enumerate(self.layers):
            for bi in range(n):
                p = f"layer{si + 1}.{bi}"
                st = 2 if si > 0 and bi == 0 else 1
                h, m = conv_bn(x, f"{p}.conv1", f"{p}.bn1", c, 1)
                h, m = conv_bn(g.act(h, f"{p}.act1", "relu"), f"{p}.conv2", f"{p}.bn2", m, 3, st)
                h, out = conv_bn(g.act(h, f"{p}.act2", "relu"), f"{p}.conv3", f"{p}.bn3", m, 1)
                k = next(ks) if ks is not None else w(f"{p}.se.conv.weight")[-1]
                h = g.eca(h, f"{p}.se", out, k)
                shortcut = x
                if bi == 0:  # timm creates the downsample in every stage's first block
                    d = g.avgpool_ceil(x, f"{p}.downsample.0", st) if st > 1 else x
                    shortcut, _ = conv_bn(d, f"{p}.downsample.1", f"{p}.downsample.2", c, 1)
                x = g.act(g.add(h, shortcut, f"{p}.add"), f"{p}.act3", "relu")
                c = out
        g.linear(g.mean(x, "global_pool"), "fc", w("fc.weight")[1], nc)
        return g

    def with_shapes(self, state: Mapping[str, Any]) -> PrunedResNetArch:
        """The same architecture with the widths of ``state`` (canonical weights)."""
        keys = [k for k, _ in self.shapes]
        missing = [k for k in keys if k not in state]
        if missing:
            raise ValueError(f"{self.name}: the weights have no {', '.join(missing[:5])}")
        return PrunedResNetArch(
            self.name,
            self.layers,
            tuple((k, tuple(int(d) for d in state[k].shape)) for k in keys),
            self.num_classes,
        )


def read_pruned_table(text: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """timm's pruned-model file (``key:[d0, d1, ...]***key:[...]``) as (key, shape) pairs."""
    out = []
    for item in text.strip().split("***"):
        key, _, shape = item.partition(":")
        dims = shape.strip()[1:-1]
        out.append((key.strip(), tuple(int(d) for d in dims.split(",") if d.strip())))
    return tuple(out)
