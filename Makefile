# jaxprune: `make run` (main job on built-in data) and `make test` (lint + tests).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m experiments.quickstart

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	for b in experiments/benchmarks/bench_*.py; do $(PY) -m experiments.benchmarks.$$(basename $$b .py); done

clean:
	rm -rf $(VENV) runs .pytest_cache
