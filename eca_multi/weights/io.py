"""Reading and writing canonical weight files (safetensors or .npz) without any framework.

Files are written atomically (a temp file in the target folder, then ``os.replace``) and an
existing file is never replaced unless ``overwrite=True``. Nothing is unpickled on load.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import struct
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "DEFAULT_MAX_BYTES",
    "FORMAT_VERSION",
    "SizeBound",
    "atomic_path",
    "atomic_write_bytes",
    "load_file",
    "max_file_bytes",
    "prepare_output",
    "save_file",
    "size_bound",
    "tensor_limit",
    "total_limit",
]

FORMAT_VERSION = "1"
_META_KEY = "__eca_multi_metadata__"  # npz entry holding the metadata JSON
# 4 GiB: about 10x the float32 bytes of the largest architecture eca-multi builds (ecaresnet269d,
# 0.4 GB), so a real checkpoint never meets it and a bomb is refused before it is inflated
DEFAULT_MAX_BYTES = 4 << 30
# the dtypes safetensors.numpy turns into arrays
_NUMPY_SAFETENSORS = set("F64 F32 F16 I64 U64 I32 U32 I16 U16 I8 U8 BOOL C64".split())


def prepare_output(path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Check an output path before anything is written, and create its folder.

    Raises:
        FileExistsError: ``path`` exists and not ``overwrite``.
        NotADirectoryError: a parent of ``path`` is a file.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --force) to replace it")
    for parent in (path.parent, *path.parent.parents):
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"cannot write {path}: {parent} is a file, not a folder")
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike[str], *, overwrite: bool = False, suffix: str = ".tmp"
) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success rename it onto ``path``, else delete it.

    For writers that want a file name (``model.save``, ``torch.save``). Refuses an existing
    ``path`` unless ``overwrite``; a failed write leaves no temp file and the old file untouched.
    """
    path = prepare_output(path, overwrite)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 -> the mode of any file the user writes
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    """The process umask (reading it means setting it: set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, overwrite: bool = False
) -> Path:
    """Write ``data`` to ``path`` atomically; refuse to replace an existing file unless asked."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def _metadata(extra: Mapping[str, str] | None) -> dict[str, str]:
    meta = {"format": "eca-multi canonical", "format_version": FORMAT_VERSION, "layout": "torch"}
    for key, value in (extra or {}).items():
        if not isinstance(value, str):
            raise TypeError(f"metadata values must be str, got {key}={value!r}")
        meta[key] = value
    return meta


