# jaxprune: `make run` (main job on built-in data) and `make test` (lint + tests).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Offline datasets (npz) for the studies; override with your own directory.
JAXPRUNE_DATA_DIR ?= $(abspath ../shared/data)
export JAXPRUNE_DATA_DIR

.PHONY: run test lint bench clean dpf-cpu sap-cpu abp-california sipp-cpu ap-cpu

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

# The CPU-scale studies behind results/ (budgets reduced from the configs' defaults; see each results/*.md).
DPF_ARGS := --epochs 15 --train_limit 15000
dpf-cpu: $(STAMP)
	for s in 0 1 2; do $(PY) -m experiments.dpf_study $(DPF_ARGS) --seeds $$s --run_only --out runs/dpf_study/seed$$s.json & done; wait
	$(PY) -m experiments.dpf_study $(DPF_ARGS) --timing_pairs 3 --run_only --out runs/dpf_study/timing.json
	$(PY) -m experiments.dpf_study --report_only --out results/dpf_cpu.json \
	  --merge runs/dpf_study/seed0.json,runs/dpf_study/seed1.json,runs/dpf_study/seed2.json,runs/dpf_study/timing.json

sap-cpu: $(STAMP)
	$(PY) -m experiments.sap_study --epochs 3 --rounds 30 --train_limit 30000 --jobs 2 --workdir runs/sap_cpu_main

abp-california: $(STAMP)
	$(PY) -m experiments.abp_study

sipp-cpu: $(STAMP)
	$(PY) -m experiments.sipp_study --epochs 3 --train-limit 10000 --seeds 0,1,2 \
	  --methods sipp_det,sipp_rand,sipp_hybrid,wt,snip --iter-methods wt,sipp_det,snip

ap-cpu: $(STAMP)
	$(PY) -m experiments.ap_study --models lenet300,mlp --epochs 5 --finetune_epochs 4 --train_limit 6000 \
	  --t_samples_epoch 100000 --jobs 2

clean:
	rm -rf $(VENV) runs .pytest_cache
