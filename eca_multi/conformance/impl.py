"""The open suite's implementation interface: any ECA implementation, checked like our backends.

An *adapter* tells the suite what an implementation can express and builds a callable from a
case and its canonical weights (the specification is ``conformance/README.md`` at the top of the
repository)::

    from eca_multi.conformance.impl import Capabilities

    class MyAdapter:
        name = "my-eca"
        capabilities = Capabilities(spatial_dims=(2,), gradients=True, weight_layout="(k,)")

        def build(self, case, weights):      # weights: {"conv.weight": float32 (k,)}
            layer = MyECA(case.channels, case.k)
            layer.set_kernel(weights["conv.weight"])
            fn = lambda x: layer(x)              # float64 x, exact in case.dtype -> y
            fn.vjp = lambda x, g: (dx, {"conv.weight": dw})   # only with gradients=True
            return fn

    adapter = MyAdapter()

An adapter is named on the command line as ``package.module:attribute`` (an adapter, or a
callable returning one), as a name registered in the ``eca_multi.conformance`` entry point group
(``[project.entry-points."eca_multi.conformance"] my-eca = "my_pkg.eca:adapter"``), or as
``NAME:ARG`` where NAME's entry point is a factory taking ARG (``onnx:model.onnx``).

A case the adapter cannot express is reported with the reason and never counted as a pass; one
it expresses is scored on the committed goldens under the tolerance table, like a backend.

    python -m eca_multi.worker impl --opts '{"impl": "SPEC"}' --json OUT   # one implementation
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any, Protocol, cast, runtime_checkable

import numpy as np

from .. import spec
from ..progress import tick
from .cases import CASES, Case
from .generate import golden_grads, golden_params, load_golden, round_to_dtype
from .tolerances import compare
from .worker import error_fields

__all__ = [
    "ENTRY_POINT_GROUP",
    "LAYOUTS",
    "Adapter",
    "Capabilities",
    "NeedsArgument",
    "entry_point_names",
    "load_adapter",
    "not_expressible",
    "run_impl",
    "run_spec",
    "score",
]

ENTRY_POINT_GROUP = "eca_multi.conformance"
LAYOUTS = ("(1, 1, k)", "(k, 1, 1)", "(k,)")  # ECA's kernel as the adapter receives it
RULES = ("paper", "timm")  # k forced from C: the paper's rule; timm's (the paper's, at least 3)


@dataclass(frozen=True)
class Capabilities:
    """What an implementation can express; every field narrows the cases it is given.

    ``kernel_sizes`` lists the k it accepts (None: any); ``kernel_rule`` says it derives k from the
    channel count itself ("paper": the paper's rule, "timm": the paper's clamped to at least 3),
    so only cases whose k is that rule's are given. ``channels``: the only channel counts it takes
    (an exported graph with a static C); ``min_batch``: the smallest batch it runs. ``gradients``:
    the built callable has ``vjp(x, g) -> (dx, {name: dw})``. ``weight_layout``: the shape in which
    ``build`` receives ECA's kernel (the canonical one is torch's (1, 1, k)); the gradient comes
    back in the same shape. ``weight_dtype``: "float32" when the weights stay float32 whatever
    the input's dtype (what the 16-bit cases specify), "input" when the implementation casts them
    to the input's dtype (a torch module after ``module.to(torch.bfloat16)``): the 16-bit cases are
    then not expressible (a bf16 kernel moves a saturated gate's gradient by several percent).
    """

    spatial_dims: tuple[int, ...] = (2,)
    data_formats: tuple[str, ...] = ("channels_first",)
    paddings: tuple[str, ...] = ("zeros",)
    gates: tuple[str, ...] = ("sigmoid",)
    dtypes: tuple[str, ...] = ("float32",)
    attentions: tuple[str, ...] = ("eca",)
    kernel_sizes: tuple[int, ...] | None = None
    kernel_rule: str | None = None
    channels: tuple[int, ...] | None = None
    min_batch: int = 0
    gradients: bool = False
    weight_layout: str = "(1, 1, k)"
    weight_dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.weight_layout not in LAYOUTS:
            raise ValueError(
                f"weight_layout {self.weight_layout!r} is not one of {', '.join(LAYOUTS)}"
            )
        if self.weight_dtype not in ("float32", "input"):
            raise ValueError(f"weight_dtype {self.weight_dtype!r} is not 'float32' or 'input'")
        if self.kernel_rule not in (None, *RULES):
            raise ValueError(f"kernel_rule {self.kernel_rule!r} is not None or one of {RULES}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class Adapter(Protocol):
    """An implementation under test. ``limits(case) -> str | None`` is optional: a reason the
    implementation cannot run a case its capabilities admit (e.g. a padding bound)."""

    name: str
    capabilities: Capabilities

    def build(
        self, case: Case, weights: Mapping[str, np.ndarray]
    ) -> Callable[[np.ndarray], Any]: ...


# ---------------------------------------------------------------------------------------------
# finding adapters


class NeedsArgument(ValueError):
    """An entry point that is a factory (``needs_argument = True``) named without ``:ARG``."""


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def entry_point_names() -> list[str]:
    """Names registered in the ``eca_multi.conformance`` entry point group (sorted)."""
    return sorted(_entry_points())


def _check_adapter(obj: Any, spec_text: str) -> Adapter:
    missing = [a for a in ("name", "capabilities", "build") if not hasattr(obj, a)]
    if missing:
        raise TypeError(
            f"{spec_text!r} is not a conformance adapter: it lacks {', '.join(missing)} "
            "(see conformance/README.md, 'The adapter')"
        )
    if not isinstance(obj.capabilities, Capabilities):
        raise TypeError(
            f"{spec_text!r}: capabilities must be eca_multi.conformance.impl.Capabilities, "
            f"not {type(obj.capabilities).__name__}"
        )
    return cast(Adapter, obj)  # name, capabilities and build checked above


def load_adapter(spec_text: str) -> Adapter:
    """The adapter named by ``spec_text``: an entry point name, ``NAME:ARG`` for an entry point
    factory, or ``package.module:attribute`` (an adapter, or a callable that returns one).

    Raises:
        ValueError: the name resolves to nothing (the message lists the registered names).
        TypeError: what it names is not an adapter.
    """
    eps = _entry_points()
    head, sep, tail = spec_text.partition(":")
    if head in eps:
        obj = eps[head].load()
        if getattr(obj, "needs_argument", False):  # a factory: onnx:PATH
            if not sep or not tail:
                raise NeedsArgument(f"implementation {head!r} needs an argument: {head}:ARG")
            obj = obj(tail)
        elif sep:
            raise ValueError(f"implementation {head!r} takes no argument (got {spec_text!r})")
        elif not hasattr(obj, "build") and callable(obj):
            obj = obj()
        return _check_adapter(obj, spec_text)
    if not sep or not tail:
        raise ValueError(
            f"unknown implementation {spec_text!r}: give package.module:attribute or one of the "
            f"registered names: {', '.join(sorted(eps)) or '(none)'}"
        )
    try:
        module = importlib.import_module(head)
    except ImportError as e:
        raise ValueError(f"implementation {spec_text!r}: cannot import {head}: {e}") from None
    try:
        obj = getattr(module, tail)
    except AttributeError:
        raise ValueError(f"implementation {spec_text!r}: {head} has no {tail!r}") from None
    if not hasattr(obj, "build") and callable(obj):
        obj = obj()
    return _check_adapter(obj, spec_text)


# ---------------------------------------------------------------------------------------------
# which cases an adapter can express


def _forced_k(rule: str, channels: int) -> int:
    return spec.kernel_size(channels, min_size=3 if rule == "timm" else 1)


def not_expressible(adapter: Adapter, case: Case) -> str | None:
    """Why the adapter cannot express ``case`` (None: it can)."""
    cap = adapter.capabilities
    checks = (
        (case.attention, cap.attentions, "attention"),
        (case.spatial_dims, cap.spatial_dims, "spatial dims"),
        (case.data_format, cap.data_formats, "data_format"),
        (case.padding, cap.paddings, "padding"),
        (case.gate, cap.gates, "gate"),
        (case.dtype, cap.dtypes, "dtype"),
    )
    for value, allowed, what in checks:
        if value not in allowed:
            return f"{what} {value} (declares {', '.join(map(str, allowed))})"
    if case.dtype != "float32" and cap.weight_dtype == "input":
        return (
            f"dtype {case.dtype} with a float32 weight: the implementation casts its weight to "
            f"{case.dtype}"
        )
    if case.attention == "eca":
        if cap.kernel_sizes is not None and case.k not in cap.kernel_sizes:
            return f"kernel size {case.k} (accepts {', '.join(map(str, cap.kernel_sizes))})"
        if cap.kernel_rule is not None and case.k != _forced_k(cap.kernel_rule, case.channels):
            forced, c = _forced_k(cap.kernel_rule, case.channels), case.channels
            return (
                f"kernel size {case.k}: its {cap.kernel_rule} rule forces k = {forced} at C = {c}"
            )
    if cap.channels is not None and case.channels not in cap.channels:
        return f"channels {case.channels} (takes {', '.join(map(str, cap.channels))})"
    if case.shape[0] < cap.min_batch:
        return f"batch {case.shape[0]} (runs batch >= {cap.min_batch})"
    limits = getattr(adapter, "limits", None)
    return limits(case) if limits is not None else None


# ---------------------------------------------------------------------------------------------
# running and scoring


def _to_layout(w: np.ndarray, layout: str) -> np.ndarray:
    k = w.size
    shape = {"(1, 1, k)": (1, 1, k), "(k, 1, 1)": (k, 1, 1), "(k,)": (k,)}[layout]
    return np.ascontiguousarray(w.reshape(shape))  # one row or column: a reshape, never a flip


def _weights_for(adapter: Adapter, case: Case, golden: dict[str, Any]) -> dict[str, np.ndarray]:
    params = golden_params(golden)
    if case.attention == "eca":
        layout = adapter.capabilities.weight_layout
        params["conv.weight"] = _to_layout(params["conv.weight"], layout)
    return params


def _as_float64(a: Any, what: str) -> np.ndarray:
    try:
        return np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as e:
        msg = f"the {what} the implementation returned is not an array of numbers: {e}"
        raise TypeError(msg) from None


def _dtype_check(y: np.ndarray, dtype: str) -> dict[str, Any]:
    """The output's values must be representable in the case's dtype (it ran in that dtype)."""
    if dtype == "float32" or y.size == 0:
        return {"ok": True, "got": dtype, "want": dtype}
    finite = y[np.isfinite(y)]
    off = int((round_to_dtype(finite, dtype) != finite).sum())
    return {
        "ok": off == 0,
        "got": dtype if off == 0 else f"{off} values not representable in {dtype}",
        "want": dtype,
    }


def score(
    case: Case, golden: dict[str, Any], y: Any, grads: tuple[Any, Mapping[str, Any]] | None
) -> dict[str, Any]:
    """Checks of one case: y (forward), dx and each weight's gradient (grad), the output dtype."""
    y = _as_float64(y, "output")
    checks = {"y": compare(y, golden["y"], case.dtype, "forward")}
    checks["y_dtype"] = _dtype_check(y, case.dtype)
    if grads is not None:
        dx, dparams = grads
        checks["dx"] = compare(_as_float64(dx, "dx"), golden["dx"], case.dtype, "grad")
        for name, ref in golden_grads(golden).items():
            key = "dw" if name == "conv.weight" else f"d[{name}]"
            if name not in dparams:
                checks[key] = {"ok": False, "got": "missing", "want": name}
                continue
            got = _as_float64(dparams[name], key)
            if key == "dw" and got.size == ref.size:  # the adapter's layout back to (1, 1, k)
                got = got.reshape(ref.shape)
            checks[key] = compare(got, ref, case.dtype, "grad")
    return {"ok": all(c["ok"] for c in checks.values()), "checks": checks}


def run_case(adapter: Adapter, case: Case, goldens_dir: str | None = None) -> dict[str, Any]:
    """One record: status "not_expressible" (with the reason), "ran" (with checks) or "error"."""
    rec: dict[str, Any] = {"backend": adapter.name, "case": case.id, "dtype": case.dtype}
    why = not_expressible(adapter, case)
    if why is not None:
        return {**rec, "status": "not_expressible", "ok": None, "reason": why}
    t0 = time.perf_counter()
    try:
        golden = load_golden(case.id, goldens_dir)
        fn = adapter.build(case, _weights_for(adapter, case, golden))
        y = fn(golden["x"].copy())
        grads = None
        if adapter.capabilities.gradients:
            vjp = getattr(fn, "vjp", None)
            if vjp is None:
                raise TypeError("capabilities.gradients is True but the callable has no vjp(x, g)")
            grads = vjp(golden["x"].copy(), golden["g"].copy())
        rec.update(score(case, golden, y, grads), status="ran")
    except Exception as e:  # a crash in one case is that case's failure
        rec.update(error_fields(e))
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    return rec


def run_impl(
    adapter: Adapter, cases: Iterable[Case] | None = None, goldens_dir: str | None = None
) -> list[dict[str, Any]]:
    """Every case, in table order (none raises: a failing case is a failed record)."""
    setup = getattr(adapter, "setup", None)
    if setup is not None:
        setup()
    records = []
    for c in CASES if cases is None else cases:
        records.append(run_case(adapter, c, goldens_dir))
        tick(f"{adapter.name}/{c.id}")
    return records


def run_spec(
    spec_text: str, cases: Iterable[Case] | None = None, goldens_dir: str | None = None
) -> dict[str, Any]:
    """Load and run one implementation: {"impl": describe(...), "results": [...]}, or the reason
    it could not be loaded under "error" (``needs_argument``: a factory named without ARG)."""
    try:
        adapter = load_adapter(spec_text)
        return {"impl": describe(adapter), "results": run_impl(adapter, cases, goldens_dir)}
    except NeedsArgument as e:
        return {"impl": {"name": spec_text}, "error": str(e), "needs_argument": True, "results": []}
    except (ValueError, TypeError, ImportError) as e:
        return {"impl": {"name": spec_text}, "error": f"{type(e).__name__}: {e}", "results": []}


def describe(adapter: Adapter) -> dict[str, Any]:
    """What the report says about an implementation: its name, capabilities and versions."""
    versions = getattr(adapter, "versions", None)
    return {
        "name": adapter.name,
        "capabilities": adapter.capabilities.to_dict(),
        "versions": dict(versions()) if versions is not None else {},
        "description": getattr(adapter, "description", ""),
    }
