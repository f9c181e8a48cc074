"""The one table of named layout changes between torch (canonical) and Keras / Flax layouts.

Each entry is a permutation applied to a canonical (torch) array to get the native array; its
inverse is applied on the way back. A transpose, never a flip: all three frameworks compute
cross-correlation. No layout is ever guessed from ndim, and nothing is squeezed or reshaped.
"""

from __future__ import annotations

from enum import Enum

import numpy as np

__all__ = ["Layout", "to_canonical", "to_native"]


class Layout(Enum):
    """Named layout changes, canonical (torch) -> native (Keras 3 / Flax)."""

    NONE = "none"  # vectors: BatchNorm statistics, biases
    CONV1D = "conv1d"  # torch (O, I, k) -> (k, I, O)
    CONV2D = "conv2d"  # torch (O, I, kh, kw) -> (kh, kw, I, O); also Flax depthwise (kh, kw, 1, C)
    DEPTHWISE = "depthwise"  # torch (C, 1, kh, kw) -> Keras DepthwiseConv2D (kh, kw, C, 1)
    LINEAR = "linear"  # torch (out, in) -> (in, out)


# canonical -> native permutation, with the rank it applies to
_PERMUTATION: dict[Layout, tuple[int, ...]] = {
    Layout.NONE: (),
    Layout.CONV1D: (2, 1, 0),
    Layout.CONV2D: (2, 3, 1, 0),
    Layout.DEPTHWISE: (2, 3, 0, 1),
    Layout.LINEAR: (1, 0),
}


def _check_rank(array: np.ndarray, layout: Layout, where: str) -> None:
    perm = _PERMUTATION[layout]
    if perm and array.ndim != len(perm):
        raise ValueError(
            f"layout {layout.name} expects a rank-{len(perm)} {where} array, got shape "
            f"{tuple(array.shape)}"
        )


def to_native(array: np.ndarray, layout: Layout) -> np.ndarray:
    """Canonical (torch) array -> the Keras / Flax layout named by ``layout``."""
    array = np.asarray(array)
    _check_rank(array, layout, "canonical")
    perm = _PERMUTATION[layout]
    return np.ascontiguousarray(np.transpose(array, perm)) if perm else array


def to_canonical(array: np.ndarray, layout: Layout) -> np.ndarray:
    """Keras / Flax array in ``layout`` -> canonical (torch) layout (inverse of to_native)."""
    array = np.asarray(array)
    _check_rank(array, layout, "native")
    perm = _PERMUTATION[layout]
    return np.ascontiguousarray(np.transpose(array, np.argsort(perm))) if perm else array
