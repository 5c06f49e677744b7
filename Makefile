# Developer commands. Each target installs what it needs first, so on a fresh machine
# `make demo` or `make test` is the only command to type.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
CHROMIUM_STAMP := $(VENV)/.chromium
LIBREOFFICE_STAMP := $(VENV)/.libreoffice

.DEFAULT_GOAL := help
.PHONY: help install demo sandbox worker test bench lint fmt check

help:  ## List the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# `pip install --group` needs pip >= 25.1, newer than the one a new venv starts with.
$(PY_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=25.1"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e . --group dev
	touch $@

$(NODE_STAMP): package.json package-lock.json
	@command -v npm >/dev/null || (apt-get update && apt-get install -y --no-install-recommends nodejs npm)
	npm ci --no-audit --no-fund
	touch $@

# The browser tests (tests/browser) drive Debian's Chromium; never `playwright install`.
$(CHROMIUM_STAMP): | $(BIN)/python
	@command -v chromium >/dev/null || (apt-get update && apt-get install -y --no-install-recommends chromium)
	touch $@

# Word, RTF and ODT previews and prints convert with Debian's headless LibreOffice (no GUI;
# about 40 s and 260 MB on a fresh machine); DejaVu is the print PDFs' font.
$(LIBREOFFICE_STAMP): | $(BIN)/python
	@command -v soffice >/dev/null || (apt-get update && apt-get install -y --no-install-recommends libreoffice-writer-nogui fonts-dejavu-core)
	touch $@

install: $(PY_STAMP) $(NODE_STAMP) $(CHROMIUM_STAMP) $(LIBREOFFICE_STAMP)  ## Install everything: Python, npm, Chromium, LibreOffice (fast when up to date)

# The app talks to the sandbox on 127.0.0.1:8001 (the GPCONNECT_* defaults); both stop together.
demo: export DEMO_MODE = 1
demo: $(PY_STAMP) $(NODE_STAMP) $(LIBREOFFICE_STAMP)  ## Run the app (gunicorn), worker, beat and sandbox together, with no configuration
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py demo_users
	@echo "Starting the sandbox (:8001), the web app under gunicorn (http://127.0.0.1:8000),"
	@echo "a Celery worker and beat. Ctrl-C stops them all."
	$(BIN)/honcho --env /dev/null --procfile Procfile.demo start

sandbox: $(PY_STAMP)  ## Run only the GP Connect provider sandbox on http://127.0.0.1:8001
	$(BIN)/python -m gpconnect.sandbox --port 8001 --data-dir var/sandbox

# Demo mode unless the environment says otherwise, so it shares `make demo`'s broker under var/.
worker: export DEMO_MODE ?= 1
worker: $(PY_STAMP) $(LIBREOFFICE_STAMP)  ## Run a Celery worker (Redis with REDIS_URL, else the file broker under var/)
	$(BIN)/celery -A config worker --loglevel=INFO

test: install  ## Run the whole test suite
	$(BIN)/pytest

bench: $(PY_STAMP) $(NODE_STAMP)  ## Run every benchmark in bench/
	@set -e; found=0; for script in bench/*.py; do \
		[ -e "$$script" ] || continue; found=1; \
		echo "== $$script"; $(BIN)/python "$$script"; \
	done; [ $$found = 1 ] || echo "no benchmarks in bench/"

lint: $(PY_STAMP)  ## Check style: ruff lint and ruff format --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: $(PY_STAMP)  ## Fix style: ruff format and ruff check --fix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Django checks run against the production settings; they only need some secret to load.
check: export SECRET_KEY ?= make-check-not-a-secret
check: lint  ## lint + mypy + Django system checks + no missing migrations
	$(BIN)/mypy
	$(BIN)/python manage.py check
	$(BIN)/python manage.py makemigrations --check --dry-run
