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

from collections.abc import Mapping
from typing import Any, cast, overload

import numpy as np

from .family import AttentionConfig, attention_config, attention_schema
from .spec import ECAConfig, check_input, make_config, padded_channel_index
from .weights.schema import check_state

__all__ = [
    "ECA",
    "attention_backward",
    "attention_forward",
    "backward",
    "family_config",
    "forward",
    "gate",
    "gate_grad",
    "mix",
    "pooled",
]

_Config = ECAConfig | AttentionConfig  # any family member's config


def gate(z: np.ndarray, kind: str) -> np.ndarray:
    """The gate: logistic sigmoid, or hard sigmoid ``relu6(z + 3) / 6``."""
    if kind == "sigmoid":
        ez = np.exp(-np.abs(z))  # stable for large |z|
        s: np.ndarray = np.where(z >= 0, 1.0 / (1.0 + ez), ez / (1.0 + ez))
        return s
    return np.clip(z + 3.0, 0.0, 6.0) / 6.0


def gate_grad(z: np.ndarray, s: np.ndarray, kind: str) -> np.ndarray:
    """d gate / dz. For hard_sigmoid the kinks at z = +-3 take the one-sided value 0."""
    if kind == "sigmoid":
        return s * (1.0 - s)
    return np.where((z > -3.0) & (z < 3.0), 1.0 / 6.0, 0.0)


def _config(x: np.ndarray, weight: np.ndarray, **kw: Any) -> ECAConfig:
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


def _channels_first(x: np.ndarray, cfg: _Config) -> np.ndarray:
    """(N, C, M) view of x with all spatial axes flattened into M."""
    x = np.moveaxis(x, cfg.channel_axis(x.ndim), 1)
    return x.reshape(x.shape[0], x.shape[1], -1)


def _restore(xcf: np.ndarray, shape: tuple[int, ...], cfg: _Config) -> np.ndarray:
    ax = cfg.channel_axis(len(shape))
    moved = np.moveaxis(np.empty(shape, dtype=np.bool_), ax, 1).shape
    return np.moveaxis(xcf.reshape(moved), 1, ax)


def _pad(y: np.ndarray, cfg: _Config) -> np.ndarray:
    c = y.shape[1]
    if cfg.padding == "circular":
        return y[:, padded_channel_index(c, cast(int, cfg.kernel_size))]  # eca, eca_ns: k set
    return np.pad(y, ((0, 0), (cfg.pad, cfg.pad)))


def pooled(x: np.ndarray, data_format: str = "channels_first") -> np.ndarray:
    """Mean over all spatial axes, shape (N, C), float64."""
    cfg = make_config(kernel_size=1, data_format=data_format)
    y: np.ndarray = _channels_first(np.asarray(x, dtype=np.float64), cfg).mean(axis=-1)
    return y


def _band(y: np.ndarray, taps: np.ndarray, cfg: _Config) -> tuple[np.ndarray, np.ndarray]:
    """ECA / ECA-NS mixing: ``z[:, c] = sum_j taps[c, j] * ypad[:, c + j]`` (no flip).

    ``taps`` is (1, k) for ECA (one kernel shared by all channels) or (C, k) for ECA-NS.
    """
    ypad = _pad(y, cfg)  # (N, C + 2p)
    c = y.shape[1]
    z = sum(taps[:, j] * ypad[:, j : j + c] for j in range(taps.shape[1]))
    return z, ypad


def _band_grad(
    ypad: np.ndarray, taps: np.ndarray, dz: np.ndarray, cfg: _Config
) -> tuple[np.ndarray, np.ndarray]:
    """(dy, dtaps) of :func:`_band`; dtaps keeps taps' shape (shared taps sum over channels)."""
    n, c = dz.shape
    k = taps.shape[1]
    per_channel = taps.shape[0] > 1  # ECA-NS: one gradient per channel; ECA: summed over C
    sum_axes = 0 if per_channel else None
    dtaps = np.stack([(dz * ypad[:, j : j + c]).sum(axis=sum_axes) for j in range(k)], axis=-1)
    dtaps = dtaps.reshape(taps.shape)
    dypad = np.zeros_like(ypad)
    for j in range(k):
        dypad[:, j : j + c] += taps[:, j] * dz
    if cfg.padding == "circular":
        dy = np.zeros((n, c))
        np.add.at(dy.T, padded_channel_index(c, k), dypad.T)
    else:
        dy = dypad[:, cfg.pad : cfg.pad + c]
    return dy, dtaps


