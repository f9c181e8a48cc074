"""Ratio benchmarks: ECA vs each framework's own memory floor, and ECA-ResNet50 vs its ResNet-50.

Framework-free driver behind ``eca-multi bench``. Each framework (torch, one process per Keras
backend, Flax) runs its ``eca_multi.<framework>._bench`` module in its own subprocess (the
conformance runner's pattern: :func:`eca_multi.conformance.runner.run_json_worker`), so Keras
backends never share a process and deleting a backend folder removes only its rows.

The floor is the cheapest thing any channel gate must do on the same tensor: a global mean over
the spatial axes and a broadcast multiply (``x * mean(x)``), in the same framework, mode (eager or
compiled) and dtype. Ratios are measured side by side in one process: interleaved A/B blocks, the
median of the per-pair ratios, with min and max. Benchmarks are not tests (CI smoke-runs
``--quick`` only).

Each ``_bench`` module provides ``run(opts: dict) -> list[dict]`` returning rows with keys
``framework, mode, pass, shape, dtype, floor_us, eca_us, ratio, min, max`` (and ``note``).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .progress import Stage, stage
from .registry import GROUPS, Group, resolve

__all__ = [
    "BENCH_GROUPS",
    "LAYER_SHAPES",
    "QUICK_SHAPES",
    "format_table",
    "inference_reps",
    "paired",
    "plot",
    "resolve_groups",
    "run_bench",
]

# (N, C, *spatial) in channels_first order; channels_last backends move C to the end
LAYER_SHAPES: tuple[tuple[int, ...], ...] = (
    (8, 256, 56, 56),
    (8, 512, 28, 28),
    (8, 1024, 14, 14),
    (8, 2048, 7, 7),
    (32, 64, 14, 14),
    (16, 128, 1024),
    (2, 64, 8, 28, 28),
)
QUICK_SHAPES: tuple[tuple[int, ...], ...] = ((2, 16, 6, 6), (2, 8, 16), (1, 8, 2, 4, 4))
DTYPES = ("float32", "bfloat16")
# targets of issue 4: layer <= 1.10 (forward) / 1.15 (forward+backward) x floor; model <= 1.03
TARGETS = {
    "fwd": 1.10,
    "fwd+bwd": 1.15,
    "inference": 1.03,
    "inference (jit_compile)": 1.03,  # Keras on tensorflow, compile(jit_compile=True): XLA
    "train step": None,
}


BENCH_GROUPS: tuple[Group, ...] = GROUPS  # the one registry of process groups


def resolve_groups(names: str | None) -> list[Group]:
    """Groups by comma-separated name; None or "all" = every group.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    return resolve(names, "bench backend")


def shape_id(shape: Iterable[object]) -> str:
    return "x".join(str(s) for s in shape)


def _block(fn: Callable[[], object], number: int) -> float:
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def inference_reps(reps: int) -> int:
    """Pairs for a model-inference row: 3x the layer rows' (one forward of ResNet-50 is 0.3-0.7 s
    here and single pairs spread by +-5 % on a shared CPU; 5 pairs gave torch medians of 1.04 and
    1.07 in two runs of the same code)."""
    return 3 * reps


def paired(
    floor: Callable[[], object],
    eca: Callable[[], object],
    *,
    reps: int = 7,
    block_s: float = 0.02,
    warmup: int = 2,
) -> dict[str, Any]:
    """Time ``eca`` against ``floor`` in interleaved blocks; per-pair ratios eca / floor.

    Both callables must finish their work before returning (block on async results). Each rep
    times one block of each, alternating which goes first (ABBA), with ``number`` calls per block
    chosen so a floor block lasts about ``block_s``.

    Returns:
        ``{"floor_us", "eca_us", "ratio", "min", "max"}``: medians of the block times (us) and
        the median, min and max of the per-pair ratios.
    """
    if os.environ.get("ECA_BENCH_QUICK"):  # smoke runs: exercise the code, time nothing
        reps, block_s = min(reps, 2), 0.0
    for _ in range(warmup):
        floor()
        eca()
    t = _block(floor, 1)
    number = max(1, min(1000, int(block_s / max(t, 1e-7))))
    tf, te, ratios = [], [], []
    for r in range(reps):
        if r % 2:
            b, a = _block(eca, number), _block(floor, number)
        else:
            a, b = _block(floor, number), _block(eca, number)
        tf.append(a)
        te.append(b)
        ratios.append(b / a)
    return {
        "floor_us": statistics.median(tf) * 1e6,
        "eca_us": statistics.median(te) * 1e6,
        "ratio": statistics.median(ratios),
        "min": min(ratios),
        "max": max(ratios),
    }


