"""Framework-free specification of the ECA block: arguments, kernel-size policy, input checks.

ECA (Efficient Channel Attention, Wang et al., CVPR 2020, https://arxiv.org/abs/1910.03151):

    y[n, c] = mean of x[n, c, ...] over the spatial axes
    z[n, c] = sum_j w[j] * y[n, c + j - (k - 1) // 2]      (cross-correlation, no flip, no bias)
    s       = gate(z)                                       ("sigmoid" or "hard_sigmoid")
    out     = x * s                                         (broadcast over the spatial axes)

The channel vector is padded with zeros (``padding="zeros"``, the paper) or wrapped around
(``padding="circular"``, timm's CECA; channel indices are taken modulo C, so k > C is defined).

Every backend builds an :class:`ECAConfig` with :func:`make_config` and calls :func:`check_input`
before its forward pass, so argument handling and error text are identical everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, cast

import numpy as np

GATES = ("sigmoid", "hard_sigmoid")
PADDINGS = ("zeros", "circular")
DATA_FORMATS = ("channels_first", "channels_last")

__all__ = [
    "DATA_FORMATS",
    "ECAConfig",
    "GATES",
    "PADDINGS",
    "check_input",
    "kernel_size",
    "make_config",
    "padded_channel_index",
]


def _check_int(name: str, value: Any, *, minimum: int | None = None, odd: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    n = int(value)
    if minimum is not None and n < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {n}")
    if odd and n % 2 == 0:
        raise ValueError(f"{name} must be odd (the kernel is centred on each channel), got {n}")
    return n


def _check_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return cast(float, value)  # kept as given (an int stays an int in repr and get_config)


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return cast(str, value)  # equal to one of the str choices


def kernel_size(channels: int, gamma: float = 2, b: float = 1, min_size: int = 1) -> int:
    """The paper's adaptive kernel size for ``channels`` channels.

    ``t = int(abs(log2(C) + b) / gamma)``; ``k = t`` if t is odd else ``t + 1``; then
    ``k = max(k, min_size)``. timm's ``EcaModule`` is ``min_size=3``.

    NOTE: the official ECA-Net checkpoints do not follow this rule (e.g. ECA-ResNet50 uses
    k = 3, 5, 5, 7 per stage); read k from a checkpoint's weight shape instead.

    Args:
        channels: number of channels C (>= 1).
        gamma: the rule's gamma (paper: 2).
        b: the rule's b (paper: 1).
        min_size: smallest kernel size returned (odd, >= 1).

    Returns:
        An odd kernel size >= ``min_size``.

    Examples:
        >>> [kernel_size(c) for c in (64, 256, 2048)]
        [3, 5, 7]
    """
    channels = _check_int("channels", channels, minimum=1)
    gamma = _check_number("gamma", gamma)
    b = _check_number("b", b)
    if gamma == 0:
        raise ValueError("gamma must be non-zero")
    min_size = _check_int("min_kernel_size", min_size, minimum=1, odd=True)
    t = int(abs(math.log2(channels) + b) / gamma)
    k = t if t % 2 else t + 1
    return max(k, min_size)


_rule_kernel_size = kernel_size  # make_config's argument shadows the name


class AxesMixin:
    """Channel and spatial axes of a rank-``ndim`` input from ``self.data_format``."""

    channels: int | None  # None: any channel count (an ECA built with only a kernel size)
    data_format: str

    def channel_axis(self, ndim: int) -> int:
        return 1 if self.data_format == "channels_first" else ndim - 1

    def spatial_axes(self, ndim: int) -> tuple[int, ...]:
        start = 2 if self.data_format == "channels_first" else 1
        return tuple(range(start, start + ndim - 2))


@dataclass(frozen=True)
class ECAConfig(AxesMixin):
    """Resolved, validated ECA arguments shared by every backend.

    ``kernel_size`` is always the resolved odd int; ``kernel_size_arg`` keeps what the user passed
    (None means "from channels by the rule") so configs serialize back to the same constructor call.
    """

    channels: int | None
    kernel_size: int
    gamma: float
    b: float
    min_kernel_size: int
    padding: str
    gate: str
    data_format: str
    kernel_size_arg: int | None

    @property
    def pad(self) -> int:
        """Channels padded on each side of the pooled vector: (k - 1) // 2."""
        return (self.kernel_size - 1) // 2

    @property
    def weight_shape(self) -> tuple[int, int, int]:
        """Canonical (torch Conv1d) weight shape (out=1, in=1, k)."""
        return (1, 1, self.kernel_size)

    def constructor_args(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this config (used by repr and Keras get_config)."""
        d = asdict(self)
        d["kernel_size"] = d.pop("kernel_size_arg")
        return d

    def describe(self, name: str = "ECA") -> str:
        """Short repr shared by every backend, e.g. ``ECA(channels=64, kernel_size=3)``."""
        parts = [f"channels={self.channels}", f"kernel_size={self.kernel_size}"]
        if self.padding != "zeros":
            parts.append(f"padding={self.padding!r}")
        if self.gate != "sigmoid":
            parts.append(f"gate={self.gate!r}")
        parts.append(f"data_format={self.data_format!r}")
        return f"{name}({', '.join(parts)})"


def make_config(
    channels: int | None = None,
    kernel_size: int | None = None,
    gamma: float = 2,
    b: float = 1,
    min_kernel_size: int = 1,
    padding: str = "zeros",
    gate: str = "sigmoid",
    data_format: str = "channels_first",
) -> ECAConfig:
    """Validate ECA constructor arguments and resolve the kernel size.

    An explicit ``kernel_size`` wins (as in the official ECA-Net code, which passes k per stage);
    otherwise ``channels`` is required and k comes from :func:`kernel_size` with
    ``min_kernel_size``.
    ``channels=None`` with an explicit kernel size accepts any channel count at call time.

    Raises:
        TypeError: a non-int count or size, a non-numeric gamma or b.
        ValueError: an even or non-positive kernel size, an unknown padding, gate or data_format,
            or neither channels nor kernel_size given.
    """
    if channels is not None:
        channels = _check_int("channels", channels, minimum=1)
    gamma = _check_number("gamma", gamma)
    b = _check_number("b", b)
    min_kernel_size = _check_int("min_kernel_size", min_kernel_size, minimum=1, odd=True)
    padding = _check_choice("padding", padding, PADDINGS)
    gate = _check_choice("gate", gate, GATES)
    data_format = _check_choice("data_format", data_format, DATA_FORMATS)
    if kernel_size is not None:
        k = _check_int("kernel_size", kernel_size, minimum=1, odd=True)
        kernel_size = k
    elif channels is None:
        raise ValueError(
            "ECA needs channels (to derive the kernel size) or an explicit kernel_size"
        )
    else:
        k = _rule_kernel_size(channels, gamma, b, min_kernel_size)
    return ECAConfig(
        channels, k, gamma, b, min_kernel_size, padding, gate, data_format, kernel_size
    )


def check_input(
    config: AxesMixin,  # an ECAConfig, or a family member's AttentionConfig
    shape: Sequence[int | None],
    *,
    is_floating: bool,
    dtype: str,
    backend: str,
) -> None:
    """Check an input before the forward pass; the same errors in every backend.

    ``shape`` entries may be None (unknown in a symbolic Keras/TF graph); those are not checked.
    N = 0 is allowed (an empty batch gives an empty output).

    Raises:
        ValueError: rank < 3, wrong channel count, a zero-size spatial axis.
        TypeError: a non-floating dtype.
    """
    ndim = len(shape)
    block = f"{backend} {getattr(config, 'name', 'ECA')}"  # e.g. "torch ECA", "keras SE"
    if ndim < 3:
        raise ValueError(
            f"{block} expects a batched input of rank >= 3 "
            f"(N, C, *spatial) or (N, *spatial, C), got shape {tuple(shape)}"
        )
    if not is_floating:
        raise TypeError(f"{block} expects a floating-point input, got dtype {dtype}")
    c = shape[config.channel_axis(ndim)]
    if config.channels is not None and c is not None and int(c) != config.channels:
        raise ValueError(
            f"{block} was built for {config.channels} channels but the input has {c} on "
            f"axis {config.channel_axis(ndim)} ({config.data_format}); input shape {tuple(shape)}"
        )
    # compare symbolic sizes without int(): int() pins a dynamic (torch.export) or symbolic
    # (jax.export) size to the traced value; `== 0` is decided from the size's range instead
    if c is not None and c == 0:
        raise ValueError(f"{block} input has zero channels; input shape {tuple(shape)}")
    for ax in config.spatial_axes(ndim):
        if shape[ax] is not None and shape[ax] == 0:
            raise ValueError(
                f"{block} input has a zero-size spatial axis {ax} (the mean over it is "
                f"undefined); input shape {tuple(shape)}"
            )


def padded_channel_index(channels: int, kernel_size: int) -> np.ndarray:
    """Indices into a length-C vector that give its circular padding by (k - 1) // 2 each side.

    Index i of the padded vector is channel ``(i - p) mod C``; defined for any k, k > C included.
    """
    p = (kernel_size - 1) // 2
    return (np.arange(channels + 2 * p) - p) % channels
