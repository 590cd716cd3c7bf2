# The README's two quick-start commands are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
VALIDATOR := tools/gltf-validator

WEB := src/meshforge/web

.PHONY: demo install dev validator web browser services lint typecheck test bench bench-service serve clean

demo: install  ## create .venv, install meshforge, and turn the bundled chair picture into out/chair.glb
	$(BIN)/meshforge generate examples/images/chair.png -o out --preview

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

dev: $(VENV)/.dev-installed

$(VENV)/.dev-installed: $(VENV)/.installed pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

validator: $(VALIDATOR)/node_modules/.installed

$(VALIDATOR)/node_modules/.installed: $(VALIDATOR)/package.json $(VALIDATOR)/package-lock.json
	npm ci --prefix $(VALIDATOR) --no-audit --no-fund --loglevel=error
	touch $@

web: $(WEB)/node_modules/.installed  ## three.js for the web studio, from npm

$(WEB)/node_modules/.installed: $(WEB)/package.json $(WEB)/package-lock.json
	npm ci --prefix $(WEB) --no-audit --no-fund --loglevel=error
	touch $@

browser:  ## Debian's Chromium for the studio's browser test (root installs it when missing)
	@command -v chromium >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q --no-install-recommends chromium; }

services:  ## Debian's PostgreSQL, RabbitMQ and Redis for the scale-out tests (root installs them when missing)
	@{ ls /usr/lib/postgresql/*/bin/initdb && command -v rabbitmq-server && command -v redis-server; } >/dev/null 2>&1 \
		|| { apt-get update -q && apt-get install -y -q --no-install-recommends postgresql rabbitmq-server redis-server; }

lint: dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: dev
	$(BIN)/mypy

test: dev validator web browser services lint typecheck  ## install dev extras, validator, studio deps, Chromium, PostgreSQL/RabbitMQ/Redis; lint, type-check, run the tests
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/generate_stages.py

serve: dev web  ## run the HTTP service (API docs at /docs, studio at /) on http://127.0.0.1:8000
	$(BIN)/meshforge serve --data-dir out/service

bench-service: dev
	$(BIN)/python benchmarks/service_load.py

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache $(VALIDATOR)/node_modules $(WEB)/node_modules