# ---------------------------------------------------------------------------------------------
# driver


def run_bench(
    groups: list[Group],
    *,
    quick: bool = False,
    reps: int | None = None,
    models: bool = True,
    layers: bool = True,
    jobs: int = 1,
    timeout: float = 3600,
    progress: bool = False,
) -> dict[str, Any]:
    """Run each group's benchmark in its own subprocess, one after another (timings need the CPU;
    ``jobs`` > 1 runs groups at once, for ``quick`` smoke runs only).

    ``progress``: one step per group on stderr (:mod:`eca_multi.progress`); a failed group's
    output tail is printed there too.

    Returns ``{"rows": [...], "errors": {group: message}, "env": {group: {...}}}``.
    """
    from .conformance.runner import run_json_worker  # the conformance runner's subprocess helper

    opts = {"quick": quick, "reps": reps, "models": models, "layers": layers}

    def one(g: Group, bar: Stage) -> tuple[Group, dict[str, Any] | None, str]:
        args = ["bench", "--group", g.name, "--opts", json.dumps(opts)]
        env = {**g.env, "ECA_BENCH_QUICK": "1"} if quick else g.env
        data, tail = run_json_worker("eca_multi.worker", args, env, timeout)
        bar.update()
        return g, data, tail

    with stage(len(groups), "bench", unit="groups", enabled=progress) as bar:
        if jobs > 1:  # concurrent groups share the CPU: only for smoke runs, never for timings
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=jobs) as pool:
                outs = list(pool.map(lambda g: one(g, bar), groups))
        else:
            outs = [one(g, bar) for g in groups]
    rows, errors, envs = [], {}, {}
    for g, data, tail in outs:
        if data is None:
            errors[g.name] = tail
            print(f"bench: {g.name} failed: {tail[-2000:]}", file=sys.stderr, flush=True)
            continue
        rows += data["rows"]
        envs[g.name] = data.get("env", {})
    return {"rows": rows, "errors": errors, "env": envs, "quick": quick}


# ---------------------------------------------------------------------------------------------
# output


def _label(r: dict[str, Any]) -> str:
    return f"{r['framework']} {r['mode']}"


def _cell(r: dict[str, Any] | None, detail: bool) -> str:
    if r is None:
        return "-"
    if r.get("ratio") is None or not math.isfinite(r["ratio"]):
        return "n/a"
    target = TARGETS.get(r["pass"])
    mark = "" if target is None or r["ratio"] <= target else "*"
    s = f"{r['ratio']:.2f}{mark}"
    if detail:
        s += f" ({r['min']:.2f}-{r['max']:.2f}, {r['floor_us']:.0f} us)"
    return s


