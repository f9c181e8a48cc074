"""Canonical weights and files of the Keras backend: the :class:`eca_multi.registry.BackendIO`.

* Models: :func:`export_canonical_model` / :func:`load_canonical_model` walk a model's weighted
  layers (named after their torch module paths, :func:`eca_multi.keras.models.torch_path`), fetch
  each tensor by canonical name, check its exact shape against :func:`eca_multi.archs.schema` of
  the model's configuration and convert it with :mod:`eca_multi.weights.layouts`.
* Files: ``.weights.h5`` (weights) and ``.keras`` (whole model) through Keras' own saving
  (:func:`save_weights_file`, :func:`load_weights_file`), written atomically. A port's metadata
  (timm's pretrained config) rides along where Keras ignores it: a root attribute
  ``eca_multi_metadata`` of the ``.weights.h5``, a member ``eca_multi_metadata.json`` of the
  ``.keras`` zip (:func:`read_metadata`).
* Layers: :func:`export_canonical` / :func:`load_canonical` (from :mod:`eca_multi.keras.family`).
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers, ops

from ..archs import get_arch, head_name, kernel_sizes_from_kernels, schema
from ..family import se_reduced_channels
from ..registry import package_versions
from ..weights.integrity import file_metadata
from ..weights.io import atomic_path, max_file_bytes, tensor_limit
from ..weights.layouts import Layout, to_canonical, to_native
from ..weights.schema import WeightDtypeError, check_state
from ..weights.sources import SourceError, source_errors
from ._ops import Gated
from .family import attention_variables, export_canonical, load_canonical
from .layer import ECA
from .models import _recursion_limit, create_model, keras_name, link_pooled_through, torch_path

__all__ = [
    "FRAMEWORK",
    "SUFFIXES",
    "create_model",
    "default_name",
    "detect_format",
    "export_canonical",
    "export_canonical_model",
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

FRAMEWORK = "keras"
SUFFIXES = (".weights.h5", ".keras")


# ---------------------------------------------------------------------------------------------
# canonical weights

_BN_VARS = (
    ("weight", "gamma"),
    ("bias", "beta"),
    ("running_mean", "moving_mean"),
    ("running_var", "moving_variance"),
)


def _variables(model: keras.Model) -> dict[str, tuple[Any, Layout]]:
    """Canonical name -> (Keras variable, layout), walking the model's weighted layers."""
    table: dict[str, tuple[Any, Layout]] = {}
    for layer in model.layers:
        n = torch_path(layer.name)
        if hasattr(layer, "canonical_variables"):  # our own weighted layers (StdConv2D ...)
            for key, entry in layer.canonical_variables().items():
                table[f"{n}.{key}"] = entry
        elif isinstance(layer, layers.DepthwiseConv2D):
            table[f"{n}.weight"] = (layer.kernel, Layout.DEPTHWISE)  # torch (C,1,kh,kw)
        elif isinstance(layer, layers.Conv2D):  # grouped too: (kh, kw, in / groups, out)
            table[f"{n}.weight"] = (layer.kernel, Layout.CONV2D)
            if layer.use_bias:
                table[f"{n}.bias"] = (layer.bias, Layout.NONE)
        elif isinstance(layer, layers.BatchNormalization):
            for torch_name, attr in _BN_VARS:
                table[f"{n}.{torch_name}"] = (getattr(layer, attr), Layout.NONE)
            if hasattr(layer, "num_batches_tracked"):  # not on a plain keras BatchNormalization
                table[f"{n}.num_batches_tracked"] = (layer.num_batches_tracked, Layout.NONE)
        elif isinstance(layer, layers.Dense):
            table[f"{n}.weight"] = (layer.kernel, Layout.LINEAR)
            table[f"{n}.bias"] = (layer.bias, Layout.NONE)
        elif isinstance(layer, Gated):
            for key, entry in attention_variables(layer).items():
                table[f"{n}.{key}"] = entry
        elif layer.weights:
            raise TypeError(
                f"layer {n!r} ({type(layer).__name__}) has weights but no canonical mapping"
            )
    return table


