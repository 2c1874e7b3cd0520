# Two commands set everything up on a fresh machine with Python 3.11+:
#   make run    install into .venv, then materialize the whole asset graph on the embedded DuckDB
#   make test   install into .venv, then run the test suite (what .ci/run calls)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

# A pyenv-installed 3.13 if there is one (its shim fails unless 3.13 is pyenv's global), else
# python3.13 from PATH (uv downloads a Python when it finds none)
PY313 ?= $(or $(lastword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13)),python3.13)

.PHONY: install home run dev check typecheck test test-py313 lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/.installed

# dg reads [tool.dg] in pyproject.toml. The pre-dg equivalents still work:
#   dagster asset materialize -m segment_profiles_pipeline.definitions --select '*'
#   dagster dev -w workspace.yaml
# A new DAGSTER_HOME gets instance/dagster.yaml (warehouse pool limit 1: queued runs show in the UI).
home:
	mkdir -p "$(DAGSTER_HOME)"
	test -f "$(DAGSTER_HOME)/dagster.yaml" || cp instance/dagster.yaml "$(DAGSTER_HOME)/dagster.yaml"

run: install home
	$(BIN)/dg launch --assets '*'

dev: install home
	$(BIN)/dg dev

check: install
	$(BIN)/dg check defs

# mypy with [tool.mypy] in pyproject.toml: the whole package, strict on the sync engine and state.
typecheck: install
	$(BIN)/mypy

test: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -n 2 --durations=10

# The same suite on Python 3.13, in .venv-py313 built by uv from uv.lock (CI itself runs `make test`).
test-py313: install
	UV_PROJECT_ENVIRONMENT=.venv-py313 $(BIN)/uv sync --frozen --extra dev --python $(PY313)
	.venv-py313/bin/ruff check .
	.venv-py313/bin/mypy --python-version 3.13
	.venv-py313/bin/pytest -n 2 --durations=10

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .venv-py313 data .dagster_home
