# `make test` builds .venv from nothing, installs the package with its dev extra, lints and tests.
# `make audit` audits the embedded pair: the benign fine-tune of our safety-aligned SmolLM2 against that
# reference, building both on first use. The gate's verdict is reported, not fatal to make (AUDIT_FLAGS).
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

AUDIT_FLAGS ?=
audit: install
	$(BIN)/ssah-audit audit smollm2-135m-safe-ft --reference smollm2-135m-safe $(AUDIT_FLAGS) || \
		test $$? -eq 1  # exit 1 = the gate failed: a finding, reported above; 2 and 3 are errors

clean:
	rm -rf $(VENV) build *.egg-info
