# incident-hub: the two README commands are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

# The exact, hashed versions that are tested and shipped (`make lock` refreshes them).
LOCK := requirements.lock
TEST_LOCK := requirements-test.lock
UV_VERSION := 0.13.9
UV_COMPILE = $(BIN)/uv pip compile --universal --python-version 3.11 --generate-hashes -q --upgrade

.PHONY: run test lint bench venv clean test-reliability soak lock test-latest

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Re-install whenever the lock or pyproject.toml changes; the stamp records which lock is in.
# Dependencies come from the lock only (hash-checked); the project itself goes in without them.
$(VENV)/.installed-run: $(LOCK) pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --require-hashes -r $(LOCK)
	$(BIN)/pip install -q --no-deps -e .
	touch $@

$(VENV)/.installed-test: $(TEST_LOCK) pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --require-hashes -r $(TEST_LOCK)
	$(BIN)/pip install -q --no-deps -e .
	touch $@ $(VENV)/.installed-run

venv: $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/incident-hub run

test: $(VENV)/.installed-test
	@bash scripts/ensure-browser.sh
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

# Re-resolve both locks to the newest versions pyproject.toml allows (commit the result).
lock: | $(BIN)/python
	$(BIN)/pip install -q uv==$(UV_VERSION)
	$(UV_COMPILE) pyproject.toml -o $(LOCK)
	$(UV_COMPILE) --extra test pyproject.toml -o $(TEST_LOCK)

# The suite against the newest versions the ranges allow today, unlocked, in its own venv:
# what a library user who installs incident-hub without the lock gets.
test-latest:
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/pip install -q --upgrade pip
	.venv-latest/bin/pip install -q --upgrade -e '.[test]'
	@bash scripts/ensure-browser.sh
	.venv-latest/bin/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .venv-latest var .pytest_cache
