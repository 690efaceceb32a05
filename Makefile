# The two commands: `make run` (demo) and `make test` (whole suite). Both create/refresh .venv themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint typecheck bench venv clean system-deps node-deps

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/bauxite demo

system-deps:
	bash scripts/system-deps.sh

# The official openai Node client, for the client conformance test (installed from the lock file).
NODE_STAMP := tests/node/node_modules/.package-lock.json
$(NODE_STAMP): tests/node/package.json tests/node/package-lock.json
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

node-deps: system-deps $(NODE_STAMP)

test: $(STAMP) system-deps node-deps lint typecheck
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/energy_accuracy.py
	$(PY) benchmarks/telemetry.py

clean:
	rm -rf $(VENV) .bench-venv .mypy_cache .ruff_cache .pytest_cache tests/node/node_modules
