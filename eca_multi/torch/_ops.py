"""Pooling, gate and scaling shared by every torch channel-attention module (ECA and its family).

Each family member is ``pool -> mix -> gate -> scale``; only the mixing differs (see
:mod:`eca_multi.family`). The three shared steps live here, once, together with the autocast guard
that keeps the attention path in float32 whatever the input dtype:

* :func:`pool`: mean over the spatial axes of the config's data format, accumulated in ``acc``;
* :func:`gate`: ``sigmoid`` or ``hard_sigmoid`` (``relu6(z + 3) / 6``);
* :func:`scale`: ``x * s`` with s cast to x's dtype and broadcast over the spatial axes.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ..spec import check_input

if TYPE_CHECKING:
    from ..family import AttentionConfig
    from ..spec import ECAConfig

__all__ = [
    "BATCH_NORMS",
    "Gated",
    "accumulation_dtype",
    "full_precision",
    "gate",
    "pool",
    "scale",
    "scale_add",
]

_NO_CONTEXT = contextlib.nullcontext()
# every BatchNorm torch ships, by its public classes (timm's BatchNormAct2d subclasses BatchNorm2d)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def full_precision(device: torch.device):
    """A context with autocast off on ``device``: the attention path must not run in bf16/fp16."""
    # is_autocast_available is not traceable by dynamo in torch 2.11 (seen on CUDA): under
    # torch.compile the device is a real one, so autocast(enabled=False) is always valid there
    if torch.compiler.is_compiling():
        return torch.autocast(device.type, enabled=False)
    kind = device.type  # eager: enter a context only where autocast is on
    if torch.amp.is_autocast_available(kind) and torch.is_autocast_enabled(kind):
        return torch.autocast(kind, enabled=False)
    return _NO_CONTEXT  # autocast off already, or e.g. "meta": no autocast there to turn off


def accumulation_dtype(x: torch.Tensor, weight_dtype: torch.dtype | None) -> torch.dtype:
    """float32, or float64 where the input or the weights are float64."""
    acc = torch.promote_types(x.dtype, torch.float32)
    return acc if weight_dtype is None else torch.promote_types(acc, weight_dtype)


def pool(x: torch.Tensor, config, acc: torch.dtype) -> torch.Tensor:
    """The pooled (N, C) vector: mean over ``config.spatial_axes``, accumulated in ``acc``."""
    dims = config.spatial_axes(x.ndim)
    # mean(dtype=) costs an extra sum + div_ dispatch (~25 us eager); equal bits without it
    return x.mean(dim=dims) if x.dtype == acc else x.mean(dim=dims, dtype=acc)


def gate(z: torch.Tensor, kind: str) -> torch.Tensor:
    """``sigmoid(z)`` or the hard sigmoid ``relu6(z + 3) / 6``."""
    return torch.sigmoid(z) if kind == "sigmoid" else F.relu6(z + 3.0) / 6.0


def _broadcast(x: torch.Tensor, s: torch.Tensor, config) -> torch.Tensor:
    """The (N, C) gate in x's dtype, viewed to broadcast over x's spatial axes."""
    if s.dtype != x.dtype:
        s = s.to(x.dtype)
    shape = [1] * x.ndim
    shape[0], shape[config.channel_axis(x.ndim)] = s.shape
    return s.view(shape)


def scale(x: torch.Tensor, s: torch.Tensor, config) -> torch.Tensor:
    """``x * s``: the (N, C) gate in x's dtype, broadcast over the spatial axes."""
    return x * _broadcast(x, s, config)


def scale_add(x: torch.Tensor, s: torch.Tensor, residual: torch.Tensor, config) -> torch.Tensor:
    """``residual + x * s`` in one pass over memory (``torch.addcmul``), the same values as
    ``scale(x, s) + residual``: a residual block's gate and shortcut add, fused."""
    return torch.addcmul(residual, x, _broadcast(x, s, config))


class Gated:
    """Mixin for every torch attention module: ``forward``, ``repr`` and the shared input check
    (:func:`check_input`) run once per new (shape, dtype) in eager mode.

    Needs ``self.config`` and ``self.attention(x, pooled=None)``, the (N, C) gate: the one entry
    point besides the plain call. Fusions (the gate multiply folded into a block's residual add,
    :func:`scale_add`; pooling through the block's last 1x1 conv) belong to the blocks that own
    those layers (:mod:`eca_multi.torch.models`). The check is
    pure Python on the shape and dtype (about 10 us a call); a passing (shape, dtype) is
    remembered so repeated calls skip it. Under torch.compile it runs at trace time (shapes are
    static there), so compiled graphs never pay for it.
    """

    # (shape, dtype) that last passed the input check; deliberately not annotated: TorchScript
    # reads class annotations and would fail on this one before reaching the documented reason
    _checked = None

    if TYPE_CHECKING:  # what the mixin needs (not real annotations: TorchScript would read them)
        config: AttentionConfig | ECAConfig

        def attention(
            self, x: torch.Tensor, pooled: torch.Tensor | None = None
        ) -> torch.Tensor: ...

    def _check(self, x: torch.Tensor) -> None:
        if torch.compiler.is_compiling():
            self._check_now(x)
            return
        key = (x.shape, x.dtype)
        if key != self._checked:
            self._check_now(x)
            self._checked = key  # only after the check passed: bad input raises every time

    def _check_now(self, x: torch.Tensor) -> None:
        shape, floating = tuple(x.shape), x.is_floating_point()
        check_input(self.config, shape, is_floating=floating, dtype=str(x.dtype), backend="torch")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return scale(x, self.attention(x), self.config)  # broadcast over the spatial axes

    def __repr__(self) -> str:
        return self.config.describe(type(self).__name__)
