# Front doors: `make demo`, `make test` and `make lint`. Each creates .venv and installs the project into it.
# DEMO_ARGS passes overrides of configs/demo.yaml, e.g. make demo DEMO_ARGS="rl.steps=60".
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build on CPU machines; on a GPU machine run e.g. `make demo TORCH="torch"` for the CUDA build.
TORCH ?= torch==2.13.0
DEMO_OUT ?= runs/demo

.PHONY: install install-test install-lint demo test lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python setup.py
	$(BIN)/pip install "$(TORCH)"
	$(BIN)/pip install -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -e ".[test]"
	touch $@

$(VENV)/.installed-lint: $(VENV)/.installed
	$(BIN)/pip install -e ".[lint]"
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

install-lint: $(VENV)/.installed-lint

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m zerosearch.demo out_dir=$(DEMO_OUT) $(DEMO_ARGS)

test: install-test
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# ruff (lint rules and formatting, pyproject.toml) and mypy (strict where the math and contracts live).
lint: $(VENV)/.installed-lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(VENV)/.installed-lint
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) runs
