# Two front doors: `make demo` and `make test`. Both create .venv and install the project into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build on CPU machines; on a GPU machine run e.g. `make demo TORCH="torch"` for the CUDA build.
TORCH ?= torch==2.13.0
DEMO_OUT ?= runs/digits

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
	HF_HUB_OFFLINE=1 $(BIN)/python examples/digits/train.py --out $(DEMO_OUT) --algo grpo

test: install-test
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
