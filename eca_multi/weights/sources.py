"""Weight files, framework-free: recognising a container by its bytes, reading the canonical ones.

The formats a port reads (:data:`eca_multi.registry.FORMATS` says which backend runs each):

=====================  ==========================================================================
``official``           the ECA-Net authors' checkpoints: ``torch.save`` of ``{'epoch', 'arch',
                       'state_dict', 'best_prec1', 'optimizer'}``, keys prefixed ``module.``
                       (DataParallel); named ``*.pth.tar`` but a torch zip or legacy pickle file.
``torch-state-dict``   a bare ``state_dict`` saved with ``torch.save`` (``.pth`` / ``.bin``).
``safetensors``        timm's ``model.safetensors`` (a plain state_dict) or our canonical file.
``npz``                canonical weights in a NumPy ``.npz`` (no pickles).
``keras-weights``      our Keras ``.weights.h5`` (HDF5).
``keras-archive``      our Keras ``.keras`` (zip with ``config.json``).
``flax``               our Flax NNX export (msgpack, see :mod:`eca_multi.flax.io`).
``flax-orbax``         our Orbax checkpoint folder (see :mod:`eca_multi.flax.orbax`), recognised
                       by its JSON header item (:func:`is_orbax_export`).
=====================  ==========================================================================

:func:`sniff` names the *container* from the file's bytes without importing any framework
("torch" for both torch formats: telling them apart needs ``torch.load``, which the torch
backend's io does with ``weights_only=True``). Safetensors and ``.npz`` are read here
(:func:`read_container`, ``allow_pickle=False``); every other container is read by its backend's
io (:mod:`eca_multi.port` dispatches through :mod:`eca_multi.registry`). :func:`finish_source`
then checks any source's canonical state the same way: kernel sizes from the weights' shapes,
classes from the classifier, every missing / unexpected / mis-shaped key at once.

A truncated or corrupt file raises :class:`SourceError` (a ``ValueError``) naming the file and the
format.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .. import archs
from ..registry import framework_of
from .io import SizeBound, load_file, tensor_limit, total_limit
from .layouts import Layout
from .schema import WeightDtypeError, WeightMismatchError, check_state

__all__ = [
    "CONTAINERS",
    "FORMATS",
    "ORBAX_HEADER_ITEM",
    "ORBAX_MARKER",
    "SourceError",
    "arch_size_bound",
    "describe",
    "finish_source",
    "is_orbax_export",
    "read_container",
    "resolve_kernel_sizes",
    "short_error",
    "source_errors",
    "sniff",
    "strip_prefix",
]

FORMATS = (
    "official",
    "torch-state-dict",
    "safetensors",
    "npz",
    "keras-weights",
    "keras-archive",
    "flax",
    "flax-orbax",
)
CONTAINERS = (
    "torch", "safetensors", "npz", "keras-weights", "keras-archive", "flax", "flax-orbax"
)  # fmt: skip
_HDF5 = b"\x89HDF\r\n\x1a\n"
MAX_CLASSES = archs.MAX_CLASSES
_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)  # torch, np.savez(_compressed), Keras
_FLAX_MAGIC = b"eca-multi-flax-nnx"  # the "format" value our Flax export stores first
# our Orbax checkpoint folder: the JSON item ORBAX_HEADER_ITEM holds {"format": ORBAX_MARKER, ...}
# (Orbax's JsonCheckpointHandler writes it as <folder>/<item>/metadata)
ORBAX_MARKER = "eca-multi-flax-orbax"
ORBAX_HEADER_ITEM = "eca_multi"
_ORBAX_HEADER_MAX = 1 << 20  # bytes of the JSON header read to recognise a folder


class SourceError(ValueError):
    """A weight file that cannot be read: unknown, truncated, corrupt or unsafe."""


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
        (".orbax", "flax-orbax"),
    ):
        if name.endswith(ends):
            return fmt
    return "unknown"


def _expected(path: Path) -> str:
    """What the file's name suggests, as words: "a safetensors weight file"."""
    hint = _suffix_hint(path)
    return "a weight file" if hint == "unknown" else f"a {hint} weight file"


