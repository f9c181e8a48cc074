"""The paper's channel-attention family as ``torch.nn.Module`` s: SE, SE-Var1/2/3, SE-GC, ECA-NS.

Wang et al., CVPR 2020 (https://arxiv.org/abs/1910.03151), Table 2. Every module is
``pool -> mix -> gate -> scale`` with the pooling, gate and scaling of :class:`~.layer.ECA`
(:mod:`eca_multi.torch._ops`); only the channel mixing differs (:mod:`eca_multi.family` has the
formulas). Arguments are validated by :func:`eca_multi.family.attention_config`, so errors and
reprs are the ones every backend gives.

``state_dict`` names and layouts are the canonical ones (:data:`eca_multi.family.WEIGHTS`):

=======  =================================================================================
class    state_dict
=======  =================================================================================
SE       ``fc1.weight`` (C/r, C, 1, 1), ``fc1.bias`` (C/r,), ``fc2.weight`` (C, C/r, 1, 1),
         ``fc2.bias`` (C,): timm's ``SEModule`` (1x1 Conv2d), so its weights load unchanged
SEVar1   (none)
SEVar2   ``weight`` (C,)
SEVar3   ``fc.weight`` (C, C), an ``nn.Linear`` without bias (out, in)
SEGC     ``fc.weight`` (C, C/G): row c = output c's weights over its group's inputs (the
         layout of ``nn.Conv1d(C, C, 1, groups=G).weight[..., 0]``)
ECANS    ``weight`` (C, k): row c = the k taps of output channel c
=======  =================================================================================

16-bit inputs are pooled, mixed and gated in float32 (autocast is turned off on that path); the
output keeps the input's dtype. Every weight and bias starts ~ U(-b, b) with b from
:func:`eca_multi.family.init_bounds` (torch's own Conv / Linear default), the same in every
backend.

Example:
    >>> se = make_attention("se", 64)  # SENet's C // 16 = 4 hidden units
    >>> se
    SE(channels=64, rd_channels=4, data_format='channels_first')
    >>> se(torch.randn(2, 64, 7, 7)).shape
    torch.Size([2, 64, 7, 7])
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from ..family import ATTENTIONS, AttentionConfig, attention_config, init_bounds
from ..spec import ECAConfig, _check_choice, padded_channel_index
from ._ops import Gated, accumulation_dtype, full_precision, gate, pool
from .layer import ECA

__all__ = [
    "ATTENTIONS",
    "ECANS",
    "SE",
    "SEGC",
    "SEVar1",
    "SEVar2",
    "SEVar3",
    "from_config",
    "make_attention",
]


def _as(w: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return w if w.dtype == dtype else w.to(dtype)


def _attention(kind: str, channels: int, **kwargs: Any) -> AttentionConfig:
    # every kind but "eca" (an ECAConfig, built by ECA itself) gives an AttentionConfig
    return cast(AttentionConfig, attention_config(kind, channels, **kwargs))


class _ChannelAttention(Gated, nn.Module):
    """Shared body of the family: input check, pool, :meth:`mix`, gate, scale, init, repr."""

    def __init__(self, config: AttentionConfig) -> None:
        super().__init__()
        self.config = config

    def reset_parameters(self) -> None:
        """Every weight and bias ~ U(-b, b), b = 1 / sqrt(fan_in) (:func:`init_bounds`)."""
        with torch.no_grad():
            for name, bound in init_bounds(self.config).items():
                self.get_parameter(name).uniform_(-bound, bound)

    def mix(self, y: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
        """The channel mixing z = mix(y) of the pooled (N, C) vector, computed in ``acc``."""
        raise NotImplementedError

    def attention(self, x: torch.Tensor, pooled: torch.Tensor | None = None) -> torch.Tensor:
        """The gate s of shape (N, C), in float32 (float64 for float64 inputs or weights).

        ``pooled``: x's (N, C) spatial mean when the caller already has it (as ECA's).
        """
        p = next(self.parameters(), None)
        acc = accumulation_dtype(x, None if p is None else p.dtype)
        with full_precision(x.device):
            y = pool(x, self.config, acc) if pooled is None else pooled.to(acc)
            return gate(self.mix(y, acc), self.config.gate)


class SE(_ChannelAttention):
    """Squeeze-and-Excitation: ``FC(C -> C/r, bias) -> ReLU -> FC(C/r -> C, bias)`` (SENet).

    Parameters: 2 C (C/r) + C/r + C. Names and layouts are timm's ``SEModule`` (1x1 convs
    ``fc1`` / ``fc2``): ``SE(C, rd_divisor=8)`` has timm's default width and loads its weights.

    Args:
        channels: channel count C.
        reduction: r; the hidden width is ``C // r`` (at least 1) with ``rd_divisor=1``.
        rd_channels: the hidden width, explicitly (wins over reduction / rd_divisor).
        rd_divisor: round ``C / r`` to a multiple of this (timm's ``make_divisible``; timm: 8).
        gate: "sigmoid" or "hard_sigmoid".
        data_format: "channels_first" (N, C, *spatial) or "channels_last" (N, *spatial, C).
        device: device of the weights (torch factory keyword).
        dtype: dtype of the weights (torch factory keyword).

    Input shape:
        (N, C, *spatial) or (N, *spatial, C), 1 to 3 (or more) spatial axes, floating point.

    Output shape:
        The input's shape and dtype.
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        rd_channels: int | None = None,
        rd_divisor: int = 1,
        gate: str = "sigmoid",
        data_format: str = "channels_first",
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        cfg = _attention(
            "se",
            channels,
            gate=gate,
            data_format=data_format,
            reduction=reduction,
            rd_channels=rd_channels,
            rd_divisor=rd_divisor,
        )
        super().__init__(cfg)
        c, rd = cfg.channels, cast(int, cfg.rd_channels)  # set for "se"
        self.fc1 = nn.Conv2d(c, rd, 1, bias=True, device=device, dtype=dtype)
        self.fc2 = nn.Conv2d(rd, c, 1, bias=True, device=device, dtype=dtype)
        self.reset_parameters()

    def mix(self, y: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
        b1, b2 = cast(torch.Tensor, self.fc1.bias), cast(torch.Tensor, self.fc2.bias)  # bias=True
        w1, b1 = _as(self.fc1.weight, acc).flatten(1), _as(b1, acc)
        w2, b2 = _as(self.fc2.weight, acc).flatten(1), _as(b2, acc)
        return F.linear(F.relu(F.linear(y, w1, b1)), w2, b2)


class SEVar1(_ChannelAttention):
    """SE-Var1: ``s = gate(y)``, the pooled vector gated directly (no parameters).

    Args:
        channels: channel count C (checked against the input).
        gate: "sigmoid" or "hard_sigmoid".
        data_format: "channels_first" or "channels_last".
        device: accepted for a uniform constructor (there are no weights).
        dtype: accepted for a uniform constructor (there are no weights).
    """

    def __init__(
        self,
        channels: int,
        gate: str = "sigmoid",
        data_format: str = "channels_first",
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(_attention("se_var1", channels, gate=gate, data_format=data_format))

    def mix(self, y: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
        return y


class SEVar2(_ChannelAttention):
    """SE-Var2: ``s = gate(w * y)``, one weight per channel (C parameters, ``weight`` (C,)).

    Args:
        channels: channel count C.
        gate: "sigmoid" or "hard_sigmoid".
        data_format: "channels_first" or "channels_last".
        device: device of the weight (torch factory keyword).
        dtype: dtype of the weight (torch factory keyword).
    """

    def __init__(
        self,
        channels: int,
        gate: str = "sigmoid",
        data_format: str = "channels_first",
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        cfg = _attention("se_var2", channels, gate=gate, data_format=data_format)
        super().__init__(cfg)
        self.weight = nn.Parameter(torch.empty(cfg.channels, device=device, dtype=dtype))
        self.reset_parameters()

    def mix(self, y: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
        return y * _as(self.weight, acc)


class SEVar3(_ChannelAttention):
    """SE-Var3: ``s = gate(W y)``, one full C x C matrix (C^2 parameters, ``fc.weight``).

    Args:
        channels: channel count C.
        gate: "sigmoid" or "hard_sigmoid".
        data_format: "channels_first" or "channels_last".
        device: device of the weight (torch factory keyword).
        dtype: dtype of the weight (torch factory keyword).
    """

    def __init__(
        self,
        channels: int,
        gate: str = "sigmoid",
        data_format: str = "channels_first",
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        cfg = _attention("se_var3", channels, gate=gate, data_format=data_format)
        super().__init__(cfg)
        self.fc = nn.Linear(cfg.channels, cfg.channels, bias=False, device=device, dtype=dtype)
        self.reset_parameters()

    def mix(self, y: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
        return F.linear(y, _as(self.fc.weight, acc))


class GroupedLinear(nn.Module):
    """The block-diagonal C x C matrix of SE-GC, stored as its G blocks: ``weight`` (C, C/G).

    Row ``g * C/G + o`` holds output ``g * C/G + o``'s weights over inputs ``g * C/G ...``.
    """

    def __init__(
        self,
        channels: int,
        groups: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.groups = groups
        shape = (channels, channels // groups)
        self.weight = nn.Parameter(torch.empty(shape, device=device, dtype=dtype))

    def forward(self, y: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        n, c = y.shape
        g = self.groups
        w = self.weight if dtype is None else _as(self.weight, dtype)
        wg = w.view(g, c // g, c // g)  # (group, out, in)
        return torch.einsum("goi,ngi->ngo", wg, y.reshape(n, g, c // g)).reshape(n, c)

    def extra_repr(self) -> str:
        return f"channels={self.weight.shape[0]}, groups={self.groups}"


class SEGC(_ChannelAttention):
    """SE-GC: ``s = gate(W y)`` with W block-diagonal in G groups (C^2 / G parameters).

    Args:
        channels: channel count C (divisible by ``groups``).
        groups: the number of channel groups G.
        gate: "sigmoid" or "hard_sigmoid".
        data_format: "channels_first" or "channels_last".
        device: device of the weight (torch factory keyword).
        dtype: dtype of the weight (torch factory keyword).
    """

    def __init__(
        self,
        channels: int,
        groups: int | None = None,
        gate: str = "sigmoid",
        data_format: str = "channels_first",
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        cfg = _attention("se_gc", channels, groups=groups, gate=gate, data_format=data_format)
        super().__init__(cfg)
        groups = cast(int, cfg.groups)  # resolved for "se_gc"
        self.fc = GroupedLinear(cfg.channels, groups, device=device, dtype=dtype)
        self.reset_parameters()

    def mix(self, y: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
        return self.fc(y, acc)


class ECANS(_ChannelAttention):
    """ECA-NS: ECA's k-tap band across channels with non-shared taps (k C parameters).

    ``z[c] = sum_j W[c, j] * y[c + j - (k - 1) // 2]``, zero padded (or circular, as ECA).

    Args:
        channels: channel count C; with ``kernel_size=None`` it sets k by the paper's rule.
        kernel_size: odd k (wins over the rule).
        gamma: the rule's gamma (paper: 2).
        b: the rule's b (paper: 1).
        min_kernel_size: smallest k the rule returns.
        padding: "zeros" (the paper) or "circular".
        gate: "sigmoid" or "hard_sigmoid".
        data_format: "channels_first" or "channels_last".
        device: device of the weight (torch factory keyword).
        dtype: dtype of the weight (torch factory keyword).
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int | None = None,
        gamma: float = 2,
        b: float = 1,
        min_kernel_size: int = 1,
        padding: str = "zeros",
        gate: str = "sigmoid",
        data_format: str = "channels_first",
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        cfg = _attention(
            "eca_ns",
            channels,
            kernel_size=kernel_size,
            padding=padding,
            gate=gate,
            data_format=data_format,
            gamma=gamma,
            b=b,
            min_kernel_size=min_kernel_size,
        )
        super().__init__(cfg)
        c, k = cfg.channels, cast(int, cfg.kernel_size)  # resolved for "eca_ns"
        self.weight = nn.Parameter(torch.empty(c, k, device=device, dtype=dtype))
        if cfg.padding == "circular":  # index buffer, not a weight: not in the state_dict
            index = torch.as_tensor(padded_channel_index(c, k), device=device)
            self.register_buffer("channel_index", index, persistent=False)
        else:
            self.channel_index = None
        self.reset_parameters()

    def mix(self, y: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
        cfg, c = self.config, y.shape[1]
        w = _as(self.weight, acc)
        if cfg.kernel_size == 1:
            return y * w[:, 0]
        if self.channel_index is not None:  # circular: wraps modulo C, also for k > C
            y = y.index_select(1, self.channel_index)
        else:
            y = F.pad(y, (cfg.pad, cfg.pad))
        taps, ws = y.unfold(1, c, 1).unbind(1), w.unbind(1)  # k (N, C) views, k (C,) columns
        z = taps[0] * ws[0]
        for t, wj in zip(taps[1:], ws[1:], strict=True):
            z = torch.addcmul(z, t, wj)
        return z


CLASSES: dict[str, type[nn.Module]] = {
    "eca": ECA,
    "eca_ns": ECANS,
    "se": SE,
    "se_var1": SEVar1,
    "se_var2": SEVar2,
    "se_var3": SEVar3,
    "se_gc": SEGC,
}


def make_attention(kind: str, channels: int | None = None, **kwargs: Any) -> nn.Module:
    """Build any family member by name: ``make_attention("se_gc", 64, groups=4)``.

    Args:
        kind: one of :data:`ATTENTIONS` ("eca" gives :class:`~.layer.ECA`).
        channels: channel count C.
        **kwargs: the class's other constructor arguments (gate, data_format, kernel_size,
            reduction, rd_channels, groups, device, dtype ...).

    Raises:
        ValueError: an unknown kind, or an argument the kind does not take / a bad value.
        TypeError: an argument of the wrong type.
    """
    kind = _check_choice("attention", kind, ATTENTIONS)
    # validate with the shared rules first: an argument another kind takes gets the shared error
    factory = {k: kwargs.pop(k) for k in ("device", "dtype") if k in kwargs}
    attention_config(kind, channels, **kwargs)
    return CLASSES[kind](channels, **kwargs, **factory)


def from_config(
    config: AttentionConfig | ECAConfig,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """The module of a config from :func:`eca_multi.family.attention_config` (or an ECAConfig)."""
    if isinstance(config, ECAConfig):
        return ECA(**config.constructor_args(), device=device, dtype=dtype)
    return CLASSES[config.kind](**config.constructor_args(), device=device, dtype=dtype)
