# Two entry points: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: run test test-sqlite test-scaleout install install-test browser services clean

run: $(VENV)/.installed .env
	$(PY) manage.py metrics_exporter --clear
	$(VENV)/bin/honcho start -f Procfile

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(VENV)/bin/python
	$(PIP) install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-test: requirements.txt requirements-test.txt | $(VENV)/bin/python
	$(PIP) install --quiet -r requirements-test.txt
	touch $(VENV)/.installed $@

.env: | $(VENV)/.installed
	$(PY) manage.py setup --noinput

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# Debian's chromium for the browser tests; Playwright never downloads its own.
browser:
	@test -x /usr/bin/chromium || (command -v apt-get >/dev/null && \
		(apt-get install -y -q chromium >/dev/null 2>&1 || \
		 (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)) ) || \
		echo "chromium is not installed; browser tests will be skipped"

# PostgreSQL and Redis for the scale-out run, started when they are down.
services:
	@scripts/ensure-services.sh

test: install-test browser services
	$(MAKE) --no-print-directory test-sqlite
	$(MAKE) --no-print-directory test-scaleout

test-sqlite:
	$(PY) -m pytest -q

test-scaleout:
	DATABASE_URL=postgres://postgres@127.0.0.1:5432/quarry REDIS_URL=redis://127.0.0.1:6379/0 \
		$(PY) -m pytest -q -m "not sqlite_only"

clean:
	rm -rf $(VENV) .pytest_cache
