# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Label Studio, only for the tests of `alpr-ops label` (the project talks to it over REST; its pins clash with ours)
LS_VENV ?= .ls-venv
LS_STAMP := $(LS_VENV)/.installed
# Offline at run time: `alpr-ops` and the tests set tasks/support/offline.py's OFFLINE_ENV themselves.

.PHONY: setup demo test lint lock lock-label-studio

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	$(BIN)/opt_in_out --opt_out >/dev/null  # OpenVINO/NNCF telemetry off
	@touch $(STAMP)

$(LS_STAMP): requirements-label-studio.lock
	@test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install --quiet -c requirements-label-studio.lock label-studio
	@touch $(LS_STAMP)

demo: $(STAMP)
	$(BIN)/alpr-ops demo

test:
	@$(MAKE) --no-print-directory -j2 $(STAMP) $(LS_STAMP)  # the two venvs install side by side
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -n 2 --dist loadfile  # two workers, one file each at a time (tests/conftest.py)

lint: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

lock: $(STAMP)
	{ head -n 2 requirements.lock; $(BIN)/python -m pip freeze --exclude-editable; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

lock-label-studio: $(LS_STAMP)
	{ head -n 2 requirements-label-studio.lock; $(LS_VENV)/bin/python -m pip freeze; } > requirements-label-studio.lock.new
	mv requirements-label-studio.lock.new requirements-label-studio.lock
