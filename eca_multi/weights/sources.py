"""Source readers: any supported checkpoint file -> canonical weights, detected by content.

Formats (:func:`detect_format` looks at the bytes, never only at the name):

=====================  ==========================================================================
``official``           the ECA-Net authors' checkpoints: ``torch.save`` of ``{'epoch', 'arch',
                       'state_dict', 'best_prec1', 'optimizer'}``, keys prefixed ``module.``
                       (DataParallel); named ``*.pth.tar`` but a torch zip or legacy pickle file.
``torch-state-dict``   a bare ``state_dict`` saved with ``torch.save`` (``.pth`` / ``.bin``).
``safetensors``        timm's ``model.safetensors`` (a plain state_dict) or our canonical file.
``npz``                canonical weights in a NumPy ``.npz`` (no pickles).
``keras-weights``      our Keras ``.weights.h5`` (HDF5).
``keras-archive``      our Keras ``.keras`` (zip with ``config.json``).
``flax``               our Flax NNX export (msgpack, see :mod:`eca_multi.flax.models`).
=====================  ==========================================================================

Safety: torch files are only ever read with ``torch.load(..., weights_only=True)``, so a pickle
that carries code is refused, never run; ``.npz`` loads with ``allow_pickle=False``. A truncated or
corrupt file raises :class:`SourceError` (a ``ValueError``) naming the file and the format.

This module imports no framework at import time; each reader imports the one it needs.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .. import archs
from .io import load_file
from .layouts import Layout
from .schema import WeightMismatchError, check_state

__all__ = [
    "FORMATS",
    "SourceError",
    "arch_kernel_sizes",
    "describe",
    "detect_format",
    "framework_of",
    "import_torch_first",
    "num_classes_from_state",
    "read_source",
    "resolve_kernel_sizes",
]

FORMATS = (
    "official",
    "torch-state-dict",
    "safetensors",
    "npz",
    "keras-weights",
    "keras-archive",
    "flax",
)
_FRAMEWORK = {
    "official": "torch",
    "torch-state-dict": "torch",
    "safetensors": "torch",
    "npz": "torch",
    "keras-weights": "keras",
    "keras-archive": "keras",
    "flax": "flax",
}
_HDF5 = b"\x89HDF\r\n\x1a\n"
_FLAX_MAGIC = b"eca-multi-flax-nnx"  # the "format" value our Flax export stores first
_OFFICIAL_META = ("epoch", "arch", "best_prec1")


class SourceError(ValueError):
    """A weight file that cannot be read: unknown, truncated, corrupt or unsafe."""


def framework_of(fmt: str) -> str:
    """The framework whose model a source format runs in: "torch", "keras" or "flax"."""
    return _FRAMEWORK[fmt]


def _suffix_hint(path: Path) -> str:
    name = path.name.lower()
    for ends, fmt in (
        (".pth.tar", "official"),
        (".pth", "torch-state-dict"),
        (".bin", "torch-state-dict"),
        (".pt", "torch-state-dict"),
        (".safetensors", "safetensors"),
        (".npz", "npz"),
        (".weights.h5", "keras-weights"),
        (".keras", "keras-archive"),
        (".msgpack", "flax"),
    ):
        if name.endswith(ends):
            return fmt
    return "unknown"


def _sniff(path: Path) -> str:
    """The container by its bytes: "torch", "safetensors", "npz", "keras-weights" ... ."""
    if not path.is_file():
        raise FileNotFoundError(f"no weight file at {path}")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(64)
    if size == 0:
        raise SourceError(f"{path} is empty (expected a {_suffix_hint(path)} weight file)")
    if (head[:1] in (b"\xde", b"\xdf") or 0x81 <= head[0] <= 0x8F) and _FLAX_MAGIC in head:
        return "flax"  # a msgpack map whose first field is our Flax export's marker
    if head.startswith(_HDF5):
        return "keras-weights"
    if head.startswith(b"PK"):
        return _sniff_zip(path)
    if len(head) >= 9 and head[8:9] == b"{":  # safetensors: u64 header length, then JSON
        (n,) = struct.unpack("<Q", head[:8])
        if n <= size - 8:
            return "safetensors"
        raise SourceError(
            f"{path}: truncated safetensors file (header of {n} bytes, file of {size})"
        )
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "torch"  # a pickle: torch's legacy (pre-zip) serialization
    raise SourceError(f"{path}: unrecognised weight file (supported: {', '.join(FORMATS)})")


def _sniff_zip(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            # torch's zip reader skips CRC checks: damaged tensor bytes would load silently
            bad = z.testzip() if any(n.endswith("data.pkl") for n in names) else None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise SourceError(
            f"{path}: truncated or corrupt zip container (name suggests {_suffix_hint(path)}): {e}"
        ) from None
    if bad is not None:
        raise SourceError(f"{path}: corrupt torch zip file: CRC check failed for member {bad}")
    if any(n.endswith("data.pkl") for n in names):
        return "torch"
    if "config.json" in names and any(n.endswith(".weights.h5") for n in names):
        return "keras-archive"
    if names and all(n.endswith(".npy") for n in names):
        return "npz"
    raise SourceError(f"{path}: a zip file that is no torch, .npz or .keras weight file")


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``: tensors and plain containers only, no code runs."""
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"{path} is a torch file; reading it needs torch installed") from e
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle.UnpicklingError (unsafe), RuntimeError (corrupt zip), EOF ...
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise SourceError(
                f"{path}: refused to load: the torch pickle holds objects other than tensors and "
                "plain containers (possibly code); nothing in it was executed. Only weights_only "
                f"checkpoints are supported. ({type(e).__name__}: {str(e).splitlines()[0]})"
            ) from None
        raise SourceError(
            f"{path}: truncated or corrupt torch file ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'no detail'})"
        ) from None


