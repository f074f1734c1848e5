# Two commands on a fresh machine with Python 3.11+: `make run` and `make test`.
# Each installs what it needs first into .venv (re-installed when pyproject.toml changes): `make run`
# the engine alone, `make test` (and `make bench`) the engine with its test extras. Separate stamp
# files, so a `make run` never stands for the test install.
#   make run PORT=5001    serve on another port (default 5000; the variable CRM_PORT works too)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?=

.PHONY: run test bench install install-test clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed, found " + sys.version'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(BIN)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(BIN)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

install: $(BIN)/.installed-run

install-test: $(BIN)/.installed-test

run: install
	$(BIN)/crm up $(if $(PORT),--port $(PORT))

# The architecture linter first (.importlinter, docs/architecture.md): an import that breaks the
# layers, or one capability importing another, fails the build before any test runs.
# The browser tests (tests/ui) drive Debian's Chromium: install it (and the CJK font) if missing.
# PYTEST_ARGS adds pytest options (CI's PostgreSQL run: --ignore=tests/ui); --durations names the
# slowest tests at the end of every run, so a test that grows slow is seen.
PYTEST_ARGS ?=
test: install-test
	$(BIN)/lint-imports
	@bash tests/ui/install_browser.sh
	$(BIN)/python -m pytest -n 2 -q --durations=25 $(PYTEST_ARGS)

bench: install-test
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) var .pytest_cache
