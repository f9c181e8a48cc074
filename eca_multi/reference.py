"""NumPy float64 reference of ECA: the specification every backend is judged against.

Paper: Wang et al., "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks",
CVPR 2020, https://arxiv.org/abs/1910.03151. The block is defined in :mod:`eca_multi.spec`.

Everything is computed in float64 whatever the input dtype. :func:`backward` is the analytic
gradient (checked against finite differences in the tests): for an upstream gradient ``g`` of the
output it returns ``dx`` and ``dw`` (``dw`` in the canonical (1, 1, k) layout).

NaN in the input propagates: a NaN anywhere in x[n, c] makes the pooled y[n, c] NaN, hence the gate
of every channel within (k - 1) // 2 of c, hence those output channels.

Example:
    >>> import numpy as np
    >>> from eca_multi import reference
    >>> x = np.ones((1, 4, 2, 2)); w = np.array([[[0.1, 0.5, -0.2]]])
    >>> reference.forward(x, w).shape
    (1, 4, 2, 2)
"""

from __future__ import annotations

import numpy as np

from .spec import ECAConfig, check_input, make_config, padded_channel_index

__all__ = ["ECA", "backward", "forward", "gate", "gate_grad", "pooled"]


def gate(z: np.ndarray, kind: str) -> np.ndarray:
    """The gate: logistic sigmoid, or hard sigmoid ``relu6(z + 3) / 6``."""
    if kind == "sigmoid":
        ez = np.exp(-np.abs(z))  # stable for large |z|
        return np.where(z >= 0, 1.0 / (1.0 + ez), ez / (1.0 + ez))
    return np.clip(z + 3.0, 0.0, 6.0) / 6.0


def gate_grad(z: np.ndarray, s: np.ndarray, kind: str) -> np.ndarray:
    """d gate / dz. For hard_sigmoid the kinks at z = +-3 take the one-sided value 0."""
    if kind == "sigmoid":
        return s * (1.0 - s)
    return np.where((z > -3.0) & (z < 3.0), 1.0 / 6.0, 0.0)


def _config(x: np.ndarray, weight: np.ndarray, **kw) -> ECAConfig:
    weight = np.asarray(weight)
    if weight.ndim != 3 or weight.shape[:2] != (1, 1):
        raise ValueError(
            f"reference ECA weight must have the canonical (torch Conv1d) shape (1, 1, k), "
            f"got {weight.shape}"
        )
    cfg = make_config(kernel_size=int(weight.shape[2]), **kw)
    x = np.asarray(x)
    floating = np.issubdtype(x.dtype, np.floating) or x.dtype.name in ("bfloat16",)
    check_input(cfg, x.shape, is_floating=floating, dtype=str(x.dtype), backend="reference")
    return cfg


def _channels_first(x: np.ndarray, cfg: ECAConfig) -> np.ndarray:
    """(N, C, M) view of x with all spatial axes flattened into M."""
    x = np.moveaxis(x, cfg.channel_axis(x.ndim), 1)
    return x.reshape(x.shape[0], x.shape[1], -1)


def _restore(xcf: np.ndarray, shape: tuple[int, ...], cfg: ECAConfig) -> np.ndarray:
    ax = cfg.channel_axis(len(shape))
    moved = np.moveaxis(np.empty(shape, dtype=np.bool_), ax, 1).shape
    return np.moveaxis(xcf.reshape(moved), 1, ax)


def _pad(y: np.ndarray, cfg: ECAConfig) -> np.ndarray:
    c = y.shape[1]
    if cfg.padding == "circular":
        return y[:, padded_channel_index(c, cfg.kernel_size)]
    return np.pad(y, ((0, 0), (cfg.pad, cfg.pad)))


def pooled(x: np.ndarray, data_format: str = "channels_first") -> np.ndarray:
    """Mean over all spatial axes, shape (N, C), float64."""
    cfg = make_config(kernel_size=1, data_format=data_format)
    return _channels_first(np.asarray(x, dtype=np.float64), cfg).mean(axis=-1)