def save_file(
    path: str | os.PathLike[str],
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Save canonical tensors to ``.safetensors`` (default) or ``.npz`` (by suffix).

    Args:
        path: target file; its suffix chooses the container.
        tensors: canonical name -> NumPy array (torch layout).
        metadata: extra str -> str entries (e.g. ``{"source": "keras"}``).
        overwrite: replace an existing file.
    """
    arrays = {name: np.asarray(a, order="C") for name, a in tensors.items()}
    meta = _metadata(metadata)
    if str(path).endswith(".npz"):
        import io

        buf = io.BytesIO()
        # numpy's stub types **kwds as if a key could be allow_pickle (a bool)
        np.savez(buf, **arrays, **{_META_KEY: np.array(json.dumps(meta))})  # type: ignore[arg-type]
        return atomic_write_bytes(path, buf.getvalue(), overwrite=overwrite)
    from safetensors.numpy import save

    return atomic_write_bytes(path, save(arrays, metadata=meta), overwrite=overwrite)


def max_file_bytes() -> int:
    """The most bytes a weight file may hold or declare once unpacked (a zip member, a tensor, a
    safetensors header): :data:`DEFAULT_MAX_BYTES`, or ``ECA_MULTI_MAX_BYTES`` when set (raise
    it for a model larger than every architecture eca-multi ships)."""
    text = os.environ.get("ECA_MULTI_MAX_BYTES", "").strip()
    if not text:
        return DEFAULT_MAX_BYTES
    try:
        value = int(float(text))
    except ValueError:
        raise ValueError(f"ECA_MULTI_MAX_BYTES must be a number of bytes, got {text!r}") from None
    if value <= 0:
        raise ValueError(f"ECA_MULTI_MAX_BYTES must be positive, got {text!r}")
    return value


@dataclass(frozen=True)
class SizeBound:
    """What a file of one architecture may declare (see :func:`size_bound`)."""

    arch: str
    tensor: int  # any one tensor whose name is not known (an h5 dataset)
    total: int  # the whole state in one piece (a torch storage, a .keras member, an Orbax folder)
    named: Mapping[str, int] = field(default_factory=dict)  # per canonical tensor name


_BOUND: contextvars.ContextVar[SizeBound | None] = contextvars.ContextVar(
    "eca_multi_size_bound", default=None
)


@contextlib.contextmanager
def size_bound(bound: SizeBound) -> Iterator[SizeBound]:
    """Readers inside this block refuse what ``bound.arch`` cannot hold, besides the global cap
    (:func:`eca_multi.weights.sources.arch_size_bound` builds it from the architecture)."""
    token = _BOUND.set(bound)
    try:
        yield bound
    finally:
        _BOUND.reset(token)


def _limit(arch_bytes: int | None, kind: str) -> tuple[int, str]:
    cap = max_file_bytes()
    bound = _BOUND.get()
    if arch_bytes is not None and bound is not None and arch_bytes < cap:
        return arch_bytes, (
            f"the bound of {arch_bytes:,} bytes for {kind} of {bound.arch} (twice its float64 "
            "size, a classifier's at 100,000 classes)"
        )
    return cap, f"the cap of {cap:,} bytes (ECA_MULTI_MAX_BYTES raises it)"


def tensor_limit(name: str | None = None) -> tuple[int, str]:
    """(bytes, text for a message) that one tensor may declare once unpacked: the global cap
    (:func:`max_file_bytes`), or less inside :func:`size_bound`: the named tensor's bound, or the
    architecture's largest tensor's when ``name`` is None or unknown."""
    bound = _BOUND.get()
    if bound is None:
        return _limit(None, "")
    if name is not None and name in bound.named:
        return _limit(bound.named[name], f"tensor {name}")
    return _limit(bound.tensor, "a tensor")


def total_limit() -> tuple[int, str]:
    """(bytes, text) that a whole checkpoint, or one piece holding all of it, may declare."""
    bound = _BOUND.get()
    return _limit(None if bound is None else bound.total, "a whole checkpoint")


def _bf16_to_f32(raw: bytes, shape: list[int]) -> np.ndarray:
    """bfloat16 bytes widened to float32 exactly (a bfloat16 is a float32's upper 16 bits)."""
    halves = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
    return halves.view(np.float32).reshape(shape)


def _check_ranges(path: Path) -> None:
    """Each tensor's byte range in a safetensors header (the library has checked them against
    the file) against :func:`tensor_limit`."""
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    for key, entry in header.items():
        if key == "__metadata__" or not isinstance(entry, dict):
            continue
        begin, end = entry["data_offsets"]
        limit, text = tensor_limit(key)
        if end - begin > limit:
            raise ValueError(f"tensor {key} declares {end - begin:,} bytes, over {text}")


def _safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read with the safetensors library (it validates the header, offsets and sizes); tensors
    NumPy cannot hold are handled here: bfloat16 widens to float32 exactly, float8 is refused."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            meta = dict(f.metadata() or {})
            names = list(f.keys())
            _check_ranges(path)  # declared byte ranges, before any tensor is read
            dtypes = {k: f.get_slice(k).get_dtype() for k in names}
            odd = {k: d for k, d in dtypes.items() if d not in _NUMPY_SAFETENSORS}
            tensors = {k: f.get_tensor(k) for k in names if k not in odd}
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        raise ValueError(f"{path} is not a readable safetensors file ({e})") from e
    if odd:
        bad = {k: d for k, d in odd.items() if d != "BF16"}
        if bad:
            listed = ", ".join(f"{k} ({d})" for k, d in list(bad.items())[:5])
            raise ValueError(
                f"{path} holds tensors of a dtype eca-multi does not read: {listed}; "
                "supported: float16, bfloat16 (widened to float32), float32, float64"
            )
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))  # validated by safe_open above
            for k in odd:
                begin, end = header[k]["data_offsets"]
                fh.seek(8 + n + begin)
                tensors[k] = _bf16_to_f32(fh.read(end - begin), header[k]["shape"])
    return {k: tensors[k] for k in names}, meta


def _npz(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    try:
        with zipfile.ZipFile(path) as z:  # declared sizes, before anything is inflated
            for member in z.infolist():
                key = member.filename.removesuffix(".npy")
                limit, text = total_limit() if key == _META_KEY else tensor_limit(key)
                if member.file_size > limit:
                    raise ValueError(
                        f"member {member.filename} declares {member.file_size:,} bytes unpacked, "
                        f"over {text}"
                    )
        with np.load(path, allow_pickle=False) as z:
            tensors = {k: z[k] for k in z.files if k != _META_KEY}
            meta = json.loads(str(z[_META_KEY])) if _META_KEY in z.files else {}
    except Exception as e:  # zipfile / numpy errors on a damaged archive
        raise ValueError(f"{path} is not a readable .npz weight file ({e})") from e
    if not isinstance(meta, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
    ):
        raise ValueError(
            f"{path} is not a readable .npz weight file (its {_META_KEY} entry must be a JSON "
            f"object of strings, got {type(meta).__name__})"
        )
    return tensors, meta


def load_file(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Load canonical tensors and metadata from a ``.safetensors`` or ``.npz`` file.

    float16 and float32 tensors load as stored; bfloat16 widens to float32 exactly; other
    dtypes load as stored and are refused by the schema check of the reader that uses them.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is truncated, corrupt, over the size cap (:func:`max_file_bytes`)
            or of an unknown container.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weight file at {path}")
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"PK"):  # zip: .npz
        return _npz(path)
    return _safetensors(path)
