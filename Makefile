# The two commands of the README's quick start are `make run` and `make test`.
# Everything else here is a convenience for developers.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
# Dev/test builds of the Cython core: -O1 without debug info builds in a
# fraction of the -O2 -g time (see ../shared/RECIPES.md); `make bench` uses -O2.
CORE_CFLAGS ?= -O1 -g0
STAMP  := $(VENV)/.installed

ARGS ?=

.PHONY: run test test-slow bench lint setup system-deps clean

$(PY):
	./scripts/install-system-deps.sh build $(PYTHON)
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml setup.py src/marathon/_core.pyx src/marathon/agent/_spawn.pyx $(wildcard plugins/*/pyproject.toml)
	$(PIP) install -q --disable-pip-version-check --upgrade pip setuptools wheel "cython>=3.0"
	CFLAGS="$(CORE_CFLAGS)" $(PIP) install -q --no-build-isolation -e ".[test]"
	$(PIP) install -q --no-build-isolation -e plugins/marathon-auth-basic -e plugins/marathon-policy-allowlist -e plugins/marathon-env-injector
	touch $(STAMP)

setup: $(STAMP)

# Debian packages the integration tests need (installed only when missing).
system-deps:
	./scripts/install-system-deps.sh

run: $(STAMP)
	$(VENV)/bin/marathon serve $(ARGS)

test: $(STAMP) system-deps
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check src tests benchmarks plugins
	$(PY) -m pytest -m "not slow" $(ARGS)
	MARATHON_PUREPYTHON=1 $(PY) -m pytest -m "not slow and not failover and not containers" $(ARGS)

test-slow: $(STAMP) system-deps
	$(PY) -m pytest -m slow $(ARGS)

bench: $(STAMP) system-deps
	CFLAGS="-O2 -g0" $(PIP) install -q --no-build-isolation -e ".[test]"
	$(PY) -m pytest benchmarks $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check src tests benchmarks plugins

clean:
	rm -rf $(VENV) build src/*.egg-info src/marathon/_core.c src/marathon/_core*.so src/marathon/agent/_spawn.c src/marathon/agent/_spawn*.so
