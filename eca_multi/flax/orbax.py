"""Orbax checkpoints of the Flax backend: the Flax ecosystem's standard format, beside msgpack.

A checkpoint is a folder (``*.orbax``) written with Orbax's public API
(``ocp.Checkpointer(ocp.CompositeCheckpointHandler(...))``) holding two items:

* ``state``: ``nnx.state(model)`` as a pure dict (nnx.Param and nnx.BatchStat, NumPy arrays),
  through ``ocp.PyTreeCheckpointHandler``: exactly what ``nnx.to_pure_dict`` gives and what
  ``nnx.replace_by_pure_dict`` takes, so plain Orbax code reads it too;
* ``eca_multi``: a JSON header (``ocp.JsonCheckpointHandler``) with the same record as our msgpack
  export (:func:`eca_multi.flax.io.save_weights_file`): ``format`` (the marker that
  :func:`eca_multi.weights.sources.sniff` recognises by content), ``format_version``, ``arch``,
  ``num_classes``, ``kernel_sizes``, ``model`` (attention kind and arguments) and ``metadata``
  (a port's str -> str entries: timm's pretrained config, the tensor digest).

Writing is atomic: Orbax writes a temp folder and finalizes it by renaming (its commit), into a
hidden sibling of the output that is then renamed onto it; a failed save leaves no folder behind
and an existing output (replaced only with ``overwrite=True``) untouched until the new one is
complete. Reading never executes code (JSON and tensorstore arrays, restored as NumPy).

Example:
    >>> from eca_multi.flax.models import create_model
    >>> from eca_multi.flax import orbax
    >>> model = create_model("eca_mobilenet_v2", num_classes=10)
    >>> orbax.save_orbax(model, "m.orbax")  # doctest: +SKIP
    >>> same = orbax.load_orbax("m.orbax", "eca_mobilenet_v2")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from ..weights.io import prepare_output, total_limit
from ..weights.sources import ORBAX_HEADER_ITEM, ORBAX_MARKER, SourceError, is_orbax_export
from .models import ECAMobileNetV2, ECAResNet

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "SUFFIX",
    "is_orbax_export",
    "load_orbax",
    "read_orbax",
    "read_orbax_header",
    "read_orbax_metadata",
    "save_orbax",
]

FORMAT = "flax-orbax"  # the format name (eca_multi.registry.FORMATS)
FORMAT_VERSION = 1
SUFFIX = ".orbax"
_STATE = "state"  # the weights item; ORBAX_HEADER_ITEM ("eca_multi") is the JSON header


def _checkpointer() -> ocp.Checkpointer:
    """A checkpointer that knows both items' handlers (restore and metadata need them)."""
    handler = ocp.CompositeCheckpointHandler(
        **{_STATE: ocp.PyTreeCheckpointHandler(), ORBAX_HEADER_ITEM: ocp.JsonCheckpointHandler()}
    )
    return ocp.Checkpointer(handler)


def _ks_json(kernel_sizes: Any) -> Any:
    """Kernel sizes as JSON: a list per stage, or ``{"block": k}`` (MobileNetV2's 17 blocks)."""
    if kernel_sizes is None:
        return None
    if isinstance(kernel_sizes, Mapping):
        return {str(i): int(k) for i, k in kernel_sizes.items()}
    return [int(k) for k in kernel_sizes]


