# SignalDesk: every target bootstraps .venv from the lock file on a machine with only python3, pip and make.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
UV_VER  := 0.9.30

.PHONY: demo test lint bench clean

$(BIN)/uv:
	@echo "==> creating $(VENV) and installing uv $(UV_VER)"
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==$(UV_VER)

# Two stamps, each newer than the lock file and this recipe once .venv matches them: .run
# holds what running SignalDesk needs (no extras, no dev tools), .synced adds every extra and
# the dev group.
# Bytecode is compiled at install, as pip does: with PYTHONDONTWRITEBYTECODE (Docker images
# set it) every command would otherwise compile SQLAlchemy and aiogram from source again.
# SignalDesk's own modules too (the editable install leaves them to the checkout; the Docker
# image's pip install compiles them): about 60 ms of every command. A module edited since
# is compiled from source again, as without it; bench recompiles what changed.
COMPILE := $(BIN)/python -m compileall -q -j 0 bot core migrations
$(VENV)/.run: $(BIN)/uv uv.lock pyproject.toml Makefile
	@echo "==> installing SignalDesk's locked runtime dependencies into $(VENV) (first time: about a minute)"
	$(BIN)/uv sync --frozen --inexact --no-default-groups --compile-bytecode --python $(BIN)/python
	$(COMPILE)
	@touch $@

$(VENV)/.synced: $(BIN)/uv uv.lock pyproject.toml Makefile
	@echo "==> installing the locked dependencies, every extra and the dev tools into $(VENV)"
	$(BIN)/uv sync --frozen --inexact --all-extras --compile-bytecode --python $(BIN)/python
	$(COMPILE)
	@touch $@ $(VENV)/.run

demo: $(VENV)/.run  ## run the bot, the sandbox Telegram and the paper broker on the embedded defaults
	@echo "==> starting the demo: database, sandbox Telegram server, bot (a few seconds)"
	$(BIN)/signaldesk demo

test: $(VENV)/.synced  ## run the whole test suite (PostgreSQL tests skip with a reason when no server answers)
	$(BIN)/pytest

lint: $(VENV)/.synced  ## ruff (lint and format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(VENV)/.synced  ## print the speed figures against their floors (SQLite and PostgreSQL)
	$(COMPILE)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache dist
