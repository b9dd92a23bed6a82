# Two commands on a fresh machine (Python 3.11+, pip, make):
#   make run    install into .venv and start the sandbox (m3bng serve)
#   make test   install into .venv and run lint, type checks and the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint install bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/m3bng serve

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

# Three test processes on two cores: most tests wait on servers, databases and timers, not the CPU.
test: lint
	$(BIN)/pytest -n 3

bench: $(STAMP)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/e2e.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
