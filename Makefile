# incident-hub: the two README commands are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench venv clean test-reliability soak

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Re-install whenever pyproject.toml changes; the stamp records which extras are in.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed-run

venv: $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/incident-hub run

test: $(VENV)/.installed-test
	-@bash scripts/ensure-browser.sh
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check hub connectors tests bench

# The process-level reliability suite (tests/reliability; also part of `make test`).
test-reliability: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q tests/reliability $(PYTEST_ARGS)

# Long soak (15 min by default; RELIABILITY_SOAK_SECONDS, _RATE, _RETENTION, _SAMPLE_S).
soak: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -m soak tests/reliability $(PYTEST_ARGS)

bench: $(VENV)/.installed-test
	$(BIN)/python -m bench.ingress $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