def _model_attention(model: keras.Model, name: str):
    """The ``attention`` / ``attention_kwargs`` / kernel sizes a model was built with.

    Read from its attention layers (all of one kind; none: ``attention=None``) so that
    :func:`eca_multi.archs.schema` of the result names and shapes exactly the model's weights:
    ECA / ECA-NS kernel sizes as per-stage (per-block) k, SE's hidden widths as ``reduction`` /
    ``rd_divisor`` when they follow that rule in every block (else one ``rd_channels``), SE-GC's
    ``groups``; the gate and ECA-NS padding come along so a rebuilt model computes the same.
    """
    att = [la for la in model.layers if isinstance(la, Gated)]
    if not att:
        return None, None, None
    kinds = sorted({"eca" if isinstance(la, ECA) else la.config.kind for la in att})
    if len(kinds) > 1:
        raise ValueError(f"the Keras model {model.name!r} mixes attention kinds {kinds}")
    kind, first = kinds[0], att[0].config
    kw: dict[str, Any] = {}
    ks = None
    if kind in ("eca", "eca_ns"):  # k per block, from the layers (archs reads it per stage)
        ks = kernel_sizes_from_kernels(
            name, {torch_path(la.name): la.config.kernel_size for la in att}
        )
        if first.padding != "zeros":
            kw["padding"] = first.padding
    elif kind == "se":
        rule = all(
            se_reduced_channels(la.config.channels, first.reduction, first.rd_divisor)
            == la.config.rd_channels
            for la in att
        )
        if rule:
            kw.update(reduction=first.reduction, rd_divisor=first.rd_divisor)
        else:
            kw["rd_channels"] = first.rd_channels
    elif kind == "se_gc":
        kw["groups"] = first.groups
    if first.gate != "sigmoid":
        kw["gate"] = first.gate
    return kind, kw, ks


def _model_schema(model: keras.Model, name: str | None):
    """The archs schema of the model's own configuration (classes, attention and kernel sizes)."""
    name = name or model.name
    head = head_name(name)
    try:
        num_classes = model.get_layer(keras_name(head)).units
        attention, kw, ks = _model_attention(model, name)
        want = schema(name, num_classes, ks, attention, kw)
    except ValueError as e:
        raise ValueError(f"the Keras model {model.name!r} is not a {name}: {e}") from None
    have = _variables(model)
    extra = {n for n in set(have) ^ set(want) if not n.endswith("num_batches_tracked")}
    if extra:
        raise ValueError(
            f"the Keras model {model.name!r} is not a {name}; differing weights: "
            f"{', '.join(sorted(extra))}"
        )
    return name, ks, want, have, (attention, kw)


def export_canonical_model(model: keras.Model, name: str | None = None) -> dict[str, np.ndarray]:
    """The model's weights as canonical tensors (torch names and layouts, archs schema order).

    BatchNorm ``num_batches_tracked`` is written as an int64 scalar (0 for a plain Keras
    BatchNormalization without the counter) so the result loads into the torch / timm model with
    ``load_state_dict(strict=True)``.

    Args:
        model: a model from :func:`create_model` (or loaded from its files).
        name: architecture name; default ``model.name``.
    """
    _, _, want, have, _ = _model_schema(model, name)
    out = {}
    for key in want:
        if key.endswith("num_batches_tracked"):  # torch's int64 step counter
            count = ops.convert_to_numpy(have[key][0]) if key in have else 0
            out[key] = np.array(count, dtype=np.int64).reshape(())
            continue
        var, layout = have[key]
        out[key] = to_canonical(np.asarray(ops.convert_to_numpy(var), dtype=np.float32), layout)
    return out


def load_canonical_model(
    model: keras.Model,
    state: Mapping[str, np.ndarray],
    name: str | None = None,
    strict: bool = True,
) -> None:
    """Load canonical tensors (torch names and layouts) into ``model``, in place.

    The target is walked layer by layer; every tensor is fetched by canonical name, its exact
    shape checked against :func:`eca_multi.archs.schema` of the model's configuration (so an ECA
    kernel of another size than the model's is an error; build the model from the checkpoint
    with ``kernel_sizes=kernel_sizes_from_state(name, state)`` instead) and converted with
    :mod:`eca_multi.weights.layouts`. ``num_batches_tracked`` entries set the BatchNorm counters.

    Args:
        model: a model from :func:`create_model`.
        state: canonical name -> array.
        name: architecture name; default ``model.name``.
        strict: refuse missing and unexpected keys (shapes are always checked).

    Raises:
        WeightMismatchError: listing every missing, unexpected and mis-shaped key at once.
    """
    name, ks, want, have, (attention, _) = _model_schema(model, name)
    where = f"Keras {name} (" + (
        f"ECA kernel sizes {ks})" if attention == "eca" else f"attention {attention!r}, k {ks})"
    )
    check_state(want, state, strict=strict, where=where)
    for key, (var, layout) in have.items():
        if key in state:
            var.assign(to_native(np.asarray(state[key]), layout).astype(var.dtype))