def _kind(cfg: _Config) -> str:
    return "eca" if isinstance(cfg, ECAConfig) else cfg.kind


def mix(cfg: _Config, y: np.ndarray, params: Mapping[str, np.ndarray]) -> np.ndarray:
    """The channel mixing z = mix(y) of any family member (y: pooled (N, C), float64)."""
    return _mix(cfg, y, params)[0]


def _mix(
    cfg: _Config, y: np.ndarray, p: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray | None]:
    """z and what the gradient needs, per kind (see :mod:`eca_multi.family`)."""
    kind = _kind(cfg)
    if kind == "eca":
        return _band(y, p["conv.weight"][0], cfg)
    if kind == "eca_ns":
        return _band(y, p["weight"], cfg)
    if kind == "se":
        h_pre = y @ p["fc1.weight"][:, :, 0, 0].T + p["fc1.bias"]
        return np.maximum(h_pre, 0.0) @ p["fc2.weight"][:, :, 0, 0].T + p["fc2.bias"], h_pre
    if kind == "se_var1":
        return y.copy(), None
    if kind == "se_var2":
        return p["weight"] * y, None
    if kind == "se_var3":
        return y @ p["fc.weight"].T, None
    n, c = y.shape  # se_gc: block-diagonal, W[g*Cg + o, i] multiplies y[g*Cg + i]
    wg = _group_view(p["fc.weight"], _groups(cfg))
    return np.einsum("goi,ngi->ngo", wg, y.reshape(n, _groups(cfg), -1)).reshape(n, c), None


def _groups(cfg: _Config) -> int:
    """SE-GC's G (attention_config sets it; only kind se_gc asks)."""
    return cast(int, cast(AttentionConfig, cfg).groups)


def _group_view(w: np.ndarray, groups: int) -> np.ndarray:
    """(C, C/G) -> (G, C/G out, C/G in)."""
    return w.reshape(groups, -1, w.shape[1])


