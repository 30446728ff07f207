# Every target sets itself up on a fresh clone: it creates .venv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed before anything that depends on it, pinned, so pip never swaps in
# another build; set TORCH= to skip it and the model extra (their tests then skip).
TORCH ?= torch==2.13.0

.PHONY: test test-all lint demo bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(if $(TORCH),$(BIN)/python -m pip install -q "$(TORCH)")
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(if $(TORCH),$(BIN)/python -m pip install -q -e ".[models]")
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e ".[bench]"
	touch $@

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## The test command: lint, types, then the fast offline suite.
test: lint
	$(BIN)/python -m pytest -m "not slow"

## Everything, slow tests included.
test-all: lint
	$(BIN)/python -m pytest

demo: $(VENV)/.installed
	$(BIN)/python examples/fde_demo.py

bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/bench_fde.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