def sniff(path: str | os.PathLike[str]) -> str:
    """The container by its bytes (one of :data:`CONTAINERS`); no framework is imported.

    Raises:
        FileNotFoundError: no such file. SourceError: empty, truncated or unrecognised.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no weight file at {path}")
    if path.is_dir():
        if is_orbax_export(path):
            if not (path / "_CHECKPOINT_METADATA").is_file():  # Orbax writes it on finalize
                raise SourceError(f"{path}: an unfinished Orbax checkpoint (never finalized)")
            return "flax-orbax"
        if (path / "_CHECKPOINT_METADATA").is_file():
            raise SourceError(
                f"{path}: an Orbax checkpoint that eca-multi did not write (no "
                f"{ORBAX_HEADER_ITEM!r} item with the {ORBAX_MARKER!r} header)"
            )
        raise SourceError(f"{path} is a folder, not a weight file")
    if not path.is_file():  # a FIFO, a device such as /dev/zero, a socket: never read
        raise SourceError(f"{path} is not a regular file (a device, FIFO or socket)")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(64)
    if size == 0:
        raise SourceError(f"{path} is empty (expected {_expected(path)})")
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


def is_orbax_export(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` is a folder holding our Orbax checkpoint's JSON header (by content,
    without Orbax: ``<path>/eca_multi/metadata`` is JSON whose ``format`` is our marker)."""
    header = Path(path) / ORBAX_HEADER_ITEM / "metadata"
    try:
        if not header.is_file() or header.stat().st_size > _ORBAX_HEADER_MAX:
            return False
        data = json.loads(header.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == ORBAX_MARKER


# deflate expands at most 1032:1; a member that declares more than this was not made by zlib
_DEFLATE_RATIO = 1032


def _check_member(path: Path, i: zipfile.ZipInfo, keras: bool) -> None:
    """A zip member's declared unpacked size against what its compressed bytes can hold and the
    size limits (a ``.npy`` member is one tensor; a torch storage or a ``.keras`` member may hold
    the whole state)."""
    stored = i.compress_type == zipfile.ZIP_STORED
    if (stored and i.file_size != i.compress_size) or (
        not stored and i.file_size > _DEFLATE_RATIO * i.compress_size + 1024
    ):
        raise SourceError(
            f"{path}: zip member {i.filename!r} declares {i.file_size:,} bytes unpacked from "
            f"{i.compress_size:,} compressed, more than its compression can hold (a damaged "
            "directory or a zip bomb)"
        )
    one = i.filename.endswith(".npy") and not keras
    limit, text = tensor_limit(i.filename.removesuffix(".npy")) if one else total_limit()
    if i.file_size > limit:
        raise SourceError(
            f"{path}: zip member {i.filename!r} declares {i.file_size:,} bytes unpacked, "
            f"over {text}"
        )


def arch_size_bound(arch: str) -> SizeBound:
    """What a weight file of ``arch`` may declare (:func:`eca_multi.weights.io.size_bound`): each
    canonical tensor :data:`eca_multi.archs.SIZE_MARGIN` times its float64 size (the classifier at
    :data:`eca_multi.archs.MAX_CLASSES` classes), any unnamed tensor as much as the largest, the
    whole state the sum."""
    named = archs.tensor_bytes_bounds(arch)
    return SizeBound(arch, max(named.values()), archs.max_state_bytes(arch), named)


def _sniff_zip(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            names = [i.filename for i in infos]
            keras = "config.json" in names and any(n.endswith(".weights.h5") for n in names)
            for i in infos:  # the central directory, before anything is inflated
                if i.flag_bits & 0x1:
                    raise SourceError(f"{path}: zip member {i.filename!r} is encrypted")
                if i.compress_type not in _ZIP_METHODS:
                    raise SourceError(
                        f"{path}: zip member {i.filename!r} uses compression method "
                        f"{i.compress_type}, which no weight file uses"
                    )
                _check_member(path, i, keras)
            # torch's zip reader skips CRC checks: damaged tensor bytes would load silently
            bad = z.testzip() if any(n.endswith("data.pkl") for n in names) else None
    except SourceError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError,
            NotImplementedError, RuntimeError, UnicodeError, struct.error) as e:  # fmt: skip
        raise SourceError(
            f"{path}: truncated or corrupt zip container (name suggests {_suffix_hint(path)}): "
            f"{type(e).__name__}: {e}"
        ) from e
    if bad is not None:
        raise SourceError(f"{path}: corrupt torch zip file: CRC check failed for member {bad}")
    if any(n.endswith("data.pkl") for n in names):
        return "torch"
    if keras:
        return "keras-archive"
    if names and all(n.endswith(".npy") for n in names):
        return "npz"
    raise SourceError(f"{path}: a zip file that is no torch, .npz or .keras weight file")


# ---------------------------------------------------------------------------------------------
# readers: each returns (canonical state, info)


def strip_prefix(state: Mapping[str, Any], prefix: str = "module.") -> tuple[dict[str, Any], bool]:
    # DataParallel's prefix
    if state and all(isinstance(k, str) and k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}, True
    return dict(state), False


def read_container(
    path: str | os.PathLike[str], kind: str
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A safetensors or ``.npz`` file as (state, info), without any framework."""
    path = Path(path)
    try:
        state, meta = load_file(path)  # safetensors / npz without any framework
    except ValueError as e:
        msg = str(e).removeprefix(f"{path} ")
        raise SourceError(f"{path}: truncated or corrupt {kind} file ({msg})") from e
    info: dict[str, Any] = {
        "format": kind,
        "metadata": dict(meta),
        "canonical": meta.get("format") == "eca-multi canonical",
    }
    state, stripped = strip_prefix(state)
    info["prefix_stripped"] = "module." if stripped else ""
    return state, info


def short_error(e: BaseException, limit: int = 400) -> str:
    """A framework's error text, cut short (Keras puts whole arrays in its messages)."""
    text = str(e)
    return text if len(text) <= limit else text[:limit] + " ..."


@contextlib.contextmanager
def source_errors(path: str | os.PathLike[str], what: str, kind: str) -> Iterator[None]:
    """Turn a framework loader's errors into one :class:`SourceError` naming the file.

    Args:
        path: the file being read.
        what: what it was read as, e.g. "a Keras eca_resnet50 (keras-weights)".
        kind: the file kind, e.g. "keras-weights file", for a corrupt file's message.

    A :class:`WeightMismatchError` passes unchanged (it already lists every bad key); a
    ``ValueError`` says the file is no ``what``; anything else (h5py, zip, msgpack errors from
    deep inside a framework) says the file is truncated or corrupt.
    """
    try:
        yield
    except (WeightMismatchError, WeightDtypeError, SourceError):
        raise  # they already name the file or every bad key
    except ValueError as e:
        raise SourceError(f"{path}: cannot read as {what}: {short_error(e)}") from e
    except Exception as e:
        raise SourceError(
            f"{path}: truncated or corrupt {kind} ({type(e).__name__}: {short_error(e)})"
        ) from e


# ---------------------------------------------------------------------------------------------
# kernel sizes and the strict check


def _ks_key(ks: Any) -> Any:
    return (
        {int(i): int(k) for i, k in ks.items()}
        if isinstance(ks, Mapping)
        else tuple(int(k) for k in ks)
    )


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
    want = archs.default_kernel_sizes(arch) if kernel_sizes is None else kernel_sizes
    eca_keys = [k for k, (_, lay) in archs.schema(arch).items() if lay is Layout.CONV1D]
    if any(k not in state for k in eca_keys):  # leave the full key listing to check_state
        return None if isinstance(want, str) else want
    try:
        found = archs.kernel_sizes_from_state(arch, state)  # k from the weights' shapes
    except ValueError as e:
        raise SourceError(f"{where}: {e}") from e
    if isinstance(want, str):
        return found
    if _ks_key(found) != _ks_key(want):
        raise ValueError(
            f"{where}: the ECA kernel sizes in the weights are {_ks_key(found)} but {arch} is "
            f"configured with {_ks_key(want)}. Build the model from the checkpoint with "
            "kernel_sizes='checkpoint' (CLI: --kernel-sizes checkpoint) or pass matching sizes."
        )
    return found


def _fill_batch_counters(arch_schema: Mapping[str, Any], state: dict[str, Any]) -> int:
    """Checkpoints from torch < 0.4.1 lack ``num_batches_tracked``: add zeros (torch does too)."""
    n = 0
    for key in arch_schema:
        if key.endswith(".num_batches_tracked") and key not in state:
            if key.replace("num_batches_tracked", "running_mean") in state:
                state[key] = np.array(0, np.int64)
                n += 1
    return n


def check_num_classes(num_classes: int | None) -> None:
    """A requested classifier width, checked before any model is built (None: the file's)."""
    if num_classes is None:
        return
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise ValueError(f"num_classes must be an int, got {num_classes!r}")
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be between 1 and {MAX_CLASSES:,}, got {num_classes}")


def finish_source(
    path: str | os.PathLike[str],
    arch: str,
    state: dict[str, Any],
    info: dict[str, Any],
    kernel_sizes: Any = None,
    num_classes: int | None = None,
    strict: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Check a source's canonical state against ``arch`` and complete its info.

    Args:
        path: the file it came from (for messages and ``info["path"]``).
        arch: architecture name of :data:`eca_multi.archs.ARCHS`.
        state: canonical weights as read (``module.`` prefix already stripped).
        info: the reader's info; must hold "format".
        kernel_sizes: None (the architecture's), explicit sizes, or ``"checkpoint"`` to accept
            whatever the weights hold.
        num_classes: classifier width; default read from the state.
        strict: fail on missing or unexpected keys (shapes are always checked).

    Returns:
        (state in schema order, info) where info also holds "framework", "kernel_sizes",
        "num_classes", "path", "arch_name", "tensors" and "filled_num_batches_tracked".

    Raises:
        SourceError: the file's keys, classifier or ECA kernels are malformed.
        ValueError: kernel sizes that do not fit the architecture.
        WeightMismatchError: every missing / unexpected / mis-shaped key at once.
    """
    path = Path(path)
    odd = [k for k in state if not isinstance(k, str)]
    if odd:
        shown = ", ".join(f"{k!r} ({type(k).__name__})" for k in odd[:5])
        raise SourceError(f"{path}: state-dict keys must be strings, found {shown}")
    ks = resolve_kernel_sizes(arch, state, kernel_sizes, where=str(path))
    check_num_classes(num_classes)
    try:
        nc = archs.num_classes_from_state(arch, state) if num_classes is None else num_classes
    except ValueError as e:
        raise SourceError(f"{path}: {e}") from e
    schema = archs.schema(arch, nc, ks)
    info["filled_num_batches_tracked"] = _fill_batch_counters(schema, state)
    check_state(schema, state, strict=strict, where=f"{arch} ({path.name}, {info['format']})")
    ordered = {k: state[k] for k in schema if k in state}
    ordered.update({k: v for k, v in state.items() if k not in ordered})
    info.update(
        path=str(path),
        arch_name=arch,
        framework=framework_of(info["format"]),
        kernel_sizes=ks if ks is not None else archs.default_kernel_sizes(arch),
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
