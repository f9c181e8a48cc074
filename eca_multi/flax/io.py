"""Canonical weights and files of the Flax backend: the :class:`eca_multi.registry.BackendIO`.

* Models: :func:`export_canonical_model` / :func:`load_canonical_model` walk the model (the path
  of every Conv / BatchNorm / Linear / attention joined by dots is its canonical name) and change
  layouts only through :mod:`eca_multi.weights.layouts`.
* Files: our own Flax export, msgpack of ``nnx.state`` as a pure dict
  (:func:`save_weights_file`, :func:`load_weights_file`, :func:`is_flax_export`), with a port's
  str -> str metadata (timm's pretrained config) before the state (:func:`read_metadata`); or
  the same record as an Orbax checkpoint folder ``*.orbax`` (:mod:`eca_multi.flax.orbax`, the
  Flax ecosystem's standard; format ``flax-orbax``, recognised by content).
* Layers: :func:`export_canonical` / :func:`load_canonical` (from :mod:`eca_multi.flax.family`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, cast

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, serialization

from .. import archs
from ..registry import package_versions
from ..weights import (
    Layout,
    WeightDtypeError,
    WeightMismatchError,
    check_state,
    to_canonical,
    to_native,
)
from ..weights.integrity import file_metadata
from ..weights.io import atomic_write_bytes
from ..weights.sources import source_errors
from ._ops import native_params
from .family import _Attention, export_canonical, load_canonical
from .layer import ECA
from .models import BatchNorm, ECAMobileNetV2, ECAResNet, abstract_model, create_model

__all__ = [
    "FRAMEWORK",
    "SUFFIXES",
    "create_model",
    "default_name",
    "detect_format",
    "export_canonical",
    "export_canonical_model",
    "is_flax_export",
    "load_canonical",
    "load_canonical_model",
    "load_file",
    "load_weights_file",
    "logits",
    "read_file",
    "read_metadata",
    "save_weights_file",
    "versions",
    "write_file",
]

FRAMEWORK = "flax"
SUFFIXES = (".msgpack", ".orbax")  # our msgpack export; an Orbax checkpoint folder
_MAGIC = b"eca-multi-flax-nnx"  # first field of our msgpack export, for content detection


# ---------------------------------------------------------------------------------------------
# canonical weights: walk the model, name = module path joined by dots


class _Built(Protocol):
    """The build arguments every model of :func:`create_model` records (ECAResNet,
    ECAMobileNetV2, GraphNet): what the canonical schema and an export header need."""

    arch_name: str
    num_classes: int
    kernel_sizes: Any
    attention: str | None
    attention_kwargs: Any


def _built(model: nnx.Module) -> _Built:
    return cast(_Built, model)  # one of the models above (the only ones these functions take)


def _slots(model: nnx.Module) -> dict[str, tuple[nnx.Variable, Layout]]:
    """Canonical name -> (the NNX variable holding it, its layout), in module order."""
    out: dict[str, tuple[nnx.Variable, Layout]] = {}
    for path, m in nnx.iter_modules(model):
        p = ".".join(str(part) for part in path)
        if hasattr(m, "canonical_variables"):  # our own weighted modules (StdConv ...)
            for key, entry in m.canonical_variables().items():
                out[f"{p}.{key}"] = entry
        elif isinstance(m, nnx.Conv):  # grouped (depthwise) too: (kh, kw, I / groups, O)
            out[f"{p}.weight"] = (m.kernel, Layout.CONV2D)
            if m.bias is not None:
                out[f"{p}.bias"] = (m.bias, Layout.NONE)
        elif isinstance(m, nnx.Linear):
            out[f"{p}.weight"] = (m.kernel, Layout.LINEAR)
            out[f"{p}.bias"] = (cast(nnx.Param, m.bias), Layout.NONE)  # the heads have a bias
        elif isinstance(m, nnx.BatchNorm):
            for torch_name, var in (
                ("weight", m.scale),
                ("bias", m.bias),
                ("running_mean", m.mean),
                ("running_var", m.var),
            ):
                out[f"{p}.{torch_name}"] = (cast(nnx.Variable, var), Layout.NONE)  # all kept
            if isinstance(m, BatchNorm):
                out[f"{p}.num_batches_tracked"] = (m.num_batches_tracked, Layout.NONE)
        elif isinstance(m, ECA):
            out[f"{p}.conv.weight"] = (m.kernel, Layout.CONV1D)
        elif isinstance(m, _Attention):  # family member: native paths -> canonical names
            specs = native_params(m.config)
            for native, nvar in m.native_variables().items():
                out[f"{p}.{specs[native][0]}"] = (nvar, specs[native][2])
    return out


def _is_abstract(var: nnx.Variable) -> bool:
    return isinstance(var.get_value(), jax.ShapeDtypeStruct)


def _schema(model: nnx.Module) -> archs.Schema:
    schema = archs.schema(
        _built(model).arch_name,
        _built(model).num_classes,
        _built(model).kernel_sizes,
        _built(model).attention,
        _built(model).attention_kwargs,
    )
    slots = _slots(model)
    if set(schema) != set(slots):  # a bug in this file, never the user's weights
        raise RuntimeError(
            f"{_built(model).arch_name}: module paths differ from the canonical schema: "
            f"{sorted(set(schema) ^ set(slots))[:10]}"
        )
    return schema


def export_canonical_model(model: nnx.Module, name: str | None = None) -> dict[str, np.ndarray]:
    """The model's weights as canonical NumPy arrays (torch names and layouts, schema order).

    BatchNorm ``num_batches_tracked`` is an int64 scalar so the file loads into torch / timm with
    ``strict=True``. ``name``, when given, must be the model's architecture.
    """
    if name is not None and name != _built(model).arch_name:
        raise ValueError(f"the model is a {_built(model).arch_name!r}, not a {name!r}")
    slots, out = _slots(model), {}
    for name in _schema(model):
        var, layout = slots[name]
        arr = np.asarray(var[...])
        if name.endswith(".num_batches_tracked"):
            out[name] = np.array(arr, np.int64)
        else:
            out[name] = to_canonical(arr, layout)
    return out


def load_canonical_model(
    model: nnx.Module, state: Mapping[str, Any], name: str | None = None, strict: bool = True
) -> None:
    """Load canonical weights into a model of :func:`create_model` / :func:`abstract_model`.

    In place; an abstract model must receive every weight.

    Args:
        model: the target; its architecture, class count and kernel sizes define the schema.
        state: canonical name -> array (torch names and layouts; NumPy or anything array-like).
        name: architecture the weights are for; when given it must be the model's.
        strict: fail on missing or unexpected keys (shapes are always checked).

    Raises:
        WeightMismatchError: every missing / unexpected / mis-shaped key at once (an ECA kernel
            size other than the model's shows as a shape mismatch of ``...conv.weight``).
        ValueError: ``name`` differs from the model's architecture.
    """
    if name is not None and name != _built(model).arch_name:
        raise ValueError(
            f"weights for {name!r} cannot load into a {_built(model).arch_name!r} model"
        )
    schema, slots = _schema(model), _slots(model)
    arrays = {k: np.asarray(v) for k, v in state.items()}
    check_state(schema, arrays, strict=strict, where=f"flax {_built(model).arch_name}")
    unfilled = [k for k, (v, _) in slots.items() if k not in arrays and _is_abstract(v)]
    if unfilled:
        raise ValueError(f"an abstract model needs every weight; missing: {', '.join(unfilled)}")
    for key, (_, layout) in schema.items():
        if key not in arrays:  # absent only when strict=False
            continue
        var, _ = slots[key]
        old = var.get_value()
        if key.endswith(".num_batches_tracked"):  # int64 in torch; int32 here (JAX without x64)
            count = int(arrays[key])
            if not 0 <= count < 2**31:
                raise ValueError(f"{key}: {count} does not fit int32")
            new = jnp.asarray(count, old.dtype)
        else:
            new = jnp.asarray(to_native(arrays[key], layout), dtype=old.dtype)
        if _is_abstract(var):  # abstract_model: nothing to keep, set the whole value
            var.set_value(new)
        else:
            var[...] = jax.device_put(new, old.sharding)  # keep the old placement (sharding)


# ---------------------------------------------------------------------------------------------
# our own Flax export: msgpack of nnx.state(model) as a pure dict (weights only: nnx.Param and
# nnx.BatchStat; the dropout takes its rngs at call time so the model holds no RNG state)


def _flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        out.update(_flatten(v, f"{key}.") if isinstance(v, Mapping) else {key: v})
    return out


def save_weights_file(
    model: nnx.Module,
    path: str | os.PathLike,
    overwrite: bool = False,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write the model's weights as our Flax export: msgpack of ``nnx.state`` as a pure dict.

    The file holds ``{"format": "eca-multi-flax-nnx", "arch": name, "num_classes": n, "model":
    {"attention": kind or None, "attention_kwargs": {...}}, "metadata": {str: str} (only when
    given), "state": pure dict of nnx.Param and nnx.BatchStat as NumPy arrays}``; written to a
    temp file and renamed (atomic). (msgpack sorts the keys: ``format`` stays within the first
    bytes :func:`is_flax_export` reads; ``metadata`` comes before ``state``.)

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    if Path(path).exists() and not overwrite:  # fail before serializing a large model
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    pure = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model)))
    blob = serialization.msgpack_serialize(
        {
            "format": _MAGIC.decode(),
            "arch": _built(model).arch_name,
            "num_classes": _built(model).num_classes,
            "model": {
                "attention": _built(model).attention,
                "attention_kwargs": _built(model).attention_kwargs,
            },
            **({"metadata": {str(k): str(v) for k, v in metadata.items()}} if metadata else {}),
            "state": pure,
        }
    )
    return atomic_write_bytes(path, blob, overwrite=overwrite)


def _read_export(path: str | os.PathLike) -> dict:
    blob = Path(path).read_bytes()
    try:
        data = serialization.msgpack_restore(blob)
    except Exception as e:  # truncated / corrupt bytes: msgpack and NumPy raise many kinds
        raise ValueError(f"{path}: not a readable eca-multi Flax export ({e})") from e
    if not isinstance(data, dict) or data.get("format") != _MAGIC.decode():
        raise ValueError(f"{path}: not an eca-multi Flax export (no {_MAGIC.decode()!r} marker)")
    if not isinstance(data.get("state"), dict) or not isinstance(data.get("num_classes"), int):
        raise ValueError(f"{path}: a corrupt eca-multi Flax export (no state / num_classes)")
    return data


def is_flax_export(path: str | os.PathLike) -> bool:
    """True if ``path`` is a file written by :func:`save_weights_file` (checked by content)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return False
    is_map = bool(head) and (0x80 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF))  # msgpack map
    return is_map and _MAGIC in head  # the "format" value is stored verbatim, first


