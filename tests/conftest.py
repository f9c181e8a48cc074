"""Test setup shared by every backend: caches under a temp folder, tests/ importable, options.

Environment (set before any framework import): KERAS_HOME, TORCHINDUCTOR_CACHE_DIR, TMPDIR and
friends point into a folder of this run so nothing is written to the home folder.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
_OWN_SCRATCH = not os.environ.get("ECA_MULTI_SCRATCH")
_SCRATCH = Path(os.environ.get("ECA_MULTI_SCRATCH") or tempfile.mkdtemp(prefix="eca-multi-tests-"))
if _OWN_SCRATCH:  # remove this run's scratch folder at exit (subprocesses inherit it meanwhile)
    import atexit
    import shutil

    atexit.register(shutil.rmtree, _SCRATCH, ignore_errors=True)
for _var, _sub in (
    ("KERAS_HOME", "keras"),
    ("TORCHINDUCTOR_CACHE_DIR", "inductor"),
    ("TRITON_CACHE_DIR", "triton"),
    ("XDG_CACHE_HOME", "cache"),
    ("MPLCONFIGDIR", "mpl"),
    ("TMPDIR", "tmp"),
):
    os.environ.setdefault(_var, str(_SCRATCH / _sub))
    Path(os.environ[_var]).mkdir(parents=True, exist_ok=True)
os.environ["ECA_MULTI_SCRATCH"] = str(_SCRATCH)
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tempfile.tempdir = os.environ["TMPDIR"]
sys.path.insert(0, str(Path(__file__).resolve().parent))

# torch must be imported before TensorFlow in a process that holds both (see FACTS); so must
# torch._dynamo (it loads triton, which segfaults once TensorFlow is loaded; timm/torchvision and
# torch.compile import it).
try:
    import torch  # noqa: F401
    import torch._dynamo  # noqa: F401
except ImportError:
    pass

import pytest  # noqa: E402


def _truthy(v: str | None) -> bool:
    return (v or "").strip().lower() not in ("", "0", "false", "no")


REQUIRE_ALL = _truthy(os.environ.get("CI")) or _truthy(os.environ.get("ECA_MULTI_REQUIRE_ALL"))


def pytest_addoption(parser):
    parser.addoption(
        "--backends",
        default=os.environ.get("ECA_MULTI_BACKENDS", "all"),
        help="conformance backends, comma-separated (env ECA_MULTI_BACKENDS; default all)",
    )


def pytest_configure(config):
    from eca_multi.conformance.backends import resolve_backends

    try:
        config.eca_backends = resolve_backends(config.getoption("--backends"))
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None


def _skip_to_failure(report) -> None:
    """In CI (CI=true or ECA_MULTI_REQUIRE_ALL=1) a skipped backend is a failure."""
    if REQUIRE_ALL and report.skipped:
        reason = str(report.longrepr)
        if "could not import" in reason or "backend missing" in reason:
            report.outcome = "failed"
            report.longrepr = f"skipped backend is a failure in CI: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _skip_to_failure(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _skip_to_failure(outcome.get_result())


def require_backend(module: str):
    """Import a framework, skipping locally and failing in CI when it is not installed."""
    if REQUIRE_ALL:
        import importlib

        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"backend missing: {module} not installed")


# --- conformance groups run in the background, one worker subprocess per group -----------------
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
    if any(item.originalname == "test_conformance" for item in session.items):
        _start_conformance(session.config)


def conformance_group(config, group: str) -> dict:
    """{(backend, case): record} for one group, waiting for its worker if still running."""
    _start_conformance(config)
    data = _GROUP_FUTURES[group].result()
    return {(r["backend"], r["case"]): r for r in data["results"]}
