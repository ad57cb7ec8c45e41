# Every target creates .venv itself from the pinned dependencies in pyproject.toml.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export TESSERA_DATA_DIR ?= $(CURDIR)/.tessera

.PHONY: run test lint bench clean venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Initialise on first use (development mode), load the demo once, serve.
run: $(STAMP)
	TESSERA_DEV_MODE=1 TESSERA_GATEWAY_CONFIG=$${TESSERA_GATEWAY_CONFIG:-examples/gateway/gateway.yaml} \
	  $(VENV)/bin/tessera dev up

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy src

bench: $(STAMP)
	$(PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
