"""Reading and writing canonical weight files (safetensors or .npz) without any framework.

Files are written atomically (a temp file in the target folder, then ``os.replace``) and an
existing file is never replaced unless ``overwrite=True``. Nothing is unpickled on load.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

__all__ = ["FORMAT_VERSION", "atomic_path", "atomic_write_bytes", "load_file", "save_file"]

FORMAT_VERSION = "1"
_META_KEY = "__eca_multi_metadata__"  # npz entry holding the metadata JSON


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike, *, overwrite: bool = False, suffix: str = ".tmp"
) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success rename it onto ``path``, else delete it.

    For writers that want a file name (``model.save``, ``torch.save``). Refuses an existing
    ``path`` unless ``overwrite``; a failed write leaves no temp file and the old file untouched.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --force) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = False) -> Path:
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
    path: str | os.PathLike,
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
        np.savez(buf, **arrays, **{_META_KEY: np.array(json.dumps(meta))})
        return atomic_write_bytes(path, buf.getvalue(), overwrite=overwrite)
    from safetensors.numpy import save

    return atomic_write_bytes(path, save(arrays, metadata=meta), overwrite=overwrite)


def load_file(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Load canonical tensors and metadata from a ``.safetensors`` or ``.npz`` file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is truncated, corrupt or of an unknown container.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weight file at {path}")
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"PK"):  # zip: .npz
        try:
            with np.load(path, allow_pickle=False) as z:
                tensors = {k: z[k] for k in z.files if k != _META_KEY}
                meta = json.loads(str(z[_META_KEY])) if _META_KEY in z.files else {}
        except Exception as e:  # zipfile / numpy errors on a damaged archive
            raise ValueError(f"{path} is not a readable .npz weight file ({e})") from e
        return tensors, meta
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable safetensors file ({e})") from e
    return tensors, meta
