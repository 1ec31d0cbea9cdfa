# Two commands do all set-up on a fresh Linux machine with Python 3.11:
#   make run    create .venv, install, start the web app on http://127.0.0.1:7860
#   make test   create .venv, install test deps (+ Debian Chromium where apt exists), run all tests
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=
# Test processes (pytest-xdist): 0 = serial, in one process (the default until a run on two has passed on a busy
# machine too; quiet: 12 min 26 s vs 16 min 26 s); TEST_WORKERS=2 runs each file whole on one of two workers.
TEST_WORKERS ?= 0

.PHONY: run test test-fast venv deps dev-deps chromium bench clean

$(VENV)/.deps: requirements.txt requirements-bundled.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-bundled.txt
	touch $@

$(VENV)/.dev-deps: $(VENV)/.deps requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

deps: $(VENV)/.deps
dev-deps: $(VENV)/.dev-deps

# Browser tests need Debian's Chromium (Playwright's own download cannot work offline).
chromium:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium fonts-dejavu-core >/dev/null; \
	else echo "apt-get not found: browser tests will be skipped"; fi

run: deps
	$(PY) app.py

test: dev-deps chromium
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# Fast tests only (skips those marked slow).
test-fast: dev-deps
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -n $(TEST_WORKERS) -m "not slow" $(PYTEST_ARGS)

bench: dev-deps
	HF_HUB_OFFLINE=1 $(PY) -m bench.run_all

clean:
	rm -rf $(VENV) .pytest_cache
