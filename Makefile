# The two commands a user needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint typecheck pytest bench clean

$(BIN)/taskd: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.dev-installed: $(BIN)/taskd
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

run: $(BIN)/taskd
	$(BIN)/taskd run --config config.toml

test: $(VENV)/.dev-installed
	$(BIN)/ruff check daemon tasks tests bench
	$(BIN)/ruff format --check daemon tasks tests bench
	$(BIN)/mypy daemon/taskd tasks
	$(BIN)/lint-imports
	$(BIN)/pytest -q

bench: $(BIN)/taskd
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/limits.py
	$(BIN)/python bench/resume.py
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/cron.py

clean:
	rm -rf $(VENV) .taskd .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
