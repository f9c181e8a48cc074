"""Every backend package keeps the contract of eca_multi/registry.py: one file map, one io API.

The io modules are checked against :class:`eca_multi.registry.BackendIO` (a runtime-checkable
Protocol: every member present) and by use: a canonical state goes into a fresh model and comes
back bit for bit, and the model's logits come out through the contract's ``logits``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
from conftest import require_backend

from eca_multi import archs, registry

PACKAGE = Path(__file__).resolve().parent.parent / "eca_multi"
FILE_MAP = {
    "__init__.py",
    "layer.py",
    "family.py",
    "models.py",
    "io.py",
    "_ops.py",
    "_conformance.py",
    "_bench.py",
    "deploy.py",
}
FRAMEWORK = {"torch": "torch", "keras": "keras", "flax": "flax"}


@pytest.mark.parametrize("name", list(registry.BACKENDS))
def test_backend_has_the_common_file_map(name):
    backend = registry.BACKENDS[name]
    folder = PACKAGE / backend.package.split(".")[-1]
    have = {p.name for p in folder.glob("*.py")}
    assert FILE_MAP <= have, f"{name}: missing {sorted(FILE_MAP - have)} of the backend file map"


@pytest.mark.parametrize("name", list(registry.BACKENDS))
def test_backend_io_keeps_the_contract(name):
    require_backend(FRAMEWORK[name])
    io = importlib.import_module(registry.BACKENDS[name].io)
    assert isinstance(io, registry.BackendIO), (
        f"{name}: io lacks {[m for m in _members() if not hasattr(io, m)]}"
    )
    assert io.FRAMEWORK == name
    arch = "eca_resnet18"
    model = io.create_model(arch, 7, None)
    state = io.export_canonical_model(model, arch)
    schema = archs.schema(arch, 7)
    assert list(state) == list(schema), f"{name}: canonical keys or order differ from the schema"
    rng = np.random.default_rng(0)
    new = {
        k: (v if k.endswith("num_batches_tracked") else rng.standard_normal(v.shape)).astype(
            v.dtype
        )
        for k, v in state.items()
    }
    io.load_canonical_model(model, new, name=arch, strict=True)
    back = io.export_canonical_model(model, arch)
    bad = [k for k in new if not np.array_equal(back[k], new[k])]
    assert not bad, f"{name}: canonical round trip changed {bad[:5]}"
    logits = io.logits(model, rng.standard_normal((1, 3, 32, 32)).astype(np.float32))
    assert logits.shape == (1, 7) and logits.dtype == np.float64
    assert io.default_name(arch).endswith(io.SUFFIXES)
    versions = io.versions()
    assert versions["python"] and "device" in versions, versions


def _members() -> list[str]:
    return sorted(n for n in registry.BackendIO.__protocol_attrs__)  # noqa: SLF001
