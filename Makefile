# The two commands a user needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint typecheck pytest bench clean

# The daemon tier's files that take a run through every state end to end: run again on the
# distribution's PostgreSQL by `make test`.
LIFECYCLE := $(addprefix tests/daemon/,test_engine.py test_waits.py test_child_runs.py \
	test_events.py test_steps.py test_cancel_wins.py test_outcome_cas.py test_llm_calls.py \
	test_webhooks.py test_hooks_listener.py test_versions_api.py test_testing_time.py)

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
	$(BIN)/ruff check daemon tasks tests bench docs
	$(BIN)/ruff format --check daemon tasks tests bench docs
	$(BIN)/mypy daemon/taskd tasks docs/build_reference.py
	$(BIN)/lint-imports
	@# Three workers (pytest-xdist), each with its own embedded server, on however many cores:
	@# the tests mostly wait (on PostgreSQL, daemons, Chromium), so a third worker fills the
	@# cores where two leave them idle. A worker's tests run one at a time, as before.
	$(BIN)/pytest -q -n 3 --dist worksteal
	@# The database-facing tiers on the other PostgreSQL versions at hand, side by side: the
	@# embedded 16 (the store tier), and the server the distribution ships (Debian's
	@# `postgresql`, which .ci/run installs: the store tier and the daemon tier's lifecycle files,
	@# $(LIFECYCLE)). schema.sql is a dump of 18 (tested above). The whole daemon tier there would
	@# add 4 minutes.
	sh tests/other_postgres.sh $(BIN)/pytest $(LIFECYCLE)

bench: $(BIN)/taskd
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/limits.py
	$(BIN)/python bench/resume.py
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/cron.py
	$(BIN)/python bench/llm.py
	$(BIN)/python bench/console.py
	$(BIN)/python bench/failover.py
	$(BIN)/python bench/pgbouncer.py
	$(BIN)/python bench/fleet.py
	$(BIN)/python bench/soak.py --minutes 1
	$(BIN)/python bench/history.py --quick
	$(BIN)/python bench/drain_sql.py --pg 18
	$(BIN)/python bench/claim_parts.py

clean:
	rm -rf $(VENV) .taskd .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
