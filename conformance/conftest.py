"""pytest for the open suite: ``pytest conformance/`` (the whole suite) from the repository root.

Options (or environment variables):

* ``--backends`` / ``ECA_MULTI_BACKENDS``: eca-multi's own backends (default all; "none" for none).
* ``--impl`` / ``ECA_CONFORMANCE_IMPL``: implementations to check, comma-separated specs
  (``package.module:adapter``, an entry point name, ``onnx:PATH``; default "all": every adapter
  registered in the ``eca_multi.conformance`` entry point group; "none" for none).

In CI (CI=true or ECA_MULTI_REQUIRE_ALL=1) a missing backend is a failure, never a skip. Caches and
temporary files go to a folder of this run (the worker subprocesses inherit it).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_SCRATCH = Path(os.environ.get("ECA_MULTI_SCRATCH") or tempfile.mkdtemp(prefix="eca-conf-"))
for _var, _sub in (
    ("KERAS_HOME", "keras"),
    ("TORCHINDUCTOR_CACHE_DIR", "inductor"),
    ("JAX_COMPILATION_CACHE_DIR", "jax"),  # shared by the backend workers (tests/conftest.py)
    ("XDG_CACHE_HOME", "cache"),
    ("MPLCONFIGDIR", "mpl"),
    ("TMPDIR", "tmp"),
):
    os.environ.setdefault(_var, str(_SCRATCH / _sub))
    Path(os.environ[_var]).mkdir(parents=True, exist_ok=True)  # fmt: skip
os.environ["ECA_MULTI_SCRATCH"] = str(_SCRATCH)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_ENABLE_XLA_CACHES", "none")  # key: see Makefile
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # TF CPU NCHW conv (see tests/conftest.py)
tempfile.tempdir = os.environ["TMPDIR"]


def _truthy(v: str | None) -> bool:
    return (v or "").strip().lower() not in ("", "0", "false", "no")


REQUIRE_ALL = _truthy(os.environ.get("CI")) or _truthy(os.environ.get("ECA_MULTI_REQUIRE_ALL"))


def pytest_addoption(parser):
    group = parser.getgroup("eca-multi conformance")
    group.addoption(
        "--backends",
        default=os.environ.get("ECA_MULTI_BACKENDS", "all"),
        help="eca-multi backends, comma-separated (env ECA_MULTI_BACKENDS; default all)",
    )
    group.addoption(
        "--impl",
        default=os.environ.get("ECA_CONFORMANCE_IMPL", "all"),
        help="implementations, comma-separated specs (env ECA_CONFORMANCE_IMPL; default all "
        "registered adapters)",
    )


def pytest_configure(config):
    from eca_multi.conformance.backends import resolve_backends

    names = config.getoption("--backends")
    try:
        config.eca_backends = [] if names == "none" else resolve_backends(names)
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None
    config.eca_require_all = REQUIRE_ALL
    config.eca_impls = _impl_specs(config.getoption("--impl"))


def _impl_specs(raw: str) -> list[str]:
    """The --impl specs; "all" = every registered adapter that needs no argument (a factory
    such as ``onnx`` says so by raising NeedsArgument when named bare)."""
    from eca_multi.conformance.impl import NeedsArgument, entry_point_names

    specs: list[str] = []
    for s in (p.strip() for p in raw.split(",") if p.strip() and p.strip() != "none"):
        if s != "all":
            specs.append(s)
            continue
        for name in entry_point_names():
            try:
                adapter_for(name)
            except NeedsArgument:
                continue
            specs.append(name)
    return list(dict.fromkeys(specs))


_ADAPTERS: dict = {}


def adapter_for(spec: str):
    """The adapter of one spec, loaded (and set up) once per session."""
    from eca_multi.conformance.impl import load_adapter

    if spec not in _ADAPTERS:
        adapter = load_adapter(spec)
        setup = getattr(adapter, "setup", None)
        if setup is not None:
            setup()
        _ADAPTERS[spec] = adapter
    return _ADAPTERS[spec]


def pytest_generate_tests(metafunc):
    """``impl_spec``: each --impl; ``impl_case``: each (spec, case) the adapter can express (the
    others are listed by test_not_expressible_cases_are_listed, never run or counted)."""
    from eca_multi.conformance.cases import CASES
    from eca_multi.conformance.impl import not_expressible

    specs = metafunc.config.eca_impls
    if "impl_spec" in metafunc.fixturenames:
        metafunc.parametrize("impl_spec", specs, ids=specs)
    if "impl_case" in metafunc.fixturenames:
        pairs = [(s, c) for s in specs for c in CASES if not_expressible(adapter_for(s), c) is None]
        metafunc.parametrize("impl_case", pairs, ids=[f"{s}-{c.id}" for s, c in pairs])


# --- our backends' groups run in the background, one worker subprocess per group ----------------
_GROUP_FUTURES: dict = {}


def _start_conformance(config) -> None:
    if _GROUP_FUTURES:
        return
    from concurrent.futures import ThreadPoolExecutor

    from eca_multi.conformance.runner import run_group

    groups: dict[str, list] = {}
    for b in config.eca_backends:
        groups.setdefault(b.group, []).append(b)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="conformance")
    for name, backends in groups.items():
        _GROUP_FUTURES[name] = pool.submit(run_group, backends)
    pool.shutdown(wait=False)


def pytest_collection_finish(session):
    # under pytest-xdist every worker collects everything: the group workers then start with the
    # first test that asks for them, in the one xdist worker that runs this file
    if hasattr(session.config, "workerinput"):
        return
    if any(item.originalname == "test_backend_case" for item in session.items):
        _start_conformance(session.config)


@pytest.fixture(scope="session")
def conformance_group(request):
    """``conformance_group(group) -> {(backend, case): record}``, waiting for its worker."""

    def get(group: str) -> dict:
        _start_conformance(request.config)
        data = _GROUP_FUTURES[group].result()
        return {(r["backend"], r["case"]): r for r in data["results"]}

    return get
