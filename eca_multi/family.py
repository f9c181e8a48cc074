"""The paper's channel-attention family, framework-free: arguments, canonical weights, costs.

The ECA paper (Wang et al., CVPR 2020, https://arxiv.org/abs/1910.03151, Table 2) compares ECA
with SE and with SE variants that drop the channel reduction. Every member is one block:

    y = mean of x over the spatial axes        (N, C)
    z = mix(y)                                 the only part that differs (below)
    s = gate(z)                                "sigmoid" or "hard_sigmoid", as for ECA
    out = x * s                                broadcast over the spatial axes

=========  =====================================================  ===========================
kind       mix(y)                                                 parameters
=========  =====================================================  ===========================
se         W2 relu(W1 y + b1) + b2, W1: (C/r) x C, W2: C x (C/r)  2 C (C/r) + C/r + C
se_var1    y                                                      0
se_var2    w * y (one weight per channel)                         C
se_var3    W y (one full C x C matrix)                            C^2
se_gc      W y, W block-diagonal in G groups                      C^2 / G
eca_ns     z[c] = sum_j W[c, j] y[c + j - (k-1)//2], zero padded  k C
eca        z[c] = sum_j w[j] y[c + j - (k-1)//2], zero padded     k
=========  =====================================================  ===========================

SE's reduced width C/r follows SENet (``C // r``, at least 1; r = 16). timm's ``SEModule`` rounds
``C / r`` to a multiple of 8 instead (``rd_divisor=8``); pass ``rd_divisor=8`` (or an explicit
``rd_channels``) to build timm's width. When porting, the width is read from the weight shapes.

Canonical weights are torch ``state_dict`` names and layouts (:data:`eca_multi.family.WEIGHTS`);
SE uses timm's ``SEModule`` names (``fc1`` / ``fc2``, 1x1 Conv2d layout) so timm SE weights load.
ECA itself keeps :mod:`eca_multi.spec` (its config is :class:`eca_multi.spec.ECAConfig`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, cast

from .spec import (
    DATA_FORMATS,
    GATES,
    PADDINGS,
    AxesMixin,
    ECAConfig,
    _check_choice,
    _check_int,
    make_config,
)
from .weights.layouts import Layout

__all__ = [
    "ATTENTIONS",
    "AttentionConfig",
    "WEIGHTS",
    "attention_config",
    "attention_schema",
    "attention_table",
    "init_bounds",
    "flops",
    "format_attention_table",
    "param_count",
    "se_reduced_channels",
]

ATTENTIONS = ("eca", "eca_ns", "se", "se_var1", "se_var2", "se_var3", "se_gc")

# class name used in reprs and error messages, per kind
NAMES = {
    "eca": "ECA",
    "eca_ns": "ECANS",
    "se": "SE",
    "se_var1": "SEVar1",
    "se_var2": "SEVar2",
    "se_var3": "SEVar3",
    "se_gc": "SEGC",
}


def se_reduced_channels(channels: int, reduction: int = 16, rd_divisor: int = 1) -> int:
    """SE's hidden width C/r.

    ``rd_divisor=1`` (default) is SENet's ``C // r``, at least 1. ``rd_divisor=d > 1`` is timm's
    ``make_divisible(C / r, d, round_limit=0)``: ``C / r`` rounded to the nearest multiple of d,
    at least d (timm's ``SEModule`` default is d = 8).

    Example:
        >>> se_reduced_channels(64), se_reduced_channels(64, rd_divisor=8)
        (4, 8)
    """
    channels = _check_int("channels", channels, minimum=1)
    reduction = _check_int("reduction", reduction, minimum=1)
    rd_divisor = _check_int("rd_divisor", rd_divisor, minimum=1)
    if rd_divisor == 1:
        return max(1, channels // reduction)
    v = channels / reduction
    return max(rd_divisor, int(v + rd_divisor / 2) // rd_divisor * rd_divisor)


@dataclass(frozen=True)
class AttentionConfig(AxesMixin):
    """Resolved, validated arguments of a non-ECA family member, shared by every backend.

    Has the same ``channels`` / ``data_format`` / ``gate`` / ``channel_axis`` / ``spatial_axes``
    interface as :class:`~eca_multi.spec.ECAConfig`, so :func:`eca_multi.spec.check_input` and the
    backends' pooling and scaling code serve both.
    """

    kind: str
    channels: int
    gate: str = "sigmoid"
    data_format: str = "channels_first"
    kernel_size: int | None = None  # eca_ns
    padding: str = "zeros"  # eca_ns
    reduction: int | None = None  # se
    rd_channels: int | None = None  # se: resolved hidden width
    rd_divisor: int | None = None  # se
    groups: int | None = None  # se_gc

    @property
    def name(self) -> str:
        return NAMES[self.kind]

    @property
    def pad(self) -> int:
        return (self.kernel_size - 1) // 2 if self.kernel_size else 0

    def constructor_args(self) -> dict[str, Any]:
        """Keyword arguments of the backends' constructor for this kind (repr, get_config)."""
        d = {k: v for k, v in asdict(self).items() if v is not None and k != "kind"}
        if self.kind != "eca_ns":
            d.pop("padding")
        return d

    def describe(self, name: str | None = None) -> str:
        """Short repr shared by every backend, e.g. ``SE(channels=64, rd_channels=4)``."""
        args = self.constructor_args()
        parts = [f"channels={self.channels}"]
        for key in ("kernel_size", "rd_channels", "groups"):
            if key in args:
                parts.append(f"{key}={args[key]}")
        if self.kind == "eca_ns" and self.padding != "zeros":
            parts.append(f"padding={self.padding!r}")
        if self.gate != "sigmoid":
            parts.append(f"gate={self.gate!r}")
        parts.append(f"data_format={self.data_format!r}")
        return f"{name or self.name}({', '.join(parts)})"


def attention_config(
    kind: str,
    channels: int | None,
    *,
    gate: str = "sigmoid",
    data_format: str = "channels_first",
    kernel_size: int | None = None,
    padding: str = "zeros",
    reduction: int = 16,
    rd_channels: int | None = None,
    rd_divisor: int = 1,
    groups: int | None = None,
    **eca_kwargs: Any,
) -> AttentionConfig | ECAConfig:
    """Validate the arguments of any family member; ``kind="eca"`` gives an ECAConfig.

    Only the arguments a kind uses may differ from their defaults (a clear error otherwise, e.g.
    ``groups`` for SE). ``channels`` is required (every member but ECA has C-shaped weights).

    Raises:
        TypeError: a non-int count or size.
        ValueError: an unknown kind, gate, padding or data_format; an even kernel size; C not
            divisible by ``groups``; an argument the kind does not take.
    """
    kind = _check_choice("attention", kind, ATTENTIONS)
    _refuse(kind, "kernel_size", kernel_size, None, ("eca", "eca_ns"))
    _refuse(kind, "padding", padding, "zeros", ("eca", "eca_ns"))
    _refuse(kind, "reduction", reduction, 16, ("se",))
    _refuse(kind, "rd_channels", rd_channels, None, ("se",))
    _refuse(kind, "rd_divisor", rd_divisor, 1, ("se",))
    _refuse(kind, "groups", groups, None, ("se_gc",))
    if kind == "eca":
        return make_config(
            channels,
            kernel_size,
            padding=padding,
            gate=gate,
            data_format=data_format,
            **eca_kwargs,
        )
    if eca_kwargs and kind != "eca_ns":
        raise ValueError(f"attention {kind!r} takes no {', '.join(sorted(eca_kwargs))}")
    channels = _check_int("channels", channels, minimum=1)
    gate = _check_choice("gate", gate, GATES)
    data_format = _check_choice("data_format", data_format, DATA_FORMATS)
    padding = _check_choice("padding", padding, PADDINGS)
    kw: dict[str, Any] = {}
    if kind == "eca_ns":  # k from the paper's rule unless given, as for ECA
        k = make_config(channels, kernel_size, **eca_kwargs).kernel_size
        kw = dict(kernel_size=k, padding=padding)
    elif kind == "se":
        reduction = _check_int("reduction", reduction, minimum=1)
        rd_divisor = _check_int("rd_divisor", rd_divisor, minimum=1)
        if rd_channels is None:
            rd = se_reduced_channels(channels, reduction, rd_divisor)
        else:
            rd = _check_int("rd_channels", rd_channels, minimum=1)
        kw = dict(reduction=reduction, rd_channels=rd, rd_divisor=rd_divisor)
    elif kind == "se_gc":
        if groups is None:
            raise ValueError("attention 'se_gc' needs groups (the number of channel groups G)")
        groups = _check_int("groups", groups, minimum=1)
        if channels % groups:
            raise ValueError(f"se_gc: channels ({channels}) must be divisible by groups ({groups})")
        kw = dict(groups=groups)
    return AttentionConfig(kind, channels, gate, data_format, **kw)


def _refuse(kind: str, arg: str, value: Any, default: Any, takers: tuple[str, ...]) -> None:
    if kind not in takers and value != default:
        raise ValueError(f"attention {kind!r} takes no {arg} (got {value!r})")


# canonical (torch state_dict) names, shapes and layouts of each kind's weights
WEIGHTS = {
    "eca": "conv.weight (1, 1, k), Conv1d; Keras/Flax (k, 1, 1)",
    "eca_ns": "weight (C, k); same layout everywhere",
    "se": "fc1.weight (C/r, C, 1, 1), fc1.bias (C/r,), fc2.weight (C, C/r, 1, 1), fc2.bias (C,): "
    "timm SEModule's 1x1 Conv2d; Keras/Flax kernels (1, 1, in, out)",
    "se_var1": "(no weights)",
    "se_var2": "weight (C,)",
    "se_var3": "fc.weight (C, C), Linear (out, in); Keras/Flax (in, out)",
    "se_gc": "fc.weight (C, C/G): row c holds the weights of output c over its group's inputs; "
    "same layout everywhere",
}


def attention_schema(
    config: AttentionConfig | ECAConfig, prefix: str = ""
) -> dict[str, tuple[tuple[int, ...], Layout]]:
    """Canonical names, shapes and layouts of one block's weights (in ``state_dict`` order)."""
    if isinstance(config, ECAConfig):
        return {f"{prefix}conv.weight": (config.weight_shape, Layout.CONV1D)}
    c, kind = config.channels, config.kind
    # attention_config sets kernel_size (eca_ns), rd_channels (se) and groups (se_gc)
    s: dict[str, tuple[tuple[int, ...], Layout]]
    if kind == "eca_ns":
        s = {"weight": ((c, cast(int, config.kernel_size)), Layout.NONE)}
    elif kind == "se":
        rd = cast(int, config.rd_channels)
        s = {
            "fc1.weight": ((rd, c, 1, 1), Layout.CONV2D),
            "fc1.bias": ((rd,), Layout.NONE),
            "fc2.weight": ((c, rd, 1, 1), Layout.CONV2D),
            "fc2.bias": ((c,), Layout.NONE),
        }
    elif kind == "se_var1":
        s = {}
    elif kind == "se_var2":
        s = {"weight": ((c,), Layout.NONE)}
    elif kind == "se_var3":
        s = {"fc.weight": ((c, c), Layout.LINEAR)}
    else:  # se_gc
        s = {"fc.weight": ((c, c // cast(int, config.groups)), Layout.NONE)}
    return {f"{prefix}{n}": v for n, v in s.items()}


def init_bounds(config: AttentionConfig | ECAConfig) -> dict[str, float]:
    """Every backend's init: each weight and bias ~ U(-b, b) with b = 1 / sqrt(fan_in).

    torch's default for Conv / Linear. fan_in = k (eca, eca_ns), C (se fc1, se_var3), C/r (se
    fc2), 1 (se_var2: one weight per channel), C/G (se_gc).
    """
    out = {}
    for name, (shape, _) in attention_schema(config).items():
        if name.endswith("bias"):  # SE's only (rd_channels set)
            se = cast(AttentionConfig, config)
            fan_in = cast(int, se.rd_channels) if name.startswith("fc2") else se.channels
        elif len(shape) == 1:  # se_var2
            fan_in = 1
        else:
            fan_in = 1
            for d in shape[1:]:
                fan_in *= d
        out[name] = float(fan_in) ** -0.5
    return out


def param_count(config: AttentionConfig | ECAConfig) -> int:
    """Number of parameters: the paper's formulas (0, C, C^2, C^2/G, kC, k; SE 2C(C/r)+C/r+C)."""
    total = 0
    for shape, _ in attention_schema(config).values():
        n = 1
        for d in shape:
            n *= d
        total += n
    return total


def flops(config: AttentionConfig | ECAConfig, spatial: int = 1) -> dict[str, int]:
    """Multiply-accumulates of the channel mixing, and elementwise ops of pool + scale.

    Returns {"mix_macs": ..., "pool_scale_ops": ...} per sample; ``spatial`` is the number of
    spatial positions M (pooling is C*M adds, scaling C*M multiplies). Zero padding is counted
    as if the padded taps were computed (the dense k-tap / band form every backend runs).
    """
    c = config.channels or 0  # 0: an ECA built without channels (the others always have C)
    if isinstance(config, ECAConfig):
        macs = config.kernel_size * c
    elif config.kind == "se":  # attention_config sets rd_channels, kernel_size, groups per kind
        macs = 2 * c * cast(int, config.rd_channels)
    elif config.kind == "eca_ns":
        macs = cast(int, config.kernel_size) * c
    elif config.kind == "se_var1":
        macs = 0
    elif config.kind == "se_var2":
        macs = c
    elif config.kind == "se_var3":
        macs = c * c
    else:
        macs = c * c // cast(int, config.groups)
    return {"mix_macs": macs, "pool_scale_ops": 2 * c * spatial}


def attention_table(
    channels: int,
    *,
    kernel_size: int | None = None,
    reduction: int = 16,
    groups: int = 4,
    spatial: int = 1,
) -> list[dict[str, Any]]:
    """One row per family member for ``channels`` channels, like the paper's Table 2.

    ``kernel_size`` (ECA, ECA-NS) defaults to the paper's rule for C.
    """
    from .spec import kernel_size as rule

    k = kernel_size if kernel_size is not None else rule(channels)
    per_kind: dict[str, dict[str, Any]] = {
        "se": dict(reduction=reduction),
        "se_var1": {},
        "se_var2": {},
        "se_var3": {},
        "se_gc": dict(groups=groups),
        "eca_ns": dict(kernel_size=k),
        "eca": dict(kernel_size=k),
    }
    rows = []
    for kind, kw in per_kind.items():
        cfg = attention_config(kind, channels, **kw)
        f = flops(cfg, spatial)
        rows.append(
            {
                "attention": kind,
                "name": NAMES[kind],
                "formula": _FORMULAS[kind],
                "params": param_count(cfg),
                "mix_macs": f["mix_macs"],
                "flops": 2 * f["mix_macs"] + f["pool_scale_ops"] + channels,  # + C gate evals
                "args": ", ".join(f"{a}={v}" for a, v in kw.items()),
            }
        )
    return rows


_FORMULAS = {
    "se": "2C(C/r) + C/r + C",
    "se_var1": "0",
    "se_var2": "C",
    "se_var3": "C^2",
    "se_gc": "C^2/G",
    "eca_ns": "k C",
    "eca": "k",
}


def format_attention_table(rows: list[dict[str, Any]], channels: int) -> str:
    """Markdown table of :func:`attention_table` rows.

    FLOPs per sample = 2 x mixing MACs + pooling and scaling (2 C M) + C gate evaluations.
    """
    out = [
        f"Channel attention for C = {channels}",
        "",
        "| attention | class | args | parameters (formula) | parameters | mixing MACs | FLOPs |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['attention']} | {r['name']} | {r['args'] or '-'} | {r['formula']} | "
            f"{r['params']:,} | {r['mix_macs']:,} | {r['flops']:,} |"
        )
    return "\n".join(out)
