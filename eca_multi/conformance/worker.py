"""Run conformance cases for the rows of one process group (inside the worker process).

Started by the runner through the one worker entry, one subprocess per framework / Keras backend
(Keras picks its backend at import)::

    python -m eca_multi.worker conformance --group torch --json out.json

For each backend x case the adapter's outputs are compared with the committed goldens under the
tolerance table (y: forward, dx / dw: grad) and the output dtypes are checked. A backend whose
adapter cannot be imported is reported as ``missing``.
"""

from __future__ import annotations

import importlib
import time
import traceback
from collections.abc import Iterable
from typing import Any

from ..progress import tick
from .backends import Backend
from .cases import Case
from .generate import golden_grads, load_golden
from .tolerances import compare

__all__ = ["check_outputs", "error_fields", "run_backend"]

CHECKS = (("y", "forward"), ("dx", "grad"))


def error_fields(e: Exception) -> dict[str, Any]:
    """The fields of a case record whose run raised (inside an ``except`` block)."""
    tb = traceback.format_exc(limit=8)
    return {"status": "error", "ok": False, "error": f"{type(e).__name__}: {e}", "traceback": tb}


def grad_check_name(param: str) -> str:
    """Check name of a weight's gradient: ``dw`` for ECA's kernel, ``d[<name>]`` otherwise."""
    return "dw" if param == "conv.weight" else f"d[{param}]"


def check_outputs(case: Case, golden: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    """Compare one adapter result with the golden; returns per-tensor numbers and ``ok``.

    The adapter returns weight gradients as ``dparams`` ({canonical name: array}); ECA-only
    adapters may return ``dw`` (the kernel's gradient) instead. Every golden gradient is checked.
    """
    checks = {name: compare(out[name], golden[name], case.dtype, kind) for name, kind in CHECKS}
    dparams = out["dparams"] if "dparams" in out else {"conv.weight": out["dw"]}
    for name, ref in golden_grads(golden).items():
        if name not in dparams:
            checks[grad_check_name(name)] = {"ok": False, "got": "missing", "want": name}
            continue
        checks[grad_check_name(name)] = compare(dparams[name], ref, case.dtype, "grad")
    for key in ("y_dtype", "dx_dtype"):
        got = out.get(key)
        checks[key] = {"ok": got == case.dtype, "got": got, "want": case.dtype}
    return {"ok": all(c["ok"] for c in checks.values()), "checks": checks}


def run_backend(
    backend: Backend, cases: Iterable[Case], goldens_dir: str | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """All cases of one backend; never raises for a failing case (it becomes a failed record)."""
    base = {"backend": backend.name}
    try:
        adapter = importlib.import_module(backend.module)
    except ImportError as e:
        msg = f"cannot import {backend.module}: {e}"
        return [
            {**base, "case": c.id, "status": "missing", "ok": False, "error": msg} for c in cases
        ], {"error": msg}
    env = adapter.setup()
    records = []
    for case in cases:
        t0 = time.perf_counter()
        rec: dict[str, Any] = {**base, "case": case.id, "dtype": case.dtype}
        try:
            supported = getattr(adapter, "ATTENTIONS", ("eca",))
            if case.attention not in supported:
                raise NotImplementedError(
                    f"the {backend.name} adapter does not implement attention {case.attention!r}"
                )
            golden = load_golden(case.id, goldens_dir)
            out = adapter.run_case(backend.variant, case, golden)
            rec.update(check_outputs(case, golden, out), status="ran")
        except Exception as e:  # a crash in one case is that case's failure
            rec.update(error_fields(e))
        rec["seconds"] = round(time.perf_counter() - t0, 3)
        records.append(rec)
        tick(f"{backend.name}/{case.id}")
    return records, env
