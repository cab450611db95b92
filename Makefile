# Two commands: `make demo` and `make test`. Everything else is set-up they share.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test setup system browser lint typecheck bench clean

demo: setup
	$(BIN)/perfpulse demo --data-dir ./data

test: setup lint typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

setup: system $(VENV)/.installed browser

$(VENV)/.installed: pyproject.toml setup.py src/perfpulse/agent/_speedups.c src/perfpulse/ingest/_beacon.c
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Debian packages the tests use: Chromium for the browser tests, Redis and PostgreSQL
# for the agent's cache and database tests, a C compiler and Python's headers for the
# agent's compiled ASGI middleware (without them it installs as Python, and the test
# that checks which one runs fails).
system:
	@missing=""; \
	command -v cc >/dev/null 2>&1 || missing="$$missing gcc"; \
	$(PY) -c "import os, sysconfig; raise SystemExit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" || missing="$$missing python3-dev"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

# The browser agent (and dashboard assets), bundled with esbuild from npm packages.
browser:
	@if [ -f browser/package.json ]; then \
	  cd browser && { [ -d node_modules ] && [ node_modules/.package-lock.json -nt package-lock.json ] || npm ci --no-audit --no-fund --loglevel=error; } && npm run --silent build; \
	fi

lint:
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck:
	$(BIN)/mypy

bench: setup
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) browser/node_modules browser/dist .pytest_cache .mypy_cache .ruff_cache
