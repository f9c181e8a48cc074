"""The one tolerance table: how far a backend may be from the float64 reference, and why.

A check passes when, elementwise, ``|got - ref| <= atol + rtol * |ref|``. For gradients ``atol`` is
scaled by ``max |ref|`` of that tensor (a gradient's size depends on the case; "relative" means
relative to the tensor's magnitude, so sums that cancel to ~0 are not held to an impossible bound).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TOLERANCES", "TOLERANCES_FILE", "Tolerance", "compare", "describe_failure", "tolerance"]


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float
    scale_atol: bool  # multiply atol by max|ref| (gradients)
    reason: str


TOLERANCES_FILE = Path(__file__).parent / "goldens" / "TOLERANCES.json"


def _load(path: Path = TOLERANCES_FILE) -> dict[tuple[str, str], Tolerance]:
    """The table as data (``goldens/TOLERANCES.json``, beside the goldens it scores): the one
    source, read by this module and by implementations outside Python alike."""
    rows = json.loads(path.read_text())["rows"]
    return {
        (r["dtype"], r["kind"]): Tolerance(
            float(r["atol"]), float(r["rtol"]), bool(r["scale_atol"]), r["reason"]
        )
        for r in rows
    }


# (dtype, kind) -> tolerance; kind is "forward" (y) or "grad" (dx, dw)
TOLERANCES: dict[tuple[str, str], Tolerance] = _load()


def tolerance(dtype: str, kind: str) -> Tolerance:
    try:
        return TOLERANCES[(dtype, kind)]
    except KeyError:
        raise KeyError(f"no tolerance for dtype {dtype!r}, kind {kind!r}") from None


def compare(got: np.ndarray, ref: np.ndarray, dtype: str, kind: str) -> dict[str, Any]:
    """Compare ``got`` to ``ref`` under the table; returns the numbers a report needs.

    Returns a dict with ``ok``, ``max_abs``, ``max_rel`` (over |ref| > 0), ``ratio`` (worst
    ``|got - ref| / allowed``, <= 1 passes), ``atol`` (effective) and ``rtol``; a shape mismatch
    or a NaN where the reference has none fails with ``ratio = inf``.
    """
    tol = tolerance(dtype, kind)
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    scale = float(np.abs(ref).max()) if (tol.scale_atol and ref.size) else 1.0
    atol = tol.atol * (scale if scale > 0 else 1.0)
    out = {"atol": atol, "rtol": tol.rtol, "max_abs": 0.0, "max_rel": 0.0, "ratio": 0.0}
    if got.shape != ref.shape:
        return {
            **out,
            "ok": False,
            "ratio": float("inf"),
            "error": f"shape {got.shape} != reference {ref.shape}",
        }
    if ref.size == 0:
        return {**out, "ok": True}
    nan_ref, nan_got = np.isnan(ref), np.isnan(got)
    if (nan_ref != nan_got).any():
        return {
            **out,
            "ok": False,
            "ratio": float("inf"),
            "max_abs": float("nan"),
            "error": f"{int((nan_ref != nan_got).sum())} NaN positions differ",
        }
    finite = ~nan_ref
    err = np.abs(got - ref)[finite]
    r = np.abs(ref)[finite]
    allowed = atol + tol.rtol * r
    nz = r > 0
    out.update(
        max_abs=float(err.max(initial=0.0)),
        max_rel=float((err[nz] / r[nz]).max(initial=0.0)),
        ratio=float((err / allowed).max(initial=0.0)),
    )
    out["ok"] = bool(out["ratio"] <= 1.0)
    return out


def describe_failure(backend: str, case: str, tensor: str, result: dict[str, Any]) -> str:
    """One line in the house format: what failed and by how much."""
    extra = f" ({result['error']})" if result.get("error") else ""
    return (
        f"{backend}/{case}/{tensor}: max_abs={result['max_abs']:.2e} "
        f"max_rel={result['max_rel']:.2e}"
        f" > atol={result['atol']:.1e} + rtol={result['rtol']:.0e}*|ref| "
        f"(worst ratio {result['ratio']:.2f}){extra}"
    )


def markdown_rows() -> str:
    """The table as markdown rows (the README embeds them; a test keeps the two equal)."""
    rows = []
    for (dtype, kind), t in TOLERANCES.items():
        what = "y" if kind == "forward" else "dx, dw"
        atol = f"{t.atol:.0e}" + (" x max abs(ref)" if t.scale_atol else "")
        rows.append(f"| {dtype} | {what} | {atol} | {t.rtol:.0e} | {t.reason} |")
    return "\n".join(rows)
