"""The export matrix: every way to ship an ECA network, run and numerically checked.

Each backend package has a ``deploy`` module (``eca_multi.torch.deploy``,
``eca_multi.keras.deploy``, ``eca_multi.flax.deploy``) whose
``run_export_matrix(models, workdir)`` exports the ECA layer and ECA-ResNet50 along each of its
paths, reloads the artifact, runs it at a *different* batch and spatial size than it was exported
at, and returns one row per (path, model)::

    {"group", "path", "model", "ran", "max_abs_err", "tolerance", "ok", "reason", "seconds"}

This module is framework-free: it takes the groups from :data:`eca_multi.registry.GROUPS`, runs
each in its own interpreter (one per Keras backend: Keras picks its backend at import) through
the one worker entry (``python -m eca_multi.worker deploy``), checks that every expected row came
back and prints the table (``eca-multi export``). Checks:

* the layer (C = 64, k = 3) against the float64 reference (:mod:`eca_multi.reference`) under the
  conformance table's float32 forward tolerance (2e-6 abs + 2e-6 rel);
* a model's logits against the eager model of the same framework, max abs <= 1e-4, with random
  non-trivial BatchNorm statistics (eval mode) so the logits mean something.

A path that cannot run on this stack is a row with ``ran = False`` and the measured error as its
reason; it passes only when that error is the documented one (``documented=`` in :func:`check`).
"""

from __future__ import annotations

import json
import re
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .progress import Stage, stage
from .registry import GROUPS, Group, resolve

__all__ = [
    "DEFAULT_MODELS",
    "EXPECTED",
    "GROUPS",
    "LOGIT_ATOL",
    "check",
    "compare_states",
    "format_table",
    "random_batchnorm_state",
    "resolve_groups",
    "run_export_matrix",
    "summarize",
]

LOGIT_ATOL = 1e-4  # max abs logit difference of an exported model vs its eager model
DEFAULT_MODELS = ("layer", "eca_resnet50")

# the paths each group must report (per model); a path missing from a worker's rows fails
EXPECTED: dict[str, tuple[str, ...]] = {g.name: g.export_paths for g in GROUPS}


