# sentiment-lab: `make demo` (set up, run the quick-start study) and `make test` (set up, run the tests).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION := 2.13.0
# The offline IMDb copy beside the checkout, when there is one; otherwise the Hub is tried.
IMDB_DIR ?= $(if $(wildcard ../shared/data/imdb/train.parquet),$(abspath ../shared/data/imdb),)
export IMDB_DIR
RUN_DIR ?= runs/quickstart

.PHONY: setup setup-dev demo test test-fast lint format bench gpu-check clean

# torch first: `pip install torch==2.13.0` takes the local CPU wheel; any other torch request would pull
# gigabytes of CUDA packages. With 2.13.0 present, the package's `torch>=2.2` installs nothing more.
$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/pip install --quiet -e .
	touch $@

# Test and lint tools (pytest, ruff, Playwright, schemathesis) and the optional extras the tests cover (ray, mlflow,
# lora) only where tests run: `make demo` skips them.
$(BIN)/.installed-dev: $(BIN)/.installed
	$(BIN)/pip install --quiet -e ".[dev,ray,mlflow,lora]"
	touch $@

setup: $(BIN)/.installed

setup-dev: $(BIN)/.installed-dev

demo: setup
	@start=$$(date +%s); \
	$(BIN)/sentiment-lab train configs/quickstart.yaml --out $(RUN_DIR) --overwrite && \
	echo "quick-start finished in $$(( $$(date +%s) - start )) s; results in $(RUN_DIR)/"

test: setup-dev
	$(BIN)/python -m pytest -q

test-fast: setup-dev
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports

format: setup-dev
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

# Quick mode of both benchmarks (each a few minutes on 2 cores; full-size runs: see the scripts' docstrings).
# The inference one needs the quick-start model and exports ONNX/INT8 into $(RUN_DIR)/model/onnx/ when missing.
bench: setup
	@test -f $(RUN_DIR)/model/config.json || { \
		echo "make bench needs a trained model in $(RUN_DIR)/model: run \`make demo\` first (or set RUN_DIR=...)" >&2; \
		exit 1; }
	$(BIN)/python benchmarks/train_throughput.py --samples 256 --eval 400 \
		--out benchmarks/results/train_throughput.quick.json
	$(BIN)/python benchmarks/inference_throughput.py $(RUN_DIR)/model --samples 200 --latency-n 30 \
		--out benchmarks/results/inference_throughput.quick.json

# On a CUDA machine: fp16 training with early stopping and best-checkpoint restore (a tiny DistilBERT),
# precision auto, the benchmarks' CUDA paths and the Predictor on the GPU, in under 5 minutes, into gpu_check.json.
# Without CUDA it says so and exits 0.
gpu-check: setup
	$(BIN)/python benchmarks/gpu_check.py --out gpu_check.json

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