def _stored_kernel_sizes(name: str, flat: Mapping[str, Any]):
    """ECA (ECA-NS) kernel sizes read from the stored (k, 1, 1) ((C, k)) kernels' shapes."""
    kernels = {}
    for b in archs.get_arch(name).blocks():
        stored = flat.get(f"{b.attention_prefix}.kernel")
        if stored is not None:  # ECA (k, 1, 1), ECA-NS (C, k)
            kernels[b.attention_prefix] = np.shape(stored)[-1 if np.ndim(stored) == 2 else 0]
    return archs.kernel_sizes_from_kernels(name, kernels)


def load_weights_file(
    path: str | os.PathLike, name: str, num_classes: int | None = None, kernel_sizes: Any = None
) -> ECAResNet | ECAMobileNetV2:
    """Build ``name`` and load weights written by :func:`save_weights_file`.

    Args:
        path: the msgpack file.
        name: architecture; must equal the one recorded in the file.
        num_classes: classifier width; default the file's.
        kernel_sizes: the model's ECA kernel sizes (default: the architecture's), checked against
            the stored kernels; ``"checkpoint"`` builds the model with the stored kernel sizes.

    The attention kind and its arguments are the ones recorded in the file (files written
    before the family existed hold ECA models).

    Raises:
        WeightMismatchError: every missing / unexpected / mis-shaped variable at once.
        ValueError: not our export, or recorded for another architecture.
    """
    return _model_from_export(_read_export(path), path, name, num_classes, kernel_sizes)


