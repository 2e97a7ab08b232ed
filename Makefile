# SignalDesk: every target bootstraps .venv from the lock file on a machine with only python3, pip and make.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
UV_VER  := 0.9.30

.PHONY: demo test lint bench clean

$(BIN)/uv:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==$(UV_VER)

# The stamp is newer than the lock file once the environment matches it.
$(VENV)/.synced: $(BIN)/uv uv.lock pyproject.toml
	$(BIN)/uv sync --frozen --inexact --all-extras --python $(BIN)/python
	@touch $@

demo: $(VENV)/.synced  ## run the bot, the sandbox Telegram and the paper broker on the embedded defaults
	$(BIN)/signaldesk demo

test: $(VENV)/.synced  ## run the whole test suite (PostgreSQL tests skip with a reason when no server answers)
	$(BIN)/pytest

lint: $(VENV)/.synced  ## ruff (lint and format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(VENV)/.synced  ## print the latency, burst and memory figures
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
