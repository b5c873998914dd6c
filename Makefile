# Every target creates .venv on first use and reinstalls when pyproject.toml changes.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install lint format test test-full bench bench-full docs notebooks gpu-wheels clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[bench,dev,docs,interop,peers]"
	touch $(STAMP)

# ruff (lint and format check) on the whole tree, mypy on the library; `make test` runs it first.
lint: $(STAMP)
	$(BIN)/ruff check sfe_jax tests benchmarks notebooks
	$(BIN)/ruff format --check sfe_jax tests benchmarks notebooks
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix sfe_jax tests benchmarks notebooks
	$(BIN)/ruff format sfe_jax tests benchmarks notebooks

test: lint
	$(BIN)/python -m pytest -n 2 --dist worksteal $(PYTEST_ARGS)

test-full: lint
	$(BIN)/python -m pytest -n 2 --dist worksteal -m "" $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks all --quick --out bench-results

bench-full: $(STAMP)
	$(BIN)/python -m benchmarks all --full --out bench-results

# The API reference, the guide (README) and the tutorials with their stored outputs, in docs/_build/html.
docs: $(STAMP)
	$(BIN)/python -m sphinx -b html -W --keep-going docs docs/_build/html

# Re-execute every tutorial in full mode and store it with its outputs (notebooks/NN_name.ipynb).
notebooks: $(STAMP)
	$(BIN)/python notebooks/run.py

# Wheels that a GPU machine with its own CUDA JAX lacks, for benchmarks/gpu.sh (Python 3.12, x86-64).
gpu-wheels: $(STAMP)
	$(BIN)/python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl \
	  distrax==0.1.9 tfp-nightly==$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("tfp-nightly"))') \
	  gymnax==1.0.1 six

clean:
	rm -rf $(VENV) bench-results .pytest_cache docs/_build