def _model_from_export(
    data: Mapping[str, Any],
    path: str | os.PathLike,
    name: str,
    num_classes: int | None,
    kernel_sizes: Any,
) -> ECAResNet | ECAMobileNetV2:
    """The model of a decoded export (msgpack or Orbax: header fields and ``state``), checked."""
    if data.get("arch") != name:
        raise ValueError(f"{path} holds {data.get('arch')!r} weights, not {name!r}")
    nc = int(data["num_classes"]) if num_classes is None else num_classes
    flat = _flatten(data["state"])
    recorded = data.get("model")
    recorded = recorded if isinstance(recorded, Mapping) else {}
    attention = recorded.get("attention", "eca")
    attention_kwargs = recorded.get("attention_kwargs") or None
    if isinstance(kernel_sizes, str) and kernel_sizes == "checkpoint":
        # k read from the stored shapes (only ECA and ECA-NS have a k)
        has_k = attention in ("eca", "eca_ns")
        kernel_sizes = _stored_kernel_sizes(name, flat) if has_k else None
    # no random init: every weight comes from path
    model = abstract_model(
        name, nc, kernel_sizes, attention=attention, attention_kwargs=attention_kwargs
    )
    own = {
        ".".join(map(str, p)): v for p, v in nnx.iter_graph(model) if isinstance(v, nnx.Variable)
    }
    missing = [k for k in own if k not in flat]
    unexpected = [k for k in flat if k not in own]
    mismatched = {
        k: (tuple(v.get_value().shape), tuple(np.shape(flat[k])))
        for k, v in own.items()
        if k in flat and tuple(v.get_value().shape) != tuple(np.shape(flat[k]))
    }
    if missing or unexpected or mismatched:
        raise WeightMismatchError(missing, unexpected, mismatched, where=f"flax {name} ({path})")
    bad = {}
    for key, var in own.items():  # a float stays float, a counter an integer: never a cast
        want_int = jnp.issubdtype(var.get_value().dtype, jnp.integer)
        have = np.asarray(flat[key]).dtype
        if not (np.issubdtype(have, np.integer) if want_int else np.issubdtype(have, np.floating)):
            bad[key] = f"{have}, want {'an integer' if want_int else 'floating point'}"
    if bad:
        raise WeightDtypeError(bad, f"flax {name} ({path})")
    for key, var in own.items():  # abstract variables: set the whole value
        var.set_value(jnp.asarray(flat[key], var.get_value().dtype))
    return model


