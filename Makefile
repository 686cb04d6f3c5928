# knm: `make demo` to try it, `make test` to prove it. Both set themselves up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test check lint typecheck unit services venv bench clean openapi

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "knm needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/knm demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# PostgreSQL and Kafka on loopback, installed and started by knm's own scripts.
services: $(STAMP)
	$(BIN)/knm dev services up >/dev/null

unit: $(STAMP) services
	eval "$$($(BIN)/knm dev services env)" && $(BIN)/pytest

check: lint typecheck

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python bench/embedded_throughput.py

# The audit API's OpenAPI document, kept in the repository (a test holds it in sync).
openapi: $(STAMP)
	$(BIN)/knm audit-api --print-openapi > docs/openapi.json

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
