"""The one registry of backends and process groups, and the backend contract (framework-free).

Everything above the core (porting, the conformance runner, benchmarks, export) finds a backend
through this table, by module path, and never branches on a framework's name. A backend is one
package ``eca_multi.<framework>`` with the same file map as the others (docs/ARCHITECTURE.md):

=================  ============================================================================
``layer.py``       ECA, on the family's attention base
``family.py``      SE, SE-Var1/2/3, SE-GC, ECA-NS
``models.py``      the model builders, walking :mod:`eca_multi.archs`' descriptions
``io.py``          canonical <-> native (layers, models) and the framework's own files: the
                   :class:`BackendIO` contract below
``_ops.py``        pool, gate, scale, fused scale-add: the one code path every attention runs
``_conformance``   harness adapter: ``setup() -> versions``, ``run_case(variant, case, golden)``
``_bench``         harness adapter: ``run(opts) -> rows``
``deploy``         harness adapter: ``run_export_matrix(models, workdir) -> rows``, ``versions()``
=================  ============================================================================

A *group* is one worker process: a backend package and the environment it needs (Keras picks its
backend at import, so each Keras backend is its own group). Conformance rows, bench rows and
export rows all come from the same groups; a group lists the variants its conformance adapter
runs and the export paths its deploy adapter must report.

Deleting a backend's folder removes its groups' rows (reported as not installed) and nothing else.
This module imports nothing but the standard library and NumPy (for type hints).
"""

from __future__ import annotations

import importlib.metadata
import platform
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "BACKENDS",
    "CANONICAL_CONTAINERS",
    "FORMATS",
    "GROUPS",
    "READERS",
    "BackendIO",
    "BackendNotInstalled",
    "Group",
    "Row",
    "conformance_rows",
    "framework_of",
    "package_versions",
    "resolve",
]


class BackendNotInstalled(ImportError):
    """A backend package (or the framework it needs) cannot be imported."""


@dataclass(frozen=True)
class Backend:
    """A backend package: where it lives and what must be imported before it."""

    name: str  # the framework's name as users say it: "torch", "keras", "flax"
    package: str  # "eca_multi.torch"
    # imported first when present (triton, loaded by torch._dynamo, segfaults once TensorFlow is
    # loaded, and a port may need Keras first and timm later)
    preload: tuple[str, ...] = ()

    @property
    def io(self) -> str:
        return f"{self.package}.io"


BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend("torch", "eca_multi.torch"),
        Backend("keras", "eca_multi.keras", ("torch", "torch._dynamo")),
        Backend("flax", "eca_multi.flax"),
    )
}

# weight file formats (see eca_multi.weights.sources) -> the backend whose models run them and
# whose io reads them; the canonical containers need no framework to read (torch runs them: the
# canonical names and layouts are torch's)
FORMATS: dict[str, str] = {
    "official": "torch",
    "torch-state-dict": "torch",
    "safetensors": "torch",
    "npz": "torch",
    "keras-weights": "keras",
    "keras-archive": "keras",
    "flax": "flax",
    "flax-orbax": "flax",  # an Orbax checkpoint folder (eca_multi.flax.orbax)
}
CANONICAL_CONTAINERS = ("safetensors", "npz")
# file containers (eca_multi.weights.sources.sniff, by their bytes) -> the backend whose io reads
# them; the canonical containers are read without a framework
READERS: dict[str, str] = {
    "torch": "torch",
    "keras-weights": "keras",
    "keras-archive": "keras",
    "flax": "flax",
    "flax-orbax": "flax",
}


def framework_of(fmt: str) -> str:
    """The backend whose model a source format runs in (a key of :data:`BACKENDS`)."""
    try:
        return FORMATS[fmt]
    except KeyError:
        raise ValueError(f"unknown weight format {fmt!r}; known: {', '.join(FORMATS)}") from None


@dataclass(frozen=True)
class Row:
    """One conformance row: a variant of a group's adapter."""

    name: str  # "torch-compile"
    variant: str  # passed to the adapter's run_case
    note: str = ""


@dataclass(frozen=True)
class Group:
    """One worker process: a backend package, its environment and what it runs there."""

    name: str
    backend: str  # a key of BACKENDS
    env: dict[str, str] = field(default_factory=dict)
    rows: tuple[Row, ...] = ()  # conformance rows
    export_paths: tuple[str, ...] = ()  # the paths its deploy adapter must report, per model

    @property
    def package(self) -> str:
        return BACKENDS[self.backend].package

    def module(self, role: str) -> str:
        """The adapter module for ``role`` ("conformance", "bench" or "deploy")."""
        return f"{self.package}.{_ROLES[role]}"


_ROLES = {"conformance": "_conformance", "bench": "_bench", "deploy": "deploy", "io": "io"}

