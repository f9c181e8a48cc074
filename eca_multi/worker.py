"""The one worker entry: run one process group's adapter for one role and write JSON.

Conformance, bench and export all run each group of :data:`eca_multi.registry.GROUPS` (torch,
one per Keras backend, flax) in a fresh interpreter with the group's environment (Keras picks its
backend at import), through :func:`eca_multi.conformance.runner.run_json_worker`::

    python -m eca_multi.worker conformance --group torch --opts '{"rows": ["torch"]}' --json o.json
    python -m eca_multi.worker bench --group keras-jax --opts '{"quick": true}' --json o.json
    python -m eca_multi.worker deploy --group flax --opts '{"models": ["layer"]}' --json o.json
    python -m eca_multi.worker impl --opts '{"impl": "timm-eca"}' --json o.json

``impl`` runs one implementation outside eca-multi (:mod:`eca_multi.conformance.impl`) in a
process of its own; it needs no group.

The adapter module is the group's ``<package>._conformance`` / ``_bench`` / ``deploy``, found by
module path (:meth:`eca_multi.registry.Group.module`). Every result carries the same versions
report under ``"env"``: the backend io's ``versions()`` (or why it could not be imported), and
the group's environment variables.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .registry import BACKENDS, GROUPS, Group, resolve

__all__ = ["ROLES", "main", "versions"]


def versions(group: Group) -> dict[str, Any]:
    """The group's versions report (never raises: a missing backend says so)."""
    try:
        out = dict(importlib.import_module(group.module("io")).versions())
    except ImportError as e:
        out = {"error": f"cannot import {group.module('io')}: {e}"}
    return {**out, **group.env}


def _conformance(group: Group, opts: dict[str, Any]) -> dict[str, Any]:
    from .conformance.backends import resolve_backends
    from .conformance.cases import CASES, get_case
    from .conformance.worker import run_backend

    cases = [get_case(c) for c in opts["cases"]] if opts.get("cases") else list(CASES)
    names = opts.get("rows") or [r.name for r in group.rows]
    results, envs, report = [], {}, versions(group)
    for backend in resolve_backends(names):
        records, env = run_backend(backend, cases, opts.get("goldens"))
        results += records
        envs[backend.name] = {**report, **env}  # env: what the adapter's setup() set
    return {"results": results, "env": envs}


def _bench(group: Group, opts: dict[str, Any]) -> dict[str, Any]:
    mod = importlib.import_module(group.module("bench"))
    return {"rows": mod.run(opts), "env": versions(group)}


def _deploy(group: Group, opts: dict[str, Any]) -> dict[str, Any]:
    """The group's export rows; the artifacts are kept under ``opts["out"]/<group>`` if given."""
    mod = importlib.import_module(group.module("deploy"))
    if opts.get("out"):
        out = Path(opts["out"]) / group.name
        out.mkdir(parents=True, exist_ok=True)
        rows = mod.run_export_matrix(tuple(opts["models"]), workdir=out)
        return {"rows": rows, "env": versions(group), "out": str(out)}
    with tempfile.TemporaryDirectory(prefix="eca-deploy-") as tmp:
        rows = mod.run_export_matrix(tuple(opts["models"]), workdir=tmp)
    return {"rows": rows, "env": versions(group)}


def _impl(group: Group | None, opts: dict[str, Any]) -> dict[str, Any]:
    """One implementation outside eca-multi (``opts["impl"]``: its --impl spec), every case."""
    from .conformance.cases import get_case
    from .conformance.impl import run_spec

    cases = [get_case(c) for c in opts["cases"]] if opts.get("cases") else None
    return run_spec(opts["impl"], cases, opts.get("goldens"))


# the group: a Group (None only for impl: main refuses the others without --group)
ROLES: dict[str, Callable[[Any, dict[str, Any]], dict[str, Any]]] = {
    "impl": _impl,
    "conformance": _conformance,
    "bench": _bench,
    "deploy": _deploy,
}
# roles that run a second framework in the group's process (bench: the vs-timm rows run timm
# beside Keras), so the backend's preload (torch before TensorFlow) must come first; conformance
# and deploy use the group's framework alone and skip it (torch + torch._dynamo: ~7 s a process)
CROSS_FRAMEWORK_ROLES = frozenset({"bench"})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eca_multi.worker")
    p.add_argument("role", choices=sorted(ROLES))
    p.add_argument("--group", default=None, choices=[g.name for g in GROUPS])
    p.add_argument("--opts", default="{}", help="the role's options as JSON")
    p.add_argument("--json", required=True, help="where to write the results")
    a = p.parse_args(argv)
    if a.group is None and a.role != "impl":
        p.error(f"{a.role} needs --group")
    group = resolve(a.group)[0] if a.group is not None else None
    if group is not None and a.role in CROSS_FRAMEWORK_ROLES:  # e.g. torch before Keras
        for name in BACKENDS[group.backend].preload:
            try:
                importlib.import_module(name)
            except ImportError:
                pass  # the order only matters when both frameworks are present
    data = ROLES[a.role](group, json.loads(a.opts))
    with open(a.json, "w") as f:
        json.dump(data, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
