# Two commands for a fresh machine: `make run` (the whole platform) and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Front-end assets (design system, Swagger UI, axe-core) from package-lock.json; never a CDN.
# --ignore-scripts: no install-time scripts (one dependency would send usage analytics).
ASSETS := node_modules/.package-lock.json

.PHONY: run test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,embedded]"
	touch $(STAMP)

$(ASSETS): package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund
	touch $(ASSETS)

run: $(STAMP) $(ASSETS)
	$(BIN)/sir up

test: $(STAMP) $(ASSETS)
	$(BIN)/python -m pytest
