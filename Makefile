# Two commands set up a fresh machine: `make run` and `make test`.
# Both create .venv and install the pinned dependencies into it when needed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed-test
UV_VERSION := 0.13.8
# uv installs the pinned dependencies several times faster than pip; pip only bootstraps it.
PIP := $(BIN)/uv pip install --quiet --python $(BIN)/python

.PHONY: run test lint format bench lock clean

# `make run` installs only what the services need, so a fresh machine serves sooner;
# the test, lint and bench targets add the test extras.
$(BIN)/uv:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(RUN_STAMP): pyproject.toml | $(BIN)/uv
	$(PIP) -e .
	@touch $(RUN_STAMP)

$(STAMP): pyproject.toml | $(BIN)/uv
	$(PIP) -e ".[test]"
	@touch $(RUN_STAMP) $(STAMP)

run: $(RUN_STAMP)
	$(BIN)/crm up

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python -m bench.pipeline
	$(BIN)/python -m bench.contacts_import
	$(BIN)/python -m bench.loyalty
	$(BIN)/python -m bench.scoring
	$(BIN)/python -m bench.messaging

# The container image installs exactly this: every package, transitive ones included, at
# one version and hash. Run after changing a pin in pyproject.toml.
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 \
		--generate-hashes --quiet -o deploy/requirements.lock

clean:
	rm -rf $(VENV) .crm .pytest_cache .mypy_cache .ruff_cache *.egg-info
