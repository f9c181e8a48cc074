"""The conformance backends: name -> (adapter module, variant, process group, environment).

The rows come from :data:`eca_multi.registry.GROUPS`, the one registry of process groups that
bench and export use too. Each backend package provides ``eca_multi.<framework>._conformance``
with::

    setup() -> dict                 # full precision (TF32 off, JAX matmul float32); versions
    run_case(variant, case, golden) -> {"y", "dx", "dw", "y_dtype", "dx_dtype"}

Backends in one group share a subprocess; Keras backends each need their own process because
Keras picks its backend at import (KERAS_BACKEND). Only module paths are named here, so deleting
a backend's folder removes its rows (reported as missing) and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..registry import conformance_rows

__all__ = ["BACKENDS", "Backend", "resolve_backends"]


@dataclass(frozen=True)
class Backend:
    name: str
    module: str
    variant: str
    group: str
    env: dict[str, str] = field(default_factory=dict)
    note: str = ""


BACKENDS: tuple[Backend, ...] = tuple(
    Backend(row.name, group.module("conformance"), row.variant, group.name, group.env, row.note)
    for group, row in conformance_rows()
)  # from the one registry (eca_multi.registry.GROUPS)

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