def _ks_from_json(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {int(i): int(k) for i, k in value.items()}
    return None if value is None else tuple(int(k) for k in value)


@contextlib.contextmanager
def _atomic_dir(path: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a hidden sibling folder name for Orbax to save into; on success move it onto
    ``path`` (replacing an old one only when ``overwrite``), else remove everything it left."""
    prepare_output(path, overwrite)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    old = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.old"

    def _clean() -> None:  # Orbax's own temp folder is ``<tmp>.orbax-checkpoint-tmp-<n>``
        for p in (tmp, *path.parent.glob(f"{tmp.name}.orbax-checkpoint-tmp*")):
            shutil.rmtree(p, ignore_errors=True)

    try:
        yield tmp
        if not tmp.is_dir():  # Orbax returned without finalizing: never rename a partial save
            raise RuntimeError(f"Orbax did not finalize the checkpoint for {path}")
        if path.exists() or path.is_symlink():  # overwrite: the old output stays intact
            os.rename(path, old)  # until the new one is whole (a folder cannot be os.replace'd)
        os.rename(tmp, path)
    except BaseException:
        _clean()
        if (old.exists() or old.is_symlink()) and not path.exists():  # put the old one back
            os.rename(old, path)
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    elif old.exists() or old.is_symlink():
        old.unlink()


def save_orbax(
    model: ECAResNet | ECAMobileNetV2,
    path: str | os.PathLike,
    overwrite: bool = False,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write the model as an Orbax checkpoint folder: its weights and our JSON header.

    Args:
        model: a model of :func:`eca_multi.flax.models.create_model` (or ``abstract_model``
            with every weight loaded).
        path: the folder to create (by convention ``*.orbax``).
        overwrite: replace an existing ``path`` (the old folder stays until the new one is
            complete).
        metadata: str -> str entries stored in the header (a port's: timm's pretrained config,
            the tensor digest; :func:`read_orbax_metadata` gives them back).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path).absolute()  # Orbax (tensorstore's OCDBT) takes absolute paths only
    if path.exists() and not overwrite:  # fail before serializing a large model
        raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --force) to replace it")
    pure = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model)))
    pure = _str_keys(pure)  # NNX list indices are ints; Orbax's tree paths are names
    header = {
        "format": ORBAX_MARKER,
        "format_version": FORMAT_VERSION,
        "arch": model.arch_name,
        "num_classes": int(model.num_classes),
        "kernel_sizes": _ks_json(model.kernel_sizes),
        "model": {"attention": model.attention, "attention_kwargs": model.attention_kwargs},
        "metadata": {str(k): str(v) for k, v in (metadata or {}).items()},
    }
    json.dumps(header)  # a value JSON cannot hold fails here, before anything is written
    with _atomic_dir(path, overwrite) as tmp, _checkpointer() as ckptr:
        ckptr.save(
            tmp,
            args=ocp.args.Composite(
                **{
                    _STATE: ocp.args.PyTreeSave(pure),
                    ORBAX_HEADER_ITEM: ocp.args.JsonSave(header),
                }
            ),
        )
    return path


def _str_keys(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {str(k): _str_keys(v) for k, v in tree.items()}
    return tree


def _check_readable(path: Path) -> None:
    """Our checkpoint (by content) and within the size cap, else :class:`SourceError`."""
    if not path.exists():
        raise FileNotFoundError(f"no Orbax checkpoint at {path}")
    if not is_orbax_export(path):
        raise SourceError(f"{path}: not an eca-multi Orbax checkpoint (no {ORBAX_MARKER!r} header)")
    cap, cap_text = total_limit()
    total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    if total > cap:
        raise SourceError(f"{path}: Orbax checkpoint of {total:,} bytes, over {cap_text}")


def read_orbax_header(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of a checkpoint of :func:`save_orbax` (no weights are read).

    Returns:
        ``{"format", "format_version", "arch", "num_classes", "kernel_sizes" (a tuple, or a
        dict for MobileNetV2), "model": {"attention", "attention_kwargs"}, "metadata"}``.

    Raises:
        FileNotFoundError: no such folder. SourceError: not our checkpoint, or a damaged header.
    """
    path = Path(path).absolute()
    _check_readable(path)
    try:
        with _checkpointer() as ckptr:
            restored = ckptr.restore(
                path, args=ocp.args.Composite(**{ORBAX_HEADER_ITEM: ocp.args.JsonRestore()})
            )
        header = dict(restored[ORBAX_HEADER_ITEM])
    except Exception as e:  # Orbax / JSON errors of many kinds
        raise SourceError(
            f"{path}: damaged eca-multi Orbax header ({type(e).__name__}: {e})"
        ) from e
    if header.get("format") != ORBAX_MARKER or not isinstance(header.get("num_classes"), int):
        raise SourceError(f"{path}: a corrupt eca-multi Orbax header (no format / num_classes)")
    if not isinstance(header.get("arch"), str):
        raise SourceError(f"{path}: a corrupt eca-multi Orbax header (no arch)")
    header["kernel_sizes"] = _ks_from_json(header.get("kernel_sizes"))
    meta = header.get("metadata")
    header["metadata"] = (
        {str(k): str(v) for k, v in meta.items()} if isinstance(meta, Mapping) else {}
    )
    if not isinstance(header.get("model"), Mapping):
        header["model"] = {}
    return header


def read_orbax_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The str -> str metadata a port stored in the checkpoint's header (``{}`` if none)."""
    return read_orbax_header(path)["metadata"]


def read_orbax(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """A checkpoint of :func:`save_orbax` as (header, state pure dict of NumPy arrays).

    Every array is restored as NumPy on the host (``ocp.RestoreArgs(restore_type=np.ndarray)``,
    no device placement); shapes and dtypes are the stored ones, checked by the loader.

    Raises:
        FileNotFoundError: no such folder. SourceError: not our checkpoint, damaged or over the
            size cap.
    """
    path = Path(path).absolute()
    header = read_orbax_header(path)
    try:
        with _checkpointer() as ckptr:
            tree = ckptr.metadata(path).item_metadata[_STATE]
            tree = getattr(tree, "tree", tree)  # TreeMetadata -> its nested dict
            restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
            restored = ckptr.restore(
                path,
                args=ocp.args.Composite(
                    **{_STATE: ocp.args.PyTreeRestore(restore_args=restore_args)}
                ),
            )
        state = restored[_STATE]
    except Exception as e:  # tensorstore / Orbax errors of many kinds
        raise SourceError(
            f"{path}: truncated or corrupt eca-multi Orbax checkpoint "
            f"({type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''})"
        ) from e
    if not isinstance(state, Mapping):
        raise SourceError(f"{path}: a corrupt eca-multi Orbax checkpoint (no state)")
    return header, dict(state)


def load_orbax(
    path: str | os.PathLike, name: str, num_classes: int | None = None, kernel_sizes: Any = None
) -> ECAResNet | ECAMobileNetV2:
    """Build ``name`` and load a checkpoint of :func:`save_orbax` (strict, no random init).

    Args:
        path: the checkpoint folder.
        name: architecture; must equal the one recorded in the header.
        num_classes: classifier width; default the checkpoint's.
        kernel_sizes: the model's ECA kernel sizes (default: the architecture's), checked against
            the stored kernels; ``"checkpoint"`` builds the model with the stored kernel sizes.

    The attention kind and its arguments are the ones recorded in the header; the checks are
    the msgpack export's (:func:`eca_multi.flax.io.load_weights_file`).

    Raises:
        WeightMismatchError: every missing / unexpected / mis-shaped variable at once.
        WeightDtypeError: a float stored as an integer or the other way round.
        SourceError: not our checkpoint, or a damaged one.
        ValueError: recorded for another architecture.
    """
    from .io import _model_from_export  # io imports this module lazily: no cycle at import

    header, state = read_orbax(path)
    return _model_from_export({**header, "state": state}, path, name, num_classes, kernel_sizes)
