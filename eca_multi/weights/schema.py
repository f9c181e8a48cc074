"""Canonical schemas (name -> shape, layout) and the strict state check every adapter uses."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..spec import ECAConfig
from .layouts import Layout

__all__ = ["WeightDtypeError", "WeightMismatchError", "check_state", "eca_schema"]


class WeightMismatchError(ValueError):
    """Canonical weights do not fit a model: lists every missing, unexpected and mis-shaped key."""

    def __init__(
        self,
        missing: Iterable[str],
        unexpected: Iterable[str],
        mismatched: Mapping[str, tuple[Any, Any]],
        where: str = "model",
    ) -> None:
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        self.mismatched = dict(sorted(mismatched.items()))
        lines = [f"weights do not fit the {where}:"]
        if self.missing:
            lines.append(f"  missing keys ({len(self.missing)}): {', '.join(self.missing)}")
        if self.unexpected:
            lines.append(
                f"  unexpected keys ({len(self.unexpected)}): {', '.join(self.unexpected)}"
            )
        for name, (want, got) in self.mismatched.items():
            lines.append(f"  shape mismatch for {name}: expected {want}, got {got}")
        super().__init__("\n".join(lines))


def eca_schema(config: ECAConfig, prefix: str = "") -> dict[str, tuple[tuple[int, ...], Layout]]:
    """Canonical names, shapes and layouts of one ECA block's weights."""
    return {f"{prefix}conv.weight": (config.weight_shape, Layout.CONV1D)}


def check_state(
    schema: Mapping[str, tuple[tuple[int, ...], Layout]],
    state: Mapping[str, np.ndarray],
    *,
    strict: bool = True,
    where: str = "model",
) -> None:
    """Raise one :class:`WeightMismatchError` naming every problem of ``state`` against ``schema``.

    Shapes are always checked (a kernel of another size is an error: k is read from the weight's
    shape and must match the model's spec). With ``strict=False`` missing and unexpected keys are
    tolerated. Weights must be floating point and BatchNorm counters integer scalars: anything
    else raises :class:`WeightDtypeError` (never a silent cast).
    """
    missing = [n for n in schema if n not in state]
    unexpected = [n for n in state if n not in schema]
    mismatched = {
        n: (tuple(schema[n][0]), tuple(np.shape(state[n])))
        for n in schema
        if n in state and tuple(np.shape(state[n])) != tuple(schema[n][0])
    }
    if mismatched or (strict and (missing or unexpected)):
        raise WeightMismatchError(missing, unexpected if strict else [], mismatched, where)
    bad = {}
    for name, arr in state.items():
        if name not in schema:
            continue
        dtype = np.asarray(arr).dtype
        if name.endswith("num_batches_tracked"):  # torch BatchNorm's int64 step counter
            if not np.issubdtype(dtype, np.integer) or np.ndim(arr) != 0:
                bad[name] = f"{dtype} of shape {np.shape(arr)}, want an integer scalar"
        elif not np.issubdtype(dtype, np.floating):
            bad[name] = f"{dtype}, want floating point"
    if bad:
        raise WeightDtypeError(bad, where)


class WeightDtypeError(TypeError, ValueError):
    """Weights of a dtype no model takes (integer, bool, complex, string): refused, never cast.

    A TypeError (a wrong dtype) and a ValueError (bad weights, like :class:`WeightMismatchError`),
    so the CLI reports it in one line and ``except TypeError`` keeps working."""

    def __init__(self, bad: Mapping[str, str], where: str = "model") -> None:
        self.bad = dict(bad)
        lines = [f"weights of the {where} have dtypes eca-multi does not convert:"]
        lines += [f"  {name}: {why}" for name, why in list(self.bad.items())[:10]]
        if len(self.bad) > 10:
            lines.append(f"  ... and {len(self.bad) - 10} more")
        super().__init__("\n".join(lines))
