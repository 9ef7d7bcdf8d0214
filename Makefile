# salad-lightning: every target prints its help with `make help`.
# The virtual environment is created on first use; `make test` and `make run`
# work on a fresh clone with nothing installed.

PYTHON ?= python3
VENV ?= .venv
# Installed before the package so pip keeps it. On a machine with a GPU this is the
# ordinary (CUDA) wheel from PyPI; set TORCH_SPEC="" to keep a torch you already have.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
# the suite on every core (pytest-xdist); tests sharing a module fixture stay together
PYTEST_WORKERS ?= -n 2 --dist loadgroup

.DEFAULT_GOAL := help

help: ## Show this help
	@awk 'BEGIN {FS = ":.*?## "} /^[a-zA-Z_-]+:.*?## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@if [ -n "$(TORCH_SPEC)" ] && ! $(BIN)/python -c "import torch" 2>/dev/null; then \
		echo "installing $(TORCH_SPEC)"; $(BIN)/python -m pip install -q "$(TORCH_SPEC)"; fi
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the package with its dev extra
	@$(BIN)/python -c "import torch, pytorch_lightning, hydra; print('torch', torch.__version__, '| lightning', pytorch_lightning.__version__, '| hydra', hydra.__version__)"

test: $(STAMP) ## Run the test suite (creates .venv on first use)
	$(BIN)/python -m pytest -q $(PYTEST_WORKERS) $(ARGS)

test-fast: $(STAMP) ## Run the tests not marked slow
	$(BIN)/python -m pytest -q $(PYTEST_WORKERS) -m "not slow" $(ARGS)

lint: $(STAMP) ## Lint and check formatting with ruff
	$(BIN)/ruff check src tests experiments
	$(BIN)/ruff format --check src tests experiments

format: $(STAMP) ## Format the code with ruff
	$(BIN)/ruff check --fix src tests experiments
	$(BIN)/ruff format src tests experiments

run: $(STAMP) ## Train and test on the embedded synthetic dataset (pass overrides with ARGS="...")
	$(BIN)/python -m salad_lightning.run $(ARGS)

evaluate: $(STAMP) ## Evaluate a results JSON: make evaluate ARGS="--ground-truth GT.json --predictions PRED.json"
	$(BIN)/python -m salad_lightning.evaluate $(ARGS)

bench: $(STAMP) ## Run the CPU benchmarks (small sizes; see experiments/benchmarks/README.md)
	$(BIN)/python experiments/benchmarks/matching.py --threads 1
	$(BIN)/python experiments/benchmarks/postprocess.py --threads 1
	$(BIN)/python experiments/benchmarks/evaluate.py
	$(BIN)/python experiments/benchmarks/data.py --videos 2000
	$(BIN)/python experiments/benchmarks/train.py --small --videos 40 --test-videos 40 --repeats 10 --workers 1 --threads 1

clean: ## Remove caches (keeps .venv and outputs)
	rm -rf .pytest_cache .ruff_cache build dist src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean ## Remove caches and the virtual environment
	rm -rf $(VENV)

.PHONY: help install test test-fast lint format run evaluate bench clean distclean