# ---------------------------------------------------------------------------------------------
# the backend contract (eca_multi.registry.BackendIO)


def detect_format(path: str | os.PathLike, container: str) -> str:
    """Our msgpack export and our Orbax checkpoint are their own formats: "flax", "flax-orbax"."""
    return container


def read_file(
    path: str | os.PathLike, fmt: str, arch: str, num_classes: int | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Our Flax export as (canonical state, info), through the model it loads into; info
    "metadata" holds what a port stored beside the weights (:func:`read_metadata`)."""
    with source_errors(path, f"a Flax {arch} export", "Flax export"):
        if fmt == "flax-orbax":  # Orbax is imported only for its checkpoints
            from . import orbax

            model = orbax.load_orbax(path, arch, num_classes, kernel_sizes="checkpoint")
            meta = orbax.read_orbax_metadata(path)
        else:
            model = load_weights_file(path, arch, num_classes, kernel_sizes="checkpoint")
            meta = read_metadata(path)
    return export_canonical_model(model), {"format": fmt, "metadata": meta}


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The str -> str metadata of our Flax export (``{}`` for files without), read without
    decoding the weights: the top-level map is walked entry by entry up to ``state``."""
    import msgpack  # flax's own dependency (flax.serialization)

    with open(path, "rb") as f:
        unpacker = msgpack.Unpacker(f, raw=False)
        for _ in range(unpacker.read_map_header()):
            key = unpacker.unpack()
            if key == "metadata":
                meta = unpacker.unpack()
                return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}
            if key == "state":  # save_weights_file writes the metadata before the state
                return {}
            unpacker.skip()
    return {}


def load_file(
    path: str | os.PathLike,
    fmt: str,
    arch: str,
    num_classes: int | None = None,
    kernel_sizes: Any = "checkpoint",
) -> nnx.Module:
    """Our Flax export (msgpack or Orbax) as an NNX model (kernel sizes: the file's unless
    given)."""
    if fmt == "flax-orbax":
        from .orbax import load_orbax

        return load_orbax(path, arch, num_classes, kernel_sizes=kernel_sizes)
    return load_weights_file(path, arch, num_classes, kernel_sizes=kernel_sizes)


def default_name(arch: str) -> str:
    return f"{arch}.msgpack"


def write_file(
    state: Mapping[str, Any],
    path: str | os.PathLike,
    arch: str,
    info: Mapping,
    overwrite: bool = False,
) -> None:
    """Build ``arch`` (no random init), load the state, write our export (atomic): msgpack, or
    an Orbax checkpoint folder when ``path`` ends with ``.orbax``; timm's pretrained config and
    the tensor digest in ``info`` go into its metadata (:func:`read_metadata`,
    :func:`eca_multi.flax.orbax.read_orbax_metadata`)."""
    model = abstract_model(arch, info["num_classes"], info["kernel_sizes"])
    load_canonical_model(model, state, name=arch, strict=True)
    if os.fspath(path).endswith(".orbax"):
        from .orbax import save_orbax

        save_orbax(model, path, overwrite=overwrite, metadata=file_metadata(info))
    else:
        save_weights_file(model, path, overwrite=overwrite, metadata=file_metadata(info))


def logits(model: nnx.Module, x_nchw: np.ndarray) -> np.ndarray:
    """Eval-mode logits of an NCHW float32 batch (run as NHWC), as float64 NumPy."""
    model.eval()  # NNX BatchNorm: running averages (use_running_average=True)
    return np.asarray(model(jnp.asarray(x_nchw.transpose(0, 2, 3, 1))), np.float64)


def versions() -> dict[str, Any]:
    """JAX, jaxlib and Flax versions; the device and how many there are."""
    out: dict[str, Any] = package_versions(("jax", "jaxlib", "flax"))
    device = jax.devices()[0]
    out.update(device=f"{device.platform}:{device.device_kind}", devices=len(jax.devices()))
    return out
