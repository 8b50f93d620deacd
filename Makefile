# Two commands do all set-up on a fresh machine (Python 3.10+):
#   make demo   - the closed-loop demo on the built-in virtual microscope
#   make test   - the test suite
# Both create .venv on first use. torch is pinned here to the CPU build this machine
# kind has on disk; the package itself only asks for a range (pyproject.toml).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0

.PHONY: demo test lint bench setup clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)" -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/smartscope demo

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python tools/typecheck.py

bench: $(STAMP)
	$(BIN)/python bench/loop.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