def _classify_torch(obj: Any, path: Path) -> str:
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        return "official"
    if isinstance(obj, Mapping) and obj and all(_is_tensor(v) for v in obj.values()):
        return "torch-state-dict"
    keys = list(obj)[:8] if isinstance(obj, Mapping) else "-"
    raise SourceError(
        f"{path}: a torch file without a state_dict (found {type(obj).__name__} with keys {keys})"
    )


def _is_tensor(v: Any) -> bool:
    return type(v).__module__.startswith("torch") and hasattr(v, "shape")


def detect_format(path: str | os.PathLike) -> str:
    """The source format of a weight file by its content (see :data:`FORMATS`).

    Torch files are opened with ``weights_only=True`` to tell an official checkpoint from a bare
    state_dict.

    Raises:
        FileNotFoundError: no such file.
        SourceError: empty, truncated, corrupt, unsafe or of an unknown kind.
    """
    path = Path(path)
    kind = _sniff(path)
    if kind != "torch":
        return kind
    return _classify_torch(_torch_load(path), path)


# ---------------------------------------------------------------------------------------------
# readers: each returns (canonical state, info)


def _tensor_to_numpy(v: Any) -> np.ndarray:
    import torch

    v = v.detach().to("cpu")
    if v.is_floating_point() and v.dtype != torch.float32:
        v = v.float()  # canonical weights are float32 (bf16 / fp16 widen exactly)
    return v.numpy().copy()


def _strip(state: Mapping[str, Any], prefix: str = "module.") -> tuple[dict[str, Any], bool]:
    if state and all(k.startswith(prefix) for k in state):  # DataParallel's prefix
        return {k[len(prefix) :]: v for k, v in state.items()}, True
    return dict(state), False


def _scalar(v: Any) -> Any:
    if _is_tensor(v):
        return v.item() if v.numel() == 1 else None
    return v if isinstance(v, (int, float, str, bool)) or v is None else str(v)


