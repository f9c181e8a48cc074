"""Canonical weights of the torch ECA: ``{"conv.weight": float32 (1, 1, k)}`` in and out.

Torch's layout *is* the canonical layout (Layout.CONV1D maps torch (1, 1, k) to the Keras / Flax
(k, 1, 1)), so no layout change happens here; the kernel size is read from the weight's shape and
checked against the layer's config by :func:`eca_multi.weights.check_state`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..weights import check_state, eca_schema
from .layer import ECA

__all__ = ["export_canonical", "load_canonical"]


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):  # also accept a torch state_dict
        return value.detach().to(device="cpu", dtype=torch.float32).numpy()
    return np.asarray(value)


def export_canonical(layer: ECA) -> dict[str, np.ndarray]:
    """The layer's weights as canonical NumPy arrays: ``{"conv.weight": float32 (1, 1, k)}``."""
    return {"conv.weight": _to_numpy(layer.conv.weight).astype(np.float32).copy()}


def load_canonical(layer: ECA, state: Mapping[str, Any], strict: bool = True) -> None:
    """Load canonical weights into ``layer`` in place (device and dtype of the layer kept).

    Args:
        layer: the torch ECA to fill.
        state: canonical name -> array (NumPy or torch), e.g. from :func:`export_canonical` or
            :func:`eca_multi.weights.load_file`.
        strict: fail on missing or unexpected keys (shapes are always checked).

    Raises:
        WeightMismatchError: wrong kernel size / shape, or (strict) missing or unexpected keys;
            every problem is listed at once.
    """
    arrays = {name: _to_numpy(value) for name, value in state.items()}
    check_state(eca_schema(layer.config), arrays, strict=strict, where=repr(layer))
    if "conv.weight" in arrays:
        with torch.no_grad():
            layer.conv.weight.copy_(torch.as_tensor(arrays["conv.weight"]))