def resolve_groups(names: str | Sequence[str] | None) -> list[Group]:
    """Groups by name (comma-separated or a list); None or "all" = every group.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    return resolve(names, "export group")


def _models(models: str | Sequence[str] | None) -> tuple[str, ...]:
    if models is None:
        return DEFAULT_MODELS
    if isinstance(models, str):
        models = [m.strip() for m in models.split(",") if m.strip()]
    from .archs import ARCHS

    bad = [m for m in models if m != "layer" and m not in ARCHS]
    if bad:
        raise ValueError(f"unknown model(s) {', '.join(bad)}; use 'layer' or one of {list(ARCHS)}")
    return tuple(models)


# ---------------------------------------------------------------------------------------------
# helpers for the backend modules (framework-free)


def check(
    path: str,
    model: str,
    run: Callable[[], tuple[Any, Any]],
    *,
    documented: tuple[str, str] | None = None,
    note: str = "",
) -> dict[str, Any]:
    """Run one export path and return its row.

    Args:
        path: the path's name (a key of :data:`EXPECTED`).
        model: ``"layer"`` (checked against the float64 reference under the conformance table's
            float32 forward tolerance) or an architecture (logits vs eager, <= :data:`LOGIT_ATOL`).
        run: exports, reloads and runs; returns (got, want) as arrays.
        documented: (exception class name, regex) of the error this stack is known to raise on
            this path; that error gives a passing row with ``ran = False`` and the measured
            message as the reason. Any other error fails the row.
        note: shapes or other facts to show next to the row.
    """
    from .conformance.tolerances import compare, tolerance

    t0 = time.perf_counter()
    if model == "layer":
        tol = tolerance("float32", "forward")
        tol_text = f"{tol.atol:.0e}+{tol.rtol:.0e}r (f64 ref)"
    else:
        tol_text = f"{LOGIT_ATOL:.0e} (eager)"
    row: dict[str, Any] = {"path": path, "model": model, "tolerance": tol_text, "note": note}
    try:
        got, want = run()
    except Exception as e:  # a failing path is a row, never a crash of the matrix
        msg = f"{type(e).__name__}: {' '.join(str(e).split())}"[:600]
        ok = documented is not None and (
            type(e).__name__ == documented[0] and re.search(documented[1], str(e)) is not None
        )
        row.update(ran=False, max_abs_err=None, ok=ok, reason=msg)
        if not ok:
            row["traceback"] = traceback.format_exc(limit=12)
    else:
        if model == "layer":
            res = compare(got, want, "float32", "forward")
            ok, err = res["ok"], res["max_abs"]
            reason = res.get("error", "")
        else:
            got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
            if got.shape != want.shape:
                ok, err, reason = False, float("inf"), f"shape {got.shape} != eager {want.shape}"
            else:
                err = float(np.abs(got - want).max())
                ok, reason = bool(err <= LOGIT_ATOL), ""
        if not ok and not reason:
            reason = f"max_abs={err:.2e} > tolerance {tol_text}"
        row.update(ran=True, max_abs_err=err, ok=bool(ok), reason=reason)
    row["seconds"] = round(time.perf_counter() - t0, 2)
    return row


def random_batchnorm_state(
    state: Mapping[str, np.ndarray], name: str, seed: int = 0
) -> dict[str, np.ndarray]:
    """Canonical weights with random, well-posed BatchNorm affine parameters and statistics.

    For the Keras and Flax rows (torch uses ``randomize_batchnorm_``, calibrated on an image):
    gamma ~ U(0.5, 1.5) (U(0.2, 0.6) for the BN that ends a residual branch), beta ~ N(0, 0.1),
    running mean ~ N(0, 0.1), running variance ~ U(0.5, 1.5): every channel differs, so a
    swapped mean / variance or gamma / beta shows in the logits.
    """
    from . import archs

    last = archs.branch_end_bns(name)
    rng = np.random.default_rng(seed)
    out = dict(state)
    for key, v in state.items():
        if not key.endswith(".running_var"):
            continue
        bn, n = key[: -len(".running_var")], int(v.shape[0])
        lo, hi = (0.2, 0.6) if bn in last else (0.5, 1.5)
        out[f"{bn}.weight"] = rng.uniform(lo, hi, n).astype(np.float32)
        out[f"{bn}.bias"] = (0.1 * rng.standard_normal(n)).astype(np.float32)
        out[f"{bn}.running_mean"] = (0.1 * rng.standard_normal(n)).astype(np.float32)
        out[f"{bn}.running_var"] = rng.uniform(0.5, 1.5, n).astype(np.float32)
    return out


def compare_states(
    got: Mapping[str, Any], want: Mapping[str, Any], start: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Compare two trained states (name -> array), e.g. distributed vs single-device.

    Returns ``max_abs_diff`` and ``max_scaled_diff`` (each tensor's max |got - want| divided by
    max(1, max |want|): absolute for small tensors, relative for large BatchNorm variances, as
    the conformance table scales gradient tolerances), the worst tensor's name, the tensor count
    and, with ``start``, ``max_abs_update`` (how far training moved the weights: a check that
    compares untrained weights would be meaningless).

    Raises:
        ValueError: the two states do not have the same names and shapes.
    """
    if list(got) != list(want):
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        raise ValueError(f"states differ in names: missing {missing[:5]}, unexpected {extra[:5]}")
    diffs: dict[str, float] = {}
    scaled: dict[str, float] = {}
    for k in want:
        g, w = np.asarray(got[k], np.float64), np.asarray(want[k], np.float64)
        if g.shape != w.shape:
            raise ValueError(f"{k}: shape {g.shape} != {w.shape}")
        diffs[k] = float(np.abs(g - w).max(initial=0.0))
        scaled[k] = diffs[k] / max(1.0, float(np.abs(w).max(initial=0.0)))
    worst = max(scaled, key=scaled.__getitem__)
    out = {
        "max_abs_diff": max(diffs.values()),
        "max_scaled_diff": scaled[worst],
        "worst": worst,
        "tensors": len(diffs),
    }
    if start is not None:
        out["max_abs_update"] = max(
            float(np.abs(np.asarray(want[k], np.float64) - np.asarray(start[k], np.float64)).max())
            for k in want
        )
    return out


def layer_case(data_format: str, seed: int = 0) -> dict[str, Any]:
    """The layer rows' data: C = 64 (k = 3 by the rule), export at (2, 8, 8), run at (3, 5, 7)."""
    rng = np.random.default_rng(seed)
    cf = data_format == "channels_first"
    export_shape = (2, 64, 8, 8) if cf else (2, 8, 8, 64)
    run_shape = (3, 64, 5, 7) if cf else (3, 5, 7, 64)
    weight = rng.uniform(-1, 1, (1, 1, 3)).astype(np.float32)  # asymmetric: a flip would fail
    x = (2 * rng.standard_normal(run_shape)).astype(np.float32)
    return {
        "weight": weight,
        "export_x": rng.standard_normal(export_shape).astype(np.float32),
        "x": x,
        "data_format": data_format,
        "note": f"export {export_shape}, run {run_shape}",
    }


def layer_reference(case: dict[str, Any]) -> np.ndarray:
    from . import reference

    return reference.forward(
        case["x"].astype(np.float64), case["weight"], data_format=case["data_format"]
    )


