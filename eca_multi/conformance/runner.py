"""Run the conformance matrix: one worker subprocess per process group, then a backend x case table.

Used by ``eca-multi conformance`` and by the pytest conformance test. Each group (torch, one per
Keras backend, flax) runs in its own process with its environment (KERAS_BACKEND), so the Keras
backends never share a process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ..progress import PROGRESS_ENV, Stage, read_ticks, stage
from .backends import Backend
from .cases import CASES, Case
from .tolerances import describe_failure, tolerance

__all__ = [
    "format_matrix",
    "format_report",
    "grad_summary",
    "impl_summary",
    "run_group",
    "run_impls",
    "run_json_worker",
    "run_matrix",
    "summarize",
]

SHORT = {
    "torch": "torch",
    "torch-compile": "t.compile",
    "keras-tensorflow": "k.tf",
    "keras-tensorflow-jit": "k.tf.jit",
    "keras-jax": "k.jax",
    "keras-jax-jit": "k.jax.jit",
    "keras-torch": "k.torch",
    "flax-nnx": "nnx",
    "flax-nnx-jit": "nnx.jit",
    "flax-linen": "linen",
}


def run_group(
    backends: list[Backend],
    cases: Sequence[Case] | None = None,
    goldens_dir: str | None = None,
    timeout: float = 1800,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run one process group's backends in a fresh interpreter; returns the worker's JSON.

    ``on_progress(n)`` hears of every finished backend x case while the worker runs.
    """
    opts = {
        "rows": [b.name for b in backends],
        "cases": None if cases is None else [c.id for c in cases],
        "goldens": None if goldens_dir is None else str(goldens_dir),
    }
    data, msg = run_json_worker(
        "eca_multi.worker",
        ["conformance", "--group", backends[0].group, "--opts", json.dumps(opts)],
        backends[0].env,
        timeout,
        on_progress,
    )
    if data is None:
        msg = f"worker for {backends[0].group} {msg}"
        cs = cases if cases is not None else CASES
        return {
            "results": [
                {"backend": b.name, "case": c.id, "status": "error", "ok": False, "error": msg}
                for b in backends
                for c in cs
            ],
            "env": {},
        }
    return data


