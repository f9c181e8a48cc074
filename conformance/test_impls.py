"""Implementations outside eca-multi: one test per implementation x expressible case, in process.

The implementations are ``--impl`` / ``ECA_CONFORMANCE_IMPL`` (default: every adapter registered
in the ``eca_multi.conformance`` entry point group: timm's EcaModule and CecaModule, the ECA-Net
authors' eca_layer). Each case an implementation can express is a test that must pass under the
tolerance table; the cases it cannot express are listed with their reasons by one test per
implementation (never run, never counted as passes). An adapter that expresses nothing fails.
"""

from __future__ import annotations

from collections import Counter

from conformance.conftest import adapter_for
from eca_multi.conformance.cases import CASES
from eca_multi.conformance.impl import not_expressible, run_case
from eca_multi.conformance.runner import summarize


def test_impl_case(impl_case):
    spec, case = impl_case
    rec = run_case(adapter_for(spec), case)
    ok, lines = summarize({"results": [rec]}, [])
    assert rec["status"] == "ran" and ok, "\n".join(lines) + "\n" + rec.get("traceback", "")


def test_not_expressible_cases_are_listed(impl_spec, capsys):
    adapter = adapter_for(impl_spec)
    reasons = {c.id: not_expressible(adapter, c) for c in CASES}
    n = sum(r is None for r in reasons.values())
    assert n > 0, f"{adapter.name}: expresses none of the {len(CASES)} cases"
    grouped = Counter(why for why in reasons.values() if why is not None)
    assert all(why.strip() for why in grouped), f"{adapter.name}: every reason must be given"
    with capsys.disabled():  # one line per reason, in the test log
        print(f"\n{adapter.name}: {n} of {len(CASES)} cases expressible; not expressible:")
        for why, count in sorted(grouped.items()):
            print(f"    ({count}) {why}")
