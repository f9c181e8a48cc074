"""Integrity of the files eca-multi writes: a sha256 of their tensor data in the metadata.

Every port target carries :data:`DIGEST_KEY` (canonical safetensors / npz, timm's
``model.safetensors``, the official ``.pth.tar`` layout, Keras ``.weights.h5`` / ``.keras``, our
Flax export); reading such a file recomputes it from the weights as read and refuses a mismatch
(:class:`~eca_multi.weights.sources.SourceError`), so a flipped byte in a format without its own
checksum is caught. A bare torch ``state_dict`` (``.pth`` / ``.pt`` / ``.bin``) has nowhere to
keep it: only its zip container's CRC guards it.

The digest is over the floating-point tensors in canonical layout, by sorted name: name, shape and
float32 little-endian bytes (every target stores float32; float16 / bfloat16 / float64 sources are
digested as the float32 they are written as). BatchNorm's integer step counters are left out:
Flax keeps none, and they never change a forward.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..preprocess import metadata_entries

__all__ = ["DIGEST_KEY", "file_metadata", "tensor_digest"]

DIGEST_KEY = "eca_multi_sha256"


def tensor_digest(state: Mapping[str, Any]) -> str:
    """sha256 (hex) of a canonical state's floating-point tensors (see the module docstring)."""
    h = hashlib.sha256()
    for name in sorted(state):
        a = np.asarray(state[name])
        if not np.issubdtype(a.dtype, np.floating):
            continue
        h.update(f"{name}\0{a.shape}\0".encode())
        h.update(np.ascontiguousarray(a, dtype="<f4").tobytes())
    return h.hexdigest()


def file_metadata(info: Mapping[str, Any]) -> dict[str, str]:
    """The str -> str entries every port target stores beside its weights: timm's pretrained
    config (when the source had one) and the tensor digest (``info["sha256"]``, set by the port)."""
    meta = metadata_entries(info.get("pretrained_cfg"))
    if info.get("sha256"):
        meta[DIGEST_KEY] = str(info["sha256"])
    return meta
