# The daily verbs. `make test` and `make demo` work on a fresh machine: they create .venv and
# install what they need (and Debian's graphviz for the SVG statechart) on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: all venv test demo lint typecheck statecharts bench soak check clean

all: check

$(STAMP): pyproject.toml
	@command -v dot >/dev/null 2>&1 || { \
	  echo "installing Debian's graphviz (for statecharts/*.svg)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq graphviz >/dev/null; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/qqconn demo

lint: $(STAMP)
	$(VENV)/bin/ruff check qqconn tests bench
	$(VENV)/bin/ruff format --check qqconn tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy qqconn

statecharts: $(STAMP)
	$(PY) -m qqconn.statecharts statecharts

bench: $(STAMP)
	$(PY) bench/run.py

soak: $(STAMP)
	$(PY) -m pytest -q -s tests/test_soak.py --soak-seconds=$${SECONDS_TO_SOAK:-600}

check: lint typecheck test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
