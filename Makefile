# Two front doors: `make demo` and `make test`. Both create .venv and install the project into it.
# DEMO_ARGS passes overrides of configs/demo.yaml, e.g. make demo DEMO_ARGS="rl.steps=60".
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build on CPU machines; on a GPU machine run e.g. `make demo TORCH="torch"` for the CUDA build.
TORCH ?= torch==2.13.0
DEMO_OUT ?= runs/demo

.PHONY: install install-test demo test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python setup.py
	$(BIN)/pip install "$(TORCH)"
	$(BIN)/pip install -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -e ".[test]"
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m zerosearch.demo out_dir=$(DEMO_OUT) $(DEMO_ARGS)

test: install-test
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
