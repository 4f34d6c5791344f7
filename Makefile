# Two commands do all the set-up on a fresh machine (see README.md):
#   make serve   install, then run the server on its built-in generated match (WebSocket :8080,
#                HTTP :8081)
#   make test    install (with the test tools, Chromium, redis-server and Node packages), then
#                run the tests

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: serve test lint system-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[processing,test]'
	touch $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/eeict serve $(ARGS)

# Chromium (browser test of the radar page), redis-server (the broker tests start their own on
# a free port) and the Node example's packages.
system-deps:
	scripts/install-test-deps.sh

test: $(STAMP) system-deps
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest

lint: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
