# Two commands do everything on a fresh machine:
#   make demo   run the whole system on loopback (PVE emulator, 3 agents, coordinator)
#   make test   run the test suite (make test-fast: the unit and in-process tests, < 1 min)
VENV  := .venv
STAMP := $(VENV)/.bootstrapped
PY    := $(VENV)/bin/python

.PHONY: help demo test test-fast lint format bench wheel lock clean

help:
	@echo "make demo    run the system on loopback (SQLite, PVE emulator, agents); Ctrl-C stops it"
	@echo "make test    run the tests (MariaDB tests need 127.0.0.1:3306; see README)"
	@echo "make test-fast  only the unit and in-process tests (no stack starts; under a minute)"
	@echo "make lint    ruff + mypy"
	@echo "make bench   run the benchmarks in benchmarks/"
	@echo "make wheel   the production wheel in dist/ (coordinator, agent, shared, client; see README)"

$(STAMP): pyproject.toml devtools/pyproject.toml requirements.lock scripts/bootstrap.sh
	@scripts/bootstrap.sh

demo: $(STAMP)
	@$(PY) -m demo

# pytest exits 5 when it collected no test: make fails on it like on any other failure.
# Stack tests mostly wait (on processes, timers, the network), so TEST_WORKERS of them run
# side by side (pytest-xdist), a module on one worker (its stack and its order are its own),
# handed out in the order collected: the stack modules first, the quick unit tests fill in
# at the end (xdist's default order, most tests first, left fuzzing and faults for last).
# Four: once the emulator's pvesh calls got cheap the suite waits more than it computes
# (1422 tests: 550 s with 3 workers, 507 s with 4, same machine, same hour).
TEST_WORKERS ?= 4
test: $(STAMP)
	@$(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder $(PYTEST_ARGS)

# No process is started: the pure logic (tests/unit) and the API answered in-process
# (tests/inprocess), plus the settings and unit-file checks.
FAST_TESTS := tests/unit tests/inprocess tests/test_config.py tests/test_systemd_units.py
test-fast: $(STAMP)
	@$(PY) -m pytest $(FAST_TESTS) $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy coordinator agent shared client pvesim demo benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP)
	@$(PY) -m benchmarks $(BENCH_ARGS)

# What production installs. build/ goes first: setuptools packs whatever an earlier build
# left in build/lib, a package no longer listed (pvesim) included.
wheel: $(STAMP)
	rm -rf build dist
	$(PY) -m pip wheel --no-deps --no-build-isolation -q -w dist .

# Re-pin the dependencies after changing pyproject.toml or devtools/pyproject.toml
# (setuptools too: tests/test_packaging.py builds the wheel with it; pip is not pinned).
lock: $(STAMP)
	$(PY) -m pip freeze --all --exclude-editable | grep -v '^pip==' > requirements.lock

clean:
	rm -rf $(VENV) .demo build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