# TF_ENABLE_ONEDNN_OPTS=1: TensorFlow's own CPU Conv2D takes only NHWC; its oneDNN kernels also
# take NCHW (channels_first models in eager). oneDNN is on by default only on Intel CPUs with
# AVX-512 / AMX; set here, every x86 CPU (AMD EPYC included) runs the same kernels
_TF, _JAX, _TORCH = (
    {"KERAS_BACKEND": "tensorflow", "TF_ENABLE_ONEDNN_OPTS": "1"},
    {"KERAS_BACKEND": "jax"},
    {"KERAS_BACKEND": "torch"},
)
GROUPS: tuple[Group, ...] = (
    Group(
        "torch",
        "torch",
        rows=(
            Row("torch", "eager"),
            Row("torch-compile", "compile", "torch.compile(fullgraph=True), fwd+bwd"),
        ),
        export_paths=("torch.export", "torchscript.trace", "torchscript.script", "onnx.dynamo+ort"),
    ),
    Group(
        "keras-tensorflow",
        "keras",
        _TF,
        (
            Row("keras-tensorflow", "eager"),
            Row("keras-tensorflow-jit", "jit", "XLA: jit_compile=True"),
        ),
        (".keras", "saved_model", "litert"),
    ),
    Group(
        "keras-jax",
        "keras",
        _JAX,
        (Row("keras-jax", "eager"), Row("keras-jax-jit", "jit", "jax.jit")),
        (".keras", "saved_model(jax2tf)"),
    ),
    Group("keras-torch", "keras", _TORCH, (Row("keras-torch", "eager"),), (".keras",)),
    Group(
        "flax",
        "flax",
        rows=(
            Row("flax-nnx", "nnx"),
            Row("flax-nnx-jit", "nnx-jit", "nnx.jit"),
            Row("flax-linen", "linen", "Linen apply under jax.jit"),
        ),
        export_paths=("jax.export",),
    ),
)
_GROUPS = {g.name: g for g in GROUPS}


def resolve(names: str | Sequence[str] | None, what: str = "group") -> list[Group]:
    """Groups by name (comma-separated string or list); None or "all" = every group.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    if names is None or names == "all" or list(names) == ["all"]:
        return list(GROUPS)
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    bad = [n for n in names if n not in _GROUPS]
    if bad:
        raise ValueError(f"unknown {what}(s) {', '.join(bad)}; known: {', '.join(_GROUPS)}")
    return [_GROUPS[n] for n in names]


def conformance_rows() -> list[tuple[Group, Row]]:
    """Every conformance row with its group, in table order."""
    return [(g, r) for g in GROUPS for r in g.rows]


def package_versions(distributions: Iterable[str]) -> dict[str, str]:
    """Installed versions (from package metadata, nothing imported) and Python's; "missing" for
    a distribution that is not installed. Every backend's ``io.versions()`` starts from this."""
    out = {"python": platform.python_version()}
    for dist in distributions:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "missing"
    return out


@runtime_checkable
class BackendIO(Protocol):
    """What ``eca_multi.<framework>.io`` provides (tests/test_backend_contract.py checks each
    backend's io module against it with ``isinstance``).

    Models are whatever the framework calls a model (an ``nn.Module``, a ``keras.Model``, an
    ``nnx.Module``); states are canonical: torch names and layouts, NumPy arrays.
    """

    FRAMEWORK: str  # the key of BACKENDS
    SUFFIXES: tuple[str, ...]  # the file names write_file accepts

    def create_model(self, arch: str, num_classes: int | None, kernel_sizes: Any) -> Any:
        """A fresh model of ``arch`` (random init)."""

    def export_canonical_model(self, model: Any, name: str | None = None) -> dict[str, np.ndarray]:
        """A model's weights as a canonical state."""

    def load_canonical_model(
        self, model: Any, state: Mapping[str, Any], name: str | None = None, strict: bool = True
    ) -> None:
        """Load a canonical state into ``model`` in place (strict: every bad key listed)."""

    def detect_format(self, path: Any, container: str) -> str:
        """The format (a key of :data:`FORMATS`) of a file whose container this backend reads."""

    def read_file(
        self, path: Any, fmt: str, arch: str, num_classes: int | None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """A native file as (canonical state, info with at least "format"); never runs code."""

    def load_file(
        self, path: Any, fmt: str, arch: str, num_classes: int | None, kernel_sizes: Any
    ) -> Any:
        """A native file as a model of this framework, the way a user of it would load it."""

    def write_file(
        self,
        state: Mapping[str, Any],
        path: Any,
        arch: str,
        info: Mapping[str, Any],
        overwrite: bool,
    ) -> None:
        """Write a canonical state as this framework's file (atomic; never overwrites unless
        asked)."""

    def default_name(self, arch: str) -> str:
        """The file name a port writes when given a folder."""

    def logits(self, model: Any, x_nchw: np.ndarray) -> np.ndarray:
        """Eval-mode logits for an NCHW float32 batch, as float64 NumPy."""

    def versions(self) -> dict[str, Any]:
        """The one versions report of this backend (framework and tool versions, device), written
        next to every conformance, bench and export result."""