def run_json_worker(
    module: str,
    args: list[str],
    env: dict[str, str],
    timeout: float = 1800,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[dict[str, Any] | None, str]:
    """``python -m module *args --json FILE`` in a fresh interpreter with ``env`` added.

    Used by the conformance, bench and export (deploy) drivers with ``eca_multi.worker``: one
    process per group of :data:`eca_multi.registry.GROUPS`. ``on_progress(n)`` is called with the
    steps the worker reports (:func:`eca_multi.progress.tick`) while it runs. Returns (the JSON the
    worker wrote, "") or (None, "exited RC: output tail").
    """
    with tempfile.TemporaryDirectory(prefix="eca-worker-") as tmp:
        out, log, ticks = Path(tmp) / "results.json", Path(tmp) / "output.txt", Path(tmp) / "ticks"
        full_env = {**os.environ, **env, PROGRESS_ENV: str(ticks)}
        full_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        cmd = [sys.executable, "-m", module, *args, "--json", str(out)]
        offset, deadline = 0, time.monotonic() + timeout
        with open(log, "w+b") as output:
            proc = subprocess.Popen(cmd, env=full_env, stdout=output, stderr=subprocess.STDOUT)
            while True:
                try:
                    rc = proc.wait(timeout=0.25)
                except subprocess.TimeoutExpired:
                    rc = None
                if on_progress is not None:
                    steps, offset = read_ticks(ticks, offset)
                    if steps:
                        on_progress(steps)
                if rc is not None:
                    break
                if time.monotonic() > deadline:
                    proc.kill()
                    proc.wait()
                    tail = log.read_bytes().decode(errors="replace")[-2000:]
                    return None, f"timed out after {timeout:.0f} s: {tail}"
            tail = log.read_bytes().decode(errors="replace")[-3000:]
        if rc != 0 or not out.exists():
            return None, f"exited {rc}: {tail}"
        return json.loads(out.read_text()), ""


T = TypeVar("T")


def _map_followed(
    fn: Callable[[T, Callable[[int], None]], dict[str, Any]],
    items: Sequence[T],
    total: int,
    desc: str,
    unit: str,
    jobs: int,
    progress: bool,
) -> list[dict[str, Any]]:
    """``fn(item, on_progress)`` for every item, ``jobs`` at once, one progress stage for all."""
    with stage(total, desc, unit=unit, enabled=progress) as bar:
        follow = _follower(bar)
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            return list(pool.map(lambda item: fn(item, follow), items))


def _follower(bar: Stage) -> Callable[[int], None]:
    """A thread-safe ``on_progress`` that advances ``bar`` (workers report from threads)."""
    lock = threading.Lock()

    def advance(n: int) -> None:
        with lock:
            bar.update(n)

    return advance


def run_matrix(
    backends: list[Backend],
    cases: Sequence[Case] | None = None,
    goldens_dir: str | None = None,
    jobs: int = 2,
    progress: bool = False,
) -> dict[str, Any]:
    """Run every group (``jobs`` subprocesses at once); returns {"results": [...], "env": {...}}.

    ``progress``: a bar per backend x case on stderr (:mod:`eca_multi.progress`).
    """
    groups: dict[str, list[Backend]] = {}
    for b in backends:
        groups.setdefault(b.group, []).append(b)
    total = len(backends) * len(CASES if cases is None else cases)
    outs = _map_followed(
        lambda g, follow: run_group(g, cases, goldens_dir, on_progress=follow),
        list(groups.values()), total, "conformance", "backend x case", jobs, progress,
    )  # fmt: skip
    results, env = [], {}
    for o in outs:
        results += o["results"]
        env.update(o.get("env", {}))
    order = {b.name: i for i, b in enumerate(backends)}
    results.sort(key=lambda r: order[r["backend"]])
    return {"results": results, "env": env}


def run_impls(
    specs: list[str],
    cases: Sequence[Case] | None = None,
    goldens_dir: str | None = None,
    jobs: int = 2,
    progress: bool = False,
) -> dict[str, Any]:
    """Each implementation (``--impl`` spec) in its own interpreter; {"results", "impls"}.

    ``"all"`` stands for every name in the ``eca_multi.conformance`` entry point group; one that
    needs an argument (a factory such as ``onnx``) is then left out and said so.
    """
    from .impl import entry_point_names

    expanded: list[str] = []
    for spec in specs:
        expanded += entry_point_names() if spec == "all" else [spec]
    opts = {
        "cases": None if cases is None else [c.id for c in cases],
        "goldens": None if goldens_dir is None else str(goldens_dir),
    }

    def one(spec: str, follow: Callable[[int], None]) -> dict[str, Any]:
        args = ["impl", "--opts", json.dumps({**opts, "impl": spec})]
        data, msg = run_json_worker("eca_multi.worker", args, {}, on_progress=follow)
        if data is None:
            return {"impl": {"name": spec}, "error": f"worker {msg}", "results": []}
        return data

    total = len(dict.fromkeys(expanded)) * len(CASES if cases is None else cases)
    outs = _map_followed(
        one, list(dict.fromkeys(expanded)), total, "implementations", "impl x case", jobs, progress
    )
    results, impls = [], {}
    for spec, o in zip(dict.fromkeys(expanded), outs, strict=True):
        if o.get("needs_argument") and "all" in specs and spec not in specs:
            continue  # a factory listed by "all": it needs NAME:ARG
        info = {**o["impl"], "spec": spec}
        if "error" in o:
            info["error"] = o["error"]
        impls[info["name"]] = info
        results += o["results"]
    return {"results": results, "impls": impls}


def _cell(rec: dict[str, Any] | None) -> str:
    if rec is None:
        return "-"
    if rec.get("status") == "not_expressible":
        return "n/e"
    if rec.get("status") == "missing":
        return "MISSING"
    if rec.get("status") != "ran":
        return "ERROR"
    mark = "" if rec["ok"] else " FAIL"
    return f"{rec['checks']['y']['max_abs']:.1e}{mark}"


def _columns(data: dict[str, Any], backends: list[Backend]) -> list[str]:
    return [b.name for b in backends] + list(data.get("impls", {}))


def format_matrix(
    data: dict[str, Any], backends: list[Backend], cases: Sequence[Case] | None = None
) -> str:
    """A case x implementation table of forward max abs error (FAIL marks any failed check;
    n/e: the implementation cannot express the case)."""
    cases = list(cases if cases is not None else CASES)
    by = {(r["backend"], r["case"]): r for r in data["results"]}
    names = _columns(data, backends)
    heads = [SHORT.get(n, n) for n in names]
    w0 = max(len(c.id) for c in cases) + 1
    widths = [max(len(h), 12) for h in heads]
    tol_head = "fwd tol"
    lines = [
        "Forward max |out - ref| vs the float64 reference "
        "(FAIL = y, dx, a weight gradient or a dtype check failed; n/e = not expressible)",
        "case".ljust(w0)
        + tol_head.ljust(14)
        + " ".join(h.rjust(w) for h, w in zip(heads, widths, strict=True)),
    ]
    for c in cases:
        t = tolerance(c.dtype, "forward")
        row = c.id.ljust(w0) + f"{t.atol:.0e}+{t.rtol:.0e}r".ljust(14)
        cells = (_cell(by.get((n, c.id))).rjust(w) for n, w in zip(names, widths, strict=True))
        row += " ".join(cells)
        lines.append(row)
    return "\n".join(lines)


def summarize(
    data: dict[str, Any], backends: list[Backend], require_all: bool = True
) -> tuple[bool, list[str]]:
    """(all passed, failure lines in the house format).

    A backend whose framework (or folder) is not installed fails the run when ``require_all``
    (``make conformance``, CI); otherwise it is listed as not installed and the rest decide.
    """
    lines, ok = [], True
    missing = set()
    for r in data["results"]:
        if r.get("ok") or r.get("status") == "not_expressible":
            continue
        if r.get("status") == "missing":
            missing.add((r["backend"], r.get("error", "")))
            ok = ok and not require_all
            continue
        ok = False
        if r.get("status") != "ran":
            lines.append(f"{r['backend']}/{r['case']}: {r.get('error', 'error')}")
        else:
            for name, chk in r["checks"].items():
                if chk["ok"]:
                    continue
                if "max_abs" not in chk:  # dtype checks, a missing gradient
                    lines.append(
                        f"{r['backend']}/{r['case']}/{name}: got {chk['got']}, want {chk['want']}"
                    )
                else:
                    lines.append(describe_failure(r["backend"], r["case"], name, chk))
    for name, err in sorted(missing):
        what = "MISSING (--require-all)" if require_all else "not installed"
        lines.append(f"{name}: {what} ({err})")
    ran = {r["backend"] for r in data["results"]}
    for b in backends:
        if b.name not in ran:
            ok = False
            lines.append(f"{b.name}: no results")
    for name, info in data.get("impls", {}).items():
        if "error" in info:
            ok = False
            lines.append(f"{name}: {info['error']}")
            continue
        recs = [r for r in data["results"] if r["backend"] == name]
        if not any(r.get("status") != "not_expressible" for r in recs):
            ok = False
            lines.append(f"{name}: expresses none of the {len(recs)} cases (nothing was checked)")
    return ok, lines


def impl_summary(data: dict[str, Any]) -> list[str]:
    """Per implementation: passed / failed / not expressible, and why not, grouped."""
    lines = []
    for name, info in data.get("impls", {}).items():
        recs = [r for r in data["results"] if r["backend"] == name]
        ne = [r for r in recs if r.get("status") == "not_expressible"]
        passed = sum(1 for r in recs if r.get("ok"))
        failed = len(recs) - len(ne) - passed
        desc = f" ({info['description']})" if info.get("description") else ""
        lines.append(f"{name}{desc}: {passed} passed, {failed} failed, {len(ne)} not expressible")
        why: dict[str, int] = {}
        for r in ne:
            why[r["reason"]] = why.get(r["reason"], 0) + 1
        lines += [f"    not expressible ({n}): {reason}" for reason, n in sorted(why.items())]
    return lines


def _report_cell(rec: dict[str, Any] | None) -> str:
    if rec is None:
        return "-"
    status = rec.get("status")
    if status == "not_expressible":
        return "n/e"
    if status == "missing":
        return "not installed"
    if status != "ran":
        return "error"
    if rec["ok"]:
        return f"pass {rec['checks']['y']['max_abs']:.0e}"
    bad = [n for n, c in rec["checks"].items() if not c["ok"]]
    y = rec["checks"]["y"]
    return f"**FAIL** {','.join(bad)} ({y.get('max_abs', float('nan')):.0e})"


def format_report(
    data: dict[str, Any], backends: list[Backend], cases: Sequence[Case] | None = None
) -> str:
    """The case x implementation matrix as markdown (pass with forward max abs error / FAIL
    with the failed checks / n/e = not expressible), then each implementation's counts."""
    cases = list(cases if cases is not None else CASES)
    by = {(r["backend"], r["case"]): r for r in data["results"]}
    names = _columns(data, backends)
    lines = [
        "| case | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for c in cases:
        cells = " | ".join(_report_cell(by.get((n, c.id))) for n in names)
        lines.append(f"| {c.id} | {cells} |")
    lines.append("")
    for n in names:
        recs = [r for r in data["results"] if r["backend"] == n]
        ne = sum(1 for r in recs if r.get("status") == "not_expressible")
        passed = sum(1 for r in recs if r.get("ok"))
        lines.append(
            f"- **{n}**: {passed} / {len(recs) - ne} expressible cases pass; {ne} not expressible"
        )
    summary = impl_summary(data)
    if summary:
        lines += ["", "Why not expressible:", "", "```", *summary, "```"]
    return "\n".join(lines) + "\n"


def grad_summary(data: dict[str, Any], backends: list[Backend]) -> str:
    """Worst gradient error per backend, relative to max |ref| (float32 cases)."""
    lines = ["Worst float32 gradient error per backend (max |got - ref| / max |ref|):"]
    for b in backends:
        worst = 0.0
        for r in data["results"]:
            if r["backend"] != b.name or r.get("status") != "ran" or r.get("dtype") != "float32":
                continue
            for name, chk in r["checks"].items():
                if name == "y" or name.endswith("_dtype") or "max_abs" not in chk:
                    continue
                scale = chk["atol"] / tolerance("float32", "grad").atol
                worst = max(worst, chk["max_abs"] / scale if scale else 0.0)
        lines.append(f"  {b.name:<22} {worst:.1e}")
    return "\n".join(lines)
