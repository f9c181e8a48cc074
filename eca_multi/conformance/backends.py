"""The conformance backends: name -> (adapter module, variant, process group, environment).

Each backend package provides ``eca_multi.<framework>._conformance`` with::

    setup() -> dict                 # full precision (TF32 off, JAX matmul float32); versions
    run_case(variant, case, golden) -> {"y", "dx", "dw", "y_dtype", "dx_dtype"}

Backends in one group share a subprocess; Keras backends each need their own process because
Keras picks its backend at import (KERAS_BACKEND). Only module paths are named here, so deleting
a backend's folder removes its rows (reported as missing) and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["BACKENDS", "Backend", "resolve_backends"]


@dataclass(frozen=True)
class Backend:
    name: str
    module: str
    variant: str
    group: str
    env: dict[str, str] = field(default_factory=dict)
    note: str = ""


_T, _K, _F = (
    "eca_multi.torch._conformance",
    "eca_multi.keras._conformance",
    "eca_multi.flax._conformance",
)

BACKENDS: tuple[Backend, ...] = (
    Backend("torch", _T, "eager", "torch"),
    Backend("torch-compile", _T, "compile", "torch", note="torch.compile(fullgraph=True), fwd+bwd"),
    Backend("keras-tensorflow", _K, "eager", "keras-tensorflow", {"KERAS_BACKEND": "tensorflow"}),
    Backend(
        "keras-tensorflow-jit",
        _K,
        "jit",
        "keras-tensorflow",
        {"KERAS_BACKEND": "tensorflow"},
        "XLA: jit_compile=True",
    ),
    Backend("keras-jax", _K, "eager", "keras-jax", {"KERAS_BACKEND": "jax"}),
    Backend("keras-jax-jit", _K, "jit", "keras-jax", {"KERAS_BACKEND": "jax"}, "jax.jit"),
    Backend("keras-torch", _K, "eager", "keras-torch", {"KERAS_BACKEND": "torch"}),
    Backend("flax-nnx", _F, "nnx", "flax"),
    Backend("flax-nnx-jit", _F, "nnx-jit", "flax", note="nnx.jit"),
    Backend("flax-linen", _F, "linen", "flax", note="Linen apply under jax.jit"),
)

_BY_NAME = {b.name: b for b in BACKENDS}


def resolve_backends(names: str | list[str] | None) -> list[Backend]:
    """Backends by name (comma-separated string or list); None or "all" = every backend.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    if names is None or names == "all" or names == ["all"]:
        return list(BACKENDS)
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    out = []
    for n in names:
        n = n.strip()
        if n not in _BY_NAME:
            raise ValueError(f"unknown backend {n!r}; known: {', '.join(_BY_NAME)}")
        out.append(_BY_NAME[n])
    return out