def _mix_grad(
    cfg: _Config, y: np.ndarray, p: Mapping[str, np.ndarray], cache: Any, dz: np.ndarray
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(dy, {canonical name: gradient}) of :func:`_mix` for upstream dz."""
    kind = _kind(cfg)
    if kind == "eca":
        dy, dt = _band_grad(cache, p["conv.weight"][0], dz, cfg)
        return dy, {"conv.weight": dt[None]}
    if kind == "eca_ns":
        dy, dt = _band_grad(cache, p["weight"], dz, cfg)
        return dy, {"weight": dt}
    if kind == "se":
        w1, w2 = p["fc1.weight"][:, :, 0, 0], p["fc2.weight"][:, :, 0, 0]
        h = np.maximum(cache, 0.0)
        dh = (dz @ w2) * (cache > 0)  # ReLU'(0) = 0
        grads = {
            "fc1.weight": (dh.T @ y)[:, :, None, None],
            "fc1.bias": dh.sum(axis=0),
            "fc2.weight": (dz.T @ h)[:, :, None, None],
            "fc2.bias": dz.sum(axis=0),
        }
        return dh @ w1, grads
    if kind == "se_var1":
        return dz, {}
    if kind == "se_var2":
        return dz * p["weight"], {"weight": (dz * y).sum(axis=0)}
    if kind == "se_var3":
        return dz @ p["fc.weight"], {"fc.weight": dz.T @ y}
    n, c = y.shape
    wg = _group_view(p["fc.weight"], _groups(cfg))
    dzg, yg = dz.reshape(n, _groups(cfg), -1), y.reshape(n, _groups(cfg), -1)
    dw = np.einsum("ngo,ngi->goi", dzg, yg).reshape(p["fc.weight"].shape)
    return np.einsum("goi,ngo->ngi", wg, dzg).reshape(n, c), {"fc.weight": dw}


@overload
def _run(
    cfg: _Config, x: Any, params: Mapping[str, Any], g: None = None
) -> tuple[np.ndarray, dict[str, np.ndarray] | None]: ...
@overload
def _run(
    cfg: _Config, x: Any, params: Mapping[str, Any], g: Any
) -> tuple[np.ndarray, dict[str, np.ndarray]]: ...
def _run(
    cfg: _Config, x: Any, params: Mapping[str, Any], g: Any = None
) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
    """Forward (and, with upstream g, backward) of any family member, all in float64."""
    x64 = np.asarray(x, dtype=np.float64)
    p = {n: np.asarray(v, dtype=np.float64) for n, v in params.items()}
    if g is not None and np.shape(g) != x64.shape:
        raise ValueError(f"upstream gradient shape {np.shape(g)} differs from input {x64.shape}")
    if x64.size == 0:
        return x64.copy(), {n: np.zeros_like(v) for n, v in p.items()}
    xcf = _channels_first(x64, cfg)
    y = xcf.mean(axis=-1)  # (N, C)
    z, cache = _mix(cfg, y, p)
    s = gate(z, cfg.gate)
    if g is None:
        return _restore(xcf * s[:, :, None], x64.shape, cfg), None
    gcf = _channels_first(np.asarray(g, dtype=np.float64), cfg)
    dz = (gcf * xcf).sum(axis=-1) * gate_grad(z, s, cfg.gate)  # (N, C)
    dy, dp = _mix_grad(cfg, y, p, cache, dz)
    dxcf = gcf * s[:, :, None] + dy[:, :, None] / xcf.shape[2]
    return _restore(dxcf, x64.shape, cfg), dp


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
    return _run(cfg, x, {"conv.weight": weight})[0]


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
    dx, dp = _run(cfg, x, {"conv.weight": weight}, g)
    return dx, dp["conv.weight"]


def family_config(
    x: np.ndarray, params: Mapping[str, np.ndarray], attention: str, **kwargs: Any
) -> _Config:
    """The config of ``attention`` for input x, reading sizes from the weights where not given.

    Channels come from x (by ``data_format``); ECA's / ECA-NS's k, SE's hidden width and SE-GC's
    groups from the weight shapes, as when porting a checkpoint. The params are then checked
    against the kind's canonical schema (all missing / unexpected / mis-shaped keys at once).
    """
    x = np.asarray(x)
    df = kwargs.get("data_format", "channels_first")
    if kwargs.get("channels") is None:  # (a rank < 3 input fails check_input below)
        kwargs["channels"] = int(x.shape[1 if df == "channels_first" else -1]) if x.ndim else 1
    shape = {n: np.shape(v) for n, v in params.items()}
    if attention in ("eca", "eca_ns") and kwargs.get("kernel_size") is None:
        key = "conv.weight" if attention == "eca" else "weight"
        if key in shape:
            kwargs["kernel_size"] = int(shape[key][-1])
    if attention == "se" and kwargs.get("rd_channels") is None and "fc1.weight" in shape:
        kwargs["rd_channels"] = int(shape["fc1.weight"][0])
    if attention == "se_gc" and kwargs.get("groups") is None and "fc.weight" in shape:
        kwargs["groups"] = max(1, int(shape["fc.weight"][0]) // max(1, shape["fc.weight"][1]))
    cfg = attention_config(attention, **kwargs)
    floating = np.issubdtype(x.dtype, np.floating) or x.dtype.name in ("bfloat16",)
    check_input(cfg, x.shape, is_floating=floating, dtype=str(x.dtype), backend="reference")
    check_state(attention_schema(cfg), params, where=f"reference {attention}")
    return cfg


def attention_forward(
    x: np.ndarray, params: Mapping[str, np.ndarray], attention: str = "eca", **kwargs: Any
) -> np.ndarray:
    """Forward of any family member in float64 (``params``: canonical names, torch layouts).

    ``kwargs`` are the constructor arguments (gate, data_format, padding, groups, ...); see
    :func:`family_config` for what is read from the weights.

    Example:
        >>> x = np.ones((1, 4, 2, 2))
        >>> attention_forward(x, {"weight": np.ones(4)}, "se_var2").shape
        (1, 4, 2, 2)
    """
    return _run(family_config(x, params, attention, **kwargs), x, params)[0]


def attention_backward(
    x: np.ndarray,
    params: Mapping[str, np.ndarray],
    g: np.ndarray,
    attention: str = "eca",
    **kwargs: Any,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Gradient of ``sum(g * attention_forward(x, params))``: ``(dx, {name: dparam})``."""
    return _run(family_config(x, params, attention, **kwargs), x, params, g)


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

    def _kw(self) -> dict[str, Any]:
        c = self.config
        return dict(padding=c.padding, gate=c.gate, data_format=c.data_format, channels=c.channels)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return forward(x, self.weight, **self._kw())

    def backward(self, x: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return backward(x, self.weight, g, **self._kw())

    def __repr__(self) -> str:
        return self.config.describe("reference.ECA")