def _attention(x64: np.ndarray, w: np.ndarray, cfg: ECAConfig):
    xcf = _channels_first(x64, cfg)
    y = xcf.mean(axis=-1)  # (N, C)
    ypad = _pad(y, cfg)  # (N, C + 2p)
    c, k = y.shape[1], cfg.kernel_size
    z = sum(w[j] * ypad[:, j : j + c] for j in range(k))  # cross-correlation: no flip
    s = gate(z, cfg.gate)
    return xcf, ypad, z, s


def forward(
    x: np.ndarray,
    weight: np.ndarray,
    *,
    padding: str = "zeros",
    gate: str = "sigmoid",
    data_format: str = "channels_first",
    channels: int | None = None,
) -> np.ndarray:
    """ECA forward in float64.

    Args:
        x: input, (N, C, *spatial) for channels_first or (N, *spatial, C) for channels_last.
        weight: the kernel in canonical layout (1, 1, k).
        padding: "zeros" or "circular".
        gate: "sigmoid" or "hard_sigmoid".
        data_format: "channels_first" or "channels_last".
        channels: if given, the channel count the input must have.

    Returns:
        float64 array of x's shape.
    """
    cfg = _config(x, weight, padding=padding, gate=gate, data_format=data_format, channels=channels)
    x64 = np.asarray(x, dtype=np.float64)
    if x64.size == 0:
        return x64.copy()
    w = np.asarray(weight, dtype=np.float64)[0, 0]
    xcf, _, _, s = _attention(x64, w, cfg)
    return _restore(xcf * s[:, :, None], x64.shape, cfg)


def backward(
    x: np.ndarray,
    weight: np.ndarray,
    g: np.ndarray,
    *,
    padding: str = "zeros",
    gate: str = "sigmoid",
    data_format: str = "channels_first",
    channels: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Analytic gradient of ``sum(g * forward(x, weight))`` with respect to x and weight.

    Returns:
        ``(dx, dw)``: dx of x's shape, dw of the canonical shape (1, 1, k), both float64.
    """
    cfg = _config(x, weight, padding=padding, gate=gate, data_format=data_format, channels=channels)
    x64 = np.asarray(x, dtype=np.float64)
    g64 = np.asarray(g, dtype=np.float64)
    if g64.shape != x64.shape:
        raise ValueError(f"upstream gradient shape {g64.shape} differs from input {x64.shape}")
    w = np.asarray(weight, dtype=np.float64)[0, 0]
    k = cfg.kernel_size
    if x64.size == 0:
        return x64.copy(), np.zeros((1, 1, k))
    xcf, ypad, z, s = _attention(x64, w, cfg)
    gcf = _channels_first(g64, cfg)
    n, c, m = xcf.shape
    dz = (gcf * xcf).sum(axis=-1) * gate_grad(z, s, cfg.gate)  # (N, C)
    dw = np.array([(dz * ypad[:, j : j + c]).sum() for j in range(k)])
    dypad = np.zeros_like(ypad)
    for j in range(k):
        dypad[:, j : j + c] += w[j] * dz
    if cfg.padding == "circular":
        dy = np.zeros((n, c))
        np.add.at(dy.T, padded_channel_index(c, k), dypad.T)
    else:
        dy = dypad[:, cfg.pad : cfg.pad + c]
    dxcf = gcf * s[:, :, None] + dy[:, :, None] / m
    return _restore(dxcf, x64.shape, cfg), dw.reshape(1, 1, k)


class ECA:
    """The reference block with the backends' constructor vocabulary (float64, NumPy).

    Example:
        >>> layer = ECA(channels=64)  # k = 3 by the paper rule
        >>> layer.weight.shape
        (1, 1, 3)
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
        weight: np.ndarray | None = None,
    ) -> None:
        self.config = make_config(
            channels, kernel_size, gamma, b, min_kernel_size, padding, gate, data_format
        )
        k = self.config.kernel_size
        if weight is None:
            weight = np.random.default_rng(0).uniform(-(k**-0.5), k**-0.5, size=(1, 1, k))
        self.weight = np.asarray(weight, dtype=np.float64)

    def _kw(self) -> dict:
        c = self.config
        return dict(padding=c.padding, gate=c.gate, data_format=c.data_format, channels=c.channels)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return forward(x, self.weight, **self._kw())

    def backward(self, x: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return backward(x, self.weight, g, **self._kw())

    def __repr__(self) -> str:
        return self.config.describe("reference.ECA")
