"""The ECA block as a ``torch.nn.Module`` (Wang et al., CVPR 2020, https://arxiv.org/abs/1910.03151).

The one parameter is ``conv.weight`` of shape (1, 1, k): the key and layout of the official ECA-Net
``eca_layer`` and of timm's ``EcaModule`` / ``CecaModule``, so their state dicts load unchanged with
``load_state_dict``. Argument checks, the kernel-size rule and the repr come from
:mod:`eca_multi.spec`; this file only holds the parameter and the forward pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..spec import ECAConfig, make_config, padded_channel_index
from ._ops import Gated, full_precision, gate, pool

__all__ = ["ECA"]


class ECA(Gated, nn.Module):
    """Efficient Channel Attention: a k-tap 1-D convolution across the pooled channel vector.

    Args:
        channels: channel count C; with ``kernel_size=None`` it sets k by the paper's rule. None
            (with an explicit ``kernel_size``) accepts any C at call time.
        kernel_size: odd k; wins over the rule (the official checkpoints pass k per stage).
        gamma: the rule's gamma (paper: 2).
        b: the rule's b (paper: 1).
        min_kernel_size: smallest k the rule returns (timm's ``EcaModule`` is 3).
        padding: "zeros" (the paper) or "circular" (timm's ``CecaModule``; defined for k > C).
        gate: "sigmoid" or "hard_sigmoid" (``relu6(z + 3) / 6``).
        data_format: "channels_first" (N, C, *spatial) or "channels_last" (N, *spatial, C).
        device: device of the weight (torch factory keyword).
        dtype: dtype of the weight (torch factory keyword); the attention path runs in at least
            float32 whatever the weight and input dtypes.

    Input shape:
        (N, C, *spatial) or (N, *spatial, C) with 1 to 3 (or more) spatial axes, floating point.

    Output shape:
        The input's shape and dtype.

    Example:
        >>> layer = ECA(channels=64)  # k = 3 by the paper's rule
        >>> layer(torch.randn(2, 64, 7, 7)).shape
        torch.Size([2, 64, 7, 7])
        >>> list(layer.state_dict())
        ['conv.weight']
    """

    def __init__(
        self,
        channels: int | None = None,
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
        super().__init__()
        self.config: ECAConfig = make_config(
            channels, kernel_size, gamma, b, min_kernel_size, padding, gate, data_format
        )
        k = self.config.kernel_size
        # torch's Conv1d init is uniform(-1/sqrt(k), 1/sqrt(k)), the init every backend uses
        self.conv = nn.Conv1d(1, 1, k, bias=False, device=device, dtype=dtype)
        if self.config.padding == "circular" and channels is not None:
            # index buffer, not a weight: non-persistent so state_dict stays {"conv.weight"}
            index = torch.as_tensor(padded_channel_index(channels, k), device=device)
            self.register_buffer("channel_index", index, persistent=False)
        else:
            self.channel_index = None

    def _index(self, c: int, device: torch.device) -> torch.Tensor:
        if self.channel_index is not None:
            return self.channel_index
        return torch.as_tensor(padded_channel_index(c, self.config.kernel_size), device=device)

    def _conv(self, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The k-tap cross-correlation (no flip, no bias) of the pooled (N, C) vector."""
        cfg, c = self.config, y.shape[1]
        if cfg.padding == "circular":  # gather: wraps modulo C, also for k > C
            y = y.index_select(1, self._index(c, y.device))
        # fast path: k fused multiply-adds. Bit-equal to conv1d's forward on CPU (the same FMA
        # chain, tap 0 first) at a fraction of its cost (conv1d spends ~50 us in oneDNN setup on a
        # (32, 64) vector, the chain ~10-20 us), and under torch.compile it fuses into the
        # generated kernel instead of an extern convolution call. Its backward sums in another
        # order than conv1d's (1 ulp), so with autograd recording in eager mode the layer runs
        # conv1d itself: gradients stay bit-equal to timm's and the official eca_layer.
        if torch.compiler.is_compiling() or not (
            torch.is_grad_enabled() and (y.requires_grad or w.requires_grad)
        ):
            if cfg.padding == "zeros" and cfg.pad:
                y = F.pad(y, (cfg.pad, cfg.pad))  # zeros, as conv1d's own padding
            return self._taps(y, w)
        # zeros: conv1d's own zero padding, the op timm and the official code run (bit-equal)
        z = F.conv1d(y.unsqueeze(1), w, padding=cfg.pad if cfg.padding == "zeros" else 0)
        return z.squeeze(1)

    @staticmethod
    def _taps(y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """VALID k-tap cross-correlation of the padded (N, C + k - 1) vector as k multiply-adds."""
        k = w.shape[-1]
        c = y.shape[1] - k + 1
        if k == 1:
            return y * w.reshape(())
        taps, ws = y.unfold(1, c, 1).unbind(1), w.reshape(-1).unbind()  # k views each, 1 op each
        z = taps[0] * ws[0]
        for t, wj in zip(taps[1:], ws[1:], strict=True):
            z = torch.addcmul(z, t, wj)  # cross-correlation, no flip, no bias
        return z

    def attention(self, x: torch.Tensor, pooled: torch.Tensor | None = None) -> torch.Tensor:
        """The gate s of shape (N, C), in float32 (float64 for float64 inputs or weights).

        ``pooled``: x's (N, C) spatial mean when the caller already has it (a bottleneck block
        at inference, :func:`eca_multi.archs.pools_through_last_conv`); then x is not read.
        """
        cfg, w = self.config, self.conv.weight
        acc = torch.promote_types(torch.promote_types(x.dtype, w.dtype), torch.float32)
        with full_precision(x.device):  # pool, gate and scale: the family's shared ops (_ops)
            y = pool(x, cfg, acc) if pooled is None else pooled.to(acc)  # (N, C)
            z = self._conv(y, w if w.dtype == acc else w.to(acc))
            return gate(z, cfg.gate)