def _read_torch(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    obj = _torch_load(path)
    fmt = _classify_torch(obj, path)
    info: dict[str, Any] = {"format": fmt}
    sd = obj["state_dict"] if fmt == "official" else obj
    if fmt == "official":
        info.update({k: _scalar(obj[k]) for k in _OFFICIAL_META if k in obj})
        info["has_optimizer"] = "optimizer" in obj
    sd, stripped = _strip(sd)
    info["prefix_stripped"] = "module." if stripped else ""
    bad = [k for k, v in sd.items() if not _is_tensor(v)]
    if bad:
        raise SourceError(f"{path}: state_dict entries that are no tensors: {bad[:8]}")
    return {k: _tensor_to_numpy(v) for k, v in sd.items()}, info


def _read_container(path: Path, kind: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    try:
        state, meta = load_file(path)  # safetensors / npz without any framework
    except ValueError as e:
        msg = str(e).removeprefix(f"{path} ")
        raise SourceError(f"{path}: truncated or corrupt {kind} file ({msg})") from None
    info: dict[str, Any] = {
        "format": kind,
        "metadata": dict(meta),
        "canonical": meta.get("format") == "eca-multi canonical",
    }
    state, stripped = _strip(state)
    info["prefix_stripped"] = "module." if stripped else ""
    return state, info


def _short(e: BaseException, limit: int = 400) -> str:
    """A framework's error text, cut short (Keras puts whole arrays in its messages)."""
    text = str(e)
    return text if len(text) <= limit else text[:limit] + " ..."


def import_torch_first() -> None:
    """Import torch and torch._dynamo (it loads triton) before Keras brings in TensorFlow.

    triton imported after TensorFlow segfaults, and a port may need Keras first and timm (which
    imports torch._dynamo through torchvision) later.
    """
    try:
        import torch  # noqa: F401
        import torch._dynamo  # noqa: F401
    except ImportError:
        pass


def _read_keras(path: Path, arch: str, kind: str, num_classes: int | None):
    import_torch_first()
    from ..keras import models as km  # imports keras

    try:
        model = km.load_weights_file(path, arch, num_classes=num_classes)
    except WeightMismatchError:
        raise  # already lists every bad key
    except ValueError as e:
        raise SourceError(f"{path}: cannot read as a Keras {arch} ({kind}): {_short(e)}") from None
    except Exception as e:  # h5py / zip / deserialization errors from deep inside Keras
        raise SourceError(
            f"{path}: truncated or corrupt {kind} file ({type(e).__name__}: {_short(e)})"
        ) from None
    return km.export_canonical_model(model, arch), {"format": kind}


def _read_flax(path: Path, arch: str, num_classes: int | None):
    from ..flax import models as fm  # imports jax / flax

    try:
        model = fm.load_weights_file(path, arch, num_classes, kernel_sizes="checkpoint")
    except WeightMismatchError:
        raise  # already lists every bad key
    except ValueError as e:
        raise SourceError(f"{path}: cannot read as a Flax {arch} export: {_short(e)}") from None
    except Exception as e:
        raise SourceError(
            f"{path}: truncated or corrupt Flax export ({type(e).__name__}: {_short(e)})"
        ) from None
    return fm.export_canonical_model(model), {"format": "flax"}


# ---------------------------------------------------------------------------------------------
# kernel sizes and the strict check


def _ks_key(ks: Any) -> Any:
    return (
        {int(i): int(k) for i, k in ks.items()}
        if isinstance(ks, Mapping)
        else tuple(int(k) for k in ks)
    )


def arch_kernel_sizes(arch: str) -> tuple[int, ...] | dict[int, int]:
    """The kernel sizes an architecture specifies (published per stage, "k13", or timm's rule)."""
    a = archs.get_arch(arch)
    if isinstance(a, archs.MobileNetV2Arch):
        return {b.index: b.k for b in archs.mobilenet_v2_blocks(a)}
    per_stage = {int(b.prefix[5]): b.k for b in archs.resnet_blocks(a)}
    return tuple(per_stage[i] for i in sorted(per_stage))


def resolve_kernel_sizes(
    arch: str, state: Mapping[str, Any], kernel_sizes: Any = None, where: str = "checkpoint"
) -> Any:
    """Kernel sizes to build ``arch`` with, read from ``state``'s ECA weight shapes and checked.

    Args:
        arch: architecture name.
        state: canonical weights.
        kernel_sizes: None (the architecture's own), explicit ones, or ``"checkpoint"`` (take the
            checkpoint's, whatever they are).
        where: the file, for the error message.

    Raises:
        ValueError: the checkpoint's kernel sizes differ from the requested ones.
    """
    if isinstance(kernel_sizes, str) and kernel_sizes != "checkpoint":
        raise ValueError(f"kernel_sizes must be None, 'checkpoint' or sizes, got {kernel_sizes!r}")
    want = arch_kernel_sizes(arch) if kernel_sizes is None else kernel_sizes
    eca_keys = [k for k, (_, lay) in archs.schema(arch).items() if lay is Layout.CONV1D]
    if any(k not in state for k in eca_keys):  # leave the full key listing to check_state
        return None if isinstance(want, str) else want
    found = archs.kernel_sizes_from_state(arch, state)  # k from the weights' shapes
    if isinstance(want, str):
        return found
    if _ks_key(found) != _ks_key(want):
        raise ValueError(
            f"{where}: the ECA kernel sizes in the weights are {_ks_key(found)} but {arch} is "
            f"configured with {_ks_key(want)}. Build the model from the checkpoint with "
            "kernel_sizes='checkpoint' (CLI: --kernel-sizes checkpoint) or pass matching sizes."
        )
    return found


def num_classes_from_state(arch: str, state: Mapping[str, Any]) -> int | None:
    key = "classifier.1.weight" if arch == "eca_mobilenet_v2" else "fc.weight"
    return int(np.shape(state[key])[0]) if key in state else None


def _fill_batch_counters(arch_schema: Mapping, state: dict[str, Any]) -> int:
    """Checkpoints from torch < 0.4.1 lack ``num_batches_tracked``: add zeros (torch does too)."""
    n = 0
    for key in arch_schema:
        if key.endswith(".num_batches_tracked") and key not in state:
            if key.replace("num_batches_tracked", "running_mean") in state:
                state[key] = np.array(0, np.int64)
                n += 1
    return n


def read_source(
    path: str | os.PathLike,
    arch: str,
    *,
    strict: bool = True,
    kernel_sizes: Any = None,
    num_classes: int | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read any supported weight file as canonical weights of ``arch``, checked strictly.

    Args:
        path: the weight file (format detected by content).
        arch: architecture name of :data:`eca_multi.archs.ARCHS`.
        strict: fail on missing or unexpected keys (shapes are always checked).
        kernel_sizes: None (the architecture's), explicit sizes, or ``"checkpoint"`` to accept
            whatever the weights hold.
        num_classes: classifier width; default read from the checkpoint.

    Returns:
        (canonical state in schema order, info) where info holds "format", "framework",
        "kernel_sizes", "num_classes", "path" and format metadata (official: epoch, arch,
        best_prec1; safetensors: metadata).

    Raises:
        FileNotFoundError, SourceError (unreadable / unsafe), ValueError (kernel sizes),
        WeightMismatchError (every missing / unexpected / mis-shaped key at once).
    """
    path = Path(path)
    archs.get_arch(arch)
    kind = _sniff(path)
    if kind == "torch":
        state, info = _read_torch(path)
    elif kind in ("safetensors", "npz"):
        state, info = _read_container(path, kind)
    elif kind in ("keras-weights", "keras-archive"):
        state, info = _read_keras(path, arch, kind, num_classes)
    else:
        state, info = _read_flax(path, arch, num_classes)
    ks = resolve_kernel_sizes(arch, state, kernel_sizes, where=str(path))
    nc = num_classes_from_state(arch, state) if num_classes is None else num_classes
    schema = archs.schema(arch, nc, ks)
    info["filled_num_batches_tracked"] = _fill_batch_counters(schema, state)
    check_state(schema, state, strict=strict, where=f"{arch} ({path.name}, {info['format']})")
    ordered = {k: state[k] for k in schema if k in state}
    ordered.update({k: v for k, v in state.items() if k not in ordered})
    info.update(
        path=str(path),
        arch_name=arch,
        framework=framework_of(info["format"]),
        kernel_sizes=ks if ks is not None else arch_kernel_sizes(arch),
        num_classes=nc,
        tensors=len(ordered),
    )
    return ordered, info


def describe(info: Mapping[str, Any]) -> str:
    """One line about a read source, for the CLI."""
    extra = {k: info[k] for k in ("epoch", "arch", "best_prec1") if k in info}
    return (
        f"{info['format']} ({info['framework']}), {info['tensors']} tensors, "
        f"kernel sizes {info['kernel_sizes']}" + (f", {json.dumps(extra)}" if extra else "")
    )