def format_table(rows: list[dict[str, Any]], *, detail: bool = False) -> str:
    """Markdown tables: layer ratio to the floor (rows backend x pass x dtype, columns shapes),
    then the model ratios. ``*`` marks a ratio above the issue's target."""
    layer = [r for r in rows if r["mode"] != "model"]
    model = [r for r in rows if r["mode"] == "model"]
    out = []
    if layer:
        shapes = list(dict.fromkeys(r["shape"] for r in layer))
        keys = list(dict.fromkeys((_label(r), r["pass"], r["dtype"]) for r in layer))
        by = {(_label(r), r["pass"], r["dtype"], r["shape"]): r for r in layer}
        out.append("| backend | pass | dtype | " + " | ".join(shapes) + " |")
        out.append("|---|---|---|" + "---:|" * len(shapes))
        for k in keys:
            cells = [_cell(by.get((*k, s)), detail) for s in shapes]
            out.append(f"| {k[0]} | {k[1]} | {k[2]} | " + " | ".join(cells) + " |")
    if model:
        if out:
            out.append("")
        out.append("| framework | model | pass | ECA / plain (median) | min | max | plain ms |")
        out.append("|---|---|---|---:|---:|---:|---:|")
        for r in model:
            ratio = _cell(r, False)
            out.append(
                f"| {r['framework']} | {r['shape']} | {r['pass']} | {ratio} | "
                f"{r['min']:.3f} | {r['max']:.3f} | {r['floor_us'] / 1e3:.1f} |"
            )
    notes = sorted({f"{_label(r)}: {r['note']}" for r in rows if r.get("note")})
    if notes:
        out.append("")
        out += [f"- {n}" for n in notes]
    return "\n".join(out)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Ratio to the floor per shape (x) for every backend/mode (one line each), fwd and fwd+bwd."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layer = [r for r in rows if r["mode"] != "model" and r.get("ratio") is not None]
    shapes = list(dict.fromkeys(r["shape"] for r in layer))
    fig, axes = plt.subplots(2, 2, figsize=(15, 9), sharey=False)
    panels = [
        (i, p, j, dt) for i, p in enumerate(("fwd", "fwd+bwd")) for j, dt in enumerate(DTYPES)
    ]
    for i, p, j, dt in panels:
        ax = axes[i][j]
        for label in dict.fromkeys(_label(r) for r in layer):
            pts = {r["shape"]: r for r in layer if _label(r) == label and r["pass"] == p}
            pts = {s: r for s, r in pts.items() if r["dtype"] == dt}
            if not pts:
                continue
            xs = [shapes.index(s) for s in pts]
            ax.plot(xs, [r["ratio"] for r in pts.values()], marker="o", label=label)
        ax.axhline(TARGETS[p], color="k", linestyle="--", linewidth=1)
        ax.axhline(1.0, color="grey", linewidth=0.5)
        ax.set_xticks(range(len(shapes)), shapes, rotation=30, fontsize=7)
        ax.set_title(f"ECA / floor, {p}, {dt} (dashed: target {TARGETS[p]})")
        ax.set_ylabel("time ratio (lower is better)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    fig.savefig(path, dpi=90, format="png")
    plt.close(fig)


def write_results(data: dict[str, Any], out_dir: Path, *, png: bool = True) -> list[Path]:
    """Write ``bench.md`` (tables), ``bench.json`` (every number) and ``bench.png`` atomically."""
    from .weights.io import atomic_path, atomic_write_bytes

    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "bench.md"
    env = "; ".join(
        f"{g}: " + ", ".join(f"{k} {v}" for k, v in e.items()) for g, e in data["env"].items()
    )
    text = (
        "# ECA benchmark: time ratio to the framework's floor (lower is better)\n\n"
        "Floor = `x * mean(x over spatial)` on the same tensor, same framework, mode and dtype. "
        "Cells: median of interleaved per-pair ratios (min-max, floor time). `*` = above the "
        "target (fwd 1.10, fwd+bwd 1.15, model inference 1.03).\n\n"
        f"{format_table(data['rows'], detail=True)}\n\n"
        f"Environment: {env}\n"
    )
    if data["errors"]:
        text += "\nFailed groups:\n" + "".join(
            f"- {g}: {m[-500:]!r}\n" for g, m in data["errors"].items()
        )
    atomic_write_bytes(md, text.encode(), overwrite=True)
    js = out_dir / "bench.json"
    atomic_write_bytes(js, json.dumps(data, indent=1).encode(), overwrite=True)
    written = [md, js]
    if png:
        target = out_dir / "bench.png"
        with atomic_path(target, overwrite=True) as tmp:
            plot(data["rows"], Path(tmp))  # format="png" inside: the temp name ends in .tmp
        written.append(target)
    return written
