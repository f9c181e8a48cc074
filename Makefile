# The two commands (README): `make conformance` runs the backend x case matrix, `make test` runs
# the tests. Both build the environment (.venv, or ECA_MULTI_VENV: .ci/run's) from
# requirements-ci.txt + pyproject.toml on first use.
PYTHON ?= python3
VENV := $(or $(ECA_MULTI_VENV),.venv)
BIN := $(VENV)/bin
STAMP := $(VENV)/.eca-multi-installed
# keep framework caches inside the work tree, never in the home folder
export KERAS_HOME := $(CURDIR)/.cache/keras
export TORCHINDUCTOR_CACHE_DIR := $(CURDIR)/.cache/inductor
# JAX's persistent compilation cache: Keras on JAX and Flax compile each initializer and layer
# per shape, in every process; a cache hit loads the same executable (README, "Performance")
export JAX_COMPILATION_CACHE_DIR := $(CURDIR)/.cache/jax
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS := 0
# JAX adds GPU-only XLA caches in a subfolder of the cache's folder and hashes that path into
# every entry's key: a cache kept between CI runs (.ci/run) then never hit in another clone
export JAX_PERSISTENT_CACHE_ENABLE_XLA_CACHES := none
export XDG_CACHE_HOME := $(CURDIR)/.cache/xdg
# mypy's incremental cache (tests/test_types.py): entries are checked against each file's hash
export MYPY_CACHE_DIR := $(CURDIR)/.cache/mypy
export MPLCONFIGDIR := $(CURDIR)/.cache/mpl
export TMPDIR := $(CURDIR)/.cache/tmp
export TF_CPP_MIN_LOG_LEVEL := 2
# TensorFlow's CPU Conv2D runs channels_first (NCHW) only with oneDNN, default-on only on Intel
# AVX-512 CPUs: the same kernels on every CPU (README, "Install one backend")
export TF_ENABLE_ONEDNN_OPTS := 1
# Material for MkDocs' banner about MkDocs 2 (make docs, tests/test_docs_site.py): noise in logs
export NO_MKDOCS_2_WARNING := 1
# Python writes each module's bytecode on its first import (into .venv, which pip fills with
# --no-compile): an environment that sets PYTHONDONTWRITEBYTECODE would otherwise recompile all of
# TensorFlow, torch and JAX from source in every process the tests start (import of all four:
# 19 s with bytecode, 41-46 s without, on the 2-core CI machine)
unexport PYTHONDONTWRITEBYTECODE

.PHONY: conformance test lint docs env clean

$(STAMP): pyproject.toml requirements-ci.txt
	@mkdir -p $(TMPDIR)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch is pinned in the same pip command as the extras (requirements-ci.txt); --no-compile:
	# modules are byte-compiled on first import, not all of TensorFlow, torch and JAX up front
	$(BIN)/pip install --disable-pip-version-check -q --no-compile -r requirements-ci.txt -e ".[all,test]"
	@touch $(STAMP)

env: $(STAMP)

conformance: $(STAMP)
	@mkdir -p $(TMPDIR)
	$(BIN)/eca-multi conformance --require-all

# two pytest-xdist workers, each test file on one worker (its module fixtures built once); the
# slowest tests' times close the log (CI's step times: mypy, mkdocs, the wheel installs, ...)
TEST_JOBS ?= 2
test: $(STAMP)
	@mkdir -p $(TMPDIR)
	$(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadfile --durations=25

# the documentation site into site/ (mkdocs.yml); a broken link or reference fails it
docs: $(STAMP)
	@mkdir -p $(TMPDIR)
	$(BIN)/mkdocs build --strict

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports --no-cache

clean:
	rm -rf $(VENV) .cache .pytest_cache .hypothesis site
