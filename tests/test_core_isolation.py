"""`import eca_multi` (and the framework-free core) must not import any framework."""

from __future__ import annotations

import subprocess
import sys

FRAMEWORKS = ("torch", "tensorflow", "jax", "jaxlib", "flax", "keras", "safetensors")


def test_core_imports_no_framework():
    code = (
        "import sys, eca_multi, eca_multi.reference, eca_multi.spec, eca_multi.weights, "
        "eca_multi.conformance.cases, eca_multi.conformance.tolerances, "
        "eca_multi.conformance.generate, eca_multi.conformance.runner, eca_multi.cli\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS!r})\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core imported frameworks: {out.stdout.strip()}"
