# jaxprune: `make run` (main job on built-in data) and `make test` (lint + docs + tests).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Offline datasets (npz) for the studies; override with your own directory.
JAXPRUNE_DATA_DIR ?= $(abspath ../shared/data)
export JAXPRUNE_DATA_DIR

.PHONY: run test lint docs bench clean dpf-table2 dpf-ft-grid dpf-cpu dpf-full dpf-099 dpf-lr005 dpf-divergence dpf-resnet20 sap-cpu abp-california sipp-cpu sipp-resnet20 ap-cpu sparse-cpu

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m experiments.quickstart

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# The API reference and guides (docs/, mkdocs.yml) into site/; warnings are errors.
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir site

test: lint docs
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15

bench: $(STAMP)
	for b in experiments/benchmarks/bench_*.py; do $(PY) -m experiments.benchmarks.$$(basename $$b .py); done

# The DPF paper's Table 2 protocol on LeNet-300-100 / Fashion-MNIST at the full CPU budget (60 epochs, all
# data): the fine-tuning grid once (results/dpf_ft_grid.*), then Dense, One-shot P+FT, Incremental(+FT),
# DPF(+FT) over 4 targets and 3 seeds (resumable: finished runs are skipped; base runs kept for the +FT rows).
dpf-ft-grid: $(STAMP)
	$(PY) -m experiments.dpf_study --ft_grid --seeds 0 --targets 0.95 --out results/dpf_ft_grid.json \
	  --workroot runs/dpf_table2
dpf-table2: $(STAMP)
	$(PY) -m experiments.dpf_study --seeds 0,1,2 --methods dense,dpf,incremental,one_shot_ft,dpf_ft,incremental_ft \
	  --workroot runs/dpf_table2 --out results/dpf_table2.json

# The CPU-scale studies behind results/ (budgets reduced from the configs' defaults; see each results/*.md).
DPF_ARGS := --epochs 15 --train_limit 15000
dpf-cpu: $(STAMP)
	for s in 0 1 2; do $(PY) -m experiments.dpf_study $(DPF_ARGS) --seeds $$s --run_only --out runs/dpf_study/seed$$s.json & done; wait
	$(PY) -m experiments.dpf_study $(DPF_ARGS) --timing_pairs 3 --run_only --out runs/dpf_study/timing.json
	$(PY) -m experiments.dpf_study --report_only --out results/dpf_cpu.json \
	  --merge runs/dpf_study/seed0.json,runs/dpf_study/seed1.json,runs/dpf_study/seed2.json,runs/dpf_study/timing.json

# The issue's LeNet budget (60 epochs, all data, 3 seeds) and 2 wall-time pairs: results/dpf_cpu_full.*
dpf-full: $(STAMP)
	for s in 0 1 2; do $(PY) -m experiments.dpf_study --seeds $$s --run_only --workroot runs/dpf_full_s$$s \
	  --out runs/conv/dpf_lenet_full_seed$$s.json & done; wait
	$(PY) -m experiments.dpf_study --timing_pairs 2 --run_only --workroot runs/dpf_timing_full --out runs/conv/timing_full.json
	$(PY) -m experiments.dpf_study --report_only --out results/dpf_cpu_full.json --merge \
	  runs/conv/dpf_lenet_full_seed0.json,runs/conv/dpf_lenet_full_seed1.json,runs/conv/dpf_lenet_full_seed2.json,runs/conv/timing_full.json

# DPF vs Incremental at 0.99 with 8 seeds (finished runs in the JSON are skipped): results/dpf_cpu_full_099.*
dpf-099: $(STAMP)
	$(PY) -m experiments.dpf_study --seeds 0,1,2,3,4,5,6,7 --methods dpf,incremental --targets 0.99 \
	  --workroot runs/dpf_099 --out results/dpf_cpu_full_099.json

# The full LeNet grid at peak lr 0.05 instead of 0.1 (3 seeds, ~35 min): results/dpf_cpu_full_lr005.*
dpf-lr005: $(STAMP)
	$(PY) -m experiments.dpf_study --lr 0.05 --seeds 0,1,2 --run_only --workroot runs/dpf_lr005 \
	  --out results/dpf_cpu_full_lr005.json
	$(PY) -m experiments.dpf_study --report_only --out results/dpf_cpu_full_lr005.json

# Per-step dynamics of DPF 0.99 at its mask updates, 8 seeds (about 12 min): results/dpf_divergence.*
dpf-divergence: $(STAMP)
	$(PY) -m experiments.dpf_divergence --seeds 1,0,2,3,4,5,6,7 --target 0.99

# The conv run: ResNet-20 on the CIFAR-10 JPEG copy, 20 epochs, target 0.9 (merged into results/dpf_cpu.*)
dpf-resnet20: $(STAMP)
	$(PY) -m experiments.dpf_study --grid resnet20 --seeds 0 --run_only --workroot runs/dpf_r20 \
	  --out runs/conv/dpf_resnet20_seed0.json
	$(PY) -m experiments.dpf_study --report_only --merge runs/conv/dpf_resnet20_seed0.json --out results/dpf_cpu.json

sap-cpu: $(STAMP)
	$(PY) -m experiments.sap_study --epochs 3 --rounds 30 --train_limit 30000 --jobs 2 --workdir runs/sap_cpu_main

abp-california: $(STAMP)
	$(PY) -m experiments.abp_study

sipp-cpu: $(STAMP)
	$(PY) -m experiments.sipp_study --epochs 3 --train-limit 10000 --seeds 0,1,2 \
	  --methods sipp_det,sipp_rand,sipp_hybrid,wt,snip --iter-methods wt,sipp_det,snip

sipp-resnet20: $(STAMP)
	$(PY) -m experiments.sipp_study --config jaxprune.configs.sipp_resnet20 --epochs 3 --train-limit 5000 --seeds 0 \
	  --sparsities 0.9,0.98 --methods wt,snip,sipp_det,sipp_rand,sipp_hybrid --skip-iter \
	  --workdir runs/sipp_r20 --out results/sipp_resnet20.json

# Both fine-tuning protocols: the official code's (only the pruned layer trains) and all layers.
ap-cpu: $(STAMP)
	for ft in pruned_layer all; do $(PY) -m experiments.ap_study --finetune $$ft --models lenet300,mlp --epochs 5 \
	  --finetune_epochs 4 --train_limit 6000 --t_samples_epoch 100000 --jobs 2; done

# Sparse training study (issue 18) at the DPF study's full CPU budget; DPF/Incremental reused from results/dpf_table2.json.
SPARSE_ARGS :=
sparse-cpu: $(STAMP)
	for s in 0 1 2; do $(PY) -m experiments.sparse_training_study $(SPARSE_ARGS) --seeds $$s --run_only \
	  --out runs/sparse_study/seed$$s.json --workroot runs/sparse_study/w$$s --reuse results/dpf_table2.json & done; wait
	$(PY) -m experiments.sparse_training_study --report_only --out results/sparse_training.json \
	  --merge runs/sparse_study/seed0.json,runs/sparse_study/seed1.json,runs/sparse_study/seed2.json

clean:
	rm -rf $(VENV) runs .pytest_cache
