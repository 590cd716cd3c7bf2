# The README's two quick-start commands are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
VALIDATOR := tools/gltf-validator

.PHONY: demo install dev validator lint typecheck test bench clean

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

lint: dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: dev
	$(BIN)/mypy

test: dev validator lint typecheck  ## install dev extras and the glTF validator, lint, type-check, run the tests
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/generate_stages.py

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache $(VALIDATOR)/node_modules
