"""Canonical weights and files of the torch backend: the :class:`eca_multi.registry.BackendIO`.

* Layers: :func:`export_canonical` / :func:`load_canonical` for ECA and every family module.
  Torch's ``state_dict`` names and layouts *are* the canonical ones
  (:func:`eca_multi.family.attention_schema`; ECA's ``{"conv.weight": (1, 1, k)}``, SE's timm
  ``fc1`` / ``fc2``), so no layout change happens here; sizes (k, SE's hidden width, SE-GC's
  groups) are checked against the module's config, every problem listed at once.
* Models: :func:`export_canonical_model` / :func:`load_canonical_model` (any ``nn.Module``, ours
  or timm's: the ``state_dict`` as NumPy arrays, ``num_batches_tracked`` included).
* Files: torch pickles (the official ``.pth.tar`` checkpoints, bare ``state_dict`` ``.pth`` /
  ``.bin``), read only with ``torch.load(weights_only=True)`` so a pickle that carries code is
  refused, never run; written as ``.pth`` / ``.pth.tar`` (the official layout) or timm's
  ``model.safetensors``. timm's pretrained config (``info["pretrained_cfg"]``) goes into the
  safetensors metadata and the ``.pth.tar``'s ``pretrained_cfg`` entry, and for timm
  architectures into a ``config.json`` beside ``model.safetensors`` (what ``timm.create_model(
  "local-dir:FOLDER", pretrained=True)`` and the Hub read); a bare ``state_dict`` has no room.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from .. import archs
from ..family import attention_schema
from ..preprocess import METADATA_KEY
from ..registry import package_versions
from ..weights import check_state
from ..weights.integrity import DIGEST_KEY, file_metadata
from ..weights.io import atomic_write_bytes
from ..weights.layouts import Layout
from ..weights.sources import SourceError, finish_source, strip_prefix
from ._ops import Gated
from .models import create_model

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
    "logits",
    "read_file",
    "versions",
    "write_file",
]

FRAMEWORK = "torch"
SUFFIXES = (".pth", ".pth.tar", ".pt", ".bin", ".safetensors")
_OFFICIAL_META = ("epoch", "arch", "best_prec1")


# ---------------------------------------------------------------------------------------------
# layers


def _writable(value: Any) -> np.ndarray:
    """A C-contiguous array torch may wrap (a read-only one, e.g. from JAX, is copied)."""
    a = np.asarray(value, order="C")
    return a if a.flags.writeable else a.copy()


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
        for name in attention_schema(cast(Gated, layer).config)  # ECA and the family are Gated
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
    schema = attention_schema(cast(Gated, layer).config)  # ECA and the family are Gated
    check_state(schema, arrays, strict=strict, where=repr(layer))
    with torch.no_grad():
        for name in schema:
            if name in arrays:
                layer.get_parameter(name).copy_(torch.as_tensor(arrays[name]))


# ---------------------------------------------------------------------------------------------
# models


def export_canonical_model(model: nn.Module, name: str | None = None) -> dict[str, np.ndarray]:
    """The model's ``state_dict`` as NumPy arrays (canonical: torch names and layouts).

    BatchNorm ``num_batches_tracked`` stays an int64 scalar so the file loads with strict=True.
    ``name`` is accepted for the backend contract (torch's names are the canonical ones).
    """
    return {k: v.detach().to("cpu").numpy().copy() for k, v in model.state_dict().items()}


def load_canonical_model(
    model: nn.Module, state: Mapping[str, Any], name: str | None = None, strict: bool = True
) -> None:
    """Load canonical weights into any torch model in place.

    Args:
        model: the target (our models or timm's).
        state: canonical name -> array (NumPy or torch).
        name: architecture name; when given, ``state`` is checked against
            :func:`eca_multi.archs.schema` with the model's own class count, kernel sizes and
            attention (the ``attention`` / ``attention_kwargs`` it was built with; "eca" for a
            model without them, e.g. one timm built).
        strict: fail on missing or unexpected keys (shapes are always checked).

    Raises:
        WeightMismatchError: every missing / unexpected / mis-shaped key at once (a wrong ECA
            kernel size shows as a shape mismatch of ``...conv.weight``).
    """
    own = model.state_dict()
    if name is not None:
        attention = getattr(model, "attention", "eca")
        kwargs = getattr(model, "attention_kwargs", None) or None
        if attention == "eca":  # k of the built model, read from its shapes
            ks: archs.KernelSizes | None = archs.kernel_sizes_from_state(name, own)
        else:  # k (ECA-NS) as the model was built
            ks = getattr(model, "kernel_sizes_arg", None)
        schema = archs.schema(name, archs.num_classes_from_state(name, own), ks, attention, kwargs)
        if list(schema) != list(own):
            raise ValueError(f"the model does not have {name}'s canonical keys")
    else:
        schema = {k: (tuple(v.shape), Layout.NONE) for k, v in own.items()}
    arrays = {
        k: np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v)
        for k, v in state.items()
    }
    check_state(schema, arrays, strict=strict, where=name or type(model).__name__)
    tensors = {k: torch.from_numpy(_writable(a)) for k, a in arrays.items() if k in own}
    model.load_state_dict(tensors, strict=strict)


# ---------------------------------------------------------------------------------------------
# files


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``: tensors and plain containers only, no code runs."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle.UnpicklingError (unsafe), RuntimeError (corrupt zip), EOF ...
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise SourceError(
                f"{path}: refused to load: the torch pickle holds objects other than tensors and "
                "plain containers (possibly code); nothing in it was executed. Only weights_only "
                f"checkpoints are supported. ({type(e).__name__}: {str(e).splitlines()[0]})"
            ) from e
        raise SourceError(
            f"{path}: truncated or corrupt torch file ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'no detail'})"
        ) from e


def _classify(obj: Any, path: Path) -> str:
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        return "official"
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return "torch-state-dict"
    keys = list(obj)[:8] if isinstance(obj, Mapping) else "-"
    raise SourceError(
        f"{path}: a torch file without a state_dict (found {type(obj).__name__} with keys {keys})"
    )


def detect_format(path: str | os.PathLike, container: str = "torch") -> str:
    """The torch file's format: "official" (the authors' ``{'epoch', 'arch', 'state_dict', ...}``)
    or "torch-state-dict" (a bare ``state_dict``).

    The file is opened with ``weights_only=True`` to look inside.
    """
    path = Path(path)
    return _classify(_torch_load(path), path)


def _tensor_to_numpy(v: torch.Tensor, path: Path, key: str) -> np.ndarray:
    if v.layout != torch.strided or v.is_quantized or v.is_meta:
        kind = "quantized" if v.is_quantized else "meta" if v.is_meta else str(v.layout)
        raise SourceError(f"{path}: {key} is a {kind} tensor; only dense tensors hold weights")
    v = v.detach().to("cpu")
    if v.is_floating_point() and v.dtype != torch.float32:
        v = v.float()  # canonical weights are float32 (bf16 / fp16 widen exactly)
    return v.numpy().copy()


def _scalar(v: Any) -> Any:
    """An official checkpoint's epoch / arch / best_prec1 as a plain value, never formatted
    whole: anything but a number, a short string or a one-element tensor becomes its type name."""
    if isinstance(v, torch.Tensor):
        return v.item() if v.numel() == 1 and v.layout == torch.strided else None
    if isinstance(v, str):
        return v if len(v) <= 200 else v[:200] + "..."
    return v if isinstance(v, (int, float, bool)) or v is None else f"<{type(v).__name__}>"


def read_file(
    path: str | os.PathLike, fmt: str | None = None, arch: str | None = None, num_classes=None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A torch pickle as (canonical state, info): official checkpoints lose their ``module.``
    prefix and keep epoch / arch / best_prec1 in ``info``; nothing in the file is executed."""
    path = Path(path)
    obj = _torch_load(path)
    fmt = _classify(obj, path)
    info: dict[str, Any] = {"format": fmt}
    sd = obj["state_dict"] if fmt == "official" else obj
    if fmt == "official":
        info.update({k: _scalar(obj[k]) for k in _OFFICIAL_META if k in obj})
        info["has_optimizer"] = "optimizer" in obj
        # written by _file_bytes below: the pretrained config and the tensor digest
        meta = {k: obj[k] for k in (METADATA_KEY, DIGEST_KEY) if isinstance(obj.get(k), str)}
        if meta:
            info["metadata"] = meta
    sd, stripped = strip_prefix(sd)
    info["prefix_stripped"] = "module." if stripped else ""
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise SourceError(f"{path}: state_dict entries that are no tensors: {bad[:8]}")
    odd = [k for k in sd if not isinstance(k, str)]
    if odd:
        shown = ", ".join(f"{k!r} ({type(k).__name__})" for k in odd[:5])
        raise SourceError(f"{path}: state_dict keys must be strings, found {shown}")
    return {k: _tensor_to_numpy(v, path, k) for k, v in sd.items()}, info


def load_file(
    path: str | os.PathLike,
    fmt: str,
    arch: str,
    num_classes: int | None = None,
    kernel_sizes: Any = "checkpoint",
) -> nn.Module:
    """A torch file as a torch model of ``arch`` (ours, or timm's), loaded strictly."""
    state, info = read_file(path, fmt, arch, num_classes)
    state, info = finish_source(path, arch, state, info, kernel_sizes, num_classes)
    model = create_model(arch, info["num_classes"], info["kernel_sizes"])
    load_canonical_model(model, state, name=arch, strict=True)
    return model


def default_name(arch: str) -> str:
    """timm architectures: ``model.safetensors`` (what timm loads); official: ``<arch>.pth``."""
    return "model.safetensors" if archs.get_arch(arch).family == "timm" else f"{arch}.pth"


def _file_bytes(state: Mapping[str, Any], out: Path, arch: str, info: Mapping) -> bytes:
    tensors = {k: torch.from_numpy(_writable(state[k])) for k in state}
    extra = file_metadata(info)  # {"pretrained_cfg": JSON, "eca_multi_sha256": hex} or less
    if out.name.endswith(".safetensors"):  # timm's model.safetensors: a plain state_dict
        from safetensors.torch import save

        meta = {"format": "pt", "source": info["format"], "arch": arch, **extra}
        return save(tensors, metadata=meta)
    obj: Any = tensors
    if out.name.endswith(".pth.tar"):  # the official ECA-Net layout (DataParallel keys)
        obj = {
            "epoch": info.get("epoch", 0),
            "arch": arch,
            "state_dict": {f"module.{k}": v for k, v in tensors.items()},
            "best_prec1": info.get("best_prec1", 0.0),
            "optimizer": None,
            **extra,  # a JSON str: torch.load(weights_only=True) reads it
        }  # no optimizer state survives a port
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def write_file(
    state: Mapping[str, Any],
    path: str | os.PathLike,
    arch: str,
    info: Mapping,
    overwrite: bool = False,
) -> None:
    """Write a canonical state as ``.pth`` / ``.pt`` / ``.bin`` (a ``state_dict``),
    ``.pth.tar`` (the official checkpoint layout) or ``.safetensors`` (timm's file); atomic.

    A timm architecture's ``model.safetensors`` with a pretrained config in ``info`` also gets
    timm's ``config.json`` beside it (replaced only with ``overwrite``, like the weights)."""
    out = Path(path)
    if not out.name.endswith(SUFFIXES):
        raise ValueError(f"{out}: torch output must end with {', '.join(SUFFIXES)}")
    config = _timm_config(out, arch, info)
    config_path = out.with_name("config.json")
    if config is not None and config_path.exists() and not overwrite:  # before any writing
        raise FileExistsError(
            f"{config_path} exists (timm's config.json, written beside {out.name}); pass "
            "overwrite=True (CLI: --force) to replace it"
        )
    atomic_write_bytes(out, _file_bytes(state, out, arch, info), overwrite=overwrite)
    if config is not None:
        text = json.dumps(config, indent=2) + "\n"
        atomic_write_bytes(config_path, text.encode(), overwrite=overwrite)


_SOURCE_KEYS = ("url", "file", "hf_hub_id", "hf_hub_filename", "source")  # where it came from
_LABEL_KEYS = ("label_names", "label_descriptions")


def _timm_config(out: Path, arch: str, info: Mapping) -> dict | None:
    """timm's ``config.json`` for a timm architecture's ``model.safetensors`` (as
    ``timm.models.save_config_for_hf`` lays it out); None when there is nothing to say."""
    cfg = info.get("pretrained_cfg")
    if cfg is None or out.name != "model.safetensors" or archs.get_arch(arch).family != "timm":
        return None
    cfg = {k: v for k, v in cfg.items() if k not in _SOURCE_KEYS}  # timm drops these on export
    labels = {k: cfg.pop(k) for k in _LABEL_KEYS if k in cfg}
    if cfg.get("num_classes", info["num_classes"]) != info["num_classes"]:
        labels = {}  # another head: the source's label names no longer apply (timm does this)
    cfg["num_classes"] = info["num_classes"]
    return {
        "architecture": arch,
        "num_classes": info["num_classes"],
        **labels,
        "pretrained_cfg": cfg,
    }


def logits(model: nn.Module, x_nchw: np.ndarray) -> np.ndarray:
    """Eval-mode logits of an NCHW float32 batch, as float64 NumPy."""
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(x_nchw)).double().numpy()


def versions() -> dict[str, Any]:
    """torch, timm and the export tools' versions; device and CPU threads."""
    out: dict[str, Any] = package_versions(("torch", "timm", "onnx", "onnxscript", "onnxruntime"))
    out.update(
        device="cuda" if torch.cuda.is_available() else "cpu", threads=torch.get_num_threads()
    )
    return out