# ---------------------------------------------------------------------------------------------
# Keras files


def _suffix(path: Path) -> str:
    for suffix in SUFFIXES:
        if path.name.endswith(suffix):
            return suffix
    raise ValueError(f"{path}: a Keras weight file must end with .weights.h5 or .keras")


def save_weights_file(model: keras.Model, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Save ``model`` as ``.weights.h5`` (weights) or ``.keras`` (whole model), atomically.

    The file is written to a temp name in the target folder, then renamed over ``path``.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        ValueError: an unsupported suffix.
    """
    path = Path(path)
    suffix = _suffix(path)
    with atomic_path(path, overwrite=overwrite, suffix=f".tmp{suffix}") as tmp:
        if suffix == ".keras":
            model.save(tmp, overwrite=True)
        else:
            model.save_weights(tmp, overwrite=True)
    return path


MAX_KERNEL = 1025  # the largest conv / ECA kernel side a config may declare (ours: <= 9)
MAX_WIDTH = 1 << 16  # the most units / filters a config may declare (ours: <= 4096)


def check_weights_h5(path: Path, member: str | None = None) -> None:
    """Refuse a ``.weights.h5`` file before a model is built from what it declares: every
    dataset must store the bytes its shape declares (within
    :func:`eca_multi.weights.io.tensor_limit`) and hold floating-point values (BatchNorm's
    scalar step counter: an integer). ``member``: the weights file inside a ``.keras`` archive
    at ``path``.

    Raises:
        SourceError: a dataset over the cap or with less data than its shape declares.
        WeightDtypeError: integer, bool, complex or string weights (never cast).
    """
    import h5py

    cap, cap_text = tensor_limit()
    bad: list[str] = []
    dtypes: dict[str, str] = {}

    def visit(key: str, obj: Any) -> None:
        if not isinstance(obj, h5py.Dataset):
            return
        nbytes = int(np.prod(obj.shape, dtype=np.float64) * obj.dtype.itemsize)
        stored = obj.id.get_storage_size()
        limit = cap if obj.compression else min(cap, size)
        if nbytes > limit or (nbytes and obj.compression is None and stored < nbytes):
            bad.append(
                f"{key} declares {obj.shape} ({nbytes:,} bytes) but the file stores {stored:,} "
                f"(file of {size:,} bytes; {cap_text})"
            )
        counter = obj.shape == () and np.issubdtype(obj.dtype, np.integer)
        if not counter and not np.issubdtype(obj.dtype, np.floating):
            dtypes[key] = f"{obj.dtype}, want floating point"

    if member is None:
        size = path.stat().st_size
        with h5py.File(path, "r") as f:
            f.visititems(visit)
    else:
        with zipfile.ZipFile(path) as z, z.open(member) as fh:
            size = z.getinfo(member).file_size
            with h5py.File(fh, "r") as f:
                f.visititems(visit)
    where = f"{path}" + (f" ({member})" if member else "")
    if bad:
        raise SourceError(f"{where}: {'; '.join(bad[:3])}")
    if dtypes:
        raise WeightDtypeError(dtypes, f"Keras file {where}")


def check_archive_config(path: Path) -> None:
    """Refuse a ``.keras`` archive whose config declares absurd sizes (units, filters, kernel
    sizes), before Keras builds it; the archive's weights are checked like a ``.weights.h5``."""
    cap = max_file_bytes()
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("config.json")
        if info.file_size > min(cap, 64 << 20):
            raise SourceError(f"{path}: config.json declares {info.file_size:,} bytes")
        config = json.loads(z.read("config.json"))
    problems: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                sizes = value if isinstance(value, list) else [value]
                ints = [v for v in sizes if isinstance(v, (int, float)) and not isinstance(v, bool)]
                if key in ("units", "filters") and any(v > MAX_WIDTH for v in ints):
                    problems.append(f"{where}.{key} = {value} (at most {MAX_WIDTH:,})")
                elif key in ("kernel_size", "pool_size") and any(v > MAX_KERNEL for v in ints):
                    problems.append(f"{where}.{key} = {value} (at most {MAX_KERNEL:,})")
                else:
                    walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{where}[{i}]")

    walk(config, "config")
    if problems:
        raise SourceError(f"{path}: the model config declares {'; '.join(problems[:3])}")
    with zipfile.ZipFile(path) as z:
        members = [n for n in z.namelist() if n.endswith(".weights.h5")]
    for member in members:
        check_weights_h5(path, member)


def _h5_kernel_sizes(path: Path, name: str):
    """ECA kernel sizes stored in a ``.weights.h5`` file (k is read from the kernels' shapes).

    Keras files a model's layers by class and order (``layers/eca``, ``layers/eca_1`` ...), not by
    layer name; the ECA layers of our models come in plan order, the order of the schema's keys.
    """
    import h5py

    prefixes = [b.attention_prefix for b in get_arch(name).blocks()]
    kernels = {}
    with h5py.File(path, "r") as f:
        for i, prefix in enumerate(prefixes):
            kernel = f.get(f"layers/eca{f'_{i}' if i else ''}/vars/0")
            if kernel is not None:
                kernels[prefix] = kernel.shape[0]  # Keras layout (k, 1, 1)
    return kernel_sizes_from_kernels(name, kernels)


def _h5_num_classes(path: Path) -> int | None:
    """Classifier width stored in a ``.weights.h5`` file: the columns of its one Dense kernel."""
    import h5py

    with h5py.File(path, "r") as f:
        kernel = f.get("layers/dense/vars/0")
        return None if kernel is None else int(kernel.shape[-1])


def load_weights_file(
    path: str | os.PathLike,
    name: str,
    num_classes: int | None = None,
    kernel_sizes: tuple[int, ...] | Mapping[int, int] | None = None,
    data_format: str | None = None,
    attention: str | None = "eca",
    attention_kwargs: Mapping[str, Any] | None = None,
) -> keras.Model:
    """Load a model saved by :func:`save_weights_file`.

    ``.keras`` archives load with ``keras.saving.load_model`` (the ECA and pooling layers are
    registered); if ``num_classes``, ``kernel_sizes`` or ``data_format`` is given, a model of that
    configuration is built and the archive's weights are moved into it through the canonical
    format (strictly). ``.weights.h5`` files load into ``create_model(...)``; ECA kernel sizes
    and ``num_classes`` default to the ones stored in the file. ``attention`` /
    ``attention_kwargs`` (as in :func:`create_model`) say which attention a ``.weights.h5`` file's
    model carries (a mismatch is a ValueError); a ``.keras`` archive carries its own.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a model of ``name`` or does not fit the requested
            configuration (including a :class:`~eca_multi.weights.WeightMismatchError`).
    """
    path = Path(path)
    suffix = _suffix(path)
    if not path.is_file():
        raise FileNotFoundError(f"no Keras weight file at {path}")
    if suffix == ".keras":
        try:
            check_archive_config(path)
        except (SourceError, WeightDtypeError):
            raise
        except Exception as e:  # a damaged zip, no config.json, JSON errors
            raise ValueError(f"{path} is not a readable .keras archive ({e})") from e
        try:
            with _recursion_limit():
                loaded = keras.saving.load_model(path)
        except Exception as e:  # zip / h5 / config errors from deep inside Keras
            raise ValueError(f"{path} is not a readable .keras archive ({e})") from e
        if loaded.name != name:
            raise ValueError(f"{path} holds a {loaded.name!r} model, not {name!r}")
        if num_classes is None and kernel_sizes is None and data_format is None:
            return link_pooled_through(loaded)  # archives written before ECAModel: Functional
        _, stored, want, _, (att, att_kw) = _model_schema(loaded, name)
        num_classes = want[f"{head_name(name)}.bias"][0][0] if num_classes is None else num_classes
        ks = stored if kernel_sizes is None else kernel_sizes
        model = create_model(name, num_classes, ks, data_format, None, att, att_kw)
        load_canonical_model(model, export_canonical_model(loaded))
        return model
    check_weights_h5(path)  # before a model is built from the shapes the file declares
    try:
        # ECA kernel sizes are read from the file; other kinds take kernel_sizes as given
        stored = _h5_kernel_sizes(path, name) if attention == "eca" else kernel_sizes
        if num_classes is None:
            num_classes = _h5_num_classes(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable {name} .weights.h5 file ({e})") from e
    if kernel_sizes is not None and _as_key(kernel_sizes) != _as_key(stored):
        raise ValueError(
            f"{path}: ECA kernel sizes {stored} in the file differ from the requested "
            f"{kernel_sizes}"
        )
    model = create_model(name, num_classes, stored, data_format, None, attention, attention_kwargs)
    try:
        with warnings.catch_warnings():  # a failed load also warns about Functional internals
            warnings.filterwarnings("ignore", message="Skipping nested container")
            model.load_weights(path)
    except Exception as e:  # a shape or structure mismatch raised deep inside Keras
        raise ValueError(f"{path} does not fit a Keras {name} ({e})") from e
    return model


def _as_key(kernel_sizes):
    return dict(kernel_sizes) if isinstance(kernel_sizes, Mapping) else tuple(kernel_sizes)


# ---------------------------------------------------------------------------------------------
# the backend contract (eca_multi.registry.BackendIO)


def detect_format(path: str | os.PathLike, container: str) -> str:
    """A Keras container is its format: "keras-weights" (HDF5) or "keras-archive" (zip)."""
    return container


def read_file(
    path: str | os.PathLike, fmt: str, arch: str, num_classes: int | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A Keras file as (canonical state, info), through the model it loads into; info
    "metadata" holds what a port stored beside the weights (:func:`read_metadata`)."""
    with source_errors(path, f"a Keras {arch} ({fmt})", f"{fmt} file"):
        model = load_weights_file(path, arch, num_classes=num_classes)
        meta = read_metadata(path)
    return export_canonical_model(model, arch), {"format": fmt, "metadata": meta}


def load_file(
    path: str | os.PathLike,
    fmt: str,
    arch: str,
    num_classes: int | None = None,
    kernel_sizes: Any = "checkpoint",
) -> keras.Model:
    """A Keras file as a Keras model (kernel sizes: the file's)."""
    return load_weights_file(path, arch, num_classes)


def default_name(arch: str) -> str:
    return f"{arch}.weights.h5"


def write_file(
    state: Mapping[str, Any],
    path: str | os.PathLike,
    arch: str,
    info: Mapping,
    overwrite: bool = False,
) -> None:
    """Build ``arch`` with the state's classes and kernel sizes, load it, save it (atomic);
    timm's pretrained config in ``info`` goes into the file's metadata (:func:`read_metadata`)."""
    model = create_model(arch, info["num_classes"], info["kernel_sizes"])
    load_canonical_model(model, state, name=arch, strict=True)
    meta = file_metadata(info)  # pretrained config, tensor digest
    if not meta:
        save_weights_file(model, path, overwrite=overwrite)
        return
    path = Path(path)
    suffix = _suffix(path)
    with atomic_path(path, overwrite=overwrite, suffix=f".tmp{suffix}") as tmp:
        save_weights_file(model, tmp, overwrite=True)  # the temp file, renamed when complete
        _write_metadata(tmp, suffix, meta)


_META_ATTR = "eca_multi_metadata"  # .weights.h5: a root attribute (Keras reads only groups)
_META_MEMBER = "eca_multi_metadata.json"  # .keras: a zip member (Keras reads only its own)


def _write_metadata(path: Path, suffix: str, meta: Mapping[str, str]) -> None:
    text = json.dumps(dict(meta), sort_keys=True)
    if suffix == ".keras":
        with zipfile.ZipFile(path, "a") as z:
            z.writestr(_META_MEMBER, text)
    else:
        import h5py

        with h5py.File(path, "a") as f:
            f.attrs[_META_ATTR] = text  # a variable-length string: no 64 KiB attribute limit


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The str -> str metadata a port stored in a ``.weights.h5`` / ``.keras`` file (``{}`` for
    files without)."""
    path = Path(path)
    if zipfile.is_zipfile(path):  # .keras (by content, as the port's sniffing)
        with zipfile.ZipFile(path) as z:
            if _META_MEMBER not in z.namelist():
                return {}
            text = z.read(_META_MEMBER).decode("utf-8")
    else:
        import h5py

        with h5py.File(path, "r") as f:
            text = f.attrs.get(_META_ATTR)
        if text is None:
            return {}
        text = text.decode("utf-8") if isinstance(text, bytes) else str(text)
    meta = json.loads(text)
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


def logits(model: keras.Model, x_nchw: np.ndarray) -> np.ndarray:
    """Eval-mode logits of an NCHW float32 batch in the model's data_format, as float64."""
    channels_first = tuple(model.inputs[0].shape)[1] == 3  # the model's data_format
    x = x_nchw if channels_first else np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1))
    return np.asarray(ops.convert_to_numpy(model(x, training=False)), np.float64)


def _device(backend: str) -> str:
    if backend == "tensorflow":  # the framework under Keras decides where tensors live
        import tensorflow as tf

        return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
    if backend == "jax":
        import jax

        return jax.devices()[0].platform
    if backend == "torch":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return "unknown"


def versions() -> dict[str, Any]:
    """Keras, its backend's framework and the export tools' versions; the device."""
    backend = keras.backend.backend()
    out = package_versions(("keras", "tensorflow-cpu", "jax", "torch", "ai-edge-litert"))
    out.update(keras_backend=backend, device=_device(backend))
    return out
