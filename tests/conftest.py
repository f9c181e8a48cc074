"""Test setup shared by every backend: caches under a temp folder, tests/ importable, options.

Environment (set before any framework import): KERAS_HOME, TORCHINDUCTOR_CACHE_DIR,
JAX_COMPILATION_CACHE_DIR, TMPDIR and friends point into a folder of this run so nothing is
written to the home folder.
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
    # JAX's persistent compilation cache: the xdist workers and every subprocess (Keras on JAX,
    # Flax, the graph-port workers) compile the same shapes; a hit loads the same executable
    ("JAX_COMPILATION_CACHE_DIR", "jax"),
    ("XDG_CACHE_HOME", "cache"),
    ("MPLCONFIGDIR", "mpl"),
    ("TMPDIR", "tmp"),
):
    os.environ.setdefault(_var, str(_SCRATCH / _sub))
    Path(os.environ[_var]).mkdir(parents=True, exist_ok=True)
os.environ["ECA_MULTI_SCRATCH"] = str(_SCRATCH)
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # small ones add up
# keys independent of the cache folder (JAX hashes its GPU-only XLA caches' folder in): Makefile
os.environ.setdefault("JAX_PERSISTENT_CACHE_ENABLE_XLA_CACHES", "none")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow's CPU Conv2D takes NCHW (channels_first, eager) only through its oneDNN kernels,
# which are on by default only on Intel AVX-512 CPUs; the same on every CPU (see README, Keras)
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
tempfile.tempdir = os.environ["TMPDIR"]
sys.path.insert(0, str(Path(__file__).resolve().parent))
# Each xdist worker (and every process it starts) gets its share of the cores for the frameworks'
# intra-op thread pools. Pools sized for the whole machine oversubscribe it under `pytest -n 2`
# (two workers, several with two subprocesses of their own): spinning threads cost ~10% of CI's
# CPU time on 2 cores. Numbers are unchanged within each test's tolerance; set before any import.
_THREADS = str(max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", 1))))
for _var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
    os.environ.setdefault(_var, _THREADS)
if _THREADS == "1" and "xla_cpu_multi_thread_eigen" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
    ).strip()

# torch must be imported before TensorFlow in a process that holds both (see FACTS); so must
# torch._dynamo (it loads triton, which segfaults once TensorFlow is loaded; timm/torchvision and
# torch.compile import it).
try:
    import torch  # noqa: F401
    import torch._dynamo  # noqa: F401
except ImportError:
    pass

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# CI draws the same hypothesis examples every run (a red CI is then reproducible); local runs
# draw new ones, which is where an unknown counterexample turns up (print_blob: its seed)
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev", print_blob=True)


def _truthy(v: str | None) -> bool:
    return (v or "").strip().lower() not in ("", "0", "false", "no")


REQUIRE_ALL = _truthy(os.environ.get("CI")) or _truthy(os.environ.get("ECA_MULTI_REQUIRE_ALL"))
settings.load_profile(
    os.environ.get("ECA_MULTI_HYPOTHESIS_PROFILE")
    or ("ci" if _truthy(os.environ.get("CI")) else "dev")
)


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


# --- two xdist workers, heaviest work first -------------------------------------------------------
# `make test` runs `pytest -n 2 --dist loadfile`: each file is one unit of work, sent to a worker
# when it runs low. xdist's default order (most tests first) sent the files with a few long tests
# (whole-model ports, repository copies, per-backend reruns) last, where one worker ran them alone
# while the other sat idle. Units now start heaviest first (HEAVY_FIRST: wall seconds of each unit
# in a fresh-clone `.ci/run` on the 2-core CI machine, largest first; anything not listed is
# light), and the tests in SPLIT, which share no module fixture and each start processes of their
# own, are units of one test each. A worker takes its next unit while it still has up to two tests
# pending, so the single-test units alternate with files of many tests: no worker queues two of
# them while the other starves.
HEAVY_FIRST = (
    "tests/test_graph_archs.py",  # 7 timm models x 4 targets, two port workers at a time: 910 s
    "conformance/test_backends.py",  # 5 backend groups, one process after the other: 1030 s
    "tests/keras/test_keras_other_backends.py::test_keras_suite_on_other_backend[jax]",  # 460 s
    "tests/test_delete_backend.py::test_one_backend_deleted[torch]",  # each copy: 110-140 s
    "tests/keras/test_keras_models.py",  # 390 s
    "tests/test_delete_backend.py::test_one_backend_deleted[keras]",
    "tests/deploy/test_deploy_export.py",  # 250 s
    "tests/test_delete_backend.py::test_one_backend_deleted[flax]",
    "tests/test_port_cross.py",  # 235 s
    "tests/keras/test_keras_other_backends.py::test_keras_suite_on_other_backend[torch]",  # 200 s
    "tests/flax/test_flax_models.py",  # 180 s
    "tests/flax/test_flax_family.py",  # 145 s
    "tests/test_hostile_files.py",  # 115 s
    "tests/test_fuzz.py",  # 105 s
    "tests/deploy/test_deploy_distributed.py",  # 100 s
    "tests/test_hub.py",  # 80 s
)
SPLIT = (
    "tests/test_delete_backend.py::test_one_backend_deleted",
    "tests/keras/test_keras_other_backends.py::test_keras_suite_on_other_backend",
)


def _heaviness(item) -> int:
    """Rank of the first HEAVY_FIRST entry that is the item's file or its whole node id."""
    path = item.nodeid.split("::", 1)[0]
    for rank, entry in enumerate(HEAVY_FIRST):
        if entry in (path, item.nodeid):
            return rank
    return len(HEAVY_FIRST)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    items.sort(key=_heaviness)  # stable: the rest keeps pytest's order


def pytest_configure(config):
    if getattr(config.option, "dist", "no") == "loadfile":
        config.option.loadscopereorder = False  # xdist keeps the order set above


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: pytest without it runs unchanged
def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist's loadfile scheduler (its public hook), with each SPLIT test a unit alone."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class HeavyFirst(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            alone = nodeid.split("[", 1)[0] in SPLIT
            return nodeid if alone else super()._split_scope(nodeid)

    return HeavyFirst(config, log)


@pytest.fixture(autouse=True, scope="module")
def _release_framework_memory():
    """After each test file: drop Keras' global graph state and JAX's compilation caches, then
    collect. A long-lived pytest process (an xdist worker runs many files) otherwise keeps every
    model a file built; two workers side by side then outgrow the machine's memory."""
    yield
    import gc

    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session()
    if "jax" in sys.modules:
        sys.modules["jax"].clear_caches()
    gc.collect()
