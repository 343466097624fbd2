# The two set-up commands from the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test test-fast test-sqlite lint-imports install bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

# Byte-compile the project too: an editable install leaves that to the first import, and where
# PYTHONDONTWRITEBYTECODE is set every process would compile the modules again (~0.15 s each).
install: $(STAMP)
	@$(BIN)/python -m compileall -q okta_flex_sync simulator

## Start the bundled Okta/Flex simulator and run the nightly job against it on SQLite.
demo: install
	$(BIN)/okta-flex-sync demo

## Install everything (Python deps, Chromium, Postgres running) and run the whole suite on SQLite and Postgres.
test: install lint-imports
	bash scripts/ensure-test-services.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## The unit tier only: pure code, no database server, no simulator, no Prefect (well under a minute).
test-fast: install
	$(BIN)/python -m pytest tests/unit -q $(PYTEST_ARGS)

## The layering contract in pyproject.toml: imports point one way, no cycles, a pure core.
lint-imports: install
	$(BIN)/lint-imports

## The suite without Postgres and the browser (quick local loop).
test-sqlite: install
	TEST_DATABASES=sqlite $(BIN)/python -m pytest -m "not browser" $(PYTEST_ARGS)

## Benchmarks (prints wall time, requests, 429s and peak RSS per scenario).
bench: install
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/bench_history.py

clean:
	rm -rf $(VENV) .pytest_cache reports okta_flex_sync_demo.db* okta_flex_sync_demo.lock
