"""eca-multi's own backends: one test per backend x case, forward and gradients.

Each framework / Keras backend runs in its own worker subprocess, once per session; the groups are
started in a background thread as soon as collection ends (conformance/conftest.py), so they
overlap with the rest of the suite. Each test then asserts its own pair's numbers. Select backends
with --backends or ECA_MULTI_BACKENDS.
"""

from __future__ import annotations

import pytest

from eca_multi.conformance.backends import BACKENDS
from eca_multi.conformance.cases import CASES
from eca_multi.conformance.runner import summarize


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
@pytest.mark.parametrize("backend", BACKENDS, ids=[b.name for b in BACKENDS])
def test_backend_case(request, conformance_group, backend, case):
    if backend.name not in {b.name for b in request.config.eca_backends}:
        pytest.skip(f"backend {backend.name} not selected (--backends)")
    rec = conformance_group(backend.group).get((backend.name, case.id))
    assert rec is not None, f"{backend.name}/{case.id}: the worker returned no result"
    if rec.get("status") == "missing":
        if request.config.eca_require_all:
            pytest.fail(f"{backend.name}: backend missing in CI: {rec['error']}")
        pytest.skip(f"backend missing: {rec['error']}")
    ok, lines = summarize({"results": [rec]}, [backend])
    detail = rec.get("traceback", "")
    assert ok, "\n".join(lines) + ("\n" + detail if detail else "")
