# `make test` builds .venv from nothing, installs the package with its dev extra, lints and tests.
# `make audit` runs the most complete job the tool has on the embedded default model.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A bare `torch` would pull a multi-GB CUDA build; this pin takes the CPU wheel on local disk.
TORCH_PIN := torch==2.13.0

.PHONY: test audit lint install clean

$(BIN)/ssah-audit: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_PIN)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/ssah-audit

lint: install
	$(BIN)/ruff check ssah_audit tests bench

test: lint
	$(BIN)/pytest -q

audit: install
	$(BIN)/ssah-audit inspect smollm2-135m-instruct
	$(BIN)/ssah-audit behavior smollm2-135m-instruct --limit 50

clean:
	rm -rf $(VENV) build *.egg-info
