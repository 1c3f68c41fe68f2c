# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8080

.PHONY: install install-test run test lint-proto proto clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-test: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	@if command -v npm >/dev/null 2>&1; then npm install --silent --no-audit --no-fund; \
	else echo "npm not found: the buf lint/format tests will be skipped"; fi

run: install
	$(BIN)/quantized dev --port $(PORT)

test: install-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

proto: install-test
	$(BIN)/python tools/gen_protos.py gen

lint-proto:
	npx buf lint && npx buf format --exit-code >/dev/null

clean:
	rm -rf $(VENV) node_modules .pytest_cache