def model_inputs(data_format: str, seed: int = 1) -> tuple[np.ndarray, np.ndarray, str]:
    """Model rows: export at batch 2 x 64 x 64, run at batch 3 x 96 x 80 (other N, H, W)."""
    rng = np.random.default_rng(seed)
    shapes = [(2, 3, 64, 64), (3, 3, 96, 80)]
    if data_format == "channels_last":
        shapes = [(n, h, w, c) for n, c, h, w in shapes]
    a, b = (rng.standard_normal(s).astype(np.float32) for s in shapes)
    return a, b, f"export {shapes[0]}, run {shapes[1]}"


# ---------------------------------------------------------------------------------------------
# the driver


def run_group(
    group: Group, models: Sequence[str], timeout: float = 1800, out: str | None = None
) -> dict[str, Any]:
    """One group's rows from a fresh interpreter; missing rows become failed rows.

    ``out``: keep the exported files under ``out/<group>/`` (else a temporary folder)."""
    from .conformance.runner import run_json_worker

    opts = {"models": list(models), "out": None if out is None else str(Path(out).resolve())}
    args = ["deploy", "--group", group.name, "--opts", json.dumps(opts)]
    data, msg = run_json_worker("eca_multi.worker", args, group.env, timeout)
    rows = [] if data is None else data["rows"]
    for r in rows:
        r["group"] = group.name
    have = {(r["path"], r["model"]) for r in rows}
    why = f"worker {msg}" if data is None else "the worker returned no row for it"
    for path in EXPECTED[group.name]:
        for model in models:
            if (path, model) not in have:
                rows.append(
                    {"group": group.name, "path": path, "model": model, "ran": False,
                     "max_abs_err": None, "tolerance": "", "ok": False, "reason": why,
                     "seconds": 0.0, "note": ""}
                )  # fmt: skip
    order = {p: i for i, p in enumerate(EXPECTED[group.name])}
    rows.sort(key=lambda r: (order.get(r["path"], len(order)), list(models).index(r["model"])))
    return {"rows": rows, "env": (data or {}).get("env", {})}


def run_export_matrix(
    groups: Iterable[Group] | None = None,
    models: str | Sequence[str] | None = None,
    jobs: int = 2,
    out: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Every group's rows ({"rows": [...], "env": {group: versions}}), ``jobs`` groups at once;
    ``out``: keep every exported file under ``out/<group>/``; ``progress``: one step per group
    on stderr (:mod:`eca_multi.progress`)."""
    groups = list(GROUPS if groups is None else groups)
    models = _models(models)

    def one(g: Group, bar: Stage) -> dict[str, Any]:
        rows = run_group(g, models, out=out)
        bar.update()
        return rows

    with stage(len(groups), "export", unit="groups", enabled=progress) as bar:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            outs = list(pool.map(lambda g: one(g, bar), groups))
    return {
        "rows": [r for o in outs for r in o["rows"]],
        "env": {g.name: o["env"] for g, o in zip(groups, outs, strict=True)},
    }


def _status(r: dict[str, Any]) -> str:
    if r["ran"]:
        return "ok" if r["ok"] else "FAIL"
    return "not run" if r["ok"] else "ERROR"


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The matrix as a fixed-width table (one line per group x path x model), reasons below."""
    heads = ("group", "path", "model", "ran", "max abs err", "tolerance", "status")
    cells = [
        (
            r["group"],
            r["path"],
            r["model"],
            "yes" if r["ran"] else "no",
            "-" if r["max_abs_err"] is None else f"{r['max_abs_err']:.1e}",
            r["tolerance"],
            _status(r) + (f" [{i}]" if r.get("reason") else ""),
        )
        for i, r in enumerate(rows, 1)
    ]
    widths = [max(len(h), *(len(c[j]) for c in cells)) for j, h in enumerate(heads)]

    def line(c: Sequence[str]) -> str:
        return "  ".join(x.ljust(w) for x, w in zip(c, widths, strict=True)).rstrip()

    out = [line(heads), line(["-" * w for w in widths]), *(line(c) for c in cells)]
    notes = [f"[{i}] {r['reason']}" for i, r in enumerate(rows, 1) if r.get("reason")]
    return "\n".join(out + ([""] + notes if notes else []))


def summarize(rows: Sequence[dict[str, Any]]) -> tuple[bool, str]:
    """(every row passed, a one-line count)."""
    ran = sum(r["ran"] and r["ok"] for r in rows)
    documented = sum(not r["ran"] and r["ok"] for r in rows)
    failed = sum(not r["ok"] for r in rows)
    return failed == 0, f"{ran} passed, {failed} failed ({documented} not run, reason documented)"
