"""Canonical weights of the torch attention modules (ECA and its family) in and out.

Torch's ``state_dict`` names and layouts *are* the canonical ones (:func:`eca_multi.family.
attention_schema`; e.g. ECA's ``{"conv.weight": (1, 1, k)}``, SE's timm ``fc1`` / ``fc2``), so no
layout change happens here. Sizes (k, SE's hidden width, SE-GC's groups) are checked against the
module's config by :func:`eca_multi.weights.check_state`, every problem listed at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from ..family import attention_schema
from ..weights import check_state

__all__ = ["export_canonical", "load_canonical"]


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):  # also accept a torch state_dict
        return value.detach().to(device="cpu", dtype=torch.float32).numpy()
    return np.asarray(value)


def export_canonical(layer: nn.Module) -> dict[str, np.ndarray]:
    """The module's weights as canonical float32 NumPy arrays (copies), in schema order.

    Works for :class:`~eca_multi.torch.ECA` (``{"conv.weight": (1, 1, k)}``) and every family
    module of :mod:`eca_multi.torch.family` (e.g. SE: ``fc1.weight``, ``fc1.bias``, ...).
    """
    return {
        name: _to_numpy(layer.get_parameter(name)).astype(np.float32).copy()
        for name in attention_schema(layer.config)
    }


def load_canonical(layer: nn.Module, state: Mapping[str, Any], strict: bool = True) -> None:
    """Load canonical weights into ``layer`` in place (device and dtype of the layer kept).

    Args:
        layer: the torch ECA or family module to fill.
        state: canonical name -> array (NumPy or torch), e.g. from :func:`export_canonical` or
            :func:`eca_multi.weights.load_file`.
        strict: fail on missing or unexpected keys (shapes are always checked).

    Raises:
        WeightMismatchError: a wrong size / shape, or (strict) missing or unexpected keys; every
            problem is listed at once.
    """
    arrays = {name: _to_numpy(value) for name, value in state.items()}
    schema = attention_schema(layer.config)
    check_state(schema, arrays, strict=strict, where=repr(layer))
    with torch.no_grad():
        for name in schema:
            if name in arrays:
                layer.get_parameter(name).copy_(torch.as_tensor(arrays[name]))
