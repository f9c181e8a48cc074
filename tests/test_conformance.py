"""The conformance matrix as pytest: one test per backend x case, forward and gradients.

Each framework / Keras backend runs in its own worker subprocess (once per session, lazily); each
test then asserts its own pair's numbers. Select backends with --backends or ECA_MULTI_BACKENDS.
"""

from __future__ import annotations

import pytest
from conftest import REQUIRE_ALL

from eca_multi.conformance.backends import BACKENDS
from eca_multi.conformance.cases import CASES
from eca_multi.conformance.runner import run_group, summarize

_CACHE: dict[str, dict] = {}


def _group_results(config, backend) -> dict:
    if backend.group not in _CACHE:
        selected = [b for b in config.eca_backends if b.group == backend.group]
        data = run_group(selected)
        _CACHE[backend.group] = {(r["backend"], r["case"]): r for r in data["results"]}
    return _CACHE[backend.group]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
@pytest.mark.parametrize("backend", BACKENDS, ids=[b.name for b in BACKENDS])
def test_conformance(request, backend, case):
    if backend.name not in {b.name for b in request.config.eca_backends}:
        pytest.skip(f"backend {backend.name} not selected (--backends)")
    rec = _group_results(request.config, backend).get((backend.name, case.id))
    assert rec is not None, f"{backend.name}/{case.id}: the worker returned no result"
    if rec.get("status") == "missing":
        if REQUIRE_ALL:
            pytest.fail(f"{backend.name}: backend missing in CI: {rec['error']}")
        pytest.skip(f"backend missing: {rec['error']}")
    ok, lines = summarize({"results": [rec]}, [backend])
    detail = rec.get("traceback", "")
    assert ok, "\n".join(lines) + ("\n" + detail if detail else "")
